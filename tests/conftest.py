"""Shared fixtures: a real server on a free port, and an aiohttp client session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from roomsync.testing.server import ServerHandle, running_server


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    """A dev-mode server (anonymous peers get every data cap) on SQLite in tmp_path."""
    async with running_server(tmp_path) as handle:
        yield handle


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
