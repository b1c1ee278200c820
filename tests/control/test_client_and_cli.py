"""The Python ControlClient and ``roomsync control`` against a real server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from roomsync.cli.control_cmd import EXIT_CODES
from roomsync.control.client import ControlClient, ControlForbidden, ControlNotFound
from roomsync.core.codes import RejectClass
from roomsync.testing.server import ServerHandle, free_port


async def test_the_client_has_a_method_per_command_and_raises_per_class(
    srv: ServerHandle,
) -> None:
    token = srv.mint("*", ("*",), actor="ops")
    async with ControlClient(srv.url, token) as ops:
        created = await ops.room_create(room="doc")
        assert created == {"room": "doc", "created": True, "locked": False, "policy": {}}
        assert (await ops.room_get(room="doc"))["head"] == 0
        assert (await ops.call("room", "lock", room="doc"))["locked"] is True
        with pytest.raises(ControlNotFound) as exc:
            await ops.room_get(room="nope")
        assert exc.value.reject_code == "room-unknown" and exc.value.field == "room"
        with pytest.raises(AttributeError):
            ops.room_teleport  # noqa: B018 - not a registered command
    narrow = srv.mint("*", ("room:get",), actor="ops")
    async with ControlClient(srv.url, narrow) as ops:
        with pytest.raises(ControlForbidden) as forbidden:
            await ops.room_lock(room="doc")
        assert forbidden.value.required == "room:lock"
        assert forbidden.value.next == "retry with a token scoped to `required`"


def run_cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMSYNC_")}
    if token:
        env["ROOMSYNC_OPERATOR_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "roomsync.cli.main", "control", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def test_the_cli_prints_results_and_exits_per_reject_class(srv: ServerHandle) -> None:
    token = srv.mint("*", ("*",), actor="ops")
    done = await asyncio.to_thread(
        run_cli, "--url", srv.url, "room", "create", "room=doc", token=token
    )
    assert done.returncode == 0 and '"created": true' in done.stdout
    done = await asyncio.to_thread(
        run_cli, "--url", srv.url, "--json", '{"room": "doc"}', "room", "get", token=token
    )
    assert done.returncode == 0 and '"head": 0' in done.stdout
    done = await asyncio.to_thread(
        run_cli, "--url", srv.url, "room", "get", "room=x y", token=token
    )
    assert done.returncode == EXIT_CODES[RejectClass.INVALID_PAYLOAD]
    assert "field room" in done.stderr and "next: fix `field`" in done.stderr
    done = await asyncio.to_thread(run_cli, "--url", srv.url, "topology", "get")
    assert done.returncode == EXIT_CODES[RejectClass.UNAUTHENTICATED]
    listing = await asyncio.to_thread(run_cli, "--list")
    assert listing.returncode == 0 and "room revoke\troom:revoke\t" in listing.stdout
    gone = await asyncio.to_thread(
        run_cli, "--url", f"http://127.0.0.1:{free_port()}", "topology", "get", token=token
    )
    assert gone.returncode == 11 and "no answer" in gone.stderr


def test_exit_codes_are_distinct() -> None:
    assert len(set(EXIT_CODES.values())) == len(RejectClass) and 0 not in EXIT_CODES.values()
