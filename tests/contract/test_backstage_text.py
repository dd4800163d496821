"""One definition of the text a person may type, on both sides: the Backstage action (and its dry run) refuses exactly
the justifications and requester names jitgate's model refuses, in the same words.

Every Unicode general category is sampled over the whole code space (its first and last code point and a fixed
random spread between), each sample put into a justification, alone as a justification (white space makes it blank)
and into a requester's display name. The node side is the real action, run as a dry run by
`scripts/write-contract-messages.js` over the module's built code; the Python side is `parse_access_request`.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import unicodedata
from typing import Any

import pytest

from shared.domain.errors import InvalidRequest
from shared.domain.request import parse_access_request
from tests.contract.test_backstage_messages import _NOT_RUNNABLE, MODULE, SCRIPT

pytestmark = pytest.mark.skipif(bool(_NOT_RUNNABLE), reason=_NOT_RUNNABLE or "runnable")

PER_CATEGORY = 40
# Refused by jitgate and let through by the action's dry run before both read one definition (#14).
NAMED = (0x00AD, 0x0085, 0x2028, 0x2029, 0xFEFF, 0x2060, 0x061C, 0xE000, 0x180E)
FIELDS = ("justification", "requester.displayName")
REQUEST = {
    "schemaVersion": 1,
    "requestId": "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
    "requester": {"principalId": "2c5f39cb-3fb2-42e3-994f-1127d4ddb538", "principalType": "User",
                  "displayName": "Jane Doe", "backstageRef": "user:default/jane"},
    "target": {"provider": "azure-rbac", "role": "Contributor",
               "scope": "/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649/resourceGroups/rg-payments-prod"},
    "duration": "PT1H",
    "justification": "Rotate the payments DB firewall rule for INC-4711",
}


def samples() -> dict[str, list[int]]:
    """Code points of every general category: the first, the last, a fixed random spread between, and NAMED."""
    by_category: dict[str, list[int]] = {}
    for cp in range(sys.maxunicode + 1):
        by_category.setdefault(unicodedata.category(chr(cp)), []).append(cp)
    picked = {}
    for category, points in sorted(by_category.items()):
        spread = random.Random(category).sample(points, min(PER_CATEGORY, len(points)))
        named = [cp for cp in NAMED if unicodedata.category(chr(cp)) == category]
        picked[category] = sorted({points[0], points[-1], *spread, *named})
    return picked


SAMPLES = samples()
CASES = [
    (category, cp, justification, display_name)
    for category, points in SAMPLES.items()
    for cp in points
    for justification, display_name in (
        (f"Read {chr(cp)} the logs for INC-4711", "Jane Doe"),
        (f"{chr(cp)} ", "Jane Doe"),
        ("Read the logs for INC-4711", f"Jane{chr(cp)}Doe"),
    )
]


def python_answer(justification: str, display_name: str) -> dict[str, str] | None:
    doc: dict[str, Any] = {**REQUEST, "justification": justification,
                           "requester": {**REQUEST["requester"], "displayName": display_name}}
    try:
        parse_access_request(json.dumps(doc))
    except InvalidRequest as exc:
        return {error.loc: error.msg for error in exc.errors}
    return None


@pytest.fixture(scope="module")
def node_answers(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str] | None]:
    node = shutil.which("node")
    assert node, "node is not on PATH, but the Backstage module is installed"
    work = tmp_path_factory.mktemp("backstage-text")
    cases = work / "texts.json"
    # NB. ensure_ascii: a lone surrogate (category Cs) travels as its \\u escape, which JSON.parse keeps as it is.
    cases.write_text(json.dumps([{"justification": j, "displayName": d} for _, _, j, d in CASES]))
    run = subprocess.run([node, str(SCRIPT), str(work / "out.json"), "1", str(cases)], cwd=MODULE,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, f"the message script failed:\n{run.stdout}\n{run.stderr}"
    texts = json.loads((work / "out.json").read_text(encoding="utf-8"))["texts"]
    return [None if errors is None else {e["loc"]: e["msg"] for e in errors} for errors in texts]


def test_every_general_category_is_sampled_over_the_whole_code_space() -> None:
    assert len(SAMPLES) == 30
    assert max(max(points) for points in SAMPLES.values()) == sys.maxunicode
    assert sum(len(points) for points in SAMPLES.values()) > 20 * PER_CATEGORY


@pytest.mark.parametrize("category", sorted(SAMPLES))
def test_the_action_and_jitgate_accept_and_refuse_the_same_text_in_the_same_words(
    category: str, node_answers: list[dict[str, str] | None]
) -> None:
    disagreements = []
    for (case_category, cp, justification, display_name), node in zip(CASES, node_answers, strict=True):
        if case_category != category:
            continue
        python = python_answer(justification, display_name)
        node_fields = None if node is None else {loc: msg for loc, msg in node.items() if loc in FIELDS}
        if category == "Cs" and python is not None and "lone surrogate" in python.get("body", ""):
            # NB. jitgate refuses a lone surrogate already as JSON, before any field is read: refused by both.
            python = node_fields if node_fields else python
        if python != node_fields:
            disagreements.append(f"U+{cp:04X} in {justification!r} / {display_name!r}: jitgate {python}, action {node}")
    assert not disagreements, "\n".join(disagreements[:20])


def test_the_characters_jitgate_refused_after_a_passed_dry_run_are_refused_by_both(
    node_answers: list[dict[str, str] | None],
) -> None:
    answers = {cp: node for (_, cp, justification, _), node in zip(CASES, node_answers, strict=True)
               if justification == f"Read {chr(cp)} the logs for INC-4711"}
    for cp in NAMED:
        refusal = {"justification": f"must not contain control or bidirectional formatting characters (U+{cp:04X})"}
        assert python_answer(f"Read {chr(cp)} the logs for INC-4711", "Jane Doe") == refusal
        assert answers[cp] == refusal
