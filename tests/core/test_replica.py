"""Unit tests of roomsync.core.replica: the client's sans-I/O replica (no sockets)."""

from __future__ import annotations

import random

import pytest

from roomsync.core.entries import Change
from roomsync.core.errors import InvalidPath
from roomsync.core.mst import EMPTY_ROOT_HEX, build_root
from roomsync.core.packing import encoded_size
from roomsync.core.replica import (
    AnswerKind,
    RefusedChange,
    Replica,
    SupersededChange,
    SyncMode,
)
from roomsync.core.room import ApplyLimits, RoomState


def remote(path: str, ts: int, seq: int, value: bytes | None = b"r", actor: str = "srv") -> Change:
    return Change(path, ts, 0, actor, value, seq)


def synced(actor: str = "me", *, head: int = 0, prefixes: tuple[str, ...] = ("/",)) -> Replica:
    """A replica that finished an (empty) first catch-up at ``head``."""
    r = Replica(actor, subscribe=prefixes)
    plan = r.start_session(can_reconcile=True)
    assert plan.mode is SyncMode.FULL
    r.on_welcome(head)
    r.receive([], head=head, done=True)
    assert r.synced
    return r


# -- local writes and the offline queue ---------------------------------------------------


def test_write_applies_locally_and_queues() -> None:
    r = Replica("me")
    c = r.write("/a", b"1", now_ms=1000)
    assert (c.path, c.ts, c.counter, c.actor, c.value, c.seq) == ("/a", 1000, 0, "me", b"1", None)
    assert r.get("/a") is c
    assert r.unsent == [c]
    assert not r.idle
    assert r.is_pending("/a")
    assert r.root_hex == build_root([c])


def test_write_validates_path_and_value() -> None:
    r = Replica("me")
    with pytest.raises(InvalidPath):
        r.write("no-slash", b"x", now_ms=1)
    with pytest.raises(InvalidPath):
        r.write("/a//b", b"x", now_ms=1)
    with pytest.raises(TypeError):
        r.write("/a", "text", now_ms=1)  # type: ignore[arg-type]
    assert r.idle and not r.entries


def test_actor_is_validated() -> None:
    with pytest.raises(ValueError):
        Replica("")
    with pytest.raises(ValueError):
        Replica("x" * 257)
    with pytest.raises(ValueError):
        Replica("me", max_inflight=0)


def test_clock_is_monotonic_and_follows_remote_clocks() -> None:
    r = synced()
    first = r.write("/a", b"1", now_ms=1000)
    second = r.write("/b", b"2", now_ms=900)  # wall clock went back
    assert second.key > first.key
    r.receive([remote("/c", ts=5000, seq=1)], head=1, done=False)
    third = r.write("/c", b"3", now_ms=1000)
    assert third.key > (5000, 0, "srv")
    assert r.get("/c") is third


def test_offline_queue_keeps_the_latest_write_per_path_in_order_of_last_write() -> None:
    r = Replica("me")
    a1 = r.write("/a", b"1", now_ms=1)
    b = r.write("/b", b"2", now_ms=2)
    a2 = r.write("/a", b"3", now_ms=3)
    d = r.write("/d", None, now_ms=4)
    assert r.unsent == [b, a2, d]
    assert a1 not in r.unsent
    assert r.get("/d") is None and r.entries["/d"] is d


def test_take_outgoing_respects_limits_and_the_inflight_window() -> None:
    r = Replica("me", max_inflight=1)
    writes = [r.write(f"/k{i}", b"x" * 10, now_ms=i + 1) for i in range(5)]
    assert r.take_outgoing(max_changes=2, max_bytes=1 << 20) == writes[:2]
    assert r.inflight == [writes[:2]]
    assert r.take_outgoing(max_changes=2, max_bytes=1 << 20) is None  # window of one is full
    r.on_ack([1, 2])
    size = encoded_size(writes[2])
    pack = r.take_outgoing(max_changes=100, max_bytes=10 + 2 * size)
    assert pack == writes[2:4]
    r.on_ack([3, 4])
    assert r.take_outgoing(max_changes=100, max_bytes=1) == [writes[4]]  # first always taken
    r.on_ack([5])
    assert r.idle
    assert r.take_outgoing(max_changes=1, max_bytes=1) is None


# -- acks and refusals ----------------------------------------------------------------------


def test_ack_settles_and_advances_the_cursor() -> None:
    r = synced()
    r.write("/a", b"1", now_ms=1)
    r.write("/b", b"2", now_ms=2)
    assert r.take_outgoing(10, 1 << 20) is not None
    settled = r.on_ack([7, 8])
    assert settled.refused == () and settled.reverted == () and not settled.retry
    assert r.idle
    assert r.cursor == 8
    assert not r.is_pending("/a")
    assert r.on_ack([9]).refused == ()  # stray ack: nothing in flight, nothing happens
    assert r.cursor == 8


