"""Google-shaped ID tokens from local RS256 keys, and a local server publishing those keys as Google publishes its
own at https://www.googleapis.com/oauth2/v3/certs: `{"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid",
"n", "e"}]}` with `Cache-Control: public, max-age=<seconds>`. The claims are those Google's ID tokens carry (OpenID
Connect, developers.google.com/identity/openid-connect): `iss` https://accounts.google.com, `aud`, `azp`, `sub`,
`email`, `email_verified`, `iat`, `exp`; a service account's token (metadata server, `format=full`) has the same."""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.azure.fake_http import Call, FakeHttpService, Reply

AUDIENCE = "https://jitgate-api-abc123-ew.a.run.app"
JANE = "jane@example.com"
BACKSTAGE = "backstage@platform-prod.iam.gserviceaccount.com"


class GoogleSigner:
    """One signing key (kid) and the tokens it signs."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def token(self, email: str | None = JANE, audience: str = AUDIENCE, expires_in: float = 3600,
              headers: dict[str, Any] | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": "https://accounts.google.com", "aud": audience,
                   "azp": "32555940559.apps.googleusercontent.com", "sub": "110169484474386276334",
                   "email": email, "email_verified": True,
                   "iat": now, "exp": int(now + expires_in), **claims}
        header = {k: v for k, v in {"kid": self.kid, **(headers or {})}.items() if v is not None}
        return jwt.encode({k: v for k, v in payload.items() if v is not None}, self.key, algorithm="RS256",
                          headers=header)


class GoogleCerts(FakeHttpService):
    """Publishes the signers' public keys at /oauth2/v3/certs; `publish` replaces them (Google's rotation)."""

    def __init__(self, *signers: GoogleSigner, max_age: int = 21600) -> None:
        super().__init__()
        self.signers = list(signers)
        self.max_age = max_age

    @property
    def certs_url(self) -> str:
        return f"{self.url}/oauth2/v3/certs"

    def publish(self, *signers: GoogleSigner) -> None:
        self.signers = list(signers)

    def route(self, call: Call) -> Reply:
        if call.method != "GET" or call.path != "/oauth2/v3/certs":
            return Reply(404, b"Not Found")
        return Reply(200, {"keys": [s.jwk() for s in self.signers]},
                     {"Cache-Control": f"public, max-age={self.max_age}, must-revalidate, no-transform"})
