"""Session-wide fixtures: the throwaway PostgreSQL servers the `postgres` tests use (tests/postgres.py); and in CI
(`JITGATE_REQUIRE_GCP`) a `gcp` test that skips fails instead, as the `postgres` tests do without PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

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
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("JITGATE_REQUIRE_GCP") and item.get_closest_marker("gcp") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI runs every gcp test (JITGATE_REQUIRE_GCP), and this one skipped: {reason}"
