"""The local notifier: Teams messages written to an outbox file (one JSON line each) instead of being
posted to a webhook, with a one-line echo on the console."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...cards import render_text, teams_message
from ...clock import SystemClock
from ...domain.audit import format_instant
from ...domain.errors import TransientError
from ...ports import Clock, Notice


class OutboxNotifier:
    """Notifier for local mode. Each notice becomes one line of the outbox,
    `{"at", "kind", "requestId", "card": <the Teams message the webhook would receive>}`, so a demo or
    test can read exactly what approvers would have seen. Write failures raise TransientError."""

    def __init__(
        self, path: str | Path, echo: Callable[[str], None] | None = print, clock: Clock | None = None
    ) -> None:
        self.path = Path(path)
        self._echo = echo
        self._clock = clock or SystemClock()

    def notify(self, notice: Notice) -> None:
        record = {
            "at": format_instant(self._clock.now()),
            "kind": notice.kind,
            "requestId": notice.request_id,
            "card": teams_message(notice),
        }
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            try:
                _append(self.path, line.encode("utf-8"))
            except FileNotFoundError:  # NB. its directory is made on first use (and again if removed), not per line
                self.path.parent.mkdir(parents=True, exist_ok=True)
                _append(self.path, line.encode("utf-8"))
        except OSError as exc:
            raise TransientError(f"outbox {self.path}: {exc}") from exc
        if self._echo is not None:
            self._echo(render_text(notice))


def read_outbox(path: str | Path) -> list[dict[str, Any]]:
    """Every record in the outbox, oldest first; a missing outbox is empty."""
    try:
        with Path(path).open(encoding="utf-8") as outbox:
            return [json.loads(line) for line in outbox if line.strip()]
    except FileNotFoundError:
        return []


def _append(path: Path, data: bytes) -> None:
    # NB. One write(2) on an O_APPEND descriptor: the kernel moves to the end and writes the whole line
    # in one step, so lines from other threads and processes never interleave. Buffered file objects
    # may split a long line into several writes.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
