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


def is_guid(value: str) -> bool:
    return bool(GUID_RE.fullmatch(value))


def synthetic_request_id(raw: bytes) -> RequestId:
    """An id for a message whose own requestId is missing or unusable, stable for the same bytes."""
    import hashlib

    return RequestId(str(uuid.uuid5(JITGATE_NAMESPACE, "raw:" + hashlib.sha256(raw).hexdigest())))