def test_refused_write_rolls_back_to_the_confirmed_entry() -> None:
    r = synced()
    old = remote("/a", ts=10, seq=1, value=b"old")
    r.receive([old], head=1, done=False)
    mine = r.write("/a", b"new", now_ms=20)
    fresh = r.write("/fresh", b"x", now_ms=21)
    r.take_outgoing(10, 1 << 20)
    settled = r.on_ack(
        [None, None],
        [
            {"index": 0, "code": "too-large", "message": "value too big"},
            {"index": 1, "code": "forbidden", "message": "no"},
        ],
    )
    assert settled.refused == (
        RefusedChange(mine, "too-large", "value too big"),
        RefusedChange(fresh, "forbidden", "no"),
    )
    assert r.get("/a") is old
    assert r.get("/fresh") is None and "/fresh" not in r.entries
    assert settled.reverted[0] is old
    assert settled.reverted[1].path == "/fresh" and settled.reverted[1].value is None
    assert r.idle
    assert r.root_hex == build_root([old])


def test_refusal_rolls_back_to_a_remote_entry_received_meanwhile() -> None:
    r = synced()
    mine = r.write("/a", b"mine", now_ms=100)
    r.take_outgoing(10, 1 << 20)
    # A remote write older than ours arrives: ours stays visible, but it becomes the base.
    theirs = remote("/a", ts=50, seq=3, value=b"theirs")
    assert r.receive([theirs], head=3, done=False).changed == []
    assert r.get("/a") is mine
    settled = r.on_ack([None], [{"index": 0, "code": "too-large", "message": "m"}])
    assert r.get("/a") is theirs
    assert settled.reverted == (theirs,)


def test_refusal_does_not_touch_a_newer_entry() -> None:
    r = synced()
    first = r.write("/a", b"1", now_ms=1)
    r.take_outgoing(10, 1 << 20)
    second = r.write("/a", b"2", now_ms=2)
    settled = r.on_ack([None], [{"index": 0, "code": "too-large", "message": "m"}])
    assert settled.refused[0].change is first
    assert settled.reverted == ()
    assert r.get("/a") is second
    assert r.is_pending("/a")


def test_ack_without_seq_or_reason_is_a_refusal() -> None:
    r = synced()
    c = r.write("/a", b"1", now_ms=1)
    r.take_outgoing(10, 1 << 20)
    settled = r.on_ack([])
    assert settled.refused == (RefusedChange(c, "internal", "the ack carried no seq"),)


def test_rate_limited_pack_is_requeued_in_front() -> None:
    r = synced()
    a = r.write("/a", b"1", now_ms=1)
    r.take_outgoing(10, 1 << 20)
    b = r.write("/b", b"2", now_ms=2)
    settled = r.on_ack([], [{"index": -1, "code": "rate-limited", "message": "slow down"}])
    assert settled.retry and settled.refused == ()
    assert r.unsent == [a, b]
    assert r.get("/a") is a


def test_a_refusal_with_retry_after_ms_is_sent_again_not_rolled_back() -> None:
    """A failed commit (full disk) refuses each change with ``retry_after_ms``: the server
    stored nothing and asks for the write again. Found by the reliability suite's full-disk
    scenario: the SDK rolled those writes back, so the app lost them."""
    r = synced()
    a = r.write("/a", b"1", now_ms=1)
    b = r.write("/b", b"2", now_ms=2)
    r.take_outgoing(10, 1 << 20)
    later = r.write("/c", b"3", now_ms=3)
    settled = r.on_ack(
        [5, None],
        [{"index": 1, "code": "internal", "message": "store", "retry_after_ms": 1000}],
    )
    assert settled.retry and settled.refused == () and settled.reverted == ()
    assert r.unsent == [b, later]
    assert r.get("/b") is b and r.is_pending("/b") and not r.is_pending("/a")
    assert r.get("/a") is a
    # Without the hint the same refusal is final: rolled back and reported.
    r.take_outgoing(10, 1 << 20)
    settled = r.on_ack([None, None], [{"index": 0, "code": "internal", "message": "m"}])
    assert [x.change for x in settled.refused] == [b, later]
    assert r.get("/b") is None


def test_whole_pack_refusals() -> None:
    r = synced()
    a = r.write("/a", b"1", now_ms=1)
    r.take_outgoing(10, 1 << 20)
    settled = r.on_ack([], [{"index": -1, "code": "forbidden", "message": "no write"}])
    assert settled.refused == (RefusedChange(a, "forbidden", "no write"),)
    b = r.write("/b", b"2", now_ms=2)
    r.take_outgoing(10, 1 << 20)
    settled = r.on_ack([], [{"index": -1, "code": "too-large", "message": "pack too big"}])
    assert settled.refused == (RefusedChange(b, "too-large", "pack too big"),)
    assert r.on_ack([], [{"index": -1, "code": "x", "message": "y"}]).refused == ()
    assert r.idle and not r.entries


