"""The node's timed self-measurements (``server/probes.py``, SPEC §7): event-loop lag and
the ``roomsync_ready`` gauge, on a real server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from roomsync.storage.sqlite import SqliteStore
from roomsync.testing.faults import FaultyStore
from roomsync.testing.server import ServerHandle, running_server, wait_until


def value(srv: ServerHandle, name: str, **labels: str) -> float:
    found = srv.server.metrics.registry.get_sample_value(name, labels)
    assert found is not None, name
    return found


async def test_a_blocked_event_loop_shows_as_lag(srv: ServerHandle) -> None:
    def slow() -> float:  # samples that waited more than 0.25 s
        return value(srv, "roomsync_event_loop_lag_seconds_count") - value(
            srv, "roomsync_event_loop_lag_seconds_bucket", le="0.25"
        )

    await wait_until(lambda: value(srv, "roomsync_event_loop_lag_seconds_count") >= 1)
    assert slow() == 0
    time.sleep(0.6)  # a callback that blocks the loop: what the probe is there to see
    await wait_until(lambda: slow() >= 1, timeout=5)
    assert value(srv, "roomsync_event_loop_lag_seconds_sum") >= 0.25


async def test_ready_follows_each_readiness_check(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    await wait_until(lambda: value(srv, "roomsync_ready") == 1)  # checked at start
    store = srv.server.store
    assert isinstance(store, SqliteStore)
    await store.close()
    async with http.get(srv.url + "/readyz") as resp:
        assert resp.status == 503
    assert value(srv, "roomsync_ready") == 0
    await store.open()
    async with http.get(srv.url + "/readyz") as resp:
        assert resp.status == 200
    assert value(srv, "roomsync_ready") == 1


async def test_ready_is_kept_current_without_readyz_probes(tmp_path: Path) -> None:
    faulty = FaultyStore(SqliteStore(tmp_path / "ready.db"))
    async with running_server(tmp_path, store=faulty.as_store(), server__heartbeat_ms=100) as srv:
        await wait_until(lambda: value(srv, "roomsync_ready") == 1)
        faulty.fail_method("check", 1000)
        await wait_until(lambda: value(srv, "roomsync_ready") == 0)
        faulty.fail_method("check", 0)
        await wait_until(lambda: value(srv, "roomsync_ready") == 1)


class _HangingCheck(FaultyStore):
    """A store whose readiness check waits until released (a store that hangs)."""

    def __init__(self, inner: SqliteStore) -> None:
        super().__init__(inner)
        self.release = asyncio.Event()
        self.hanging = False

    async def check(self) -> None:
        if self.hanging:
            await self.release.wait()
        await self.inner.check()


async def test_a_check_slower_than_a_heartbeat_is_not_ready(tmp_path: Path) -> None:
    store = _HangingCheck(SqliteStore(tmp_path / "hang.db"))
    async with running_server(tmp_path, store=store.as_store(), server__heartbeat_ms=100) as srv:
        await wait_until(lambda: value(srv, "roomsync_ready") == 1)
        store.hanging = True
        await wait_until(lambda: value(srv, "roomsync_ready") == 0)
        store.release.set()  # the check in flight finishes; the next ones pass
        store.hanging = False
        await wait_until(lambda: value(srv, "roomsync_ready") == 1)
        store.hanging = True
        store.release.clear()
        await wait_until(lambda: value(srv, "roomsync_ready") == 0)
    # The server stopped with a check still hanging: the probe cancelled it.
