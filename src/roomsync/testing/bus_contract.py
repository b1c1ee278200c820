"""The contract every :class:`~roomsync.bus.Bus` keeps, as runner-agnostic checks.

Each check is ``async def check_*(make: Callable[[], Awaitable[Bus]]) -> None`` and raises
``AssertionError`` on a violation; ``tests/bus/test_contract.py`` runs every check in
:data:`BUS_CONTRACT` against each bus. ``make`` returns a fresh, open bus; checks close it.
A networked bus passes the same list (it must deliver to local subscribers before
``publish`` returns, see :mod:`roomsync.bus.base`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..bus.base import Bus, RoomEvent
from ..core.entries import Change

MakeBus = Callable[[], Awaitable[Bus]]


def event(room: str, first: int, n: int = 1, author: str | None = "p-1") -> RoomEvent:
    """An event of ``n`` changes with seqs ``first..first+n-1``."""
    changes = tuple(Change(f"/k/{seq}", 1, 0, "a", b"v", seq) for seq in range(first, first + n))
    return RoomEvent(room, changes, (author,) * n, "node-1")


async def check_delivers_in_publish_order_per_room(make: MakeBus) -> None:
    bus = await make()
    got: list[int] = []
    bus.subscribe("r", lambda e: got.append(e.first_seq))
    for seq in range(1, 51):
        bus.publish(event("r", seq))
    assert got == list(range(1, 51))
    await bus.close()


async def check_rooms_are_isolated(make: MakeBus) -> None:
    bus = await make()
    a: list[str] = []
    b: list[str] = []
    bus.subscribe("a", lambda e: a.append(e.room))
    bus.subscribe("b", lambda e: b.append(e.room))
    bus.publish(event("a", 1))
    bus.publish(event("c", 1))
    assert (a, b) == (["a"], [])
    await bus.close()


async def check_every_subscriber_gets_each_event_once(make: MakeBus) -> None:
    bus = await make()
    seen: list[tuple[int, int]] = []

    def recorder(i: int) -> Callable[[RoomEvent], None]:
        return lambda e: seen.append((i, e.last_seq))

    for i in range(3):
        bus.subscribe("r", recorder(i))
    bus.publish(event("r", 1, n=3))
    assert sorted(seen) == [(0, 3), (1, 3), (2, 3)]
    await bus.close()


async def check_close_ends_a_subscription(make: MakeBus) -> None:
    bus = await make()
    got: list[int] = []
    sub = bus.subscribe("r", lambda e: got.append(e.first_seq))
    bus.publish(event("r", 1))
    sub.close()
    sub.close()  # idempotent
    bus.publish(event("r", 2))
    assert got == [1]
    await bus.close()


async def check_a_failing_subscriber_does_not_stop_the_others(make: MakeBus) -> None:
    bus = await make()
    got: list[int] = []

    def boom(e: RoomEvent) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe("r", boom)
    bus.subscribe("r", lambda e: got.append(e.first_seq))
    bus.publish(event("r", 7))
    assert got == [7]
    await bus.close()


async def check_events_carry_changes_authors_and_seq_range(make: MakeBus) -> None:
    bus = await make()
    got: list[RoomEvent] = []
    bus.subscribe("r", got.append)
    sent = event("r", 10, n=4, author=None)
    bus.publish(sent)
    assert got == [sent]
    assert (got[0].first_seq, got[0].last_seq, got[0].authors) == (10, 13, (None,) * 4)
    await bus.check()
    await bus.close()


BUS_CONTRACT: tuple[Callable[[MakeBus], Awaitable[None]], ...] = (
    check_delivers_in_publish_order_per_room,
    check_rooms_are_isolated,
    check_every_subscriber_gets_each_event_once,
    check_close_ends_a_subscription,
    check_a_failing_subscriber_does_not_stop_the_others,
    check_events_carry_changes_authors_and_seq_range,
)
