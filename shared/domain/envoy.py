"""Access through Envoy (ARCHITECTURE "Access through Envoy"): who the caller is, which route a grant opens, and
the decision Envoy's ext_authz filter asks for before each request.

jitgate is its own grant plane here: a grant on provider `envoy` is an active hold in the ledger, its scope
`<service>[/<route prefix>]`, its role `read` or `write` (a set of methods). A decision is taken from an index of
those holds and compares each hold's expiry with now, so access ends at `expiresAt` whether or not the revoke
has run yet.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .ids import is_principal_id
from .json_body import MalformedBody, parse_json
from .ledger import GrantKey, Hold, HoldStatus

PROVIDER = "envoy"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ROLE_METHODS = {"read": READ_METHODS, "write": READ_METHODS | {"POST", "PUT", "PATCH", "DELETE"}}
ENTRA_AUTHORITY = "https://login.microsoftonline.com"
MAX_PAYLOAD_BYTES = 16 * 1024
# NB. Envoy's jwt_authn allows this much clock skew by default (clock_skew_seconds); jitgate allows the same when
# it checks the forwarded payload's expiry again, so that the two never disagree about a token.
CLOCK_SKEW = timedelta(seconds=60)
# Percent-encodings that would turn into a separator or a dot segment once the upstream decodes the path.
_SMUGGLED = ("%2f", "%5c", "%2e", "%00", "\\")


def entra_issuer(tenant_id: str) -> str:
    """The `iss` of an Entra ID v2.0 token of the tenant."""
    return f"{ENTRA_AUTHORITY}/{tenant_id}/v2.0"


class Unauthenticated(Exception):
    """The forwarded identity is missing or is not one this deployment trusts; the reason says which."""


@dataclass(frozen=True, slots=True)
class Caller:
    """A person as the verified token names them: Entra object id, tenant, the sign-in name (for words), and until
    when the token holds."""

    principal_id: str
    tenant_id: str
    username: str
    expires_at: datetime

    def expired(self, now: datetime) -> bool:
        return self.expires_at + CLOCK_SKEW <= now


def caller_from_payload(header: str | None, issuer: str, audience: str, now: datetime) -> Caller:
    """The caller named by the payload Envoy's jwt_authn forwarded (base64url JSON of a token it verified).

    Checked again here, cheaply: the issuer, the protected service's audience, the tenant and the expiry. A
    misconfigured Envoy that verified a token for another app or tenant does not open this service.
    """
    if not header:
        raise Unauthenticated("no verified token was forwarded")
    try:
        raw = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        claims = parse_json(raw, MAX_PAYLOAD_BYTES)
    except (binascii.Error, ValueError, MalformedBody) as exc:
        raise Unauthenticated(f"the forwarded token payload is not base64url JSON: {exc}") from None
    if not isinstance(claims, dict):
        raise Unauthenticated("the forwarded token payload is not a JSON object")
    if claims.get("iss") != issuer:
        raise Unauthenticated("the token was issued by someone else")
    aud = claims.get("aud")
    if aud != audience and not (isinstance(aud, list) and audience in aud):
        raise Unauthenticated("the token is meant for another application")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise Unauthenticated("the token has no expiry")
    oid, tid = claims.get("oid"), claims.get("tid")
    if not isinstance(oid, str) or not is_principal_id(oid.lower()):
        raise Unauthenticated("the token names no Entra object id (oid)")
    if not isinstance(tid, str) or issuer != entra_issuer(tid):
        raise Unauthenticated("the token's tenant (tid) is not its issuer's")
    username = claims.get("preferred_username")
    try:
        expires_at = datetime.fromtimestamp(exp, UTC)
    except (OverflowError, ValueError, OSError):
        raise Unauthenticated("the token's expiry is no time") from None
    caller = Caller(oid.lower(), tid.lower(), username if isinstance(username, str) else "", expires_at)
    if caller.expired(now):
        raise Unauthenticated("the token has expired")
    return caller


def path_segments(path: str) -> tuple[str, ...] | None:
    """A request path (as sent, query removed) as segments; None for one that could mean another path once
    decoded or normalised (encoded slashes or dots, dot segments, empty segments): such a request is refused."""
    if not path.startswith("/"):
        return None
    lowered = path.lower()
    if any(s in lowered for s in _SMUGGLED):
        return None
    segments = tuple(path[1:].split("/"))
    if segments == ("",):
        return ()
    if any(s in ("", ".", "..") for s in segments[:-1]) or segments[-1] in (".", ".."):
        return None
    return segments if segments[-1] else segments[:-1]


@dataclass(frozen=True, slots=True)
class Route:
    """What an envoy scope opens: one service, and the paths at or below a prefix (segment by segment, so that
    `/api/v1` covers `/api/v1/x` and not `/api/v10`)."""

    service: str
    prefix: tuple[str, ...]

    @classmethod
    def of_scope(cls, scope: str) -> Route:
        service, *prefix = scope.split("/")
        return cls(service, tuple(prefix))

    def covers(self, service: str, segments: tuple[str, ...]) -> bool:
        return service == self.service and segments[: len(self.prefix)] == self.prefix

    @property
    def path(self) -> str:
        return "/" + "/".join(self.prefix)


@dataclass(frozen=True, slots=True)
class Entry:
    """One active hold as a decision sees it."""

    request_id: str
    key: GrantKey
    route: Route
    methods: frozenset[str]
    expires_at: datetime

    @classmethod
    def of(cls, hold: Hold) -> Entry:
        return cls(hold.request_id, hold.key, Route.of_scope(hold.scope),
                   ROLE_METHODS.get(hold.role_definition_id, frozenset()), hold.expires_at)


@dataclass(frozen=True, slots=True)
class Decision:
    """Allowed or not, why, and the grant it is counted against: the one that allowed it, or for a refusal the
    caller's grant on the same service that did not cover the request (None when there is none)."""

    allowed: bool
    reason: str
    entry: Entry | None = None


