"""Workload identity federation from Google Cloud to Entra ID: the functions reach the Cosmos DB store with no
secret. The function's Google service account asks the metadata server for an ID token whose audience is
Entra's token exchange (`api://AzureADTokenExchange`); an Entra app holds a federated credential trusting that
service account (issuer `https://accounts.google.com`, subject its numeric unique id), so Entra exchanges the ID
token, sent as a client assertion, for an access token of the app. azure-identity's ClientAssertionCredential
does the exchange and caches the token; the ID token is fetched again each time it asks (the metadata server
caches those itself).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ...domain.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

METADATA_HOST = "metadata.google.internal"  # GCE_METADATA_HOST overrides it, as in google-auth
IDENTITY_PATH = "/computeMetadata/v1/instance/service-accounts/default/identity"
TIMEOUT = 5.0


def google_id_token(audience: str) -> str:
    """A Google-signed ID token of the service account the function runs as, for `audience` (`format=full`:
    the token names the account's email as well as its unique id)."""
    import httpx

    host = os.environ.get("GCE_METADATA_HOST", METADATA_HOST)
    try:
        response = httpx.get(
            f"http://{host}{IDENTITY_PATH}",
            params={"audience": audience, "format": "full"},
            headers={"Metadata-Flavor": "Google"},
            timeout=TIMEOUT,
        )
    except httpx.HTTPError as exc:
        raise TransientError(f"the metadata server at {host} did not answer: {exc}") from exc
    if response.status_code >= 500:
        raise TransientError(f"the metadata server answered {response.status_code}: {response.text[:200]}")
    if response.status_code != 200 or response.headers.get("Metadata-Flavor") != "Google":
        raise PermanentError(
            f"no ID token from the metadata server at {host} ({response.status_code}): {response.text[:200]}"
        )
    return response.text.strip()


def federated_credential(tenant_id: str, client_id: str, audience: str, **options: object) -> TokenCredential:
    """An Entra credential of app `client_id` in `tenant_id`, proven by the Google ID token. `options` go to
    azure-identity (an authority host, a transport)."""
    from azure.identity import ClientAssertionCredential

    return ClientAssertionCredential(tenant_id, client_id, lambda: google_id_token(audience), **options)