def test_refuse_oversize_and_unsent() -> None:
    r = synced()
    small = r.write("/small", b"x", now_ms=1)
    big = r.write("/big", b"x" * 1000, now_ms=2)
    settled = r.refuse_oversize(500)
    assert [x.change for x in settled.refused] == [big]
    assert settled.refused[0].code == "too-large"
    assert r.unsent == [small] and r.get("/big") is None
    settled = r.refuse_unsent("forbidden", "no write cap")
    assert [x.change for x in settled.refused] == [small]
    assert r.idle and r.root_hex == EMPTY_ROOT_HEX


def test_requeue_inflight_puts_the_same_changes_back_in_front() -> None:
    r = synced()
    a = r.write("/a", b"1", now_ms=1)
    b = r.write("/b", b"1", now_ms=2)
    r.take_outgoing(10, 1 << 20)
    c = r.write("/c", b"1", now_ms=3)
    b2 = r.write("/b", b"2", now_ms=4)  # supersedes the in-flight /b
    r.requeue_inflight()
    assert r.inflight == []
    assert r.unsent == [a, c, b2]
    assert r.unsent[0] is a
    r.take_outgoing(10, 1 << 20)
    r.on_ack([1, 2, 3])
    assert r.idle and not r.is_pending("/b")
    assert r.get("/b") is b2 and b not in r.entries.values()


def test_requeue_with_several_packs_in_flight_keeps_the_newest_write() -> None:
    r = Replica("me", max_inflight=3)
    a1 = r.write("/a", b"1", now_ms=1)
    r.take_outgoing(10, 1 << 20)
    a2 = r.write("/a", b"2", now_ms=2)
    r.take_outgoing(10, 1 << 20)
    assert r.inflight == [[a1], [a2]]
    r.requeue_inflight()
    assert r.unsent == [a2]
    r.take_outgoing(10, 1 << 20)
    r.on_ack([1])
    assert r.idle and not r.is_pending("/a")


# -- receiving ----------------------------------------------------------------------------


def test_receive_is_lww() -> None:
    r = synced()
    newer = remote("/a", ts=20, seq=2)
    older = remote("/a", ts=10, seq=1, value=b"older")
    assert r.receive([newer], head=2, done=False).changed == [newer]
    assert r.receive([older], head=2, done=False).changed == []
    assert r.get("/a") is newer
    tomb = remote("/a", ts=30, seq=3, value=None)
    assert r.receive([tomb], head=3, done=False).changed == [tomb]
    assert r.get("/a") is None and r.root_hex == EMPTY_ROOT_HEX
    # The same write again changes nothing.
    assert r.receive([tomb], head=3, done=False).changed == []


def test_receive_any_order_converges() -> None:
    rng = random.Random(3)
    changes = [
        remote(
            f"/p{rng.randrange(5)}",
            ts=rng.randrange(1, 50),
            seq=i + 1,
            value=None if rng.random() < 0.3 else bytes([i % 256]),
            actor=f"a{i % 3}",
        )
        for i in range(60)
    ]
    roots = set()
    for _ in range(5):
        r = synced()
        order = changes[:]
        rng.shuffle(order)
        for c in order:
            r.receive([c], head=None, done=False)
        roots.add(r.root_hex)
    assert len(roots) == 1


# -- the cursor rule ------------------------------------------------------------------------


def test_catchup_chunks_move_the_cursor_to_their_head() -> None:
    r = synced(head=10)
    r.requeue_inflight()
    plan = r.start_session(can_reconcile=True)
    assert (plan.mode, plan.cursor, plan.catchup) == (SyncMode.RESUME, 10, True)
    r.on_welcome(30)
    r.receive([remote("/a", 1, 12), remote("/b", 1, 15)], head=15, done=False)
    assert r.cursor == 15 and not r.synced
    finished = r.receive([remote("/c", 1, 20)], head=30, done=True).finished
    assert finished is not None and finished.kind is AnswerKind.CATCHUP
    assert r.cursor == 30 and r.synced


def test_broadcast_moves_the_cursor_to_its_highest_seq_not_its_head() -> None:
    r = synced(head=5)
    # The head may count changes of a batch not broadcast yet: only seqs received count.
    r.receive([remote("/a", 1, 6), remote("/b", 1, 7)], head=9, done=False)
    assert r.cursor == 7
    r.receive([], head=12, done=False)
    assert r.cursor == 7


