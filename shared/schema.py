"""Writes (or checks) the committed artifacts generated from the model: the JSON Schema of the access request, and
the plain-text tables the Backstage module checks a requester's text with."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .domain.plain_text import plain_text_module
from .domain.request import request_json_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "schemas" / "access-request.v1.schema.json"
PLAIN_TEXT_PATH = ROOT / "backstage/plugins/scaffolder-backend-module-jitgate/src/generated/plainText.ts"


def rendered() -> str:
    return json.dumps(request_json_schema(), indent=2, sort_keys=True) + "\n"


ARTIFACTS: dict[Path, Callable[[], str]] = {SCHEMA_PATH: rendered, PLAIN_TEXT_PATH: plain_text_module}


def write(path: Path = SCHEMA_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rendered())
    return path


def is_current(path: Path = SCHEMA_PATH) -> bool:
    return path.exists() and path.read_text() == rendered()


def write_all() -> list[Path]:
    """Every artifact, written from the model."""
    for path, render in ARTIFACTS.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render())
    return list(ARTIFACTS)


def stale() -> list[Path]:
    """The artifacts that differ from what the model generates now."""
    return [path for path, render in ARTIFACTS.items() if not (path.exists() and path.read_text() == render())]
