"""The plumbing under every embedded adapter: a connection per thread and per process, and writers that take turns."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.embedded import sqlite_file
from shared.adapters.embedded.sqlite_file import SqliteFile
from shared.priority import revoking


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_uses_its_parents_connection(tmp_path: Path) -> None:
    db = SqliteFile(tmp_path / "x.db")
    inherited = db.connection()
    with db.transaction() as conn:
        conn.execute("CREATE TABLE t (who TEXT)")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, write through its own connection, and leave without cleanup
        own = db.connection()
        with db.transaction() as conn:
            conn.execute("INSERT INTO t VALUES ('child')")
        os.write(write, b"new" if own is not inherited else b"inherited")
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 100)
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert answer == b"new"
    assert db.connection() is inherited
    assert db.connection().execute("SELECT who FROM t").fetchall() == [("child",)]
    db.close()


def test_a_writer_waits_for_the_writer_before_it_in_its_own_process_not_through_sqlites_retries(
    tmp_path: Path,
) -> None:
    # NB. No busy timeout at all: SQLite would refuse the second writer at once ("database is locked"), where
    # before it slept and retried. Writers of one process must hand the turn to each other instead.
    db = SqliteFile(tmp_path / "x.db", busy_timeout=0)
    with db.transaction() as conn:
        conn.execute("CREATE TABLE counter (n INTEGER)")
        conn.execute("INSERT INTO counter VALUES (0)")
    first_in = threading.Event()
    failures: list[BaseException] = []

    def bump(hold: float) -> None:
        try:
            with db.transaction() as conn:
                first_in.set()
                (n,) = conn.execute("SELECT n FROM counter").fetchone()
                time.sleep(hold)
                conn.execute("UPDATE counter SET n = ?", (n + 1,))
        except BaseException as exc:
            failures.append(exc)

    first = threading.Thread(target=bump, args=(0.2,))
    first.start()
    first_in.wait(5)
    others = [threading.Thread(target=bump, args=(0,)) for _ in range(4)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join()
    assert failures == []
    assert db.connection().execute("SELECT n FROM counter").fetchone() == (5,)
    db.close()


@pytest.mark.parametrize("round_", range(3))
def test_a_writer_on_the_revocation_path_goes_before_every_writer_already_waiting(tmp_path: Path, round_: int) -> None:
    db = SqliteFile(tmp_path / "x.db")
    with db.transaction() as conn:
        conn.execute("CREATE TABLE turns (who TEXT)")
    holding, release = threading.Event(), threading.Event()

    def write(who: str, urgent: bool = False, hold: bool = False) -> None:
        with revoking() if urgent else contextlib.nullcontext(), db.transaction() as conn:
            conn.execute("INSERT INTO turns VALUES (?)", (who,))
            if hold:
                holding.set()
                release.wait(5)

    first = threading.Thread(target=write, args=("first", False, True))
    first.start()
    holding.wait(5)
    others = [threading.Thread(target=write, args=(f"intake-{i}",)) for i in range(6)]
    for thread in others:
        thread.start()
    time.sleep(0.3)  # NB. the six queue up first
    revoke = threading.Thread(target=write, args=("revoke", True))
    revoke.start()
    time.sleep(0.3)
    release.set()
    for thread in [first, *others, revoke]:
        thread.join()
    order = [who for (who,) in db.connection().execute("SELECT who FROM turns ORDER BY rowid")]
    assert order[:2] == ["first", "revoke"], order
    assert sorted(order[2:]) == [f"intake-{i}" for i in range(6)]
    db.close()


def test_writers_off_the_revocation_path_all_get_their_turn_while_revokes_keep_coming(tmp_path: Path) -> None:
    db = SqliteFile(tmp_path / "x.db", busy_timeout=0)
    with db.transaction() as conn:
        conn.execute("CREATE TABLE turns (who TEXT)")
    failures: list[BaseException] = []

    def write(who: str, urgent: bool, times: int) -> None:
        try:
            for _ in range(times):
                with revoking() if urgent else contextlib.nullcontext(), db.transaction() as conn:
                    conn.execute("INSERT INTO turns VALUES (?)", (who,))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=("revoke", True, 200)),
               *(threading.Thread(target=write, args=(f"intake-{i}", False, 50)) for i in range(4))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == [] and not any(thread.is_alive() for thread in threads)
    counts = dict(db.connection().execute("SELECT who, count(*) FROM turns GROUP BY who").fetchall())
    assert counts == {"revoke": 200, **{f"intake-{i}": 50 for i in range(4)}}
    db.close()


_HOLD_A_WRITE = """
import sys, time
from shared.adapters.embedded.sqlite_file import SqliteFile
db = SqliteFile(sys.argv[1], busy_timeout=0)
with db.transaction() as conn:
    conn.execute("INSERT INTO turns VALUES ('other process')")
    print("holding", flush=True)
    time.sleep(0.5)
