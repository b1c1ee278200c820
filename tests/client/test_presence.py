"""Presence in the SDK against a real server (SPEC §5): see, batch, leave, heartbeat, restore."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from roomsync.client import (
    Backoff,
    PresenceEvent,
    PresenceInfo,
    PresenceStream,
    RequestRefused,
    RoomClient,
    connect,
)
from roomsync.testing.server import ServerHandle, running_server, wait_until

ROOM = "presence-room"
FAST = Backoff(base=0.01, factor=2, max=0.05)
TIMEOUT = 5.0


_open: list[RoomClient] = []


async def close_all() -> None:
    """Close every client the test opened (also when it failed halfway)."""
    while _open:
        await _open.pop().close()


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, **overrides: Any) -> AsyncIterator[ServerHandle]:
    """``running_server`` that closes the test's clients before the server stops."""
    async with running_server(tmp_path, **overrides) as handle:
        try:
            yield handle
        finally:
            await close_all()


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    async with serve(tmp_path) as handle:
        yield handle


async def open_client(srv: ServerHandle, actor: str, **kwargs: Any) -> RoomClient:
    kwargs.setdefault("backoff", FAST)
    client = await asyncio.wait_for(connect(srv.url, ROOM, actor=actor, **kwargs), 10)
    _open.append(client)
    await client.wait_synced(10)
    return client


def peer_of(client: RoomClient) -> str:
    assert client.session_info is not None
    return client.session_info.peer


async def next_event(
    stream: PresenceStream, match: Callable[[PresenceEvent], bool] = lambda e: True
) -> PresenceEvent:
    """The next event of ``stream`` that satisfies ``match`` (TimeoutError after 5 s)."""

    async def find() -> PresenceEvent:
        async for event in stream:
            if match(event):
                return event
        raise AssertionError("presence stream ended")

    return await asyncio.wait_for(find(), TIMEOUT)


def updates(samples: ServerHandle) -> float:
    value = samples.server.metrics.registry.get_sample_value("roomsync_presence_updates_total")
    return value or 0.0


async def test_two_clients_see_each_others_presence(srv: ServerHandle) -> None:
    a = await open_client(srv, "alice")
    b = await open_client(srv, "bob")
    a_events, b_events = a.presence_events(), b.presence_events()
    seen: list[PresenceEvent] = []
    b.on_presence(seen.append)

    a.set_presence({"cursor": [1, 2], "name": "Alice"})
    event = await next_event(b_events, lambda e: bool(e.changed))
    info = PresenceInfo(peer_of(a), "alice", {"cursor": [1, 2], "name": "Alice"})
    assert event.changed == (info,) and event.left == ()
    assert b.presence == {peer_of(a): info}
    assert seen == [event]  # the callback got the same event
    assert a.local_presence == {"cursor": [1, 2], "name": "Alice"}

    b.set_presence("typing")
    event = await next_event(a_events, lambda e: bool(e.changed))
    assert event.changed == (PresenceInfo(peer_of(b), "bob", "typing"),)
    # Nobody sees itself: the server's echo of our own state is not in our view.
    assert peer_of(a) not in a.presence and peer_of(b) not in b.presence

    # A late joiner gets both from the welcome snapshot.
    c = await open_client(srv, "carol")
    assert {p: i.state for p, i in c.presence.items()} == {
        peer_of(a): {"cursor": [1, 2], "name": "Alice"},
        peer_of(b): "typing",
    }
    for client in (a, b, c):
        await client.close()


async def test_set_presence_is_coalesced_per_turn_and_state_is_copied(srv: ServerHandle) -> None:
    a = await open_client(srv, "alice")
    b = await open_client(srv, "bob")
    stream = b.presence_events()
    state: dict[str, Any] = {"step": 0}
    for step in range(10):
        state["step"] = step
        a.set_presence(state)  # all in one event-loop turn: one frame, the last state
    state["step"] = "mutated later"  # the SDK keeps its own copy
    event = await next_event(stream)
    assert [i.state for i in event.changed] == [{"step": 9}]
    a.set("/barrier", b"1")  # the server handles a's frames in order: when this is
    await a.flush(TIMEOUT)  # acknowledged, every presence frame sent before it was counted
    assert updates(srv) == 1
    assert a.local_presence == {"step": 9}

    with pytest.raises(TypeError):
        a.set_presence({"not json": object()})
    with pytest.raises(ValueError, match="presence_max_bytes"):
        a.set_presence("x" * 10_000)
    assert a.local_presence == {"step": 9}
    await a.close()
    await b.close()


async def test_updates_of_one_window_arrive_as_one_event(tmp_path: Path) -> None:
    async with serve(tmp_path, policy__broadcast_window_ms=200) as srv:
        watcher = await open_client(srv, "watcher")
        movers = [await open_client(srv, f"mover-{i}") for i in range(4)]
        stream = watcher.presence_events()
        for i, mover in enumerate(movers):
            mover.set_presence({"x": i})
        event = await next_event(stream)
        assert sorted(i.state["x"] for i in event.changed) == [0, 1, 2, 3]
        assert len(watcher.presence) == 4
        for client in (watcher, *movers):
            await client.close()


