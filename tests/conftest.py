"""Session-wide fixtures: the throwaway PostgreSQL servers the `postgres` tests use (tests/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.adapters.postgres.throwaway import ThrowawayPostgres
from tests.postgres import PgWorld, prepare, reset, start_server


@pytest.fixture(scope="session")
def pg_servers() -> Iterator[dict[str, ThrowawayPostgres]]:
    """Two servers (two scopes), prepared once per session."""
    started: dict[str, ThrowawayPostgres] = {}
    try:
        for name in ("pg-main", "pg-dr"):
            started[name] = start_server()
            prepare(started[name])
        yield started
    finally:
        for pg in started.values():
            pg.stop()


@pytest.fixture
def pg_world(pg_servers: dict[str, ThrowawayPostgres]) -> Iterator[PgWorld]:
    """The session's servers, with every login and role a test made dropped afterwards."""
    yield PgWorld(pg_servers)
    for pg in pg_servers.values():
        reset(pg)
