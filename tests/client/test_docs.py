"""docs/sdk.md is part of the contract: its examples run against a real server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from roomsync.testing.server import running_server

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


async def test_complete_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_python_blocks()[0], str(DOC), "exec"), namespace)
    async with running_server(tmp_path) as srv:
        await namespace["main"](srv.url)
    out = capsys.readouterr().out
    assert "/todos/1" in out and "refused" not in out


async def test_testing_example_runs(tmp_path: Path) -> None:
    block = next(b for b in _python_blocks() if "running_server" in b)
    namespace: dict[str, Any] = {}
    exec(compile(block, str(DOC), "exec"), namespace)
    await namespace["test_sync"](tmp_path)


def test_every_public_member_is_documented() -> None:
    from roomsync.client import RoomClient, __all__

    text = DOC.read_text(encoding="utf-8")
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    spans = " ".join(re.findall(r"`[^`]+`", prose))
    members = {n for n in dir(RoomClient) if not n.startswith("_")}
    members |= {"connected", "session_info", "stats", "refused", "actor"}
    for name in sorted(members | set(__all__) - {"ws_url", "RetryWait", "ChangeStream"}):
        assert re.search(rf"\b{name}\b", spans), f"{name} is not documented in docs/sdk.md"
