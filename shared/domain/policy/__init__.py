"""Approval rules as code: a YAML policy compiled once at load, evaluated per request; first match wins.

One direction: `document` (the file's shape as pydantic models, its errors) → `values` (what each
field may hold) → `yaml_source` (composed YAML as data, with the line of every part); `document` builds
`rules` (compiled rules: matching, conditions, decisions) → `scopes` (patterns, the ScopeTree); `policy`
loads (read, build, index) and evaluates.
"""

from .document import DEFAULT_APPROVAL_DEADLINE, read_policy
from .policy import Policy
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
    "compile_scope_pattern",
    "is_literal_path",
    "read_policy",
    "scope_pattern_segments",
]