db.close()
"""


@pytest.mark.skipif(os.name != "posix", reason="processes take turns by flock on POSIX only")
def test_a_writer_waits_for_a_writer_of_another_process_not_through_sqlites_retries(tmp_path: Path) -> None:
    # NB. No busy timeout in either process: SQLite alone would refuse this process's write at once
    # ("database is locked") while the other process holds its transaction open.
    import subprocess
    import sys

    path = tmp_path / "x.db"
    db = SqliteFile(path, busy_timeout=0)
    with db.transaction() as conn:
        conn.execute("CREATE TABLE turns (who TEXT)")
    other = subprocess.Popen([sys.executable, "-c", _HOLD_A_WRITE, str(path)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[2])
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "holding"
        with db.transaction() as conn:
            conn.execute("INSERT INTO turns VALUES ('this process')")
    finally:
        assert other.wait(10) == 0
    order = [who for (who,) in db.connection().execute("SELECT who FROM turns ORDER BY rowid")]
    assert order == ["other process", "this process"]
    db.close()


def test_the_wal_stays_bounded_while_writes_and_reads_never_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NB. A checkpoint moved out of the writer's turn let the WAL grow without end under load (6 GB in a minute):
    # with a write committed every few hundred microseconds, a checkpoint made outside the turn was never complete
    # when the next writer began, so the WAL was never started over. Readers that never stop keep the passes outside
    # the turn from letting it start over too; SQLite's own checkpoint at `WAL_BACKSTOP_PAGES` still does. Here that
    # threshold is 1,000 pages (4 MB) instead of 40,000 (160 MB): 2,000 writes of about 6 pages each, with two
    # readers reading every 5 ms, would leave a WAL of some 48 MB; bounded, it stays near the threshold.
    monkeypatch.setattr(sqlite_file, "WAL_BACKSTOP_PAGES", 1000)
    path = tmp_path / "x.db"
    db = SqliteFile(path)
    with db.transaction() as conn:
        conn.execute("CREATE TABLE blobs (data BLOB)")
    done = threading.Event()

    def read() -> None:
        while not done.wait(0.005):
            db.connection().execute("SELECT count(*) FROM blobs").fetchone()

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for _ in range(2000):
            with db.transaction() as conn:
                conn.execute("INSERT INTO blobs VALUES (?)", (os.urandom(20_000),))
    finally:
        done.set()
        for reader in readers:
            reader.join(10)
    assert Path(f"{path}-wal").stat().st_size < 32 * 1024 * 1024
    db.close()


@pytest.mark.parametrize("reader_behind", [False, True])
def test_a_checkpoint_copies_outside_the_writers_turn_and_finishes_inside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader_behind: bool
) -> None:
    # NB. SQLite's own checkpoint ran inside COMMIT, so every writer of every process waited while it copied.
    # Whether this process holds the turn is seen from a second open file description of the turn's file,
    # whose flock conflicts with the first one's.
    monkeypatch.setattr(sqlite_file, "CHECKPOINT_INTERVAL", 0.0)
    path = tmp_path / "x.db"
    db = SqliteFile(path)
    with db.transaction() as conn:
        conn.execute("CREATE TABLE t (n INTEGER)")
    probe = os.open(f"{path}-writer", os.O_RDWR)
    turn_held: list[bool] = []

    def traced(sql: str) -> None:
        if sql.startswith("PRAGMA wal_checkpoint"):
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                turn_held.append(True)
            else:
                fcntl.flock(probe, fcntl.LOCK_UN)
                turn_held.append(False)

    # A reader whose snapshot is older than the write keeps the first pass from copying all of it.
    reader = sqlite3.connect(path, isolation_level=None)
    if reader_behind:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()
    db.connection().set_trace_callback(traced)
    try:
        with db.transaction() as conn:
            conn.execute("INSERT INTO t VALUES (1)")
    finally:
        reader.close()
        os.close(probe)
    assert turn_held == ([False, True] if reader_behind else [False])
    _, frames, copied = db.connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert frames == copied  # the reader gone, nothing is left behind
    db.close()


def test_a_checkpoint_that_fails_is_logged_and_the_write_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # NB. The checkpoint runs after COMMIT: raising would tell the caller that a committed write failed.
    class NoCheckpoints(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql.startswith("PRAGMA wal_checkpoint"):
                raise sqlite3.OperationalError("database is locked")
            return super().execute(sql, *args)

    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **kw: connect(*a, **kw, factory=NoCheckpoints))
    db = SqliteFile(tmp_path / "x.db")
    with caplog.at_level(logging.WARNING, logger="jitgate.sqlite"), db.transaction() as conn:
        conn.execute("CREATE TABLE t (n INTEGER)")
    assert db.connection().execute("SELECT count(*) FROM t").fetchone() == (0,)
    [record] = [r for r in caplog.records if "checkpoint of" in r.getMessage()]
    assert record.name == "jitgate.sqlite" and "database is locked" in record.getMessage()
    db.close()
