"""Typed ids: a PrincipalId is not a RequestId even though both are strings."""

from __future__ import annotations

import re
import uuid
from typing import NewType

RequestId = NewType("RequestId", str)
PrincipalId = NewType("PrincipalId", str)
RoleDefinitionId = NewType("RoleDefinitionId", str)
Scope = NewType("Scope", str)

GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# NB. Fixed forever: assignment names and synthetic request ids derive from it, and changing it
# would orphan every assignment jitgate ever created.
JITGATE_NAMESPACE = uuid.UUID("6f1c3b52-8d4e-5a7b-9c0d-2e3f4a5b6c7d")


# NB. The nil GUID is what an unset id field holds in most SDKs and directories; it names nobody, so a
# principal id equal to it is refused wherever one enters (request, caller, Teams sender).
NIL_GUID = "00000000-0000-0000-0000-000000000000"


def is_guid(value: str) -> bool:
    """A lower-case GUID and nothing around it."""
    return bool(GUID_RE.fullmatch(value))


def principal_id_problem(value: str) -> str | None:
    """Why `value` (lower case) is not an Entra object id, or None when it is one."""
    if not is_guid(value):
        return "must be an Entra object id (a GUID)"
    if value == NIL_GUID:
        return f"must not be the nil GUID {NIL_GUID}: it names nobody"
    return None


def is_principal_id(value: str) -> bool:
    """An Entra object id: a lower-case GUID other than the nil GUID."""
    return principal_id_problem(value) is None


def synthetic_request_id(raw: bytes) -> RequestId:
    """An id for a message whose own requestId is missing or unusable, stable for the same bytes."""
    import hashlib

    return RequestId(str(uuid.uuid5(JITGATE_NAMESPACE, "raw:" + hashlib.sha256(raw).hexdigest())))
