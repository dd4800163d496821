"""Workload identity federation, Google Cloud → Entra ID, against a local metadata server and a local Entra token
endpoint that speak the real protocols: the metadata server's `identity` endpoint (Metadata-Flavor header, an
RS256 ID token from `https://accounts.google.com` for the audience asked), and Entra's v2.0 token endpoint over
TLS taking a `client_credentials` grant with a JWT-bearer client assertion, which it verifies against the Google
key and the app's federated credential (issuer, subject, audience) before it issues a token."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from shared.adapters.gcp.federation import federated_credential
from shared.runtime import build
from shared.settings import Settings
from tests.azure.fake_http import Call, FakeHttpService, Reply

pytestmark = pytest.mark.gcp

GOOGLE = "https://accounts.google.com"
AUDIENCE = "api://AzureADTokenExchange"
ACCOUNT_ID = "108395617284519203746"  # the service account's unique id: the federated credential's subject
ACCOUNT = "jitgate-functions@jitgate-prod.iam.gserviceaccount.com"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
APP = "0a1b2c3d-0000-4000-8000-00000000abcd"
COSMOS_SCOPE = "https://cosmos.azure.com/.default"


class FakeMetadataServer(FakeHttpService):
    """`GET /computeMetadata/v1/instance/service-accounts/default/identity?audience=...&format=full`."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key
        super().__init__()

    def route(self, call: Call) -> Reply:
        if call.headers.get("metadata-flavor") != "Google":
            return Reply(403, b"Missing required header: Metadata-Flavor")
        if call.path != "/computeMetadata/v1/instance/service-accounts/default/identity":
            return Reply(404, b"Not Found", {"Metadata-Flavor": "Google"})
        if not call.query.get("audience"):
            return Reply(400, b"non-empty audience parameter required", {"Metadata-Flavor": "Google"})
        now = int(time.time())
        claims = {"iss": GOOGLE, "aud": call.query["audience"], "sub": ACCOUNT_ID, "azp": ACCOUNT_ID,
                  "iat": now, "exp": now + 3600}
        if call.query.get("format") == "full":
            claims |= {"email": ACCOUNT, "email_verified": True}
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "google-key-1"})
        return Reply(200, token.encode(), {"Metadata-Flavor": "Google", "Content-Type": "text/html"})


class FakeEntra(FakeHttpService):
    """`POST /<tenant>/oauth2/v2.0/token`, client credentials with a federated client assertion."""

    def __init__(self, tls: ssl.SSLContext, google_key: rsa.RSAPublicKey, subject: str) -> None:
        self.google_key, self.subject = google_key, subject
        super().__init__(tls)

    def route(self, call: Call) -> Reply:
        if call.method != "POST" or call.path != f"/{TENANT}/oauth2/v2.0/token":
            return Reply(404, {"error": "not_found"})
        form = {k: v[-1] for k, v in parse_qs(call.body.decode()).items()}
        if form.get("grant_type") != "client_credentials" or form.get("client_id") != APP:
            return self._error("unauthorized_client", "AADSTS700016: Application not found in the directory.")
        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return self._error("invalid_request", "AADSTS7000218: client_assertion or client_secret is required.")
        try:
            claims = jwt.decode(form.get("client_assertion", ""), self.google_key, algorithms=["RS256"],
                                audience=AUDIENCE, issuer=GOOGLE)
        except jwt.PyJWTError as exc:
            return self._error("invalid_client", f"AADSTS700211/700212: the assertion failed validation: {exc}")
        if claims["sub"] != self.subject:
            return self._error("invalid_client", "AADSTS700213: No matching federated identity record found for "
                               f"presented assertion subject '{claims['sub']}'.")
        return Reply(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                           "access_token": f"entra-token-for-{APP}-scope-{form.get('scope')}"})

    @staticmethod
    def _error(code: str, description: str) -> Reply:
        return Reply(400 if code != "invalid_client" else 401, {"error": code, "error_description": description,
                                                                  "error_codes": [int(description[6:12])]})


def _tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "entra.pem", tmp_path / "entra.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


@pytest.fixture
def google_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def metadata(google_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMetadataServer]:
    server = FakeMetadataServer(google_key)
    monkeypatch.setenv("GCE_METADATA_HOST", server.url.removeprefix("http://"))
    yield server
    server.close()


