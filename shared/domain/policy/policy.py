"""The policy: compiled rules indexed by provider and role, evaluated per request; first match wins."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

from ..decision import Decision, Outcome
from ..errors import PolicyError
from ..request import AccessRequest, Provider
from .document import read_policy
from .rules import Rule, role_is_valid
from .scopes import ANY, ScopeTree, is_literal_path

# Up to this many candidate rules, trying each rule's regex is quicker than walking a ScopeTree.
_SCAN_AT_MOST = 16


class Policy:
    """A compiled approval policy: approver and requester groups, and ordered rules (first match wins).

    Rules are indexed by (provider, lower-cased role) with wildcard buckets merged in rule order, so an
    evaluation only looks at the scopes of rules that could match at all: by each rule's regex when they
    are few, through a ScopeTree when they are many.
    """

    def __init__(
        self, groups: Mapping[str, frozenset[str]], rules: Iterable[Rule], source: str = "<policy>"
    ) -> None:
        self.source = source
        self.groups: Mapping[str, frozenset[str]] = MappingProxyType(dict(groups))
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._by_key, self._by_provider = _index(self.rules)
        self._trees: dict[tuple[str, str | None], ScopeTree[Rule]] = {}

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError([f"{path}: cannot read the policy: {exc}"]) from None
        return cls.from_text(text, source=str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "<policy>") -> Policy:
        groups, rules = read_policy(text, source)
        return cls(groups, rules, source)

    def evaluate(self, request: AccessRequest, requester_groups: frozenset[str], now: datetime) -> Decision:
        """The first matching rule decides; nothing matches → deny."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        target = request.target
        provider = target.provider.value
        scope = target.scope.lower()
        if not is_literal_path(scope):
            return Decision(
                outcome=Outcome.DENY,
                rule=None,
                reasons=[f"scope '{target.scope}' is not one literal resource path"],
            )
        for rule, pattern in self._matching(provider, target.role.lower(), scope):
            if rule.requester_groups is None or not rule.requester_groups.isdisjoint(requester_groups):
                return rule.decide(request, pattern, now)
        return Decision(
            outcome=Outcome.DENY,
            rule=None,
            reasons=[f"no rule matches {provider} role '{target.role}' at scope '{target.scope}'"],
        )

    def explain(self, request: AccessRequest, requester_groups: frozenset[str], now: datetime) -> list[str]:
        """One line per rule, in order: whether it matched and, if not, the first reason it did not; the
        deciding rule's line names any of its conditions the request does not meet."""
        target = request.target
        lines = []
        winner: Rule | None = None
        for rule in self.rules:
            why_not = rule.mismatch(target.provider.value, target.role, target.scope, requester_groups)
            if why_not is not None:
                lines.append(f"{rule.name}: no match: {why_not}")
            elif winner is None:
                winner = rule
                unmet = rule.failed_conditions(request, now) if rule.outcome is not Outcome.DENY else []
                verdict = f" (unmet: {'; '.join(unmet)})" if unmet else ""
                lines.append(f"{rule.name}: matches; first match, this rule decides{verdict}")
            else:
                lines.append(f"{rule.name}: matches, but '{winner.name}' comes first")
        return lines

    def allowed_roles(self) -> dict[str, list[str]]:
        """Provider → the roles (names or ids, sorted) some non-deny rule can grant; `*` means any role."""
        found: dict[str, dict[str, str]] = {}
        for rule in self.rules:
            if rule.outcome is Outcome.DENY:
                continue
            providers = sorted(rule.providers) if rule.providers is not None else [p.value for p in Provider]
            for provider in providers:
                for role in rule.roles if rule.roles is not None else (ANY,):
                    if role == ANY or role_is_valid(Provider(provider), role):
                        found.setdefault(provider, {}).setdefault(role.lower(), role)
        return {p: sorted(roles.values(), key=str.lower) for p, roles in sorted(found.items())}

    def _matching(self, provider: str, role: str, scope: str) -> tuple[tuple[Rule, str], ...]:
        """The rules (in order) whose provider, role and scope patterns match, each with the pattern that did."""
        rules = self._by_key.get((provider, role))
        role_key: str | None = role
        if rules is None:
            rules = self._by_provider.get(provider, ())
            role_key = None
        if len(rules) <= _SCAN_AT_MOST:
            path = scope + "/"
            found = []
            for rule in rules:
                hit = rule.scope_regex.fullmatch(path)
                if hit is not None:
                    found.append((rule, rule.scopes[(hit.lastindex or 1) - 1]))
            return tuple(found)
        tree = self._trees.get((provider, role_key))
        if tree is None:
            # Built on first use: one per (provider, role) actually asked for, each holding only its candidates.
            tree = self._trees[(provider, role_key)] = ScopeTree((rule, rule.scopes) for rule in rules)
        return tree.match(scope)


def _index(
    rules: tuple[Rule, ...],
) -> tuple[dict[tuple[str, str], tuple[Rule, ...]], dict[str, tuple[Rule, ...]]]:
    """(provider, role) → candidate rules in rule order, for every role some rule names; provider → the
    candidates for any other role (rules with a role wildcard)."""
    buckets: dict[tuple[str | None, str | None], list[int]] = {}
    for position, rule in enumerate(rules):
        providers: Iterable[str | None] = rule.providers if rule.providers is not None else (None,)
        role_keys = rule.role_keys
        roles: Iterable[str | None] = role_keys if role_keys is not None else (None,)
        for provider in providers:
            for role in roles:
                buckets.setdefault((provider, role), []).append(position)
    known_roles = {role for _, role in buckets if role is not None}
    by_key: dict[tuple[str, str], tuple[Rule, ...]] = {}
    by_provider: dict[str, tuple[Rule, ...]] = {}
    for member in Provider:
        provider = member.value
        any_role = buckets.get((provider, None), []) + buckets.get((None, None), [])
        by_provider[provider] = tuple(rules[i] for i in sorted(set(any_role)))
        for role in known_roles:
            positions = buckets.get((provider, role), []) + buckets.get((None, role), []) + any_role
            by_key[(provider, role)] = tuple(rules[i] for i in sorted(set(positions)))
    return by_key, by_provider
