"""Convergence over the fake link (SPEC §1, §2): whatever the interleaving, replicas end
equal to the room, and no replica ever receives a change the room has not committed.

Two or three replicas write and delete a few paths while a seeded scheduler delivers
frames one at a time in random order, commits are taken or held, clocks move and
connections drop and resume from their cursors. After everything is delivered, every
replica's canonical root equals the room's MST root (and the root rebuilt from the
committed op log), no cursor is ahead of the room head, and at every single step every seq
a replica had received was one the room had already committed (no phantom change, not
even for a moment) and every cursor was honest: the replica held everything committed at
or below it.
"""

from __future__ import annotations

import bisect
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from roomsync.core import messages as m
from roomsync.core.codec import unpack_data
from roomsync.core.entries import Change
from roomsync.core.merge import wins
from roomsync.core.mst import build_root
from roomsync.testing.clock import FakeClock
from roomsync.testing.link import FakeLink, FakeRoom

PATHS = ("/a", "/b", "/c/d", "/c/e")

write = st.tuples(
    st.just("write"),
    st.integers(0, 2),
    st.sampled_from(PATHS),
    st.one_of(st.none(), st.binary(min_size=0, max_size=3)),
)
#: Writes and deliveries dominate; drops, resumes, held commits and clock moves season them.
OPS = {
    "write": write,
    "steps": st.tuples(st.just("steps"), st.integers(1, 8)),
    "drop": st.tuples(st.just("drop"), st.integers(0, 2)),
    "resume": st.tuples(st.just("resume"), st.integers(0, 2)),
    "hold": st.tuples(st.just("hold"), st.booleans()),
    "tick": st.tuples(st.just("tick"), st.integers(0, 50)),
}
WEIGHTS = ["write"] * 4 + ["steps"] * 4 + ["drop", "resume", "hold", "tick"]
op = st.sampled_from(WEIGHTS).flatmap(OPS.__getitem__)


class Watch:
    """Checks, after every step, what each link received against the committed log.

    * no phantom: every change in a received ``pack`` is the committed change of its seq,
      and every seq in an ``ack`` was committed;
    * an honest cursor: for every path the replica neither writes (unsettled) nor wants
      (the winner of a superseded write, being fetched), it holds the latest committed
      change at or below its cursor, or a newer one (a tombstone may be absent).
    """

    def __init__(self, room: FakeRoom) -> None:
        self.room = room
        self.committed: dict[int, Change] = {}
        self.history: dict[str, list[Change]] = {}
        self.read: dict[int, int] = {}

    def check(self) -> None:
        for change in self.room.log[len(self.committed) :]:
            assert change.seq is not None
            self.committed[change.seq] = change
            self.history.setdefault(change.path, []).append(change)
        for link in self.room.links:
            self._no_phantom(link)
            self._honest_cursor(link)

    def _no_phantom(self, link: FakeLink) -> None:
        start = self.read.get(id(link), 0)
        for msg in link.received[start:]:
            if isinstance(msg, m.PackMsg):
                for change in unpack_data(msg.data):
                    assert self.committed.get(change.seq or 0) == change, f"phantom {change}"
            elif isinstance(msg, m.Ack):
                for seq in msg.seqs:
                    assert seq is None or seq in self.committed, f"ack of uncommitted {seq}"
        self.read[id(link)] = len(link.received)

    def _honest_cursor(self, link: FakeLink) -> None:
        replica = link.replica
        wanted = replica.wanted
        for path, history in self.history.items():
            if replica.is_pending(path) or path in wanted:
                continue
            below = bisect.bisect_right([c.seq or 0 for c in history], replica.cursor)
            if not below:
                continue
            latest = history[below - 1]
            held = replica.entries.get(path)
            if held is None:
                assert latest.value is None, f"{replica.actor} cursor {replica.cursor}: {latest}"
            else:
                assert not wins(latest, held), f"{replica.actor} cursor {replica.cursor}: {latest}"


def replay(log: list[Change]) -> str:
    """The canonical root of the op log folded with the LWW rule."""
    state: dict[str, Change] = {}
    for change in log:
        if wins(change, state.get(change.path)):
            state[change.path] = change
    return build_root(state.values())


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(2, 3),
    seed=st.integers(0, 2**32 - 1),
    ops=st.lists(op, min_size=20, max_size=80),
)
def test_replicas_converge_with_the_room_and_see_only_committed_changes(
    n: int, seed: int, ops: list[tuple[object, ...]]
) -> None:
    rng = random.Random(seed)
    clock = FakeClock()
    room = FakeRoom(clock=clock)
    links: list[FakeLink] = [room.connect(f"peer-{i}") for i in range(n)]
    watch = Watch(room)

    for item in ops:
        match item:
            case ("write", int(who), str(path), value):
                assert value is None or isinstance(value, bytes)
                links[who % n].write(path, value)
            case ("steps", int(count)):
                for _ in range(count):
                    if not room.step(rng):
                        break
                    watch.check()
            case ("drop", int(who)):
                links[who % n].drop()
            case ("resume", int(who)):
                if not links[who % n].connected:
                    links[who % n].reconnect()
            case ("hold", bool(hold)):
                room.hold_commits = hold
            case ("tick", int(ms)):
                clock.advance(ms)
            case _:
                raise AssertionError(f"unknown op {item!r}")

    room.hold_commits = False
    for link in links:
        if not link.connected:
            link.reconnect()
    while room.step(rng):
        watch.check()

    assert not room.pending
    assert room.state.durable_head == room.state.head == len(room.log)
    assert [c.seq for c in room.log] == list(range(1, len(room.log) + 1))
    assert replay(room.log) == room.state.root
    for link in links:
        replica = link.replica
        assert link.synced and replica.idle, link.replica.actor
        assert link.refused == []
        assert replica.root_hex == room.state.root, replica.actor
        # Never ahead of the room. It may lag: while a ``request{paths}`` answer is
        # outstanding a broadcast does not move it (core.replica, "The cursor rule").
        assert replica.cursor <= room.state.head, replica.actor