async def test_leave_on_disconnect_and_clear_presence(srv: ServerHandle) -> None:
    a = await open_client(srv, "alice")
    b = await open_client(srv, "bob")
    c = await open_client(srv, "carol")
    stream = b.presence_events()
    a.set_presence("here")
    c.set_presence("also here")
    await wait_until(lambda: len(b.presence) == 2, timeout=TIMEOUT)

    # clear_presence: presence{state: null}, which receivers treat as a leave.
    a.clear_presence()
    event = await next_event(stream, lambda e: bool(e.left))
    assert event.left == (peer_of(a),) and a.local_presence is None
    assert list(b.presence) == [peer_of(c)]

    # close: the server's presence-leave.
    c_peer = peer_of(c)
    await c.close()
    event = await next_event(stream, lambda e: bool(e.left))
    assert event.left == (c_peer,) and b.presence == {}

    # A cleared presence is not restored after a reconnect.
    welcomes = a.stats.welcomes
    a.disconnect()
    await wait_until(lambda: a.stats.welcomes > welcomes, timeout=TIMEOUT)
    a.set("/after", b"1")  # frames are handled in order: once this is acknowledged, a
    await a.flush(TIMEOUT)  # presence frame sent after the welcome would have been stored
    assert peer_of(a) not in srv.server.rooms.hosts[ROOM].presence.entries
    assert b.presence == {}
    await a.close()
    await b.close()


async def test_heartbeat_keeps_presence_alive_past_the_ttl(tmp_path: Path) -> None:
    async with serve(tmp_path, policy__presence_ttl_ms=300) as srv:
        a = await open_client(srv, "alice")
        b = await open_client(srv, "bob")
        stream = b.presence_events()
        a.set_presence("alive")
        await next_event(stream, lambda e: bool(e.changed))
        # Six TTLs without a leave: the SDK pings at least every ttl/3 (heartbeat_ms is 15 s).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(next_event(stream, lambda e: bool(e.left)), 1.8)
        assert peer_of(a) in b.presence
        expired = srv.server.metrics.registry.get_sample_value("roomsync_presence_expired_total")
        assert not expired

        # Cleared: no more presence heartbeat, the keepalive is back to heartbeat_ms.
        a.clear_presence()
        await next_event(stream, lambda e: bool(e.left))
        await a.close()
        await b.close()


async def test_presence_is_restored_after_reconnect(srv: ServerHandle) -> None:
    a = await open_client(srv, "alice")
    b = await open_client(srv, "bob")
    b.set_presence({"b": True})
    await wait_until(lambda: len(a.presence) == 1, timeout=TIMEOUT)
    stream = b.presence_events()
    a_events = a.presence_events()
    a.set_presence({"cursor": 7})
    await next_event(stream, lambda e: bool(e.changed))
    old_peer = peer_of(a)

    a.disconnect()  # abrupt: no close frame
    # a forgets the others at once (the next welcome's snapshot brings them back)...
    gone = await next_event(a_events, lambda e: bool(e.left))
    assert gone.left == (peer_of(b),)
    # ...reconnects on its own and publishes its presence again under its new peer id,
    # while the server reports the old peer's leave (in whichever order the window holds).
    seen: list[PresenceEvent] = []
    b.on_presence(seen.append)
    await wait_until(
        lambda: (
            a.stats.welcomes == 2
            and list(b.presence) == [peer_of(a)]
            and any(old_peer in e.left for e in seen)
        ),
        timeout=TIMEOUT,
    )
    new_peer = peer_of(a)
    assert new_peer != old_peer
    assert b.presence == {new_peer: PresenceInfo(new_peer, "alice", {"cursor": 7})}
    # and a got b back from a welcome snapshot.
    await wait_until(lambda: set(a.presence) == {peer_of(b)}, timeout=TIMEOUT)
    assert a.presence[peer_of(b)] == PresenceInfo(peer_of(b), "bob", {"b": True})
    await a.close()
    await b.close()


async def test_presence_never_changes_room_state(srv: ServerHandle) -> None:
    a = await open_client(srv, "alice")
    b = await open_client(srv, "bob")
    a.set_json("/doc", {"title": "x"})
    await a.flush(TIMEOUT)
    await wait_until(lambda: b.get("/doc") is not None, timeout=TIMEOUT)
    root, head = a.root, srv.server.rooms.hosts[ROOM].state.head
    changes: list[object] = []
    b.on_change(changes.append)
    stream = b.presence_events()
    a.set_presence({"selection": [0, 5]})
    await next_event(stream, lambda e: bool(e.changed))
    assert a.root == b.root == root == await a.server_root()
    assert srv.server.rooms.hosts[ROOM].state.head == head
    assert changes == [] and a.pending == 0
    assert dict(b.items()) == {"/doc": b'{"title":"x"}'}
    await a.close()
    await b.close()


async def test_presence_needs_the_cap_and_streams_end_on_close(tmp_path: Path) -> None:
    async with serve(tmp_path, dev=False) as srv:
        token = srv.mint(ROOM, ["read", "write"])
        a = await open_client(srv, "alice", token=token)
        with pytest.raises(RequestRefused, match="presence"):
            a.set_presence("x")
        stream = a.presence_events()
        await a.close()
        assert [e async for e in stream] == []
