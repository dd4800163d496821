"""The grant ledger (ARCHITECTURE §5): grant keys, holds and the assignments they stand on."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from .ids import JITGATE_NAMESPACE

MARKER_PREFIX = "jitgate:"


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
        text = "|".join((self.provider, self.principal_id, self.role_definition_id, self.scope))
        return str(uuid.uuid5(JITGATE_NAMESPACE, text))

    def as_dict(self) -> dict[str, str]:
        return {
            "provider": self.provider,
            "principalId": self.principal_id,
            "roleDefinitionId": self.role_definition_id,
            "scope": self.scope,
        }


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
