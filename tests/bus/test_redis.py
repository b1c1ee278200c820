"""The Redis bus between two nodes: remote delivery in publish order, local delivery inside
publish, resync notices, and a Redis that goes away (through a proxy that cuts it)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from roomsync.bus.base import BusError, RoomEvent
from roomsync.bus.redis import RedisBus
from roomsync.testing.bus_contract import event
from roomsync.testing.proxy import TcpProxy
from roomsync.testing.server import wait_until


class Nodes:
    """Buses made by a test, closed at its end."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self.made: list[RedisBus] = []

    async def bus(self, node: str, *, url: str | None = None, **kwargs: object) -> RedisBus:
        bus = RedisBus(url or self.url, node=node, prefix=self.prefix, **kwargs)  # type: ignore[arg-type]
        self.made.append(bus)
        await bus.open()
        return bus


@pytest.fixture
async def nodes(redis_server: str, bus_prefix: str) -> AsyncIterator[Nodes]:
    made = Nodes(redis_server, bus_prefix)
    yield made
    for bus in made.made:
        await bus.close()


def _seqs(events: list[RoomEvent]) -> list[int]:
    return [c.seq or 0 for e in events for c in e.changes]


async def test_an_event_published_on_a_reaches_b_in_order(nodes: Nodes) -> None:
    a, b = await nodes.bus("a"), await nodes.bus("b")
    on_a: list[RoomEvent] = []
    on_b: list[RoomEvent] = []
    other_on_b: list[RoomEvent] = []
    a.subscribe("r", on_a.append)
    b.subscribe("r", on_b.append)
    b.subscribe("other", other_on_b.append)
    await a.flush()
    await b.flush()
    sent: list[RoomEvent] = []
    seq = 1
    for i in range(200):
        e = event("r", seq, n=1 + i % 3, author=None if i % 5 == 0 else f"p-{i}")
        seq += len(e.changes)
        a.publish(e)
        sent.append(e)
        assert on_a[-1] is e  # local delivery inside publish
        if i % 50 == 0:
            a.publish(event("other", i + 1))
    await a.flush()
    await wait_until(lambda: len(on_b) == len(sent), timeout=10)
    assert on_b == sent  # same rooms, changes with seqs, authors and nodes, in order
    assert _seqs(on_b) == list(range(1, seq))
    assert len(on_a) == len(sent)  # a's own events came back from Redis and were dropped
    assert [e.first_seq for e in other_on_b] == [1, 51, 101, 151]
    assert (a.sent, b.received) == (len(sent) + 4, len(sent) + 4)


async def test_rooms_a_node_does_not_subscribe_never_reach_it(nodes: Nodes) -> None:
    a, b = await nodes.bus("a"), await nodes.bus("b")
    got: list[RoomEvent] = []
    sub = b.subscribe("r", got.append)
    await b.flush()
    a.publish(event("elsewhere", 1))
    a.publish(event("r", 1))
    await a.flush()
    await wait_until(lambda: len(got) == 1, timeout=10)
    sub.close()
    await b.flush()
    a.publish(event("r", 2))
    await a.flush()
    await asyncio.sleep(0.1)  # nothing should arrive; a bounded look
    assert [e.room for e in got] == ["r"] and b.received == 1


async def test_each_active_subscription_is_announced_for_resync(nodes: Nodes) -> None:
    resynced: list[str] = []
    b = await nodes.bus("b", on_resync=resynced.append)
    b.subscribe("r1", lambda e: None)
    b.subscribe("r2", lambda e: None)
    b.subscribe("r1", lambda e: None)  # a second local subscriber: one channel
    await b.flush()
    assert sorted(resynced) == ["r1", "r2"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_redis_fails_open_and_check(bus_prefix: str) -> None:
    bus = RedisBus(f"redis://127.0.0.1:{_closed_port()}/0", prefix=bus_prefix)
    with pytest.raises(BusError):
        await bus.open()
    with pytest.raises(BusError):
        await bus.check()
    bus.publish(event("r", 1))  # a closed bus still delivers locally, sends nothing
    await bus.close()


async def test_a_cut_connection_fails_check_then_recovers_and_resyncs(nodes: Nodes) -> None:
    target = urlsplit(nodes.url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        resynced: list[str] = []
        via = f"redis://127.0.0.1:{proxy.port}{target.path or '/0'}"
        b = await nodes.bus("b", url=via, on_resync=resynced.append, ping_interval_s=0.2)
        a = await nodes.bus("a")
        got: list[RoomEvent] = []
        b.subscribe("r", got.append)
        await b.flush()
        await b.check()
        assert resynced == ["r"]
        a.publish(event("r", 1))
        await wait_until(lambda: len(got) == 1, timeout=10)

        await proxy.cut()
        await wait_until(lambda: not b._sub_up, timeout=10)
        with pytest.raises(BusError):
            await b.check()
        a.publish(event("r", 2))  # lost to b: it learns of it by resync
        await a.flush()

        await proxy.restore()
        await b.flush(timeout=15)
        await b.check()
        assert resynced == ["r", "r"] and b.reconnects >= 1
        a.publish(event("r", 3))
        await wait_until(lambda: len(got) == 2, timeout=10)
        assert [e.first_seq for e in got] == [1, 3]  # the gap b's host fills from the store


async def test_events_published_while_redis_is_away_are_sent_in_order(nodes: Nodes) -> None:
    target = urlsplit(nodes.url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        via = f"redis://127.0.0.1:{proxy.port}{target.path or '/0'}"
        a = await nodes.bus("a", url=via, ping_interval_s=0.2, retry_max_s=0.2)
        b = await nodes.bus("b")
        got: list[RoomEvent] = []
        b.subscribe("r", got.append)
        await b.flush()
        await proxy.cut()
        for seq in range(1, 11):
            a.publish(event("r", seq))
        await asyncio.sleep(0.3)  # a's sender meets the cut (bounded)
        with pytest.raises(BusError):
            await a.check()
        await proxy.restore()
        await a.flush(timeout=15)
        await wait_until(lambda: len(got) >= 10, timeout=10)
        seqs = [e.first_seq for e in got]
        assert sorted(set(seqs)) == list(range(1, 11))  # every one, maybe some twice
        assert seqs == sorted(seqs)  # in publish order


async def test_the_outbox_is_bounded_and_keeps_the_newest(nodes: Nodes) -> None:
    target = urlsplit(nodes.url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        via = f"redis://127.0.0.1:{proxy.port}{target.path or '/0'}"
        a = await nodes.bus("a", url=via, outbox_max=5, retry_max_s=0.2)
        b = await nodes.bus("b")
        got: list[RoomEvent] = []
        b.subscribe("r", got.append)
        await b.flush()
        await proxy.cut()
        for seq in range(1, 21):
            a.publish(event("r", seq))
        assert a.dropped >= 15
        await proxy.restore()
        await a.flush(timeout=15)
        await wait_until(lambda: got and got[-1].first_seq == 20, timeout=10)
        assert got[0].first_seq >= 16  # the oldest went; the newest shows the gap
