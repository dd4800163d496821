"""The one way SDK exceptions become jitgate's own error types at an adapter's boundary."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..domain.errors import JitgateError

Translate = Callable[[Exception, str], JitgateError | None]


@contextmanager
def translated(what: str, translate: Translate) -> Iterator[None]:
    """Run the block; an SDK exception that `translate` maps is re-raised as that jitgate error (chained),
    one it does not map is re-raised unchanged, and jitgate's own errors pass through."""
    try:
        yield
    except JitgateError:
        raise
    except Exception as exc:
        mapped = translate(exc, what)
        if mapped is None:
            raise
        raise mapped from exc