def test_paths_answers_never_move_the_cursor() -> None:
    r = synced(head=5)
    answer = r.expect_paths(["/x"])
    # A pack without done while an answer is outstanding may be either: no cursor move.
    r.receive([remote("/x", 1, 50)], head=50, done=False)
    assert r.cursor == 5
    received = r.receive([], head=60, done=True)
    assert received.finished is answer
    assert r.cursor == 5
    # Afterwards broadcasts move it again.
    r.receive([remote("/y", 1, 61)], head=61, done=False)
    assert r.cursor == 61


def test_acks_move_the_cursor_even_while_an_answer_is_outstanding() -> None:
    r = synced(head=5)
    r.expect_paths(["/x"])
    r.write("/w", b"1", now_ms=1)
    r.take_outgoing(10, 1 << 20)
    r.on_ack([9])
    assert r.cursor == 9


def test_cursor_never_moves_backwards() -> None:
    r = synced(head=20)
    r.receive([remote("/a", 1, 3)], head=3, done=False)
    r.write("/w", b"1", now_ms=1)
    r.take_outgoing(10, 1 << 20)
    r.on_ack([4])  # superseded write: acked with an old seq
    assert r.cursor == 20


# -- full catch-up and authority -------------------------------------------------------------


def test_first_session_is_a_full_catchup_without_cursor() -> None:
    r = Replica("me")
    offline = r.write("/offline", b"1", now_ms=1)
    plan = r.start_session(can_reconcile=True)
    assert plan == type(plan)(SyncMode.FULL, None, True, ("/",))
    r.on_welcome(2)
    r.receive([remote("/a", 1, 1), remote("/b", 1, 2)], head=2, done=True)
    assert r.synced and r.cursor == 2
    assert r.get("/offline") is offline  # unacknowledged writes survive


def test_full_catchup_drops_confirmed_entries_the_server_no_longer_has() -> None:
    r = synced(head=3)
    kept = remote("/kept", 1, 1)
    gone = remote("/gone", 1, 2)
    r.receive([kept, gone], head=3, done=False)
    r.write("/mine", b"1", now_ms=5)
    r.resync_required()
    r.requeue_inflight()
    plan = r.start_session(can_reconcile=False)
    assert (plan.mode, plan.cursor, plan.catchup) == (SyncMode.FULL, None, True)
    assert r.cursor == 0
    r.on_welcome(40)
    received = r.receive([remote("/kept", 1, 1)], head=40, done=True)
    assert r.get("/kept") == kept
    assert r.get("/gone") is None and "/gone" not in r.entries
    assert [(c.path, c.value) for c in received.changed] == [("/gone", None)]
    assert r.get("/mine") is not None
    assert r.cursor == 40 and not r.needs_resync


def test_full_catchup_replaces_newer_confirmed_entries_after_a_restore() -> None:
    r = synced(head=3)
    r.receive([remote("/a", 100, 3, b"before restore")], head=3, done=False)
    r.resync_required()
    r.start_session(can_reconcile=False)
    r.on_welcome(1)
    restored = remote("/a", 10, 1, b"restored")
    r.receive([restored], head=1, done=True)
    assert r.get("/a") == restored


def test_interrupted_full_catchup_resumes_from_its_cursor_and_stays_authoritative() -> None:
    r = synced(head=2)
    r.receive([remote("/old", 1, 1), remote("/stale", 1, 2)], head=2, done=False)
    r.resync_required()
    r.start_session(can_reconcile=False)
    r.on_welcome(100)
    r.receive([remote("/old", 1, 1)], head=50, done=False)  # first chunk, then the link drops
    assert r.cursor == 50
    plan = r.start_session(can_reconcile=False)
    assert (plan.mode, plan.cursor) == (SyncMode.FULL, 50)
    r.on_welcome(100)
    r.receive([remote("/new", 1, 90)], head=100, done=True)
    assert sorted(r.entries) == ["/new", "/old"]
    assert r.cursor == 100
    assert r.start_session(can_reconcile=True).mode is SyncMode.RESUME


# -- MST resync --------------------------------------------------------------------------


def test_reconcile_resync_freezes_the_cursor_until_finished() -> None:
    r = synced(head=10)
    r.resync_required()
    plan = r.start_session(can_reconcile=True)
    assert (plan.mode, plan.cursor, plan.catchup) == (SyncMode.RECONCILE, None, False)
    r.on_welcome(500)
    r.receive([remote("/b", 1, 501)], head=501, done=False)  # a broadcast
    assert r.cursor == 0 and not r.synced
    answer = r.expect_paths(["/a"])
    assert r.receive([remote("/a", 1, 7)], head=501, done=True).finished is answer
    assert r.cursor == 0
    r.finish_resync()
    assert r.synced and r.cursor == 501 and not r.needs_resync


