"""``roomsync serve`` refuses a storage backend this build does not have, before it starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from roomsync.testing.server import free_port

PLANNED = (
    "roomsync: config error: storage.backend 'postgres' is not available yet (planned): "
    "use 'sqlite' or 'memory'\n"
)


@pytest.mark.parametrize("how", ["flag", "env", "file"])
def test_serve_with_postgres_exits_with_the_config_error(tmp_path: Path, how: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMSYNC_")}
    data_dir = tmp_path / "data"
    args = ["serve", "--port", str(free_port()), "--data-dir", str(data_dir)]
    if how == "flag":
        args += ["--storage", "postgres"]
    elif how == "env":
        env["ROOMSYNC_STORAGE_BACKEND"] = "postgres"
    else:
        config = tmp_path / "roomsync.toml"
        config.write_text('[storage]\nbackend = "postgres"\npostgres_dsn = "postgresql://db/rs"\n')
        args += ["--config", str(config)]
    done = subprocess.run(
        [sys.executable, "-m", "roomsync.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr == PLANNED  # one line, no traceback
    assert done.stdout == ""
    assert not data_dir.exists()  # refused before anything was created


def test_serve_help_names_the_backends() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "roomsync.cli.main", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "sqlite" in done.stdout and "memory" in done.stdout and "planned" in done.stdout
