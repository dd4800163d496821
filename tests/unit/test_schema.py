import json

import jsonschema
import pytest

from shared.schema import PLAIN_TEXT_PATH, SCHEMA_PATH, is_current, stale

VALID = {
    "schemaVersion": 1,
    "requestId": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
    "requester": {"principalId": "2c5f39cb-3fb2-42e3-994f-1127d4ddb538", "displayName": "Jane Doe"},
    "target": {
        "provider": "azure-rbac",
        "scope": "/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649/resourceGroups/rg-payments-prod",
        "role": "Contributor",
    },
    "duration": "PT2H",
    "justification": "Rotate the payments DB firewall rule for INC-4711",
}


def test_committed_schema_is_generated_from_the_model():
    assert is_current(), "schemas/access-request.v1.schema.json is stale: run `jitgate schema write`"


def test_the_backstage_modules_plain_text_tables_are_generated_from_the_model():
    assert PLAIN_TEXT_PATH not in stale(), f"{PLAIN_TEXT_PATH} is stale: run `jitgate schema write`"


def test_schema_accepts_the_architecture_example_and_refuses_unknown_fields():
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validate(VALID, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**VALID, "surprise": True}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**VALID, "schemaVersion": 2}, schema)


GOOGLE = {"principalId": "user:jane@example.com", "principalType": "GoogleUser", "displayName": "Jane Doe"}


@pytest.mark.parametrize("requester", [
    GOOGLE,
    {**GOOGLE, "principalId": "serviceAccount:deploy@p-1234.iam.gserviceaccount.com",
     "principalType": "GoogleServiceAccount"},
    {**GOOGLE, "principalId": "group:ops@example.com", "principalType": "GoogleGroup"},
])
def test_schema_and_model_accept_google_principals_of_their_own_type(requester):
    from shared.domain.request import AccessRequest

    message = {**VALID, "requester": requester}
    jsonschema.validate(message, json.loads(SCHEMA_PATH.read_text()))
    assert AccessRequest.model_validate_json(json.dumps(message)).requester.principal_id == requester["principalId"]


@pytest.mark.parametrize(("requester", "loc"), [
    ({**GOOGLE, "principalType": "GoogleGroup"}, "requester.principalType"),  # the prefix says user
    ({k: v for k, v in GOOGLE.items() if k != "principalType"}, "requester.principalType"),  # defaults to User
    ({**GOOGLE, "principalId": "2c5f39cb-3fb2-42e3-994f-1127d4ddb538"}, "requester.principalType"),
    ({**GOOGLE, "principalId": "domain:example.com"}, "requester.principalId"),  # not a person jitgate grants to
    ({**GOOGLE, "principalId": "User:jane@example.com"}, "requester.principalId"),  # IAM spells it user:
])
def test_schema_and_model_refuse_a_principal_and_type_that_disagree(requester, loc):
    from shared.domain.errors import InvalidRequest
    from shared.domain.request import parse_access_request

    message = {**VALID, "requester": requester}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(message, json.loads(SCHEMA_PATH.read_text()))
    with pytest.raises(InvalidRequest) as raised:
        parse_access_request(json.dumps(message))
    assert [e.loc for e in raised.value.errors] == [loc]


@pytest.mark.parametrize(("scope", "valid"), [
    ("projects/_/buckets/acme-payments-exports", True),
    ("projects/_/buckets/acme.exports_2026", True),
    ("projects/_/buckets/Acme-Exports", False),  # bucket names are lower case
    ("projects/_/buckets/acme/objects/x", False),
])
def test_a_cloud_storage_bucket_is_a_gcp_iam_scope(scope, valid):
    from shared.domain.errors import InvalidRequest
    from shared.domain.request import parse_access_request

    message = {**VALID, "requester": GOOGLE, "target": {"provider": "gcp-iam", "scope": scope,
                                                        "role": "roles/storage.objectViewer"}}
    if valid:
        assert parse_access_request(json.dumps(message)).target.scope == scope
    else:
        with pytest.raises(InvalidRequest) as raised:
            parse_access_request(json.dumps(message))
        assert [e.loc for e in raised.value.errors] == ["target.scope"]