def test_interrupted_reconcile_resync_resyncs_again() -> None:
    r = synced(head=10)
    r.resync_required()
    assert r.start_session(can_reconcile=True).mode is SyncMode.RECONCILE
    assert r.start_session(can_reconcile=True).mode is SyncMode.RECONCILE
    assert r.start_session(can_reconcile=False).mode is SyncMode.FULL


def test_reconcile_resync_only_for_whole_room_subscriptions() -> None:
    r = synced(head=1, prefixes=("/a",))
    r.resync_required()
    plan = r.start_session(can_reconcile=True)
    assert (plan.mode, plan.subscribe) == (SyncMode.FULL, ("/a",))


def test_paths_answer_is_authoritative_for_confirmed_entries_only() -> None:
    r = synced(head=5)
    r.receive([remote("/gone", 1, 1), remote("/changed", 50, 2, b"mine")], head=5, done=False)
    mine = r.write("/pending", b"local", now_ms=10)
    answer = r.expect_paths(["/gone", "/changed", "/pending", "/new"])
    server_changed = remote("/changed", 20, 4, b"server")
    new = remote("/new", 1, 3)
    r.receive([new, server_changed, remote("/pending", 1, 5, b"older")], head=9, done=True)
    assert r.get("/gone") is None
    assert r.get("/changed") == server_changed
    assert r.get("/new") == new
    assert r.get("/pending") is mine
    assert answer.seen["/new"] == new


def test_inline_reconcile_entries_are_authoritative_for_their_paths() -> None:
    r = synced(head=5)
    r.receive([remote("/changed", 50, 2, b"mine"), remote("/kept", 1, 3)], head=5, done=False)
    cursor = r.cursor
    mine = r.write("/pending", b"local", now_ms=10)
    other = r.expect_paths(["/elsewhere"])  # an outstanding answer sees them too
    server_changed = remote("/changed", 20, 4, b"server")  # older by LWW: imposed anyway
    new = remote("/new", 1, 6)
    changed = r.impose_entries([server_changed, new, remote("/pending", 1, 7, b"older")])
    assert r.get("/changed") == server_changed and r.get("/new") == new
    assert r.get("/pending") is mine  # an unacknowledged write stays, LWW decides later
    assert r.get("/kept") is not None  # not in scope: untouched
    assert set(changed) == {server_changed, new}
    assert r.cursor == cursor  # a subset of the room never moves the cursor
    assert "/new" in other.seen
    assert r.root_hex == build_root(c for c in r.entries.values() if c.value is not None)


def test_write_only_session_needs_no_catchup() -> None:
    r = Replica("me")
    r.start_session(can_reconcile=False)
    r.on_welcome(42, can_read=False)
    assert r.synced and r.cursor == 0


# -- subscriptions -------------------------------------------------------------------------


def test_subscribe_answer_is_authoritative_for_the_added_prefixes() -> None:
    r = synced(head=1, prefixes=("/a",))
    r.receive([remote("/a/1", 1, 1), remote("/b/stale", 1, 1)], head=1, done=False)
    assert r.expect_subscribe() is None
    r.set_prefixes(["/a", "/b/"])
    assert r.prefixes == ("/a", "/b")
    answer = r.expect_subscribe()
    assert answer is not None and answer.kind is AnswerKind.SUBSCRIBE
    assert r.expect_subscribe() is None  # one at a time
    assert answer.covers("/b/x") and not answer.covers("/a/1")
    r.receive([remote("/b/1", 1, 2)], head=2, done=True)
    assert r.synced_prefixes == ("/a", "/b")
    assert r.get("/b/1") is not None and r.get("/b/stale") is None
    assert r.get("/a/1") is not None
    assert r.answer_failed(AnswerKind.SUBSCRIBE) is None


def test_resume_uses_the_synced_prefixes() -> None:
    r = synced(head=3, prefixes=("/a",))
    r.set_prefixes(["/a", "/b"])
    plan = r.start_session(can_reconcile=True)
    assert (plan.mode, plan.subscribe) == (SyncMode.RESUME, ("/a",))
    r.receive([], head=3, done=True)
    assert r.expect_subscribe() is not None


def test_failed_answer_is_forgotten() -> None:
    r = synced(head=3)
    a = r.expect_paths(["/x"])
    assert r.answer_failed(AnswerKind.PATHS) is a
    r.receive([remote("/y", 1, 4)], head=4, done=False)
    assert r.cursor == 4


