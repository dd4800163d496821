"""Every body in tests/data/hostile is refused by `parse_access_request` with exactly the expected errors.

The corpus and its expectations live in tests/data/hostile/expected.yaml (ARCHITECTURE §2: unknown fields,
limits, scopes, roles, ids, durations, JSON that is not an object). The same corpus is POSTed to a real
server in tests/e2e/test_serve_http.py.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.domain.errors import InvalidRequest
from shared.domain.ids import synthetic_request_id
from shared.domain.request import MAX_BODY_BYTES, parse_access_request

CORPUS_DIR = Path(__file__).resolve().parent.parent / "data" / "hostile"
MIN_CORPUS = 45
_STRICT_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def strict_guid(value: object) -> bool:
    """A lowercase GUID and nothing else (`re.match` with `$` would also take a trailing newline)."""
    return isinstance(value, str) and _STRICT_GUID.fullmatch(value) is not None


@dataclass(frozen=True)
class HostileCase:
    """One corpus file and what must be said about it."""

    name: str
    raw: bytes
    errors: tuple[tuple[str, str], ...]  # (loc, message substring)
    request_id: str  # the body's GUID, "synthetic" or "any"

    @property
    def locs(self) -> set[str]:
        return {loc for loc, _ in self.errors}

    @property
    def body_request_id(self) -> str | None:
        """The GUID the rejection must carry when the body's own id is usable, else None."""
        return self.request_id if strict_guid(self.request_id) else None


def load_corpus() -> list[HostileCase]:
    expected: dict[str, Any] = yaml.safe_load((CORPUS_DIR / "expected.yaml").read_text(encoding="utf-8"))
    cases = []
    for name, spec in expected.items():
        cases.append(
            HostileCase(
                name=name,
                raw=(CORPUS_DIR / name).read_bytes(),
                errors=tuple((str(e["loc"]), str(e["msg"])) for e in spec["errors"]),
                request_id=str(spec["requestId"]),
            )
        )
    return cases


CORPUS = load_corpus()

# NB. Bodies for every endpoint that reads one (intake, revoke, the Teams webhook), beside the corpus of access
# requests: what made the revoke endpoint and the webhook answer 500 before they shared the guarded parser.
HOSTILE_BODIES: dict[str, bytes] = {
    "nested-arrays-5000": b"[" * 5000 + b"]" * 5000,
    "nested-objects-3000": b'{"a":' * 3000 + b"1" + b"}" * 3000,
    "nested-unclosed-30000": b"[" * 30_000,
    "nested-in-reason": b'{"reason": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    "nested-in-activity": b'{"type": "message", "text": "help", "channelData": ' + b"[" * 4000 + b"]" * 4000 + b"}",
    "not-utf8": b'{"reason": "caf\xe9 \xff"}',
    "utf16": '{"reason": "done"}'.encode("utf-16"),
    "utf8-bom": b'\xef\xbb\xbf{"reason": "done"}',
    "lone-surrogate": b'{"reason": "\\ud800", "type": "message", "text": "\\udfff"}',
    "number-overflow": b'{"reason": 1e999}',
    "huge-integer": b'{"reason": ' + b"9" * 6000 + b"}",
    "nan": b'{"reason": NaN}',
    "duplicate-keys": b'{"reason": "a", "reason": "b"}',
    "oversize-70k": b'{"reason": "' + b"x" * 70_000 + b'"}',
    "binary": bytes(range(256)) * 8,
}
ALL_BODIES = {**{case.name: case.raw for case in CORPUS}, **HOSTILE_BODIES}
# Corpus bodies that are valid revoke bodies (no reason given), though not valid access requests.
REVOKE_WITHOUT_REASON = frozenset({"01-empty-body.bin", "02-whitespace-only.bin", "39-empty-object.json"})


def test_corpus_is_complete_and_consistent() -> None:
    on_disk = {p.name for p in CORPUS_DIR.iterdir() if p.name != "expected.yaml"}
    described = {c.name for c in CORPUS}
    assert on_disk == described, f"files without expectations: {on_disk - described}; missing: {described - on_disk}"
    assert len(CORPUS) >= MIN_CORPUS
    for case in CORPUS:
        assert case.errors, f"{case.name}: no expected errors"
        assert case.request_id in ("synthetic", "any") or strict_guid(case.request_id), case.name
    body_ids = [c.request_id for c in CORPUS if c.body_request_id]
    assert len(body_ids) == len(set(body_ids)), "every corpus body has its own requestId"
    assert any(len(c.raw) > MAX_BODY_BYTES for c in CORPUS), "an oversize body is in the corpus"


def _parse(raw: bytes) -> InvalidRequest:
    """The InvalidRequest the model raises; anything else (acceptance, another exception) fails the test."""
    try:
        accepted = parse_access_request(raw)
    except InvalidRequest as exc:
        return exc
    except Exception as exc:  # the point of the corpus: nothing but InvalidRequest may escape
        pytest.fail(f"parse_access_request raised {type(exc).__name__} instead of InvalidRequest: {exc!s:.300}")
    pytest.fail(f"parse_access_request ACCEPTED a hostile body: {accepted.to_json_dict()!r:.600}")


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_body_is_refused_with_expected_errors(case: HostileCase) -> None:
    exc = _parse(case.raw)
    got = [(e.loc, e.msg) for e in exc.errors]
    assert {loc for loc, _ in got} == case.locs, f"error locations: got {got}"
    for loc, fragment in case.errors:
        messages = [msg for where, msg in got if where == loc]
        assert any(fragment in msg for msg in messages), f"{loc}: no message contains {fragment!r}: {messages}"
    assert str(exc), "the exception text names the errors"


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_body_rejection_carries_a_request_id(case: HostileCase) -> None:
    exc = _parse(case.raw)
    rid = exc.request_id
    assert strict_guid(rid), f"request id {rid!r} is not a lowercase GUID"
    if case.body_request_id:
        assert rid == case.body_request_id, "the body's own (valid) requestId is kept"
    elif case.request_id == "synthetic":
        assert rid == synthetic_request_id(case.raw[:MAX_BODY_BYTES]), "a synthetic id derived from the raw bytes"
        assert uuid.UUID(rid).version == 5
    # stable: the same bytes, the same id (so a redelivered bad message is one rejection)
    assert _parse(case.raw).request_id == rid


def test_string_input_is_treated_like_its_utf8_bytes() -> None:
    case = next(c for c in CORPUS if c.name.endswith("-scope-dotdot.json"))
    from_str = _parse(case.raw.decode("utf-8"))
    from_bytes = _parse(case.raw)
    assert [(e.loc, e.msg) for e in from_str.errors] == [(e.loc, e.msg) for e in from_bytes.errors]
    assert from_str.request_id == from_bytes.request_id
