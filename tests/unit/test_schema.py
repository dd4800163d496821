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
