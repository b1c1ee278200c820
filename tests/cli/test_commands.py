"""CLI contract: serve on embedded defaults, token mint|inspect, config show (issue 2)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from roomsync.testing.server import free_port, wait_for_port
from roomsync.testing.wsclient import closed, connect, hello


def env_without_roomsync() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ROOMSYNC_")}


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roomsync.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env or env_without_roomsync(),
    )


async def test_serve_with_no_config_then_mint_a_token_for_it(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "roomsync.cli.main", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env_without_roomsync(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, None)
        data_dir = tmp_path / "roomsync-data"
        key_file = data_dir / "signing-keys.json"
        assert (data_dir / "roomsync.db").exists()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        minted = cli(
            "token",
            "mint",
            "--data-dir",
            str(data_dir),
            "--room",
            "doc-1",
            "--caps",
            "read,write,presence",
            "--ttl",
            "15m",
            "--actor",
            "ann",
        )
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip()
        assert token.count(".") == 2 and "\n" not in token
        async with aiohttp.ClientSession() as http:
            url = f"ws://127.0.0.1:{port}/ws/doc-1"
            ws, welcome = await hello(http, url, token=token)
            assert welcome["caps"] == ["read", "write", "presence"]
            assert welcome["actor"] == "ann"
            await ws.close()
            # Secure by default: without --dev, anonymous peers are refused.
            ws = await connect(http, url)
            await ws.send_json({"type": "hello", "v": 1})
            _, code = await closed(ws)
            assert code == 4003
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert f"127.0.0.1:{port}" in err


async def test_serve_dev_prints_a_working_token_and_admits_anonymous(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "roomsync.cli.main",
            "serve",
            "--dev",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "d"),
        ],
        env=env_without_roomsync(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, None)
        async with aiohttp.ClientSession() as http:
            ws, welcome = await hello(http, f"ws://127.0.0.1:{port}/ws/any")
            assert "write" in welcome["caps"]
            await ws.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    token_line = next(line for line in err.splitlines() if line.startswith("dev token"))
    token = token_line.rsplit(" ", 1)[1]
    inspected = cli("token", "inspect", token, "--data-dir", str(tmp_path / "d"))
    assert inspected.returncode == 0, inspected.stdout + inspected.stderr
    report = json.loads(inspected.stdout)
    assert report["valid"] is True and report["claims"]["room"] == "*"


def test_token_mint_with_env_keys_and_control_caps(tmp_path: Path) -> None:
    env = {**env_without_roomsync(), "ROOMSYNC_AUTH_KEYS": "k1:" + "s" * 40}
    out = cli(
        "token",
        "mint",
        "--room",
        "*",
        "--caps",
        "room:*,archive:*",
        "--ttl",
        "1h",
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(cli("token", "inspect", out.stdout.strip(), env=env, cwd=tmp_path).stdout)
    assert report["header"]["kid"] == "k1"
    assert report["claims"]["caps"] == ["room:*", "archive:*"]
    assert 3500 < report["expires_in_s"] <= 3600


def test_token_inspect_reports_foreign_signatures(tmp_path: Path) -> None:
    env_a = {**env_without_roomsync(), "ROOMSYNC_AUTH_KEYS": "k1:" + "a" * 40}
    env_b = {**env_without_roomsync(), "ROOMSYNC_AUTH_KEYS": "k1:" + "b" * 40}
    token = cli("token", "mint", "--room", "r", "--caps", "read", env=env_a).stdout.strip()
    out = cli("token", "inspect", token, env=env_b, cwd=tmp_path)
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["valid"] is False and report["error"] == "auth: bad signature"
    assert report["signature_ok"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--caps", "read,fly"), "fly"),
        (("--caps", "read", "--ttl", "soon"), "bad ttl"),
    ],
)
def test_token_mint_usage_errors(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    out = cli("token", "mint", "--data-dir", str(tmp_path), "--room", "r", *args)
    assert out.returncode == 2 and message in out.stderr


def test_config_show_redacts_secrets_and_reports_bad_keys(tmp_path: Path) -> None:
    (tmp_path / "roomsync.toml").write_text(
        '[server]\nport = 9001\n[auth]\nkeys = { main = "' + "z" * 40 + '" }\n'
        "[policy]\nrate_messages_per_s = 50.0\n"
    )
    env = {**env_without_roomsync(), "ROOMSYNC_POLICY_ECHO_TO_SENDER": "true"}
    out = cli("config", "show", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "port = 9001" in out.stdout and "rate_messages_per_s = 50.0" in out.stdout
    assert "echo_to_sender = true" in out.stdout
    assert "z" * 40 not in out.stdout and "***" in out.stdout
    (tmp_path / "roomsync.toml").write_text("[server]\nprot = 1\n")
    bad = cli("config", "show", cwd=tmp_path)
    assert bad.returncode == 2 and "server.prot" in bad.stderr
