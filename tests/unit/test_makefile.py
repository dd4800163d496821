"""`make test` runs what CI runs: with npm present it installs the Backstage module's packages itself, once per
package-lock.json, so the cross-language contract test runs on a fresh machine too (issue #9). Checked with
`make -n` (what make would run), against a stand-in module and a stand-in npm."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make")

pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


@pytest.fixture
def module(tmp_path: Path) -> Path:
    module = tmp_path / "module"
    module.mkdir()
    (module / "package-lock.json").write_text("{}")
    return module


def planned(module: Path, tmp_path: Path, with_npm: bool) -> str:
    """The commands `make test` would run, with or without an npm on PATH."""
    bin_dir = tmp_path / ("bin-npm" if with_npm else "bin-none")
    bin_dir.mkdir(exist_ok=True)
    if with_npm:
        npm = bin_dir / "npm"
        npm.write_text("#!/bin/sh\nexit 0\n")
        npm.chmod(0o755)
    venv = tmp_path / "venv"
    venv.mkdir(exist_ok=True)
    stamp = venv / ".installed"
    stamp.touch()
    os.utime(stamp, (4_000_000_000, 4_000_000_000))  # newer than every requirements file
    assert MAKE is not None
    run = subprocess.run([MAKE, "-n", "test", f"VENV={venv}", f"BACKSTAGE_MODULE={module}"], cwd=ROOT,
                         env={"PATH": str(bin_dir), "HOME": str(tmp_path)}, capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_with_npm_make_test_installs_the_module_packages_first(module: Path, tmp_path: Path) -> None:
    plan = planned(module, tmp_path, with_npm=True).splitlines()
    install = next(i for i, line in enumerate(plan) if "npm ci" in line)
    assert str(module) in plan[install]
    assert install < next(i for i, line in enumerate(plan) if "-m pytest" in line)


def test_packages_installed_after_the_lock_file_changed_are_not_installed_again(module: Path,
                                                                               tmp_path: Path) -> None:
    # GIVEN backstage/ci.sh (or an earlier `make test`) ran npm ci after the lock file last changed
    (module / "node_modules").mkdir()
    (module / "node_modules" / ".package-lock.json").write_text("{}")
    os.utime(module / "package-lock.json", (1_000_000_000, 1_000_000_000))
    # THEN `make test` goes straight to pytest
    assert "npm ci" not in planned(module, tmp_path, with_npm=True)
    # AND WHEN the lock file changes THEN it installs again
    os.utime(module / "package-lock.json", (4_100_000_000, 4_100_000_000))
    assert "npm ci" in planned(module, tmp_path, with_npm=True)


def test_without_npm_make_test_still_runs_the_tests(module: Path, tmp_path: Path) -> None:
    plan = planned(module, tmp_path, with_npm=False)
    assert "npm ci" not in plan
    assert "-m pytest" in plan
