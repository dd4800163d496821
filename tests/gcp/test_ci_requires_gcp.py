"""In CI a `gcp` test that skips is a failure (JITGATE_REQUIRE_GCP, set by .ci/run): shown on a probe test run in a
pytest of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gcp

ROOT = Path(__file__).resolve().parents[2]
PROBE = '''
import pytest

@pytest.mark.gcp
def test_probe():
    pytest.skip("no fake today")
'''


def run_probe(tmp_path: Path, require: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_makereport  # noqa: F401\\n")
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "JITGATE_REQUIRE_GCP"}
    env["PYTHONPATH"] = str(ROOT)
    if require:
        env["JITGATE_REQUIRE_GCP"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "markers=gcp: probe",
                           "--rootdir", str(tmp_path), str(tmp_path)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)


def test_a_skipped_gcp_test_fails_when_ci_requires_them(tmp_path: Path) -> None:
    required = run_probe(tmp_path, require=True)
    assert required.returncode == 1, required.stdout
    assert "FAILED test_probe.py::test_probe - CI runs every gcp test" in required.stdout
    assert run_probe(tmp_path, require=False).returncode == 0


def test_ci_requires_them() -> None:
    assert "export JITGATE_REQUIRE_GCP=1" in (ROOT / ".ci" / "run").read_text()
