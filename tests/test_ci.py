"""What ``.ci/run`` enforces: the suite, then mypy strict and ruff, any failure fatal.

The script runs here with stand-ins for ``pip``, ``python`` and ``npm`` (and
``promtool`` or ``apt-get``) first on ``PATH``, and ``ROOMSYNC_CHROMIUM`` naming a browser
that is there or not: they log their arguments and exit with the code a test
picks, so the order of the steps and the exit codes are checked without installing or
running anything for real.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / ".ci" / "run"

STEPS = [
    "pip install -e .[test]",
    "python -m pytest",
    "npm ci",
    "npm test",
    "python -m mypy --strict src/roomsync",
    "python -m ruff check src tests",
    "python -m ruff format --check src tests",
]

# Logs "<name> <args>" and exits with $CI_FAKE_RC_<n> for the n-th command (default 0).
STUB = """#!/usr/bin/env bash
n=$(( $(wc -l < "$CI_FAKE_LOG") + 1 ))
echo "$(basename "$0") $*" >> "$CI_FAKE_LOG"
var="CI_FAKE_RC_$n"
exit "${!var:-0}"
"""


def run_ci(
    tmp_path: Path, *, promtool: bool = True, chromium: bool = True, **exit_codes: int
) -> tuple[int, list[str], str]:
    """Run ``.ci/run``; without ``promtool`` the machine's own is hidden too (``PATH``
    then holds only the stubs and the few tools the script and the stubs use)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    names = ["pip", "python", "npm", "promtool" if promtool else "apt-get"]
    if not chromium and promtool:
        names.append("apt-get")
    browser = tmp_path / "chromium"
    if chromium:
        browser.write_text("#!/bin/sh\n")
        browser.chmod(0o755)
    for name in names:
        stub = bin_dir / name
        stub.write_text(STUB)
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "log"
    log.write_text("")
    bash = shutil.which("bash")
    assert bash is not None
    path = os.environ["PATH"]
    if not promtool:
        tools = tmp_path / "tools"
        tools.mkdir()
        for tool in ("bash", "basename", "dirname", "wc"):
            found = shutil.which(tool)
            assert found is not None, tool
            (tools / tool).symlink_to(found)
        path = str(tools)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{path}",
        "CI_FAKE_LOG": str(log),
        "ROOMSYNC_CHROMIUM": str(browser),
        **{f"CI_FAKE_RC_{step}": str(rc) for step, rc in exit_codes.items()},
    }
    done = subprocess.run(
        [bash, str(CI)], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    return done.returncode, log.read_text().splitlines(), done.stderr


def test_runs_the_suite_then_mypy_then_ruff(tmp_path: Path) -> None:
    rc, steps, _ = run_ci(tmp_path)
    assert rc == 0
    assert steps == STEPS


def test_promtool_is_installed_first_when_missing(tmp_path: Path) -> None:
    rc, steps, _ = run_ci(tmp_path, promtool=False)
    assert rc == 0
    assert steps == ["apt-get install -y --no-install-recommends prometheus", *STEPS]


def test_a_failed_promtool_install_fails_ci(tmp_path: Path) -> None:
    rc, steps, _ = run_ci(tmp_path, promtool=False, **{"1": 100})
    assert rc == 100
    assert steps == ["apt-get install -y --no-install-recommends prometheus"]


def test_no_tests_collected_fails(tmp_path: Path) -> None:
    rc, steps, stderr = run_ci(tmp_path, **{"2": 5})
    assert rc == 5
    assert steps == STEPS[:2]
    assert "collected no tests" in stderr


def test_chromium_is_installed_from_debian_when_missing(tmp_path: Path) -> None:
    rc, steps, _ = run_ci(tmp_path, chromium=False)
    assert rc == 0
    assert steps == [
        "apt-get update -qq",
        "apt-get install -y --no-install-recommends chromium",
        *STEPS,
    ]


def test_a_failed_chromium_install_fails_ci(tmp_path: Path) -> None:
    rc, steps, _ = run_ci(tmp_path, chromium=False, **{"2": 100})
    assert rc == 100
    assert steps == ["apt-get update -qq", "apt-get install -y --no-install-recommends chromium"]


@pytest.mark.parametrize("failing", range(1, len(STEPS) + 1))
def test_any_failing_step_fails_ci_and_stops_it(tmp_path: Path, failing: int) -> None:
    rc, steps, _ = run_ci(tmp_path, **{str(failing): 1})
    assert rc == 1
    assert steps == STEPS[:failing]


def test_the_test_extra_installs_the_checkers() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    names = {req.split(">=")[0].split("[")[0] for req in project["optional-dependencies"]["test"]}
    assert {"pytest", "mypy", "ruff"} <= names
    assert all(">=" in req for req in project["optional-dependencies"]["test"])