def test_items_and_prefix_validation() -> None:
    r = synced()
    r.write("/a/1", b"1", now_ms=1)
    r.write("/a/2", b"2", now_ms=2)
    r.write("/ab", b"3", now_ms=3)
    r.write("/a/2", None, now_ms=4)
    assert [c.path for c in r.items("/a")] == ["/a/1"]
    assert [c.path for c in r.items("/")] == ["/a/1", "/ab"]
    with pytest.raises(TypeError):
        Replica("me", subscribe="/a")


# -- against the server's own core ------------------------------------------------------------


class _Room:
    """The server side of a few replicas: RoomState + in-order queues (no sockets)."""

    def __init__(self) -> None:
        self.state = RoomState("r")
        self.inbox: dict[str, list[tuple[str, object]]] = {}

    def submit(self, sender: str, pack: list[Change]) -> None:
        result = self.state.apply(pack, now_ms=10**12, limits=ApplyLimits())
        for peer, box in self.inbox.items():
            sent = [c for c in result.accepted if peer != sender]
            if sent:
                box.append(("pack", (sent, self.state.head)))
        self.inbox[sender].append(("ack", result.seqs))


def test_replicas_converge_with_the_server_core() -> None:
    rng = random.Random(11)
    room = _Room()
    replicas = {name: Replica(name) for name in ("a", "b", "c")}
    for name, r in replicas.items():
        room.inbox[name] = []
        r.start_session(can_reconcile=True)
        r.on_welcome(0)
        r.receive([], head=0, done=True)
    now = 1000
    for _ in range(300):
        name = rng.choice("abc")
        r = replicas[name]
        now += rng.randrange(3)
        action = rng.random()
        if action < 0.5:
            path = f"/k{rng.randrange(8)}"
            r.write(path, None if rng.random() < 0.25 else bytes([rng.randrange(256)]), now)
        elif action < 0.75:
            pack = r.take_outgoing(5, 1 << 20)
            if pack is not None:
                room.submit(name, pack)
        else:
            box = room.inbox[name]
            if box:
                kind, payload = box.pop(0)
                if kind == "ack":
                    assert isinstance(payload, list)
                    r.on_ack(payload)
                else:
                    changes, head = payload  # type: ignore[misc]
                    r.receive(changes, head=head, done=False)
    # Drain everything.
    for _ in range(100):
        for name, r in replicas.items():
            pack = r.take_outgoing(100, 1 << 20)
            if pack is not None:
                room.submit(name, pack)
            while room.inbox[name]:
                kind, payload = room.inbox[name].pop(0)
                if kind == "ack":
                    assert isinstance(payload, list)
                    r.on_ack(payload)
                else:
                    changes, head = payload  # type: ignore[misc]
                    r.receive(changes, head=head, done=False)
    assert all(r.idle for r in replicas.values())
    roots = {r.root_hex for r in replicas.values()}
    assert roots == {room.state.root}
    assert {r.cursor for r in replicas.values()} == {room.state.head}


def test_several_packs_in_flight_settle_in_order() -> None:
    r = Replica("me", max_inflight=3)
    writes = [r.write(f"/k{i}", b"x", now_ms=i + 1) for i in range(4)]
    packs = [r.take_outgoing(max_changes=1, max_bytes=1 << 20) for _ in range(4)]
    assert packs[:3] == [[w] for w in writes[:3]] and packs[3] is None
    settled = r.on_ack([], [{"index": -1, "code": "too-large", "message": "no"}])
    assert [rc.change for rc in settled.refused] == [writes[0]]
    r.on_ack([1])
    r.on_ack([2])
    assert r.take_outgoing(max_changes=1, max_bytes=1 << 20) == [writes[3]]
    r.on_ack([3])
    assert r.idle and [r.get(w.path) for w in writes[1:]] == writes[1:]


# -- the clock and superseded writes (a hostile writer stamping ts far ahead) ---------------

NOW = 1_700_000_000_000
AHEAD = NOW + 59_000  # inside the server's 60 s skew bound


@pytest.mark.parametrize("kind", ["broadcast", "catchup", "paths", "subscribe"])
def test_every_received_change_moves_the_clock_past_it(kind: str) -> None:
    r = synced(head=1, prefixes=("/a",))
    future = Change("/a/x", AHEAD, 7, "evil", b"evil", 2)
    if kind == "catchup":
        r.start_session(can_reconcile=False)  # a resume: the catch-up carries it
        r.on_welcome(2)
    elif kind == "paths":
        r.expect_paths(["/a/x"])
    elif kind == "subscribe":
        r.set_prefixes(["/a", "/b"])
        assert r.expect_subscribe() is not None
        future = Change("/b/x", AHEAD, 7, "evil", b"evil", 2)
    r.receive([future], head=2, done=kind != "broadcast")
    mine = r.write(future.path, b"honest", now_ms=NOW)
    assert mine.key > future.key
    assert (mine.ts, mine.counter) == (AHEAD, 8)
    assert r.get(future.path) is mine


