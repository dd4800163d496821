"""One error type per failure kind. Adapters translate SDK/HTTP errors into these."""

from __future__ import annotations

from dataclasses import dataclass


class JitgateError(Exception):
    """Base of every error jitgate raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One validation problem: where (dotted path) and what."""

    loc: str
    msg: str

    def as_dict(self) -> dict[str, str]:
        return {"loc": self.loc, "msg": self.msg}


class InvalidRequest(JitgateError):
    """Input that can never become valid by retrying: terminal, rejected and audited."""

    def __init__(self, errors: list[FieldError], request_id: str | None = None) -> None:
        self.errors = errors
        self.request_id = request_id
        super().__init__("; ".join(f"{e.loc}: {e.msg}" for e in errors))


class IllegalTransition(JitgateError):
    """A state change the lifecycle does not allow."""


class ConcurrencyConflict(JitgateError):
    """An optimistic-concurrency write lost against another writer (etag/version mismatch)."""


class AlreadyExists(JitgateError):
    """A conditional create found the key taken."""


class NotFound(JitgateError):
    """The thing asked for does not exist."""


class IdempotencyMismatch(JitgateError):
    """The same requestId arrived with a different body."""


class TransientError(JitgateError):
    """Throttling, 5xx, timeouts: raise so the bus redelivers; retrying may succeed."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class BeyondScheduleLimit(JitgateError):
    """The bus cannot schedule a message that far ahead (Cloud Tasks: 30 days); reconcile acts when it is due."""


class PermanentError(JitgateError):
    """A backend refused for good (bad role, principal gone, forbidden): retrying will not help."""


class AssignmentExists(JitgateError):
    """The provider already has this principal/role/scope under another assignment name (ARM 409)."""

    def __init__(self, existing_name: str) -> None:
        self.existing_name = existing_name
        super().__init__(f"role assignment exists under name {existing_name}")


class PolicyError(JitgateError):
    """A policy file that cannot be compiled; each message carries its line number."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


class AuthError(JitgateError):
    """A caller that is not who it says (401) or may not do this (403)."""

    def __init__(self, message: str, status: int = 403) -> None:
        self.status = status
        super().__init__(message)


class LockLost(JitgateError):
    """A peek-lock expired before the message was settled; another receiver may have it now."""
