"""Compiled rules: what each matches, the conditions a matched request must meet, and the decision it gives."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from ..decision import Decision, Outcome
from ..durations import duration_in_words
from ..request import AccessRequest, Provider, validate_role
from .scopes import is_literal_path

DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Approval:
    """Who must approve: `required` distinct people from any of `groups`, within `deadline`."""

    groups: tuple[str, ...]
    required: int
    deadline: timedelta


@dataclass(frozen=True, slots=True)
class JustificationRule:
    """The justification must be at least `min_length` characters (ignoring surrounding space) and contain
    a match of `pattern`."""

    min_length: int
    pattern: re.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class TicketRule:
    """A ticket reference: whether one is required, and the pattern the whole ticket must match when given."""

    required: bool
    pattern: re.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class Window:
    """When requests may be granted, in UTC: on `days` (0 = Monday) from `start` until before `end`
    (minutes after midnight). An `end` before `start` runs past midnight into the next day."""

    days: frozenset[int]
    start: int
    end: int

    def contains(self, now: datetime) -> bool:
        t = now.astimezone(UTC)
        minute = t.hour * 60 + t.minute + (t.second + t.microsecond / 1_000_000) / 60
        day = t.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        before_midnight = day in self.days and minute >= self.start
        return before_midnight or ((day - 1) % 7 in self.days and minute < self.end)

    def describe(self) -> str:
        days = ",".join(DAYS[d] for d in sorted(self.days))
        return f"{days} {hhmm(self.start)}-{hhmm(self.end)} UTC"


def hhmm(minutes: int) -> str:
    """Minutes after midnight as HH:MM."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def role_is_valid(provider: Provider, role: str) -> bool:
    """Whether a request could name this role for this provider at all."""
    try:
        validate_role(provider, role)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule: what it matches, its outcome, and the conditions a matched request must meet."""

    name: str
    line: int
    description: str
    outcome: Outcome
    providers: frozenset[str] | None  # None: any provider
    roles: tuple[str, ...] | None  # as written; None: any role
    scopes: tuple[str, ...]
    requester_groups: frozenset[str] | None  # None: anyone
    max_duration: timedelta | None
    approval: Approval | None
    justification: JustificationRule | None
    ticket: TicketRule | None
    window: Window | None
    break_glass: bool
    reason: str | None
    scope_regex: re.Pattern[str]
    granted_reasons: tuple[str, ...] = field(init=False)  # after the match line, when conditions are met

    def __post_init__(self) -> None:
        object.__setattr__(self, "granted_reasons", self._granted_reasons())

    def _granted_reasons(self) -> tuple[str, ...]:
        if self.outcome is Outcome.DENY or self.max_duration is None:
            return ()
        longest = duration_in_words(self.max_duration)
        if self.approval is not None:
            approval = self.approval
            return (
                f"needs {approval.required} distinct approval{'s' if approval.required > 1 else ''} from "
                f"{', '.join(approval.groups)} within {duration_in_words(approval.deadline)}",
                f"grant for at most {longest}",
            )
        if self.break_glass:
            return (f"break-glass: auto-approved for at most {longest}, flagged for after-the-fact review",)
        return (f"auto-approved for at most {longest}",)

    @property
    def role_keys(self) -> frozenset[str] | None:
        return None if self.roles is None else frozenset(r.lower() for r in self.roles)

    def mismatch(self, provider: str, role: str, scope: str, requester_groups: frozenset[str]) -> str | None:
        """Why this rule does not match (the first reason), or None when it does."""
        if self.providers is not None and provider not in self.providers:
            return f"provider {provider} is not one of {_listed(sorted(self.providers))}"
        if self.roles is not None and role.lower() not in {r.lower() for r in self.roles}:
            return f"role '{role}' is not one of {_listed(self.roles)}"
        if not is_literal_path(scope) or not self.scope_regex.fullmatch(scope.lower() + "/"):
            return f"scope '{scope}' matches none of {_listed(self.scopes)}"
        if self.requester_groups is not None and self.requester_groups.isdisjoint(requester_groups):
            return f"the requester is in none of the groups {_listed(sorted(self.requester_groups))}"
        return None

    def failed_conditions(self, request: AccessRequest, now: datetime) -> list[str]:
        failures = []
        if self.max_duration is not None and request.duration > self.max_duration:
            asked, allowed = duration_in_words(request.duration), duration_in_words(self.max_duration)
            asked = f"a little over {allowed}" if asked == allowed else asked  # over by less than a second
            failures.append(f"{asked} is longer than this rule allows ({allowed})")
        if self.justification is not None:
            length = len(request.justification.strip())
            if length < self.justification.min_length:
                failures.append(
                    f"justification is {length} characters, fewer than the rule's minimum "
                    f"{self.justification.min_length}"
                )
            pattern = self.justification.pattern
            if pattern is not None and not pattern.search(request.justification):
                failures.append(f"justification does not match the required pattern '{pattern.pattern}'")
        if self.ticket is not None:
            pattern = self.ticket.pattern
            if request.ticket is None:
                if self.ticket.required:
                    shape = f" matching '{pattern.pattern}'" if pattern is not None else ""
                    failures.append(f"a ticket{shape} is required")
            elif pattern is not None and not pattern.fullmatch(request.ticket):
                failures.append(
                    f"ticket '{request.ticket}' does not match the required pattern '{pattern.pattern}'"
                )
        if self.window is not None and not self.window.contains(now):
            at = now.astimezone(UTC)
            failures.append(
                f"outside the rule's window {self.window.describe()} "
                f"(now {DAYS[at.weekday()]} {at:%H:%M} UTC)"
            )
        return failures

    def decide(self, request: AccessRequest, pattern: str, now: datetime) -> Decision:
        target = request.target
        matched = (
            f"rule '{self.name}' matches {target.provider.value} role '{target.role}' "
            f"at '{target.scope}' (scope pattern '{pattern}')"
        )
        if self.outcome is Outcome.DENY:
            return Decision(outcome=Outcome.DENY, rule=self.name, reasons=[self.reason or "denied", matched])
        failures = self.failed_conditions(request, now)
        if failures:
            return Decision(
                outcome=Outcome.DENY,
                rule=self.name,
                reasons=[*failures, matched],
                max_duration=self.max_duration,
            )
        reasons = [matched, *self.granted_reasons]
        if self.approval is not None:
            return Decision(
                outcome=Outcome.APPROVAL,
                rule=self.name,
                reasons=reasons,
                required_approvals=self.approval.required,
                approver_groups=list(self.approval.groups),
                approval_deadline=self.approval.deadline,
                max_duration=self.max_duration,
            )
        return Decision(
            outcome=Outcome.AUTO,
            rule=self.name,
            reasons=reasons,
            max_duration=self.max_duration,
            break_glass=self.break_glass,
        )


def _listed(items: Iterable[str]) -> str:
    return "[" + ", ".join(items) + "]"
