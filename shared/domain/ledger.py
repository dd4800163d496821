"""The grant ledger (ARCHITECTURE §5): grant keys, holds and the assignments they stand on.

One document per grant key (`Grant`) holds every hold on it, and every change to a key is one conditional
write of that document, so two writers on one key can never both act on what they read.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict

from .ids import JITGATE_NAMESPACE

MARKER_PREFIX = "jitgate:"
# Planes whose grants have no names of their own (a database role membership): jitgate's handle on such a
# grant is `<principal>/<role id>`, readable and reversible, so that a revoke that finds the grant already
# gone still knows whose sessions to end. ARM-like planes get a UUIDv5, as they require GUID names.
NAMELESS_PROVIDERS = frozenset({"postgres", "azure-sql"})
# NB. A hot key (one person asking for the same role every day) must not grow its document without bound
# (Cosmos items stop at 2 MB): only the most recently released holds are kept. The audit trail is the record.
RELEASED_KEPT = 16
_ROLE_ID_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def role_id(role: str) -> str:
    """A database role's name as it stands in a grant key, which lower-cases it: every character but a-z, 0-9
    and `_` percent-encoded (`Payments` → `%50ayments`), so that the name survives and can be read back."""
    return "".join(ch if ch in _ROLE_ID_SAFE else "".join(f"%{b:02x}" for b in ch.encode()) for ch in role)


def role_name(role_id: str) -> str:
    """The role name a grant key's role id stands for."""
    return unquote(role_id, errors="strict")


@dataclass(frozen=True, order=True)
class GrantKey:
    """What a grant is: one principal holding one role definition at one scope of one provider.

    Scope and role id are compared case-insensitively (as ARM does), so they are kept lower-cased.
    """

    provider: str
    principal_id: str
    role_definition_id: str
    scope: str

    @classmethod
    def of(cls, provider: str, principal_id: str, role_definition_id: str, scope: str) -> GrantKey:
        return cls(provider, principal_id.lower(), role_definition_id.lower(), scope.lower())

    def assignment_name(self) -> str:
        """Deterministic, so that a retried create is a no-op rather than a second assignment."""
        return _assignment_name(self)

    def as_dict(self) -> dict[str, str]:
        return {
            "provider": self.provider,
            "principalId": self.principal_id,
            "roleDefinitionId": self.role_definition_id,
            "scope": self.scope,
        }


@functools.lru_cache(maxsize=4096)
def _assignment_name(key: GrantKey) -> str:
    # NB. A grant's handling asks for its key's name several times (the provider calls, the audit event, the
    # deletion); a UUIDv5 is a SHA-1 and a UUID built each time, and a key is a frozen value.
    if key.provider in NAMELESS_PROVIDERS:
        return f"{key.principal_id}/{key.role_definition_id}"
    text = "|".join((key.provider, key.principal_id, key.role_definition_id, key.scope))
    return str(uuid.uuid5(JITGATE_NAMESPACE, text))


class HoldStatus(StrEnum):
    ACTIVE = "active"
    RELEASED = "released"


class Hold(BaseModel):
    """One request's claim on a grant key, with its own expiry, and the principal's type (User, Group...)
    that the assignment must be made with; None on holds stored before holds kept it."""

    model_config = ConfigDict(frozen=True)

    provider: str
    principal_id: str
    role_definition_id: str
    scope: str
    request_id: str
    granted_at: datetime
    expires_at: datetime
    preexisting: bool = False
    status: HoldStatus = HoldStatus.ACTIVE
    released_at: datetime | None = None
    principal_type: str | None = None

    @property
    def key(self) -> GrantKey:
        return GrantKey.of(self.provider, self.principal_id, self.role_definition_id, self.scope)

    @classmethod
    def for_key(
        cls,
        key: GrantKey,
        request_id: str,
        granted_at: datetime,
        expires_at: datetime,
        preexisting: bool,
        principal_type: str,
    ) -> Hold:
        return cls(
            provider=key.provider,
            principal_id=key.principal_id,
            role_definition_id=key.role_definition_id,
            scope=key.scope,
            request_id=request_id,
            granted_at=granted_at,
            expires_at=expires_at,
            preexisting=preexisting,
            principal_type=principal_type,
        )


