"""What the policy decided about one request, and why."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Outcome(StrEnum):
    AUTO = "auto"
    APPROVAL = "approval"
    DENY = "deny"


class Decision(BaseModel):
    """The policy's answer: the matched rule (None when nothing matched), the outcome and its reasons."""

    model_config = ConfigDict(frozen=True)

    outcome: Outcome
    rule: str | None
    reasons: list[str]
    required_approvals: int = 0
    approver_groups: list[str] = []
    approval_deadline: timedelta | None = None
    max_duration: timedelta | None = None
    break_glass: bool = False

    def summary(self) -> str:
        head = (
            f"{self.outcome.value} by rule {self.rule!r}"
            if self.rule
            else f"{self.outcome.value} (no rule matched)"
        )
        return f"{head}: " + "; ".join(self.reasons) if self.reasons else head
