"""The API's callers on Google Cloud: Google-signed ID tokens verified against Google's published keys (a local
server publishing them as Google does), the caller named as the IAM member the request schema uses, roles from
JITGATE_GCP_ROLES; every other caller refused with 401 and a reason."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import jwt
import pytest

from shared.domain.errors import AuthError, TransientError
from shared.google_identity import REFETCH_INTERVAL, RETRY_INTERVAL, GoogleIdTokens, GoogleKeys
from shared.identity import ADMIN, AUDITOR, SUBMITTER, caller_from
from shared.settings import Settings, SettingsError
from tests.azure.fake_http import Reply
from tests.fakes.grants import FakeDirectory
from tests.gcp.google_tokens import AUDIENCE, BACKSTAGE, JANE, GoogleCerts, GoogleSigner

pytestmark = pytest.mark.gcp

GCP = Settings(mode="gcp")
PAGES_CLIENT = "1234567890-backstage.apps.googleusercontent.com"  # the OAuth client people sign in to Backstage with
ROLES = ((SUBMITTER, f"serviceAccount:{BACKSTAGE}"), (AUDITOR, "group:auditors"), (ADMIN, "user:root@example.com"))
SIGNER = GoogleSigner("key-1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def certs() -> Iterator[GoogleCerts]:
    server = GoogleCerts(SIGNER)
    yield server
    server.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def google(certs: GoogleCerts, clock: Clock) -> GoogleIdTokens:
    directory = FakeDirectory({"auditors": {"user:audrey@example.com"}})
    return GoogleIdTokens((AUDIENCE, PAGES_CLIENT), ROLES, directory, GoogleKeys(certs.certs_url, clock=clock))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refused(google: GoogleIdTokens, headers: dict[str, str]) -> str:
    with pytest.raises(AuthError) as caught:
        caller_from(headers, GCP, google)
    assert caught.value.status == 401
    return str(caught.value)


# ---------------------------------------------------------------- who the caller is


def test_a_person_is_the_user_member_of_their_verified_address(google: GoogleIdTokens) -> None:
    caller = caller_from(bearer(SIGNER.token("Jane@Example.com", name="Jane Doe")), GCP, google)
    assert (caller.principal_id, caller.kind, caller.name) == ("user:jane@example.com", "user", "Jane Doe")
    assert caller.roles == frozenset()
    # a person asks for themselves only, spelled as the request schema spells Google principals
    assert caller.may_submit_for("user:jane@example.com")
    assert not caller.may_submit_for("user:john@example.com")


def test_a_service_account_is_a_service_with_the_roles_configured_for_it(google: GoogleIdTokens) -> None:
    caller = caller_from(bearer(SIGNER.token(BACKSTAGE, email_verified=None)), GCP, google)
    assert (caller.principal_id, caller.kind) == (f"serviceAccount:{BACKSTAGE}", "service")
    assert caller.roles == {SUBMITTER}
    assert caller.may_submit_for("user:john@example.com")


def test_roles_come_from_members_and_from_policy_groups_through_the_directory(google: GoogleIdTokens) -> None:
    assert caller_from(bearer(SIGNER.token("audrey@example.com")), GCP, google).is_auditor
    assert caller_from(bearer(SIGNER.token("root@example.com")), GCP, google).is_admin
    assert not caller_from(bearer(SIGNER.token("mallory@example.com")), GCP, google).is_auditor


def test_a_person_s_token_may_be_for_the_oauth_client_they_signed_in_with(google: GoogleIdTokens) -> None:
    token = SIGNER.token(audience=PAGES_CLIENT, azp=PAGES_CLIENT)
    assert caller_from(bearer(token), GCP, google).principal_id == "user:jane@example.com"


def test_the_issuer_may_be_spelled_without_its_scheme_as_google_also_does(google: GoogleIdTokens) -> None:
    token = SIGNER.token(iss="accounts.google.com")
    assert caller_from(bearer(token), GCP, google).principal_id == "user:jane@example.com"


def test_a_token_expired_within_the_leeway_is_still_accepted(google: GoogleIdTokens) -> None:
    assert caller_from(bearer(SIGNER.token(expires_in=-10)), GCP, google).principal_id == "user:jane@example.com"


# ---------------------------------------------------------------- refusals


def _hs256() -> str:
    # NB. The algorithm-confusion forgery: HMAC keyed with something public, sent as if Google had signed it.
    claims = {"iss": "https://accounts.google.com", "aud": AUDIENCE, "email": JANE}
    return jwt.encode(claims, "the public key, as bytes, which anyone has", algorithm="HS256",
                      headers={"kid": SIGNER.kid})


def _unsigned() -> str:
    def part(doc: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'kid': SIGNER.kid})}.{part({'aud': AUDIENCE, 'email': JANE})}."


REFUSALS = {
    "no header": ({}, "not authenticated: send Authorization: Bearer"),
    "another scheme": ({"Authorization": "Basic amFuZTpzZWNyZXQ="}, "is not 'Bearer <ID token>'"),
    "an empty bearer": ({"Authorization": "Bearer "}, "is not 'Bearer <ID token>'"),
    "not a JWT": (bearer("not-a-token"), "it is not a JSON Web Token"),
    "too long": (bearer("a" * 9000), "longer than 8192 characters"),
    "signature removed by Cloud Run": (bearer(SIGNER.token().rsplit(".", 1)[0] + ".SIGNATURE_REMOVED_BY_GOOGLE"),
                                       "send the token for Cloud Run in X-Serverless-Authorization"),
    "forged with our kid": (bearer(GoogleSigner(SIGNER.kid).token()), "signature does not verify"),
    "a key Google does not publish": (bearer(GoogleSigner("key-9").token()), "Google does not publish"),
    "HS256": (bearer(_hs256()), "signed with 'HS256'"),
    "unsigned": (bearer(_unsigned()), "signed with 'none'"),
    "no kid": (bearer(SIGNER.token(headers={"kid": None})), "names no signing key"),
    "another audience": (bearer(SIGNER.token(audience="https://other.run.app")), "another audience"),
    "another issuer": (bearer(SIGNER.token(iss="https://evil.example.com")), "its issuer is"),
    "expired": (bearer(SIGNER.token(expires_in=-120)), "it has expired"),
    "issued in the future": (bearer(SIGNER.token(iat=2**33)), "issued in the future"),
    "no expiry": (bearer(SIGNER.token(exp=None)), "no 'exp' claim"),
    "unverified address": (bearer(SIGNER.token(email_verified=False)), "has not verified the e-mail"),
    "verification not said": (bearer(SIGNER.token(email_verified=None)), "has not verified the e-mail"),
    "no e-mail (format=standard)": (bearer(SIGNER.token(email=None)), "format=full"),
    "not an IAM member address": (bearer(SIGNER.token(email="jane:x@example.com")), "not an e-mail address IAM"),
    "App Service's header": ({**bearer(SIGNER.token()), "X-MS-CLIENT-PRINCIPAL": "e30="}, "not in gcp mode"),
    "development headers": ({**bearer(SIGNER.token()), "X-Jitgate-Dev-Principal": "user:jane@example.com"},
                            "refused outside local mode"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_every_other_caller_is_refused_with_its_reason(google: GoogleIdTokens, case: str) -> None:
    headers, reason = REFUSALS[case]
    assert reason in refused(google, headers)


def test_without_a_verifier_gcp_mode_refuses_rather_than_trusting_anything() -> None:
    with pytest.raises(AuthError, match="JITGATE_GCP_API_AUDIENCE is not set") as caught:
        caller_from(bearer(SIGNER.token()), GCP)
    assert caught.value.status == 401


# ---------------------------------------------------------------- Google's keys


def test_keys_are_fetched_once_and_again_when_google_rotates_to_an_unknown_key(
    google: GoogleIdTokens, certs: GoogleCerts, clock: Clock
) -> None:
    for _ in range(3):
        caller_from(bearer(SIGNER.token()), GCP, google)
    assert google.keys.fetches == 1
    # Google publishes a new key and signs with it: the unknown kid is fetched once, after the interval
    rotated = GoogleSigner("key-2")
    certs.publish(SIGNER, rotated)
    clock.now += REFETCH_INTERVAL
    assert caller_from(bearer(rotated.token()), GCP, google).principal_id == "user:jane@example.com"
    assert google.keys.fetches == 2


def test_made_up_key_ids_cost_google_one_fetch_per_interval(
    google: GoogleIdTokens, certs: GoogleCerts, clock: Clock
) -> None:
    caller_from(bearer(SIGNER.token()), GCP, google)
    clock.now += REFETCH_INTERVAL
    for n in range(50):
        assert "Google does not publish" in refused(google, bearer(SIGNER.token(headers={"kid": f"made-up-{n}"})))
    assert google.keys.fetches == 2
    assert len(certs.calls) == 2


def test_keys_are_fetched_again_when_google_s_max_age_runs_out(
    google: GoogleIdTokens, certs: GoogleCerts, clock: Clock
) -> None:
    caller_from(bearer(SIGNER.token()), GCP, google)
    clock.now += certs.max_age
    caller_from(bearer(SIGNER.token()), GCP, google)
    assert google.keys.fetches == 2


def test_keys_google_cannot_serve_are_a_503_not_a_refusal_and_known_keys_outlive_an_outage(
    google: GoogleIdTokens, certs: GoogleCerts, clock: Clock
) -> None:
    certs.fail("GET", "/oauth2/v3/certs", _server_error())
    for _ in range(3):  # tried once, then again only after RETRY_INTERVAL
        with pytest.raises(TransientError, match="could not be read"):
            caller_from(bearer(SIGNER.token()), GCP, google)
    assert google.keys.fetches == 1
    clock.now += RETRY_INTERVAL
    caller_from(bearer(SIGNER.token()), GCP, google)
    assert google.keys.fetches == 2
    # WHEN Google's endpoint fails as the keys' max-age runs out THEN the keys held keep serving, fetched once a while
    clock.now += certs.max_age
    certs.fail("GET", "/oauth2/v3/certs", _server_error(), times=2)
    for _ in range(5):
        assert caller_from(bearer(SIGNER.token()), GCP, google).principal_id == "user:jane@example.com"
    assert google.keys.fetches == 3
    clock.now += RETRY_INTERVAL
    caller_from(bearer(SIGNER.token()), GCP, google)
    assert google.keys.fetches == 4


def _server_error() -> Reply:
    return Reply(503, b"Service Unavailable")


# ---------------------------------------------------------------- settings


def test_roles_are_read_from_their_setting() -> None:
    settings = Settings.from_env({"JITGATE_GCP_ROLES": f"Jit.Submitter=serviceAccount:{BACKSTAGE.upper()}, "
                                                       "Jit.Auditor=group:auditors,Jit.Auditor=user:a@example.com"})
    assert settings.gcp_roles == ((SUBMITTER, f"serviceAccount:{BACKSTAGE}"), (AUDITOR, "group:auditors"),
                                  (AUDITOR, "user:a@example.com"))


@pytest.mark.parametrize(("value", "problem"), [
    ("Jit.Approver=user:a@example.com", "names no role of jitgate (Jit.Submitter, Jit.Auditor, Jit.Admin)"),
    ("Jit.Auditor", "is not <role>=<member>"),
    ("Jit.Auditor=group:auditors@example.com", "names a policy group (map it to a Google group"),
    ("Jit.Auditor=domain:example.com", "is not user:<email>, serviceAccount:<email> or group:<policy group>"),
    ("Jit.Auditor=user:nobody", "is not user:<email>"),
])
def test_a_bad_role_setting_is_named_at_start(value: str, problem: str) -> None:
    with pytest.raises(SettingsError, match="JITGATE_GCP_ROLES") as caught:
        Settings.from_env({"JITGATE_GCP_ROLES": value})
    assert problem in str(caught.value)
