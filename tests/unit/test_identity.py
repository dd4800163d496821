"""Caller identity: App Service authentication in Azure, the development identity only locally."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from shared.domain.errors import AuthError
from shared.identity import ADMIN, AUDITOR, Caller, caller_from
from shared.settings import Settings

OID = "6C1B2A3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D"
OID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
LOCAL = Settings(mode="local")
AZURE = Settings(mode="azure", teams_secret=base64.b64encode(b"k" * 32).decode())
GCP = Settings(mode="gcp")


def client_principal(claims: list[dict[str, Any]], **extra: Any) -> str:
    document = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles", **extra}
    return base64.b64encode(json.dumps(document).encode()).decode()


def refused(headers: dict[str, str], settings: Settings) -> AuthError:
    with pytest.raises(AuthError) as caught:
        caller_from(headers, settings)
    assert caught.value.status == 401
    return caught.value


# ---------------------------------------------------------------- development identity


def test_local_dev_identity_with_roles():
    # GIVEN a local deployment and the development headers
    headers = {"X-Jitgate-Dev-Principal": OID, "X-Jitgate-Dev-Roles": f" {ADMIN}, {AUDITOR} ,"}
    # WHEN the caller is resolved
    caller = caller_from(headers, LOCAL)
    # THEN the principal is lower-cased and the roles trimmed
    assert caller == Caller(principal_id=OID.lower(), roles=frozenset({ADMIN, AUDITOR}), kind="user",
                            name=OID.lower())
    assert caller.is_admin and caller.is_auditor
    assert caller.actor().principal_id == OID.lower()


def test_header_names_are_case_insensitive():
    caller = caller_from({"x-jitgate-dev-principal": OID}, LOCAL)
    assert caller.principal_id == OID.lower()
    assert caller.roles == frozenset()
    assert not caller.is_admin and not caller.is_auditor


def test_auditor_role_alone_is_not_admin():
    caller = caller_from({"X-Jitgate-Dev-Principal": OID, "X-Jitgate-Dev-Roles": AUDITOR}, LOCAL)
    assert caller.is_auditor and not caller.is_admin


@pytest.mark.parametrize("settings", [AZURE, GCP], ids=["azure", "gcp"])
def test_dev_identity_is_refused_outside_local_mode(settings: Settings):
    error = refused({"X-Jitgate-Dev-Principal": OID, "X-Jitgate-Dev-Roles": ADMIN}, settings)
    assert "development identity is refused outside local mode" in str(error)


def test_dev_identity_is_refused_outside_local_mode_even_beside_a_valid_client_principal():
    headers = {"X-Jitgate-Dev-Roles": ADMIN, "X-MS-CLIENT-PRINCIPAL": client_principal([{"typ": "oid", "val": OID}])}
    assert "development identity is refused" in str(refused(headers, AZURE))


def test_dev_principal_must_be_a_guid():
    assert "GUID" in str(refused({"X-Jitgate-Dev-Principal": "jane@example.com"}, LOCAL))


def test_the_nil_guid_is_not_a_dev_principal():
    assert "nil GUID" in str(refused({"X-Jitgate-Dev-Principal": "00000000-0000-0000-0000-000000000000"}, LOCAL))


def test_dev_roles_without_a_principal_are_refused():
    assert "without" in str(refused({"X-Jitgate-Dev-Roles": ADMIN}, LOCAL))


def test_nobody_is_refused_with_a_hint_locally_and_in_azure():
    assert "X-Jitgate-Dev-Principal" in str(refused({}, LOCAL))
    assert "App Service authentication" in str(refused({"Accept": "application/json"}, AZURE))


# ---------------------------------------------------------------- App Service authentication


def test_client_principal_in_azure_mode():
    # GIVEN the header App Service authentication sets for a signed-in user with app roles
    header = client_principal([
        {"typ": OID_CLAIM, "val": OID},
        {"typ": "name", "val": "Jane Doe"},
        {"typ": "roles", "val": AUDITOR},
        {"typ": "roles", "val": "Some.Other"},
        {"typ": "sub", "val": "pairwise-subject-for-this-app"},
    ])
    # WHEN the caller is resolved in azure mode
    caller = caller_from({"X-MS-CLIENT-PRINCIPAL": header}, AZURE)
    # THEN the object id, roles and name come from the claims, and it is a user
    assert caller.principal_id == OID.lower()
    assert caller.roles == frozenset({AUDITOR, "Some.Other"})
    assert caller.name == "Jane Doe"
    assert caller.kind == "user"


def test_short_oid_claim_and_custom_role_type():
    header = client_principal([{"typ": "oid", "val": OID}, {"typ": "http://example/role", "val": ADMIN}],
                              role_typ="http://example/role")
    caller = caller_from({"x-ms-client-principal": header}, AZURE)
    assert caller.principal_id == OID.lower()
    assert caller.is_admin


def test_app_only_token_is_a_service():
    by_idtyp = client_principal([{"typ": "oid", "val": OID}, {"typ": "idtyp", "val": "app"}])
    by_subject = client_principal([{"typ": "oid", "val": OID}, {"typ": "sub", "val": OID.lower()}])
    assert caller_from({"X-MS-CLIENT-PRINCIPAL": by_idtyp}, AZURE).kind == "service"
    assert caller_from({"X-MS-CLIENT-PRINCIPAL": by_subject}, AZURE).kind == "service"


def test_client_principal_without_padding_is_accepted():
    header = client_principal([{"typ": "oid", "val": OID}]).rstrip("=")
    assert caller_from({"X-MS-CLIENT-PRINCIPAL": header}, AZURE).principal_id == OID.lower()


@pytest.mark.parametrize("header", [
    "not base64 at all!",
    base64.b64encode(b"not json").decode(),
    base64.b64encode(b"[1, 2]").decode(),
    base64.b64encode(json.dumps({"claims": "nope"}).encode()).decode(),
    "A" * 40_000,
], ids=["not-base64", "not-json", "not-object", "claims-not-list", "huge"])
def test_malformed_client_principal_is_refused(header: str):
    assert "X-MS-CLIENT-PRINCIPAL" in str(refused({"X-MS-CLIENT-PRINCIPAL": header}, AZURE))


def test_client_principal_without_object_id_is_refused():
    header = client_principal([{"typ": "name", "val": "Jane"}, {"typ": "oid", "val": 42}])
    assert "object id" in str(refused({"X-MS-CLIENT-PRINCIPAL": header}, AZURE))


def test_client_principal_with_the_nil_guid_as_object_id_is_refused():
    header = client_principal([{"typ": "oid", "val": "00000000-0000-0000-0000-000000000000"}, {"typ": "roles",
                                                                                               "val": ADMIN}])
    assert "nil GUID" in str(refused({"X-MS-CLIENT-PRINCIPAL": header}, AZURE))


def test_a_deeply_nested_client_principal_is_refused_not_a_crash():
    header = base64.b64encode(b"[" * 20_000 + b"]" * 20_000).decode()
    assert "X-MS-CLIENT-PRINCIPAL" in str(refused({"X-MS-CLIENT-PRINCIPAL": header[:30_000]}, AZURE))
    nested_claims = base64.b64encode(b'{"claims": ' + b"[" * 5000 + b"]" * 5000 + b"}").decode()
    assert "X-MS-CLIENT-PRINCIPAL" in str(refused({"X-MS-CLIENT-PRINCIPAL": nested_claims}, AZURE))


def test_client_principal_is_not_trusted_in_gcp_mode():
    header = client_principal([{"typ": "oid", "val": OID}, {"typ": "roles", "val": ADMIN}])
    assert "only trusted behind App Service" in str(refused({"X-MS-CLIENT-PRINCIPAL": header}, GCP))
