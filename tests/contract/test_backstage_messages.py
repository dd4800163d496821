"""Messages from the Backstage action are messages jitgate accepts, and the action refuses what jitgate refuses.

The node script `backstage/plugins/scaffolder-backend-module-jitgate/scripts/write-contract-messages.js`
runs the real `jitgate:access:request` code (with a recording sender) and writes what it produced.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from shared.domain.errors import InvalidRequest
from shared.domain.ids import NIL_GUID
from shared.domain.request import parse_access_request
from shared.schema import SCHEMA_PATH

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "backstage" / "plugins" / "scaffolder-backend-module-jitgate"
SCRIPT = MODULE / "scripts" / "write-contract-messages.js"
COUNT = 120


def _why_not_runnable() -> str:
    """Why the module's own code cannot run here ('' when it can)."""
    if (MODULE / "node_modules").is_dir():
        return ""
    if shutil.which("npm") is None:
        return ("npm is not installed, so the Backstage module's packages cannot be installed and the messages it "
                "sends cannot be produced: install node >= 20 and npm, and `make test` installs them (CI has npm)")
    return (f"{MODULE.relative_to(ROOT)}/node_modules is absent: `make test` installs it with npm ci "
            "(or run backstage/ci.sh)")


_NOT_RUNNABLE = _why_not_runnable()
pytestmark = pytest.mark.skipif(bool(_NOT_RUNNABLE), reason=_NOT_RUNNABLE or "runnable")


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is not on PATH, but the Backstage module is installed"
    out = tmp_path_factory.mktemp("backstage") / "messages.json"
    run = subprocess.run(
        [node, str(SCRIPT), str(out), str(COUNT)],
        cwd=MODULE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, f"the message script failed:\n{run.stdout}\n{run.stderr}"
    doc: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return doc


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_the_script_wrote_every_message_asked_for_with_distinct_ids(produced: dict[str, Any]) -> None:
    accepted = produced["accepted"]
    assert len(accepted) == COUNT
    assert len({m["requestId"] for m in accepted}) == COUNT
    assert produced["refused"], "the script wrote no refused cases"


def test_every_message_the_action_sends_validates_against_the_committed_schema(
    produced: dict[str, Any], validator: jsonschema.Draft202012Validator
) -> None:
    failures = [
        (i, [f"{'.'.join(map(str, e.absolute_path)) or 'body'}: {e.message}" for e in validator.iter_errors(m)])
        for i, m in enumerate(produced["accepted"])
    ]
    failures = [(i, errors) for i, errors in failures if errors]
    assert not failures, f"messages refused by the JSON Schema: {failures[:5]}"


def test_every_message_the_action_sends_is_accepted_by_the_python_model(produced: dict[str, Any]) -> None:
    for message in produced["accepted"]:
        raw = json.dumps(message, ensure_ascii=False).encode()
        try:
            request = parse_access_request(raw)
        except InvalidRequest as exc:
            pytest.fail(f"parse_access_request refused {message['requestId']}: {exc}")
        assert request.request_id == message["requestId"]
        assert request.requester.principal_id == message["requester"]["principalId"]
        assert request.target.scope == message["target"]["scope"]
        assert request.justification == message["justification"]


def test_every_message_the_action_refuses_the_python_model_refuses_on_the_same_fields(produced: dict[str, Any]) -> None:
    for case in produced["refused"]:
        raw = json.dumps(case["message"], ensure_ascii=False).encode()
        with pytest.raises(InvalidRequest) as caught:
            parse_access_request(raw)
        python_locs = {e.loc for e in caught.value.errors}
        for error in case["errors"]:
            assert any(loc == error["loc"] or loc.startswith(error["loc"] + ".") for loc in python_locs), (
                f"the action refuses {error['loc']} ({error['msg']}) but the model names {sorted(python_locs)}"
            )


def test_the_nil_guid_is_refused_by_both_as_a_principal_id_in_the_same_words(produced: dict[str, Any]) -> None:
    [case] = [c for c in produced["refused"] if c["message"]["requester"]["principalId"] == NIL_GUID]
    with pytest.raises(InvalidRequest) as caught:
        parse_access_request(json.dumps(case["message"]).encode())
    python = [e.as_dict() for e in caught.value.errors]
    assert case["errors"] == python == [
        {"loc": "requester.principalId", "msg": f"must not be the nil GUID {NIL_GUID}: it names nobody"}
    ]
