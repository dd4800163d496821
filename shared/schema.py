"""Writes (or checks) the committed JSON Schema generated from the pydantic model."""

from __future__ import annotations

import json
from pathlib import Path

from .domain.request import request_json_schema

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "access-request.v1.schema.json"


def rendered() -> str:
    return json.dumps(request_json_schema(), indent=2, sort_keys=True) + "\n"


def write(path: Path = SCHEMA_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rendered())
    return path


def is_current(path: Path = SCHEMA_PATH) -> bool:
    return path.exists() and path.read_text() == rendered()