class Deletion(BaseModel):
    """The intent to delete a grant key's assignment, written with the release of its last hold.

    While it stands no hold is added to the key, so nothing is granted on an assignment about to go. Its
    writer deletes the assignment, reads it back as gone and clears the intent; `since` is when it was written
    or last renewed. An intent older than the lease is stale: its writer stopped (a crash) and will not delete
    any more, so another writer may take it over, or a grant may cancel it and keep the assignment."""

    model_config = ConfigDict(frozen=True)

    token: str
    since: datetime
    request_id: str | None = None  # whose release wrote it; None: reconcile removing an orphan

    @classmethod
    def begin(cls, at: datetime, request_id: str | None) -> Deletion:
        return cls(token=uuid.uuid4().hex, since=at, request_id=request_id)

    def stale(self, now: datetime, lease: timedelta) -> bool:
        return now - self.since >= lease


class Grant(BaseModel):
    """One grant key's ledger document: its holds, the principal's type, the expiry jitgate last asked the
    provider for (providers that expire grants themselves end it then), and the intent to delete its
    assignment. `version` is the stored version a conditional write checks (0: not stored yet)."""

    model_config = ConfigDict(frozen=True)

    key: GrantKey
    holds: tuple[Hold, ...] = ()
    principal_type: str | None = None
    provider_expires_at: datetime | None = None
    deleting: Deletion | None = None
    version: int = 0

    @classmethod
    def new(cls, key: GrantKey) -> Grant:
        return cls(key=key)

    def hold_of(self, request_id: str) -> Hold | None:
        return next((h for h in self.holds if h.request_id == request_id), None)

    @property
    def active_holds(self) -> list[Hold]:
        return [h for h in self.holds if h.status is HoldStatus.ACTIVE]

    def deleting_now(self, now: datetime, lease: timedelta) -> Deletion | None:
        """The deletion intent standing on the key: one whose lease has not run out."""
        return self.deleting if self.deleting is not None and not self.deleting.stale(now, lease) else None

    def with_hold(self, hold: Hold) -> Grant:
        """This document with `hold` put in place of the request's hold (or added), released holds pruned."""
        if hold.key != self.key:
            raise ValueError(f"hold of {hold.key} put on grant {self.key}")
        holds = [h for h in self.holds if h.request_id != hold.request_id] + [hold]
        active = [h for h in holds if h.status is HoldStatus.ACTIVE]
        released = sorted(
            (h for h in holds if h.status is not HoldStatus.ACTIVE),
            key=lambda h: (h.released_at or h.granted_at, h.request_id),
        )[-RELEASED_KEPT:]
        ordered = tuple(sorted(active + released, key=lambda h: (h.expires_at, h.request_id)))
        return self.model_copy(update={"holds": ordered})

    def released(self, request_id: str, at: datetime) -> Grant:
        """This document with the request's hold released at `at` (unchanged if it holds nothing)."""
        hold = self.hold_of(request_id)
        if hold is None or hold.status is not HoldStatus.ACTIVE:
            return self
        return self.with_hold(hold.model_copy(update={"status": HoldStatus.RELEASED, "released_at": at}))


class Assignment(BaseModel):
    """A role assignment as the provider sees it."""

    model_config = ConfigDict(frozen=True)

    name: str
    provider: str
    principal_id: str
    principal_type: str = "User"
    role_definition_id: str
    scope: str
    description: str = ""

    @property
    def key(self) -> GrantKey:
        return GrantKey.of(self.provider, self.principal_id, self.role_definition_id, self.scope)

    @property
    def marked_request_id(self) -> str | None:
        """The request that created it, if jitgate did (its description carries the marker)."""
        if self.description.startswith(MARKER_PREFIX):
            return self.description[len(MARKER_PREFIX) :].split(" ", 1)[0] or None
        return None


def marker_for(request_id: str) -> str:
    return f"{MARKER_PREFIX}{request_id} (time-boxed grant; removed automatically at expiry)"