def test_superseded_write_listed_by_the_ack_is_reported_and_the_winner_fetched() -> None:
    r = synced(head=3, prefixes=("/mine",))  # /x is outside the subscription
    mine = r.write("/x", b"honest", now_ms=NOW)
    r.take_outgoing(10, 1 << 20)
    settled = r.on_ack([2], superseded=[{"index": 0, "seq": 2}])
    assert settled.superseded == (SupersededChange(mine, 2),)
    assert settled.refused == ()
    # Rolled back (nothing was confirmed for /x: a tombstone event), the winner wanted.
    assert r.get("/x") is None and "/x" not in r.entries
    assert [(c.path, c.value) for c in settled.reverted] == [("/x", None)]
    assert r.wanted == {"/x": 2} and not r.idle
    assert r.fetch_paths() == ["/x"]
    answer = r.expect_paths(r.fetch_paths())
    assert r.fetch_paths() == []  # already asked
    winner = Change("/x", AHEAD, 0, "evil", b"evil", 2)
    received = r.receive([winner], head=3, done=True)
    assert received.finished is answer
    assert r.get("/x") == winner and r.idle and r.wanted == {}
    again = r.write("/x", b"honest again", now_ms=NOW + 5)
    assert again.key > winner.key  # the next write wins


def test_superseded_write_whose_winner_is_already_here_needs_no_fetch() -> None:
    r = synced(head=3)
    mine = r.write("/x", b"honest", now_ms=NOW)
    r.take_outgoing(10, 1 << 20)
    winner = Change("/x", AHEAD, 0, "evil", b"evil", 4)
    r.receive([winner], head=4, done=False)  # broadcast before the ack
    settled = r.on_ack([4], superseded=[{"index": 0, "seq": 4}])
    assert settled.superseded == (SupersededChange(mine, 4),)
    assert settled.reverted == ()
    assert r.get("/x") is winner and r.idle and r.fetch_paths() == []


def test_superseded_without_the_list_an_old_seq_for_a_first_send() -> None:
    """An older server lists nothing: a seq not above what the session had seen when the
    pack was sent cannot be a new one."""
    r = synced(head=10, prefixes=("/mine",))
    mine = r.write("/x", b"honest", now_ms=NOW)
    fresh = r.write("/y", b"fresh", now_ms=NOW)
    r.take_outgoing(10, 1 << 20)
    settled = r.on_ack([7, 11])
    assert settled.superseded == (SupersededChange(mine, 7),)
    assert r.get("/y") is fresh and not r.is_pending("/y")
    assert r.wanted == {"/x": 7}


def test_a_resent_write_acked_with_an_old_seq_is_not_claimed_superseded() -> None:
    """After a reconnect the same write is sent again; its old seq may be its own."""
    r = synced(head=10)
    mine = r.write("/x", b"1", now_ms=NOW)
    r.take_outgoing(10, 1 << 20)
    r.requeue_inflight()
    r.take_outgoing(10, 1 << 20)
    settled = r.on_ack([7])
    assert settled.superseded == ()
    assert r.get("/x") is mine and r.idle


def test_superseded_without_the_list_the_replica_holds_the_winner_at_that_seq() -> None:
    r = synced(head=10)
    mine = r.write("/x", b"honest", now_ms=NOW)
    r.take_outgoing(10, 1 << 20)
    winner = Change("/x", AHEAD, 0, "evil", b"evil", 12)  # applied after our send
    r.receive([winner], head=12, done=False)
    settled = r.on_ack([12])
    assert settled.superseded == (SupersededChange(mine, 12),)
    assert r.get("/x") is winner and r.idle


def test_an_accepted_write_overwritten_later_is_not_superseded() -> None:
    r = synced(head=10)
    r.write("/x", b"mine", now_ms=NOW)
    r.take_outgoing(10, 1 << 20)
    later = Change("/x", AHEAD, 0, "other", b"later", 12)
    r.receive([later], head=12, done=False)  # broadcast of a later batch, before our ack
    settled = r.on_ack([11])
    assert settled.superseded == () and r.get("/x") is later and r.idle


def test_superseded_write_rolls_back_to_the_confirmed_entry() -> None:
    r = synced(head=1, prefixes=("/mine",))
    base = remote("/x", ts=10, seq=1, value=b"confirmed")
    r.receive([base], head=1, done=False)
    r.write("/x", b"honest", now_ms=NOW)
    r.take_outgoing(10, 1 << 20)
    settled = r.on_ack([2], superseded=[{"index": 0, "seq": 2}])
    assert settled.reverted == (base,) and r.get("/x") is base
    assert r.wanted == {"/x": 2}


