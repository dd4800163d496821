"""How jitgate signs in to a PostgreSQL server: the password it presents, fetched for each connection.

Azure flexible servers take an Entra access token for the OSS RDBMS audience, Cloud SQL an OAuth token with
the `sqlservice.login` scope (IAM database authentication); both are short-lived and fetched (and cached)
by their SDKs, imported only when such a server is configured. A self-managed server takes a password read
from a file or an environment variable, never from the servers file itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ...domain.errors import PermanentError, TransientError
from ..databases.servers import Server

ENTRA_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
CLOUD_SQL_SCOPE = "https://www.googleapis.com/auth/sqlservice.login"


class SignIn(Protocol):
    """The password for jitgate's login on one server, fresh for each connection."""

    def password(self) -> str: ...


class TokenCredential(Protocol):
    """What azure-identity's credentials offer (only this is used)."""

    def get_token(self, *scopes: str) -> Any: ...


class GoogleCredentials(Protocol):
    """What google-auth's credentials offer (only this is used)."""

    token: str | None
    valid: bool

    def refresh(self, request: Any) -> None: ...


class PasswordFile:
    """A self-managed server's password, read from a file (a mounted secret) on each connection."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def password(self) -> str:
        try:
            secret = self.path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PermanentError(f"cannot read the password file {self.path}: {exc.strerror}") from None
        if not secret:
            raise PermanentError(f"the password file {self.path} is empty")
        return secret


class PasswordEnv:
    """A self-managed server's password, from an environment variable."""

    def __init__(self, name: str, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self._env = env

    def password(self) -> str:
        secret = (os.environ if self._env is None else self._env).get(self.name, "")
        if not secret:
            raise PermanentError(f"the environment variable {self.name} holding the password is not set")
        return secret


class EntraToken:
    """An Entra access token for Azure Database for PostgreSQL, as the password of jitgate's Entra login."""

    def __init__(self, credential: TokenCredential) -> None:
        self.credential = credential

    def password(self) -> str:
        try:
            return str(self.credential.get_token(ENTRA_SCOPE).token)
        except Exception as exc:
            raise TransientError(f"cannot get an Entra token for PostgreSQL: {exc}") from exc


class CloudSqlToken:
    """An OAuth access token for Cloud SQL IAM database authentication (refreshed when it expires)."""

    def __init__(self, credentials: GoogleCredentials, request: Any) -> None:
        self.credentials = credentials
        self._request = request

    def password(self) -> str:
        try:
            if not self.credentials.valid or not self.credentials.token:
                self.credentials.refresh(self._request)
        except Exception as exc:
            raise TransientError(f"cannot get an IAM token for Cloud SQL: {exc}") from exc
        if not self.credentials.token:
            raise TransientError("the Google credentials gave no token for Cloud SQL")
        return self.credentials.token


def sign_in_for(server: Server, azure_client_id: str = "") -> SignIn:
    """The sign-in a server's platform uses, its SDK imported only now."""
    if server.sign_in == "entra":
        from azure.identity import DefaultAzureCredential

        return EntraToken(DefaultAzureCredential(managed_identity_client_id=azure_client_id or None))
    if server.sign_in == "cloud-sql-iam":
        try:
            import google.auth  # type: ignore[import-not-found]
            from google.auth.transport.requests import Request  # type: ignore[import-not-found]
        except ImportError:
            raise PermanentError(
                f"server '{server.name}' is on Cloud SQL: install google-auth to sign in with an IAM token"
            ) from None
        credentials, _ = google.auth.default(scopes=[CLOUD_SQL_SCOPE])
        return CloudSqlToken(credentials, Request())
    if server.password_file is not None:
        return PasswordFile(server.password_file)
    return PasswordEnv(server.password_env or "")
