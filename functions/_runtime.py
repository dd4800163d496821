"""The process's one Runtime, shared by every trigger and the HTTP app, built on first use.

NB. Never at import: the Functions host imports function_app.py to index the functions, so building there
would put the policy load and the Azure SDK imports in front of indexing on every cold start, and a missing
setting would fail indexing (no function at all) instead of failing one invocation with a clear error.
"""

from __future__ import annotations

import threading

from shared.runtime import Runtime, build
from shared.settings import Settings

_lock = threading.Lock()
_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The runtime for the current app settings, built by the first caller (thread-safe)."""
    global _runtime
    current = _runtime
    if current is None:
        with _lock:
            if _runtime is None:
                _runtime = build(Settings.from_env())
            current = _runtime
    return current


def reset() -> None:
    """Forget the runtime, so that the next call builds one from the settings as they are now (tests)."""
    global _runtime
    with _lock:
        _runtime = None
