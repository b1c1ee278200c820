"""Fixtures of the control-plane tests: a dev-mode server whose control rate limit does
not get in the way of tests that send many commands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roomsync.testing.server import ServerHandle, running_server


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    async with running_server(tmp_path, server__control_burst=1000) as handle:
        yield handle
