"""Who is calling the HTTP API: App Service authentication in Azure, a Google-signed ID token on Google Cloud
(shared/google_identity.py), a development identity locally.

App Service authentication ("Easy Auth") validates the caller's token in front of the app and passes
the claims on in `X-MS-CLIENT-PRINCIPAL`; the platform strips that header from incoming requests, so
its presence proves App Service put it there. Nothing does that on other platforms, so the header is
trusted only in `azure` mode, and locally, where any identity may be claimed anyway.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .domain.audit import Actor
from .domain.errors import AuthError
from .domain.ids import is_guid, principal_id_problem
from .domain.json_body import MalformedBody, parse_json
from .settings import Settings

if TYPE_CHECKING:
    from .google_identity import GoogleIdTokens

AUDITOR = "Jit.Auditor"
ADMIN = "Jit.Admin"
SUBMITTER = "Jit.Submitter"  # a service (Backstage) that submits requests on behalf of engineers

CLIENT_PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"
DEV_PRINCIPAL_HEADER = "X-Jitgate-Dev-Principal"
DEV_ROLES_HEADER = "X-Jitgate-Dev-Roles"

OBJECT_ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
ROLE_CLAIMS = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
NAME_CLAIMS = ("name", "preferred_username", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")
SUBJECT_CLAIMS = ("sub", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier")

_MAX_CLIENT_PRINCIPAL = 32 * 1024
_HOW = {"azure": "App Service authentication", "gcp": "a Google-signed ID token (Authorization: Bearer)",
        "local": "a development identity"}

CallerKind = Literal["user", "service"]


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: an Entra object id (lower case) or a Google principal (`user:<email>`,
    `serviceAccount:<email>`), its roles, and whether it is a person or a service (Backstage calling with its own
    identity)."""

    principal_id: str
    roles: frozenset[str]
    kind: CallerKind = "user"
    name: str = ""

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def is_auditor(self) -> bool:
        return AUDITOR in self.roles or ADMIN in self.roles

    def may_submit_for(self, principal_id: str) -> bool:
        """People ask for themselves; only a submitting service or an admin asks for someone else."""
        return principal_id == self.principal_id or SUBMITTER in self.roles or self.is_admin

    def actor(self) -> Actor:
        return Actor(principal_id=self.principal_id, kind=self.kind)


def caller_from(headers: Mapping[str, str], settings: Settings, google: GoogleIdTokens | None = None) -> Caller:
    """The caller of one HTTP request. Raises AuthError(status=401) when nobody is authenticated or
    the identity headers cannot be trusted in this mode. `google` verifies ID tokens in gcp mode."""
    lowered = {key.lower(): value for key, value in headers.items()}
    dev_principal = lowered.get(DEV_PRINCIPAL_HEADER.lower())
    dev_roles = lowered.get(DEV_ROLES_HEADER.lower())
    client_principal = lowered.get(CLIENT_PRINCIPAL_HEADER.lower())
    if dev_principal is not None or dev_roles is not None:
        if not settings.local:
            raise AuthError(f"development identity is refused outside local mode (this is {settings.mode} "
                            f"mode); authenticate with {_HOW[settings.mode]}", status=401)
        return _dev_caller(dev_principal, dev_roles)
    if client_principal is not None:
        if settings.mode not in ("azure", "local"):
            raise AuthError(f"{CLIENT_PRINCIPAL_HEADER} is only trusted behind App Service authentication "
                            f"(azure mode), not in {settings.mode} mode", status=401)
        return _client_principal_caller(client_principal)
    if settings.mode == "gcp":
        if google is None:
            raise AuthError("this API cannot verify Google ID tokens: JITGATE_GCP_API_AUDIENCE is not set",
                            status=401)
        return google.caller(lowered.get("authorization"))
    if settings.local:
        raise AuthError(f"not authenticated: send {DEV_PRINCIPAL_HEADER}: <object id> "
                        f"(and optionally {DEV_ROLES_HEADER}: {ADMIN},{AUDITOR})", status=401)
    raise AuthError("not authenticated: sign in through App Service authentication", status=401)


def _dev_caller(principal: str | None, roles: str | None) -> Caller:
    if principal is None:
        raise AuthError(f"{DEV_ROLES_HEADER} without {DEV_PRINCIPAL_HEADER}: say who you are", status=401)
    principal_id = principal.strip().lower()
    problem = principal_id_problem(principal_id)
    if problem:
        raise AuthError(f"{DEV_PRINCIPAL_HEADER} {problem}", status=401)
    granted = frozenset(r.strip() for r in (roles or "").split(",") if r.strip())
    return Caller(principal_id=principal_id, roles=granted, kind="user", name=principal_id)


def _client_principal_caller(header: str) -> Caller:
    claims, name_type, role_type = _claims(header)
    object_id = next((claims[c][0] for c in OBJECT_ID_CLAIMS if claims.get(c)), "").lower()
    if not is_guid(object_id):
        raise AuthError(f"{CLIENT_PRINCIPAL_HEADER} carries no object id (oid) claim; "
                        "is the token issued by Microsoft Entra ID?", status=401)
    problem = principal_id_problem(object_id)
    if problem:
        raise AuthError(f"the object id (oid) claim in {CLIENT_PRINCIPAL_HEADER} {problem}", status=401)
    role_types = {*ROLE_CLAIMS, role_type} - {""}
    roles = frozenset(value for c in role_types for value in claims.get(c, []))
    name_types = [name_type, *NAME_CLAIMS] if name_type else list(NAME_CLAIMS)
    name = next((claims[c][0] for c in name_types if claims.get(c)), object_id)
    # NB. An app-only token (client credentials) has no user: Entra marks it with idtyp=app when that
    # optional claim is configured, and always gives it a subject equal to its object id.
    subject = next((claims[c][0] for c in SUBJECT_CLAIMS if claims.get(c)), "").lower()
    service = "app" in claims.get("idtyp", []) or subject == object_id
    return Caller(principal_id=object_id, roles=roles, kind="service" if service else "user", name=name)


def _claims(header: str) -> tuple[dict[str, list[str]], str, str]:
    """Claim type → values, and the principal's `name_typ` and `role_typ` ('' when absent)."""
    malformed = AuthError(f"{CLIENT_PRINCIPAL_HEADER} is not base64-encoded JSON with a claims list",
                          status=401)
    if len(header) > _MAX_CLIENT_PRINCIPAL:
        raise malformed
    try:
        text = header.strip()
        document: Any = parse_json(base64.b64decode(text + "=" * (-len(text) % 4), validate=True),
                                   _MAX_CLIENT_PRINCIPAL)
    except (binascii.Error, ValueError, MalformedBody):
        raise malformed from None
    if not isinstance(document, dict) or not isinstance(document.get("claims"), list):
        raise malformed
    out: dict[str, list[str]] = {}
    for claim in document["claims"]:
        if isinstance(claim, dict):
            typ, val = claim.get("typ"), claim.get("val")
            if isinstance(typ, str) and isinstance(val, str):
                out.setdefault(typ, []).append(val)
    name_type, role_type = (document.get(key) for key in ("name_typ", "role_typ"))
    return out, _text(name_type), _text(role_type)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
