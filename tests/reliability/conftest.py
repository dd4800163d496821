"""Real `jitgate serve` processes that may die on purpose (named crash points) and be started again on the
same data directory.

`launcher` starts servers for one test and kills whatever is still running at teardown; a failing test's
report carries the tail of every server log it started or adopted. Revoke lateness figures that the tests record with
`figures` are printed in the terminal summary.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.settings import DEFAULT_POLICY
from tests.e2e.conftest import HOST, JitgateServer, clean_env, free_port

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
RECONCILE_SECONDS = 1.0
LOCK_SECONDS = 1.0

SERVERS_KEY = pytest.StashKey[list[JitgateServer]]()
FIGURES_KEY = pytest.StashKey[list[tuple[str, str, float]]]()
_LOG_NUMBERS = itertools.count(1)


class Launcher:
    """Starts `jitgate serve` processes (each with its own log file) and remembers them for teardown."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.servers: list[JitgateServer] = []
        self.stop = stop or threading.Event()  # set: give up waiting (the run is being torn down)

    def start(self, data_dir: Path, crashpoint: str | None = None) -> JitgateServer:
        """Start serve on a free port over `data_dir` and wait until it answers /api/health."""
        if self.stop.is_set():
            pytest.fail("cancelled: the run is being torn down")
        data_dir.mkdir(parents=True, exist_ok=True)
        label = crashpoint or "normal"
        log_path = data_dir / f"serve-{next(_LOG_NUMBERS):03d}-{label}.log"
        port = free_port()
        extra = {
            "JITGATE_DATA_DIR": str(data_dir),
            "JITGATE_POLICY": str(DEFAULT_POLICY),
            "JITGATE_RECONCILE_SECONDS": str(RECONCILE_SECONDS),
            "JITGATE_LOCK_SECONDS": str(LOCK_SECONDS),
            "JITGATE_MODE": "local",
            # NB. The consumers in the server's own process: a crash point must end the server these tests restart,
            # not a consumer process the server would replace (tests/e2e/test_worker_processes.py covers that).
            "JITGATE_WORKER_PROCESSES": "0",
            "PYTHONUNBUFFERED": "1",
        }
        if crashpoint:
            extra["JITGATE_CRASHPOINT"] = crashpoint
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", "serve", "--host", HOST, "--port", str(port)],
                env=clean_env(**extra),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        server = JitgateServer(f"http://{HOST}:{port}", data_dir, log_path, process)
        self.servers.append(server)
        deadline = time.monotonic() + START_TIMEOUT
        while not server.healthy():
            if process.poll() is not None:
                pytest.fail(f"jitgate serve ({label}) exited with {process.returncode}:\n{server.log_tail(200)}")
            if time.monotonic() >= deadline or self.stop.is_set():
                process.send_signal(signal.SIGKILL)
                pytest.fail(f"jitgate serve ({label}) not healthy after {START_TIMEOUT}s:\n{server.log_tail(200)}")
            time.sleep(0.05)
        return server

    def adopt(self, servers: Iterable[JitgateServer]) -> None:
        """Servers started elsewhere (a module fixture) that this test now answers for."""
        self.servers.extend(s for s in servers if s not in self.servers)

    def stop_all(self) -> None:
        """Kill every server still running (only processes this launcher started, by their handle)."""
        for server in self.servers:
            process = server.process
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL cannot be ignored
                process.wait(STOP_TIMEOUT)


def wait_for_death(server: JitgateServer, timeout: float, what: str) -> int:
    """Wait for the process to exit by itself; fail with the log tail if it does not in time."""
    try:
        return server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"jitgate serve did not die at {what} within {timeout}s:\n{server.log_tail(120)}")


@pytest.fixture
def launcher(request: pytest.FixtureRequest) -> Iterator[Launcher]:
    launcher = Launcher()
    request.node.stash[SERVERS_KEY] = launcher.servers
    try:
        yield launcher
    finally:
        launcher.stop_all()


@pytest.fixture
def figures(pytestconfig: pytest.Config) -> list[tuple[str, str, float]]:
    """(scenario, what, seconds) rows printed at the end of the run."""
    return pytestconfig.stash.setdefault(FIGURES_KEY, [])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test shows the tail of every server log it started (crashed ones included)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for server in item.stash.get(SERVERS_KEY, []):
            report.sections.append((f"jitgate serve log {server.log_path.name} (tail)", server.log_tail(60)))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(FIGURES_KEY, [])
    if not rows:
        return
    terminalreporter.section("jitgate revoke timing (seconds)")
    width = max(len(scenario) for scenario, _, _ in rows)
    what_width = max(len(what) for _, what, _ in rows)
    for scenario, what, seconds in rows:
        terminalreporter.write_line(f"{scenario:<{width}}  {what:<{what_width}}  {seconds:8.3f}")
