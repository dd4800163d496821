"""A throwaway PostgreSQL server from the Debian `postgresql` package's binaries, for tests, the demo and
the database benchmark: a temporary data directory, a free port on 127.0.0.1, password (SCRAM) sign-in
over TCP only, and gone when stopped.

`initdb` refuses to run as root (CI runs as root), so as root the server runs as the OS user `jitgate-pg`,
made with `useradd --system` when it is missing. pytest-postgresql would start the server as the current
user, and the demo needs the same outside pytest; hence this small module.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OS_USER = "jitgate-pg"
PAYMENTS_ROLES = ("payments_read", "payments_write")
INSTALL_HINT = "apt-get install postgresql (Debian/Ubuntu), which brings initdb and pg_ctl"


class NoPostgres(RuntimeError):
    """The PostgreSQL server binaries are not installed here."""


def binaries() -> Path | None:
    """The directory holding initdb and pg_ctl: PATH first, then Debian's /usr/lib/postgresql/<v>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


@dataclass(frozen=True)
class Admin:
    """How to reach the throwaway server as its superuser."""

    host: str
    port: int
    user: str
    password: str
    dbname: str = "postgres"

    def conninfo(self, dbname: str | None = None, user: str | None = None, password: str | None = None) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=self.host, port=self.port, dbname=dbname or self.dbname,
                             user=user or self.user, password=password or self.password, connect_timeout=5)


class ThrowawayPostgres:
    """One PostgreSQL server in a temporary directory. `start()` it, use `admin`, `stop()` it."""

    def __init__(self) -> None:
        self.bin = binaries()
        if self.bin is None:
            raise NoPostgres(f"PostgreSQL is not installed: {INSTALL_HINT}")
        self.root = Path(tempfile.mkdtemp(prefix="jitgate-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.admin = Admin("127.0.0.1", self.port, "postgres", secrets.token_urlsafe(18))
        self._user: tuple[int, int] | None = None
        self.version = 0

    def start(self) -> ThrowawayPostgres:
        if os.geteuid() == 0:
            self._user = _os_user()
            os.chown(self.root, *self._user)
        pwfile = self.root / "pw"
        pwfile.write_text(self.admin.password, encoding="utf-8")
        os.chmod(pwfile, 0o600)
        if self._user:
            os.chown(pwfile, *self._user)
        self._run("initdb", "-D", str(self.data), "-U", self.admin.user, "--auth=scram-sha-256",
                  f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--no-sync")
        pwfile.unlink()
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = ''\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 60\n")
        self.version = int((self.data / "PG_VERSION").read_text().strip())
        self.resume()
        return self

    def resume(self) -> None:
        """Start (again) the server whose data directory exists."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")

    def halt(self) -> None:
        """Stop the server now, keeping its data (for tests of a server that goes away)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        """Stop the server and remove every file it had."""
        if (self.data / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
            except subprocess.CalledProcessError:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def sql(self, *statements: str, dbname: str = "postgres") -> list[Any]:
        """Run statements as the superuser; the rows of the last one that returns any."""
        import psycopg

        rows: list[Any] = []
        with psycopg.connect(self.admin.conninfo(dbname=dbname), autocommit=True) as conn:
            for statement in statements:
                cur = conn.execute(statement)  # NB. trusted text, as an admin types it into psql
                if cur.description is not None:
                    rows = cur.fetchall()
        return rows

    def prepare_payments(self, jitgate_password: str) -> None:
        """What an admin does once (infra/sql/postgres-setup.sql): a `payments` database whose table only
        `payments_read` may read, and jitgate's login with CREATEROLE, ADMIN OPTION on the roles it grants
        and pg_signal_backend."""
        self.sql("CREATE DATABASE payments")
        self.sql(
            *(f"CREATE ROLE {role} NOLOGIN" for role in PAYMENTS_ROLES),
            "CREATE ROLE jitgate LOGIN CREATEROLE PASSWORD " + _literal(jitgate_password),
            f"GRANT {', '.join(PAYMENTS_ROLES)} TO jitgate WITH ADMIN OPTION",
            "GRANT pg_signal_backend TO jitgate",
        )
        self.sql(
            "CREATE TABLE payments (id int PRIMARY KEY, amount numeric NOT NULL)",
            "INSERT INTO payments VALUES (1, 42.00), (2, 7.50)",
            "REVOKE ALL ON payments FROM PUBLIC",
            "GRANT SELECT ON payments TO payments_read",
            dbname="payments",
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.root / "server.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _run(self, tool: str, *args: str) -> None:
        assert self.bin is not None
        user, group = self._user if self._user else (None, None)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.root)}
        result = subprocess.run([str(self.bin / tool), *args], user=user, group=group,
                                extra_groups=[] if user else None, env=env, cwd=self.root,
                                capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, [tool, *args],
                                                result.stdout, result.stderr + self.log_tail())


def _os_user() -> tuple[int, int]:
    """The unprivileged OS user the server runs as when jitgate runs as root (created when missing)."""
    import pwd

    try:
        entry = pwd.getpwnam(OS_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OS_USER],
                       check=True, capture_output=True)
        entry = pwd.getpwnam(OS_USER)
    return entry.pw_uid, entry.pw_gid


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
