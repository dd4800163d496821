"""Approval rules as code: a YAML policy compiled once at load, evaluated per request; first match wins.

One direction: `reading` (the file → rules) → `rules` (compiled rules, their matching and decisions) →
`scopes` (scope patterns and the tree that matches many at once); `policy` loads, indexes, evaluates.
"""

from .policy import Policy
from .reading import DEFAULT_APPROVAL_DEADLINE, YamlReader, line_of, read_policy
from .rules import DAYS, Approval, JustificationRule, Rule, TicketRule, Window
from .scopes import ANY, ScopeTree, compile_scope_pattern, is_literal_path, scope_pattern_segments

__all__ = [
    "ANY",
    "DAYS",
    "DEFAULT_APPROVAL_DEADLINE",
    "Approval",
    "JustificationRule",
    "Policy",
    "Rule",
    "ScopeTree",
    "TicketRule",
    "Window",
    "YamlReader",
    "compile_scope_pattern",
    "is_literal_path",
    "line_of",
    "read_policy",
    "scope_pattern_segments",
]
