"""`JITGATE_WORKER_PROCESSES` (issue #10): `jitgate serve` runs its bus consumers in processes of their own, beside
the one serving the API, so that HTTP intake and the consumers do not share one interpreter lock. The real command
line: a request goes all the way to revoked through the children, and children never outlive the server, even one
killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import HOST, clean_env, free_port, running_server
from tests.e2e.test_serve_http import access_request, dev_rg, submit

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while (left := {pid for pid in pids if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
def test_consumers_in_two_processes_grant_and_revoke_and_stop_with_the_server(tmp_path: Path) -> None:
    with running_server(tmp_path, JITGATE_WORKER_PROCESSES="2") as s:
        children = children_of(s.process.pid)
        assert len(children) >= 2, f"two consumer processes beside the server: {children}"
        doc = access_request(dev_rg("rg-processes-dev"), duration="PT2S")
        submit(s, doc)
        s.wait_state(doc["requestId"], "active")
        assert s.assignments_of(doc["requestId"])
        s.wait_state(doc["requestId"], "revoked", timeout=15)
        assert not s.assignments_of(doc["requestId"])
        assert "Traceback" not in s.log_tail(400)
    # (leaving the block stops the server as Ctrl-C or a service manager would: SIGTERM)
    assert not wait_gone(children, 10), "a consumer process outlived the server it served"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
def test_consumer_processes_stop_when_the_server_is_killed_outright(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "shared.cli", "serve", "--host", HOST, "--port", str(free_port())]
    env = clean_env(JITGATE_DATA_DIR=str(tmp_path / "data"), JITGATE_MODE="local", JITGATE_WORKER_PROCESSES="1")
    server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (children := children_of(server.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert children, "a consumer process beside the server"
        time.sleep(1)  # let the child get going
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        assert not wait_gone(children, 5), "a consumer process outlived a killed server"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
def test_a_consumer_process_that_dies_is_replaced_and_requests_still_end_revoked(tmp_path: Path) -> None:
    with running_server(tmp_path, JITGATE_WORKER_PROCESSES="1") as s:
        deadline = time.monotonic() + 30
        while not (consumers := consumer_pids(s.process.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(consumers) == 1, consumers
        (dead,) = consumers
        os.kill(dead, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (consumers := consumer_pids(s.process.pid) - {dead}) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert consumers, "no consumer process took the killed one's place"
        doc = access_request(dev_rg("rg-replaced-dev"), duration="PT2S")
        submit(s, doc)
        s.wait_state(doc["requestId"], "revoked", timeout=30)
        assert "ended with exit code -9" in s.log_tail(400)


def consumer_pids(server: int) -> set[int]:
    """The server's consumer processes (not multiprocessing's resource tracker)."""
    return {pid for pid in children_of(server) if alive(pid) and b"spawn_main" in _command_line(pid)}


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
