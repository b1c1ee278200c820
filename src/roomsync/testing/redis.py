"""A Redis for tests: the server to use and a key prefix of the test's own.

The server is ``$ROOMSYNC_TEST_REDIS`` (a ``redis://`` URL), else
``redis://127.0.0.1:6379/0``. :func:`redis_url` skips the test when it does not answer a
PING, or fails it under CI (:func:`roomsync.testing.postgres.unavailable`).
:func:`unique_prefix` names a run's channels and keys apart from every other run's, and
:func:`delete_prefix` removes whatever keys a run left under its prefix.
"""

from __future__ import annotations

import asyncio
import os
import secrets

import redis.asyncio as aioredis

from .postgres import unavailable

__all__ = ["ENV_SERVER", "delete_prefix", "ping", "redis_url", "unique_prefix"]

#: The environment variable naming the test server.
ENV_SERVER = "ROOMSYNC_TEST_REDIS"


async def ping(url: str) -> str:
    """ "" when the Redis at ``url`` answers a PING, else why not."""
    return await _ping(url)


async def _ping(url: str) -> str:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        await asyncio.wait_for(client.ping(), 5)
    except Exception as exc:  # any failure means "not reachable"
        return str(exc) or type(exc).__name__
    finally:
        await client.aclose()
    return ""


def redis_url() -> str:
    """The test Redis, answering; else skip (fail under CI)."""
    url = os.environ.get(ENV_SERVER, "") or "redis://127.0.0.1:6379/0"
    why = asyncio.run(_ping(url))
    if why:
        unavailable(f"Redis is not reachable at {url} ({why})")
    return url


def unique_prefix() -> str:
    """A channel and key prefix no other test run uses."""
    return f"roomsync-test:{secrets.token_hex(6)}:"


async def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix``; how many there were."""
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()
