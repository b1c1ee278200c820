"""``roomsync serve`` and its store: the PostgreSQL backend needs its DSN, ``--store URL``
sets both, and a node on PostgreSQL serves and keeps its writes there."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from roomsync.storage.postgres import PostgresStore
from roomsync.testing.postgres import postgres_database
from roomsync.testing.server import free_port, server_process

NO_DSN = (
    "roomsync: config error: storage.postgres_dsn: required when storage.backend is 'postgres'\n"
)


def _serve(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roomsync.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize("how", ["flag", "env", "file"])
def test_serve_with_postgres_without_a_dsn_exits_with_the_config_error(
    tmp_path: Path, how: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMSYNC_")}
    data_dir = tmp_path / "data"
    args = ["serve", "--port", str(free_port()), "--data-dir", str(data_dir)]
    if how == "flag":
        args += ["--storage", "postgres"]
    elif how == "env":
        env["ROOMSYNC_STORAGE_BACKEND"] = "postgres"
    else:
        config = tmp_path / "roomsync.toml"
        config.write_text('[storage]\nbackend = "postgres"\n')
        args += ["--config", str(config)]
    done = _serve(args, env)
    assert done.returncode == 2
    assert done.stderr == NO_DSN  # one line, no traceback
    assert done.stdout == ""
    assert not data_dir.exists()  # refused before anything was created


def test_serve_store_flag_refuses_what_is_not_a_postgres_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMSYNC_")}
    done = _serve(["serve", "--store", "mysql://u:secret@db/x"], env)
    assert done.returncode == 2
    assert "expected a postgresql:// URL" in done.stderr and "secret" not in done.stderr
    done = _serve(["serve", "--store", "postgresql://db/x", "--storage", "sqlite"], env)
    assert done.returncode == 2 and "--storage" in done.stderr


def test_serve_help_names_the_backends() -> None:
    done = _serve(["serve", "--help"], dict(os.environ))
    assert done.returncode == 0
    assert "sqlite" in done.stdout and "memory" in done.stdout and "postgres" in done.stdout
    assert "--store URL" in done.stdout


def test_serve_on_postgres_is_ready_and_keeps_its_rooms_there(tmp_path: Path) -> None:
    with (
        postgres_database() as dsn,
        server_process(tmp_path / "data", args=["--store", dsn]) as node,
    ):
        with urllib.request.urlopen(f"{node.url}/readyz", timeout=10) as answer:
            ready = json.load(answer)
        assert ready["checks"]["store"] == {"ok": True, "backend": "postgres"}

        async def written() -> int:
            store = PostgresStore(dsn, max_size=1)
            await store.open()
            try:
                async with store._conn() as conn:
                    return int(await conn.fetchval("SELECT count(*) FROM schema_version"))
            finally:
                await store.close()

        assert asyncio.run(written()) >= 1
        assert node.terminate() == 0
