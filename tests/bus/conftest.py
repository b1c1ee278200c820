"""The test Redis for networked buses: one server per session, a prefix per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from roomsync.testing.redis import delete_prefix, redis_url, unique_prefix


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The test Redis URL; skipped locally, failed under CI, when it is not reachable."""
    return redis_url()


@pytest.fixture
async def bus_prefix(redis_server: str) -> AsyncIterator[str]:
    """A channel prefix of the test's own (keys under it are deleted afterwards)."""
    prefix = unique_prefix()
    yield prefix
    await delete_prefix(redis_server, prefix)
