"""``roomsync canary`` (issue 12): passes against a healthy server, fails with the failing
check named against broken ones, repeats with ``--interval``/``--count``, and writes a
textfile that parses as Prometheus text."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from roomsync.cli.main import main
from roomsync.ops.probe import DEFAULT_ROOM
from roomsync.testing.faults import read_only
from roomsync.testing.server import ServerHandle, running_server

from .conftest import Proxy, operator


async def canary(*args: str) -> int:
    code: int = await asyncio.to_thread(main, ["canary", *args, "--timeout", "3"])
    return code


def samples(path: Path) -> dict[tuple[str, str | None], float]:
    """``(sample name, check label)`` -> value of every sample in a textfile."""
    out: dict[tuple[str, str | None], float] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            out[(sample.name, sample.labels.get("check"))] = sample.value
    return out


async def test_healthy_server_passes_and_writes_the_textfile(
    srv: ServerHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    textfile = tmp_path / "canary.prom"
    code = await canary(srv.url, "--operator-token", operator(srv), "--prometheus-textfile",
                        str(textfile))  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    for check in ("health", "handshake", "sync", "blob", "control.room", "control.policy"):
        assert f"ok    {check}" in out
    got = samples(textfile)
    assert got[("roomsync_canary_ok", None)] == 1
    assert got[("roomsync_canary_check_ok", "handshake")] == 1
    assert got[("roomsync_canary_check_ok", "control.archive")] == 1
    assert got[("roomsync_canary_check_seconds", "sync")] > 0
    assert abs(got[("roomsync_canary_last_run_timestamp_seconds", None)] - time.time()) < 60
    assert ("roomsync_canary_last_success_timestamp_seconds", None) in got
    assert not list(tmp_path.glob("canary.prom.*"))  # the temp file was renamed over it


async def test_interval_and_count_repeat_as_json_lines(
    srv: ServerHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await canary(srv.url, "--interval", "0.01", "--count", "3", "--json")
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and len(lines) == 3
    runs = [json.loads(line) for line in lines]
    assert all(run["ok"] for run in runs)
    by_check = {c["check"]: c["status"] for c in runs[0]["checks"]}
    assert by_check["blob"] == "pass" and by_check["control.room"] == "skipped"
    # the same two blobs every run: three runs store two objects, not six
    stored = [
        p for p in (tmp_path / "blobs").rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(tmp_path).parts)
    ]  # fmt: skip
    assert len(stored) == 2


async def test_expired_token_fails_the_handshake_check(
    srv: ServerHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    textfile = tmp_path / "canary.prom"
    expired = srv.mint(DEFAULT_ROOM, ttl_s=60, now_s=int(time.time()) - 600)
    code = await canary(srv.url, "--token", expired, "--prometheus-textfile", str(textfile))
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  handshake" in out and "connect.token: the token's `exp` has passed" in out
    got = samples(textfile)
    assert got[("roomsync_canary_ok", None)] == 0
    assert got[("roomsync_canary_check_ok", "handshake")] == 0
    assert got[("roomsync_canary_check_ok", "health")] == 1
    assert ("roomsync_canary_check_ok", "sync") not in got  # skipped behind the handshake
    assert ("roomsync_canary_last_success_timestamp_seconds", None) not in got


async def test_proxy_that_strips_upgrade_fails_the_handshake_check(
    srv: ServerHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Proxy(srv.url) as proxy:
        code = await canary(proxy.url, "--json")
    (run,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1 and run["ok"] is False
    (handshake,) = [c for c in run["checks"] if c["check"] == "handshake"]
    assert handshake["status"] == "fail"
    assert handshake["failed_steps"][0]["id"] == "connect.upgrade"


async def test_rate_limit_fails_the_sync_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_server(
        tmp_path,
        policy__rate_messages_per_s=0.001,
        policy__rate_burst_messages=1,
        policy__rate_grace_ms=0,
    ) as srv:
        code = await canary(srv.url)
    out = capsys.readouterr().out
    assert code == 1 and "FAIL  sync" in out and "sync.write" in out and "4008" in out


async def test_read_only_blob_directory_fails_the_blob_check(
    tmp_path: Path, blob_mount: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_server(tmp_path / "data", blobs__dir=str(blob_mount)) as srv:
        read_only(blob_mount)
        code = await canary(srv.url, "--json")
    (run,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    status = {c["check"]: c["status"] for c in run["checks"]}
    assert code == 1 and status["blob"] == "fail" and status["sync"] == "pass"
    assert status["health"] == "fail"  # /readyz says checks.blobs too


async def test_operator_token_without_the_cap_fails_that_family(
    srv: ServerHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await canary(srv.url, "--operator-token", operator(srv, ("room:get", "tick:get")))
    out = capsys.readouterr().out
    assert code == 1
    assert "ok    control.room" in out and "ok    control.tick" in out
    assert "FAIL  control.archive" in out and "`archive:list`" in out


async def test_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert await canary("http://127.0.0.1:1", "--count", "0") == 2
    assert "--count" in capsys.readouterr().err