def _entra(tmp_path: Path, google_key: rsa.RSAPrivateKey, subject: str, monkeypatch: pytest.MonkeyPatch) -> FakeEntra:
    context, cert = _tls(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # the client trusts the local endpoint's certificate
    return FakeEntra(context, google_key.public_key(), subject)


def test_the_google_id_token_is_exchanged_for_an_entra_token_without_a_secret(
    tmp_path: Path, google_key: rsa.RSAPrivateKey, metadata: FakeMetadataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    entra = _entra(tmp_path, google_key, ACCOUNT_ID, monkeypatch)
    try:
        credential = federated_credential(TENANT, APP, AUDIENCE, authority=entra.url)
        token = credential.get_token(COSMOS_SCOPE)
        assert token.token == f"entra-token-for-{APP}-scope-{COSMOS_SCOPE}"
        # the metadata server was asked as the protocol wants, for Entra's token-exchange audience
        [asked] = metadata.calls
        assert asked.headers["metadata-flavor"] == "Google"
        assert (asked.query["audience"], asked.query["format"]) == (AUDIENCE, "full")
        # and a second token within the first one's life comes from the credential's cache
        credential.get_token(COSMOS_SCOPE)
        assert len(entra.calls) == 1
    finally:
        entra.close()


def test_an_app_that_trusts_another_account_refuses_the_exchange(
    tmp_path: Path, google_key: rsa.RSAPrivateKey, metadata: FakeMetadataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    entra = _entra(tmp_path, google_key, "999999999999999999999", monkeypatch)
    try:
        with pytest.raises(ClientAuthenticationError, match="AADSTS700213"):
            federated_credential(TENANT, APP, AUDIENCE, authority=entra.url).get_token(COSMOS_SCOPE)
    finally:
        entra.close()


def test_no_identity_from_the_metadata_server_is_a_clear_error(
    tmp_path: Path, google_key: rsa.RSAPrivateKey, metadata: FakeMetadataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    entra = _entra(tmp_path, google_key, ACCOUNT_ID, monkeypatch)
    metadata.fail("GET", "/identity", Reply(404, b"service account not found", {"Metadata-Flavor": "Google"}))
    try:
        with pytest.raises(Exception, match="no ID token from the metadata server"):
            federated_credential(TENANT, APP, AUDIENCE, authority=entra.url).get_token(COSMOS_SCOPE)
        assert entra.calls == []
    finally:
        entra.close()


def test_gcp_mode_keeps_its_state_in_cosmos_through_the_federated_credential(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "JITGATE_MODE": "gcp", "JITGATE_PROVIDERS": "local", "JITGATE_GCP_PROJECT": "p",
        "JITGATE_TASKS_QUEUE": "projects/p/locations/l/queues/q", "JITGATE_TASKS_SERVICE_ACCOUNT": ACCOUNT,
        "JITGATE_COSMOS_ENDPOINT": "https://jitgate.documents.azure.com:443/", "JITGATE_ENTRA_TENANT_ID": TENANT,
        "JITGATE_ENTRA_CLIENT_ID": APP, "JITGATE_DATA_DIR": str(tmp_path),
    })
    runtime = build(settings)  # nothing connects
    assert runtime.backend_names["store"] == "cosmos"
    assert runtime.backend_names["bus"] == "pubsub"
    missing = Settings.from_env({"JITGATE_MODE": "gcp"}).missing_gcp_settings()
    assert missing == ["JITGATE_GCP_PROJECT", "JITGATE_TASKS_QUEUE", "JITGATE_TASKS_SERVICE_ACCOUNT",
                       "JITGATE_COSMOS_ENDPOINT", "JITGATE_ENTRA_TENANT_ID", "JITGATE_ENTRA_CLIENT_ID"]


def test_gcp_mode_grants_google_roles_and_reads_cloud_identity_groups_as_the_terraform_configures_it(
    tmp_path: Path,
) -> None:
    settings = Settings.from_env({
        "JITGATE_MODE": "gcp", "JITGATE_PROVIDERS": "gcp-iam", "JITGATE_GCP_PROJECT": "p",
        "JITGATE_GCP_GRANT_SCOPES": "projects/payments-prod", "JITGATE_GCP_GROUPS": "sre-leads=groups/abc123",
        "JITGATE_TASKS_QUEUE": "projects/p/locations/l/queues/q", "JITGATE_TASKS_SERVICE_ACCOUNT": ACCOUNT,
        "JITGATE_COSMOS_ENDPOINT": "https://jitgate.documents.azure.com:443/", "JITGATE_ENTRA_TENANT_ID": TENANT,
        "JITGATE_ENTRA_CLIENT_ID": APP, "JITGATE_DATA_DIR": str(tmp_path),
    })
    runtime = build(settings)  # nothing connects
    assert runtime.backend_names["grants"] == "gcp-iam"
    assert runtime.backend_names["directory"] == "cloud-identity"
