"""`jitgate serve` refuses to start on settings it cannot work with: a clear message naming each setting and what
is wrong, a non-zero exit, no traceback (issue #9). The real command line, in a subprocess."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import HOST, clean_env, free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SECRET = base64.b64encode(b"k" * 32).decode()  # 44 characters, the last one '='


def serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`jitgate serve` with `env`; fails the test if it starts serving instead of exiting."""
    command = [sys.executable, "-m", "shared.cli", "serve", "--host", HOST, "--port", str(free_port())]
    try:
        return subprocess.run(command, env=clean_env(JITGATE_DATA_DIR=str(tmp_path / "data"), **env), cwd=ROOT,
                              capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"jitgate serve started instead of refusing: {exc.stdout!r} {exc.stderr!r}")


def test_a_teams_secret_that_is_not_base64_stops_the_start(tmp_path: Path) -> None:
    result = serve(tmp_path, JITGATE_TEAMS_SECRET=SECRET.rstrip("="))
    assert result.returncode == 1, result
    assert "JITGATE_TEAMS_SECRET: the secret is not valid base64" in result.stderr
    assert "'=' padding" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "serving" not in result.stdout


def test_azure_mode_names_every_missing_setting(tmp_path: Path) -> None:
    result = serve(tmp_path, JITGATE_MODE="azure")
    assert result.returncode == 1, result
    assert ("JITGATE_MODE=azure needs these settings, which are missing: "
            "ServiceBusConnection__fullyQualifiedNamespace, JITGATE_COSMOS_ENDPOINT, JITGATE_GRANT_SCOPES, "
            "JITGATE_GROUP_OBJECT_IDS") in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_every_bad_setting_is_named_at_once(tmp_path: Path) -> None:
    result = serve(tmp_path, JITGATE_RECONCILE_SECONDS="soon", JITGATE_WORKERS="-1",
                   JITGATE_REQUEST_READ_SECONDS="0", JITGATE_PORTAL_URL="backstage.example.com")
    assert result.returncode == 1, result
    for fragment in ("JITGATE_RECONCILE_SECONDS must be a positive number of seconds, not 'soon'",
                     "JITGATE_WORKERS must be a whole number of at least 0, not '-1'",
                     "JITGATE_REQUEST_READ_SECONDS must be a positive number of seconds, not '0'",
                     "JITGATE_PORTAL_URL must be an http(s) base URL"):
        assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_corrupt_local_teams_secret_file_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "teams-secret").write_text("%%%")
    result = serve(tmp_path)
    assert result.returncode == 1, result
    assert "teams-secret: the secret is not valid base64" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