def test_a_newer_local_write_stays_visible_when_an_older_one_is_superseded() -> None:
    r = synced(head=1)
    first = r.write("/x", b"1", now_ms=NOW)
    r.take_outgoing(10, 1 << 20)
    second = r.write("/x", b"2", now_ms=NOW + 1)
    settled = r.on_ack([1], superseded=[{"index": 0, "seq": 1}])
    assert settled.superseded == (SupersededChange(first, 1),) and settled.reverted == ()
    assert r.get("/x") is second and r.is_pending("/x")
    assert r.wanted == {"/x": 1}  # fetched, so the clock learns the winner's stamp


def test_wanted_winners_wait_for_the_sync_and_a_refused_request_drops_them() -> None:
    r = synced(head=1, prefixes=("/mine",))
    r.write("/x", b"honest", now_ms=NOW)
    r.take_outgoing(10, 1 << 20)
    r.start_session(can_reconcile=False)  # reconnected before the ack: catch-up running
    r.on_welcome(5)
    r.requeue_inflight()
    r.take_outgoing(10, 1 << 20)
    r.on_ack([1], superseded=[{"index": 0, "seq": 1}])
    assert r.fetch_paths() == []  # not synced yet: the catch-up may bring it
    r.receive([], head=5, done=True)
    assert r.fetch_paths() == ["/x"]
    r.expect_paths(["/x"])
    assert r.answer_failed(AnswerKind.PATHS) is not None
    assert r.wanted == {} and r.idle  # flush must not wait for what cannot come


def test_write_only_session_rolls_back_and_wants_nothing() -> None:
    r = Replica("me")
    r.start_session(can_reconcile=False)
    r.on_welcome(5, can_read=False)
    mine = r.write("/x", b"honest", now_ms=NOW)
    r.take_outgoing(10, 1 << 20)
    settled = r.on_ack([3], superseded=[{"index": 0, "seq": 3}])
    assert settled.superseded == (SupersededChange(mine, 3),)
    assert r.get("/x") is None and r.wanted == {} and r.idle and r.fetch_paths() == []


class _ListingRoom(_Room):
    """:class:`_Room` with acks as the server sends them: ``(seqs, superseded)``."""

    def submit(self, sender: str, pack: list[Change]) -> None:
        result = self.state.apply(pack, now_ms=10**12, limits=ApplyLimits())
        for peer, box in self.inbox.items():
            sent = [c for c in result.accepted if peer != sender]
            if sent:
                box.append(("pack", (sent, self.state.head)))
        self.inbox[sender].append(("ack", (result.seqs, result.superseded)))
        for item in result.superseded:
            self.listed.add((sender, pack[item["index"]]))

    listed: set[tuple[str, Change]]


@pytest.mark.parametrize("with_list", [True, False], ids=["listed", "unlisted"])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_superseded_detection_is_exact_with_the_list_and_sound_without(
    seed: int, with_list: bool
) -> None:
    rng = random.Random(seed)
    room = _ListingRoom()
    room.listed = set()
    replicas = {name: Replica(name) for name in ("a", "b", "c")}
    detected: set[tuple[str, Change]] = set()
    for name, r in replicas.items():
        room.inbox[name] = []
        r.start_session(can_reconcile=True)
        r.on_welcome(0)
        r.receive([], head=0, done=True)

    def deliver(name: str) -> None:
        r = replicas[name]
        kind, payload = room.inbox[name].pop(0)
        if kind == "ack":
            seqs, superseded = payload  # type: ignore[misc]
            settled = r.on_ack(seqs, (), superseded if with_list else ())
            detected.update((name, s.change) for s in settled.superseded)
        else:
            changes, head = payload  # type: ignore[misc]
            r.receive(changes, head=head, done=False)

    now = 1000
    for _ in range(400):
        name = rng.choice("abc")
        r = replicas[name]
        action = rng.random()
        if action < 0.45:
            # Clocks disagree: "c" runs a minute ahead, as a hostile writer would.
            skew = 60_000 if name == "c" else 0
            now += rng.randrange(3)
            r.write(f"/k{rng.randrange(4)}", bytes([rng.randrange(256)]), now + skew)
        elif action < 0.7:
            pack = r.take_outgoing(5, 1 << 20)
            if pack is not None:
                room.submit(name, pack)
        elif room.inbox[name]:
            deliver(name)
    for _ in range(100):
        for name, r in replicas.items():
            pack = r.take_outgoing(100, 1 << 20)
            if pack is not None:
                room.submit(name, pack)
            while room.inbox[name]:
                deliver(name)
    assert room.listed  # the run did produce lost writes
    if with_list:
        assert detected == room.listed
    else:
        assert detected <= room.listed
    assert all(r.idle for r in replicas.values())
    assert {r.root_hex for r in replicas.values()} == {room.state.root}