class AccessIndex:
    """The active holds of provider `envoy`, by principal. Immutable: a refresh builds a new one."""

    def __init__(self, holds: Iterable[Hold] = ()) -> None:
        by_principal: dict[str, list[Entry]] = {}
        for hold in holds:
            if hold.provider == PROVIDER and hold.status is HoldStatus.ACTIVE:
                by_principal.setdefault(hold.principal_id, []).append(Entry.of(hold))
        self._entries = {p: _latest_first(e) for p, e in by_principal.items()}

    def with_key(self, key: GrantKey, holds: Iterable[Hold]) -> AccessIndex:
        """This index with one grant key's entries replaced by its active `holds` (that key changed)."""
        changed = AccessIndex(h for h in holds if h.key == key)
        entries = [e for e in self._entries.get(key.principal_id, ()) if e.key != key]
        entries += changed._entries.get(key.principal_id, ())
        index = AccessIndex()
        index._entries = {p: e for p, e in self._entries.items() if p != key.principal_id}
        if entries:
            index._entries[key.principal_id] = _latest_first(entries)
        return index

    @property
    def request_ids(self) -> frozenset[str]:
        return frozenset(e.request_id for entries in self._entries.values() for e in entries)

    def __len__(self) -> int:
        return sum(len(e) for e in self._entries.values())

    def decide(self, principal_id: str, service: str, method: str, segments: tuple[str, ...] | None,
               now: datetime) -> Decision:
        """Allowed while one of the principal's holds covers the service, the path and the method and its
        expiry is still ahead."""
        entries = [e for e in self._entries.get(principal_id, ()) if e.route.service == service]
        if segments is None:
            return Decision(False, "the path is not in canonical form", entries[0] if entries else None)
        covering = [e for e in entries if e.route.covers(service, segments)]
        for entry in covering:
            if method in entry.methods and entry.expires_at > now:
                return Decision(True, "granted", entry)
        if not entries:
            return Decision(False, f"you hold no grant on {service}")
        if not covering:
            routes = ", ".join(sorted({e.route.path for e in entries}))
            return Decision(False, f"your grant on {service} covers {routes}, not this path", entries[0])
        live = [e for e in covering if e.expires_at > now]
        if not live:
            return Decision(False, f"your grant on {service} has expired", covering[0])
        return Decision(False, f"your grant on {service} does not allow {method}", live[0])


def _latest_first(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    return tuple(sorted(entries, key=lambda e: e.expires_at, reverse=True))


def usage_summary(first_use: datetime | None, allowed: int, denied: int, last_use: datetime | None,
                  service: str) -> dict[str, Any]:
    """The data of an `activity.summary` event for a grant used through Envoy."""
    return {
        "source": "envoy",
        "service": service,
        "firstUse": first_use.isoformat() if first_use else None,
        "lastUse": last_use.isoformat() if last_use else None,
        "allowed": allowed,
        "denied": denied,
    }
