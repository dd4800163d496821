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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI (or with JITGATE_REQUIRE_GCP) a `gcp` test that would skip fails instead: they need nothing that
    requirements.txt does not install, so a skip there means something is missing."""
    import os

    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    required = os.environ.get("CI") or os.environ.get("JITGATE_REQUIRE_GCP")
    if required and report.skipped and item.get_closest_marker("gcp") is not None:
        report.outcome = "failed"
        report.longrepr = f"gcp tests must run in CI, and this one skipped: {report.longrepr}"
