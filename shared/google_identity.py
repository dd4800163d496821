"""Who is calling the HTTP API on Google Cloud: a Google-signed ID token, verified here (docs/architecture.md §7.2).

The caller sends `Authorization: Bearer <ID token>`: a person's from the OAuth client they signed in with (its client
id is then the audience), a service account's from the metadata server's `identity` endpoint with `format=full` or
IAM Credentials' `generateIdToken` with `includeEmail`. jitgate checks the RS256 signature against Google's published
keys (JWKS), the issuer, the audience (one of `JITGATE_GCP_API_AUDIENCE`), the expiry with a small leeway, and for a
person that Google verified the e-mail address. The caller is the IAM member the request schema uses:
`user:<email>`, or `serviceAccount:<email>` for `*.gserviceaccount.com`.

Google tokens carry no app roles: `JITGATE_GCP_ROLES` gives them to members, or to policy groups, whose members the
Directory port answers (the policy file, or Cloud Identity through `JITGATE_GCP_GROUPS`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import httpx
import jwt

from .domain.errors import AuthError, TransientError
from .domain.ids import google_principal
from .identity import Caller, CallerKind
from .ports import Directory

log = logging.getLogger("jitgate.identity")

GOOGLE_CERTS_URL: Final = "https://www.googleapis.com/oauth2/v3/certs"
GOOGLE_ISSUERS: Final = frozenset({"accounts.google.com", "https://accounts.google.com"})
SERVICE_ACCOUNT_DOMAIN: Final = ".gserviceaccount.com"
LEEWAY_SECONDS: Final = 30
# NB. An unknown key id makes us fetch Google's keys again (they rotate), but at most once in this interval: a
# stream of tokens with made-up key ids must not become a stream of requests to Google.
REFETCH_INTERVAL: Final = 60.0
RETRY_INTERVAL: Final = 5.0  # after a failed fetch
DEFAULT_KEYS_LIFETIME: Final = 3600.0  # when Google's answer carries no Cache-Control max-age
MAX_TOKEN_CHARS: Final = 8 * 1024
# What Cloud Run leaves of a token its IAM check consumed: the signature is replaced by this text.
REMOVED_SIGNATURE: Final = "SIGNATURE_REMOVED_BY_GOOGLE"


def _refused(reason: str) -> AuthError:
    return AuthError(f"Google ID token refused: {reason}", status=401)


class GoogleKeys:
    """Google's signing keys by key id, fetched from `url` and kept for the lifetime Google gives them
    (Cache-Control max-age); fetched again early, at most once per REFETCH_INTERVAL, for a key id not among them.
    After a failed fetch the next is tried RETRY_INTERVAL later, and until then known keys still serve."""

    def __init__(self, url: str = GOOGLE_CERTS_URL, http: httpx.Client | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self._http = http or httpx.Client(timeout=5.0)
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fresh_until = float("-inf")
        self._fetched_at = float("-inf")
        self._failure = ""  # why the last fetch failed; '' after a good one
        self.fetches = 0

    def key(self, kid: str) -> jwt.PyJWK:
        """The key `kid`; AuthError(401) when Google does not publish it, TransientError when Google's keys cannot
        be read and this one is not already known."""
        with self._lock:
            now = self._clock()
            wait = RETRY_INTERVAL if self._failure else REFETCH_INTERVAL
            if now - self._fetched_at >= wait and (now >= self._fresh_until or kid not in self._keys):
                self._fetch(now)
            found, failure = self._keys.get(kid), self._failure
        if found is None and failure:
            raise TransientError(f"Google's signing keys could not be read from {self.url}: {failure}",
                                 retry_after=RETRY_INTERVAL)
        if found is None:
            raise _refused(f"it is signed with key {kid[:64]!r}, which Google does not publish")
        return found

    def _fetch(self, now: float) -> None:
        self._fetched_at = now
        self.fetches += 1
        try:
            response = self._http.get(self.url)
            response.raise_for_status()
            keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(response.json()).keys if k.key_id}
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
            # NB. Google publishes a new key well before it signs with it and keeps the old one after, so the keys
            # we hold stay right through a short outage of the certs endpoint.
            self._failure = str(exc)[:200] or type(exc).__name__
            log.warning("Google's signing keys could not be read from %s: %s", self.url, self._failure)
            return
        self._keys, self._failure = keys, ""
        self._fresh_until = now + _max_age(response.headers.get("cache-control", ""))


def _max_age(cache_control: str) -> float:
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() == "max-age" and value.isdigit():
            return float(value)
    return DEFAULT_KEYS_LIFETIME


class GoogleIdTokens:
    """Turns an `Authorization` header into a Caller (see the module docstring). `roles`: the parsed
    `JITGATE_GCP_ROLES`, (role, member) with member `user:<email>`, `serviceAccount:<email>` or `group:<policy
    group>`."""

    def __init__(self, audiences: tuple[str, ...], roles: tuple[tuple[str, str], ...], directory: Directory,
                 keys: GoogleKeys | None = None) -> None:
        self.audiences = audiences
        self.roles = roles
        self.directory = directory
        self.keys = keys or GoogleKeys()

    def caller(self, authorization: str | None) -> Caller:
        """The caller the bearer token names; AuthError(401) saying why when there is none."""
        if authorization is None:
            raise AuthError("not authenticated: send Authorization: Bearer <a Google-signed ID token for "
                            f"audience {self.audiences[0]}>", status=401)
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _refused("the Authorization header is not 'Bearer <ID token>'")
        claims = self.verified_claims(token)
        principal_id, kind = _principal(claims)
        return Caller(principal_id=principal_id, roles=self.roles_of(principal_id), kind=kind,
                      name=_text(claims.get("name")) or principal_id.partition(":")[2])

    def verified_claims(self, token: str) -> Mapping[str, Any]:
        """The claims of a token Google signed for this audience and that has not expired."""
        if len(token) > MAX_TOKEN_CHARS:
            raise _refused(f"it is longer than {MAX_TOKEN_CHARS} characters")
        if token.endswith(f".{REMOVED_SIGNATURE}"):
            raise _refused("Cloud Run's IAM check used it and removed its signature; send the token for Cloud Run "
                           "in X-Serverless-Authorization and the one for jitgate in Authorization")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise _refused("it is not a JSON Web Token") from None
        if header.get("alg") != "RS256":
            raise _refused(f"it is signed with {str(header.get('alg'))[:16]!r}; Google signs ID tokens with RS256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _refused("its header names no signing key (kid)")
        key = self.keys.key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=["RS256"], audience=list(self.audiences), leeway=LEEWAY_SECONDS,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]},
            )
        except jwt.InvalidSignatureError:
            raise _refused(f"its signature does not verify against Google's key {kid[:64]!r}") from None
        except jwt.ExpiredSignatureError:
            raise _refused("it has expired") from None
        except jwt.InvalidAudienceError:
            raise _refused(f"it is for another audience; this API accepts {', '.join(self.audiences)}") from None
        except jwt.ImmatureSignatureError:
            raise _refused("it is issued in the future") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _refused(f"it has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise _refused(f"it is not a valid ID token ({exc})") from None
        if claims["iss"] not in GOOGLE_ISSUERS:
            raise _refused(f"its issuer is {str(claims['iss'])[:80]!r}, not Google (https://accounts.google.com)")
        return claims

    def roles_of(self, principal_id: str) -> frozenset[str]:
        """The roles JITGATE_GCP_ROLES gives this member, directly or through a policy group."""
        wanted = {_policy_group(member) for _, member in self.roles} - {""}
        groups = self.directory.groups_of(principal_id) if wanted else frozenset()
        return frozenset(role for role, member in self.roles
                         if member == principal_id or _policy_group(member) in groups)


def _policy_group(member: str) -> str:
    """The policy group a `group:<name>` member names; '' for a person or a service account."""
    kind, _, name = member.partition(":")
    return name if kind == "group" else ""


def _principal(claims: Mapping[str, Any]) -> tuple[str, CallerKind]:
    email = _text(claims.get("email")).lower()
    if not email:
        raise _refused("it carries no e-mail address; a service account asks the metadata server for "
                       "format=full (or IAM Credentials generateIdToken with includeEmail)")
    kind: CallerKind = "service" if email.endswith(SERVICE_ACCOUNT_DOMAIN) else "user"
    # NB. Google sends a JSON boolean; some older token endpoints sent the string "true".
    if kind == "user" and claims.get("email_verified") not in (True, "true"):
        raise _refused(f"Google has not verified the e-mail address {email[:80]!r}")
    principal_id = google_principal(f"{'serviceAccount' if kind == 'service' else 'user'}:{email}")
    if principal_id is None:
        raise _refused(f"{email[:80]!r} is not an e-mail address IAM names a member by")
    return principal_id, kind


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
