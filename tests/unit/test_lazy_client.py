"""The REST adapters' shared HTTP client: made on first use, closed only when made here."""

from __future__ import annotations

import httpx

from shared.adapters.http import LazyClient


def test_nothing_is_made_until_first_use_and_then_one_client_serves_every_call() -> None:
    lazy = LazyClient(None, timeout=7.0)
    first = lazy.get()
    assert lazy.get() is first
    assert first.timeout.read == 7.0 and first.timeout.connect == 10.0
    lazy.close()
    assert first.is_closed
    assert lazy.get() is not first  # a later call makes a new one
    lazy.close()


def test_a_client_handed_in_is_its_owners_to_close() -> None:
    given = httpx.Client()
    lazy = LazyClient(given, timeout=30.0)
    assert lazy.get() is given
    lazy.close()
    assert not given.is_closed and lazy.get() is given
    given.close()
