"""roomsync.testing.link: replicas and a pure server room over an in-memory link.

Each test moves the frames itself (``deliver_one``, ``deliver_all``, a seeded ``step``)
and reads what crossed the link as JSON, so the protocol's order and durability rules
are checked without a socket or a sleep.
"""

from __future__ import annotations

import json
import random

import pytest

from roomsync.config import Policy
from roomsync.core import messages as m
from roomsync.core.codec import unpack_data
from roomsync.core.entries import Change
from roomsync.core.handshake import TokenGrant
from roomsync.core.replica import Replica
from roomsync.testing.clock import FakeClock
from roomsync.testing.link import Direction, FakeLink, FakeRoom

UP, DOWN = Direction.TO_SERVER, Direction.TO_CLIENT


def changes_received(link: FakeLink) -> list[Change]:
    return [c for pack in link.messages(m.PackMsg) for c in unpack_data(pack.data)]


def errors(link: FakeLink) -> list[tuple[str, str | None]]:
    return [(e.code, e.ref or e.extra.get("ref")) for e in link.messages(m.Error)]


# -- handshake -----------------------------------------------------------------------------


def test_hello_crosses_as_json_and_welcome_has_the_spec_fields() -> None:
    room = FakeRoom("board")
    ann = room.connect("ann", caps=["read", "write", "nonsense"])
    (hello,) = ann.frames(UP)
    assert json.loads(hello) == {
        "type": "hello",
        "v": 1,
        "actor": "ann",
        "caps": ["read", "write", "nonsense"],
        "subscribe": ["/"],
    }
    assert ann.deliver_one(UP) and not ann.deliver_one(UP)
    welcome_text, done_text = ann.frames(DOWN)
    wire = json.loads(welcome_text)
    assert wire["type"] == "welcome"
    assert {"v", "session", "peer", "room", "caps", "head", "root", "heartbeat_ms"} <= set(wire)
    assert {"limits", "presence", "node", "actor"} <= set(wire)
    # An empty room: a full catch-up of nothing is one empty `done` chunk at head 0.
    assert json.loads(done_text) == {"type": "pack", "data": "AA==", "head": 0, "done": True}

    room.deliver_all()
    welcome = ann.welcome
    assert welcome is not None
    assert (welcome.v, welcome.room, welcome.actor, welcome.node) == (
        1,
        "board",
        "ann",
        "fake-node",
    )
    assert welcome.caps == ["read", "write"]  # requested ∩ granted ∩ supported
    assert (welcome.head, welcome.root) == (0, "0" * 64)
    assert welcome.heartbeat_ms == 15_000 and welcome.presence == []
    assert welcome.limits["max_pack_bytes"] == Policy().max_pack_bytes
    assert ann.session is not None and ann.session.session == welcome.session
    assert ann.synced and ann.replica.synced


def test_a_second_session_gets_new_ids_and_the_current_head_and_root() -> None:
    room = FakeRoom()
    ann = room.connect("ann")
    room.deliver_all()
    ann.write("/a", b"1")
    room.deliver_all()
    bob = room.connect("bob")
    room.deliver_all()
    assert ann.welcome is not None and bob.welcome is not None
    assert bob.welcome.session != ann.welcome.session
    assert bob.welcome.peer != ann.welcome.peer
    assert (bob.welcome.head, bob.welcome.root) == (1, room.state.root)


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ('{"type":"ping"}', "expected-hello"),
        ("not json", "expected-hello"),
        ('{"type":"hello","v":2}', "unsupported-version"),
        ('{"type":"hello","v":1,"subscribe":["no-slash"]}', "malformed-envelope"),
    ],
)
def test_a_bad_first_frame_is_refused_and_closed_1002(first: str, code: str) -> None:
    room = FakeRoom()
    link = room.connect("ann", hello=False)
    link.send_text(first)
    room.deliver_all()
    assert [e.code for e in link.messages(m.Error)] == [code]
    assert link.closes == [1002] and link.stopped and not link.connected


def test_bad_json_after_welcome_is_malformed_envelope_and_unknown_types_survive() -> None:
    room = FakeRoom()
    ann = room.connect("ann")
    room.deliver_all()
    ann.send_text('{"type":"no-such"}')
    room.deliver_all()
    assert errors(ann) == [("unknown-type", "no-such")] and ann.connected
    ann.send_text("{")
    room.deliver_all()
    assert errors(ann)[-1] == ("malformed-envelope", None)
    assert ann.closes == [1002]


def test_locked_room_refuses_anonymous_peers_with_4003() -> None:
    room = FakeRoom()
    room.locked = True
    ann = room.connect("ann")
    room.deliver_all()
    assert errors(ann) == [("auth", "hello")] and ann.closes == [4003] and ann.stopped
    granted = room.connect("bob", grant=TokenGrant(sub="bob", caps=("read",), exp_ms=None))
    room.deliver_all()
    assert granted.welcome is not None and granted.welcome.caps == ["read"]


def test_a_token_binds_the_actor_and_a_read_only_session_refuses_writes_locally() -> None:
    room = FakeRoom()
    grant = TokenGrant(sub="ann", caps=("read", "write"), exp_ms=None)
    impostor = room.connect("mallory", grant=grant)
    room.deliver_all()
    assert impostor.welcome is not None and impostor.welcome.actor == "ann"
    impostor.write("/x", b"1")
    room.deliver_all()
    # Refused as a whole by client_changes (actor not allowed), acked with index -1.
    (ack,) = impostor.messages(m.Ack)
    assert ack.seqs == [] and ack.refused is not None and ack.refused[0]["index"] == -1
    assert [r.code for r in impostor.refused] == ["forbidden"]
    assert room.state.head == 0 and impostor.replica.get("/x") is None

    reader = room.connect("rita", caps=["read"])
    room.deliver_all()
    reader.write("/y", b"1")
    assert [r.code for r in reader.refused] == ["forbidden"] and not reader.frames(UP)


def test_hello_deadline_and_liveness_come_from_the_core_session() -> None:
    clock = FakeClock()
    room = FakeRoom(clock=clock, hello_timeout_ms=1_000, heartbeat_ms=1_000)
    ann = room.connect("ann")
    room.deliver_all()
    silent = room.connect("sam", hello=False)
    clock.advance(999)
    assert room.run_deadlines() == 0
    clock.advance(1)
    assert room.run_deadlines() == 1
    room.deliver_all()
    assert errors(silent) == [("expected-hello", None)] and silent.closes == [1002]
    clock.advance(2_000)
    ann.send(m.Ping())  # any frame moves the liveness limit
    room.deliver_all()
    clock.advance(2_999)
    assert room.run_deadlines() == 0
    clock.advance(1)
    assert room.run_deadlines() == 1
    room.deliver_all()
    assert errors(ann) == [("timeout", None)] and ann.closes == [1011] and not ann.stopped


# -- packs, commits, broadcasts, acks --------------------------------------------------------


def test_a_write_is_acked_after_the_commit_and_broadcast_to_the_other_replica() -> None:
    room = FakeRoom()
    ann, bob = room.connect("ann"), room.connect("bob")
    room.deliver_all()
    room.hold_commits = True
    ann.write("/todo/1", b"milk")
    (pack,) = ann.frames(UP)
    assert json.loads(pack)["type"] == "pack"
    room.deliver_all()
    assert room.pending and room.state.head == 1 and room.state.durable_head == 0
    assert not ann.messages(m.Ack) and not bob.queued(DOWN)  # nothing before the commit

    assert room.commit() == 1
    assert room.log == [room.state.entries["/todo/1"]]
    (broadcast,) = bob.frames(DOWN)
    (ack,) = ann.frames(DOWN)  # the author gets no echo of its own change
    assert json.loads(ack) == {"type": "ack", "seqs": [1]}
    wire = json.loads(broadcast)
    assert wire["head"] == 1 and "done" not in wire
    room.deliver_all()
    assert bob.replica.get("/todo/1") is not None
    assert ann.replica.idle and ann.replica.cursor == bob.replica.cursor == 1
    assert ann.replica.root_hex == bob.replica.root_hex == room.state.root


def test_with_echo_the_authors_broadcast_precedes_its_ack() -> None:
    room = FakeRoom(policy=Policy(anonymous_caps=["read", "write"], echo_to_sender=True))
    ann = room.connect("ann")
    room.deliver_all()
    ann.write("/a", b"1")
    ann.deliver_one(UP)
    room.commit()
    assert [json.loads(f)["type"] for f in ann.frames(DOWN)] == ["pack", "ack"]


def test_one_commit_groups_every_pack_applied_since_the_last() -> None:
    room = FakeRoom()
    ann, bob, cat = room.connect("ann"), room.connect("bob"), room.connect("cat")
    room.deliver_all()
    room.hold_commits = True
    ann.write("/a", b"1")
    bob.write("/b", b"2")
    room.deliver_all()
    assert room.commit() == 2
    (frame,) = cat.frames(DOWN)
    assert [c.seq for c in unpack_data(json.loads(frame)["data"])] == [1, 2]
    (to_ann,) = [f for f in ann.frames(DOWN) if json.loads(f)["type"] == "pack"]
    assert [c.path for c in unpack_data(json.loads(to_ann)["data"])] == ["/b"]


def test_a_held_commit_is_never_seen_by_another_replica() -> None:
    room = FakeRoom()
    ann, bob = room.connect("ann"), room.connect("bob")
    room.deliver_all()
    ann.write("/seen", b"old")
    room.deliver_all()
    room.hold_commits = True
    ann.write("/seen", b"new")
    ann.write("/fresh", b"x")
    room.deliver_all()
    assert room.state.head == 3 and room.state.durable_head == 1
    # Every way bob can read the room gives the durable view: its broadcasts, a new
    # session's welcome and catch-up, request{since}, request{paths} and subscribe.
    bob.send(m.Request(since=0))
    bob.send(m.Request(paths=("/seen", "/fresh")))
    room.deliver_all()
    bob.reconnect()
    room.deliver_all()
    bob.subscribe(["/seen"])
    room.deliver_all()
    bob.subscribe(["/"])
    room.deliver_all()
    assert bob.welcome is not None and bob.welcome.head == 1
    assert {c.seq for c in changes_received(bob)} == {1}
    assert bob.replica.get("/seen") is not None and bob.replica.get("/fresh") is None
    assert not ann.messages(m.Ack)[1:]  # only the first write is acked

    room.hold_commits = False
    room.deliver_all()
    assert bob.replica.root_hex == ann.replica.root_hex == room.state.root
    assert [a.seqs for a in ann.messages(m.Ack)] == [[1], [2], [3]]


def test_reconnect_from_the_cursor_catches_up_exactly_what_was_missed() -> None:
    room = FakeRoom(policy=Policy(anonymous_caps=["read", "write"], catchup_chunk=2))
    ann, bob = room.connect("ann"), room.connect("bob")
    room.deliver_all()
    for i in range(3):
        ann.write(f"/p/{i}", b"v1")
    room.deliver_all()
    assert bob.replica.cursor == 3
    bob.drop()
    ann.write("/p/0", b"v2")  # 4
    ann.write("/p/3", b"v1")  # 5
    ann.write("/p/0", b"v3")  # 6 (replaces 4)
    ann.delete("/p/1")  # 7
    room.deliver_all()
    seen_before = len(bob.received)
    bob.reconnect()
    assert json.loads(bob.frames(UP)[0])["cursor"] == 3
    room.deliver_all()
    catchup = [msg for msg in bob.received[seen_before:] if isinstance(msg, m.PackMsg)]
    # The latest change of every path changed after 3, in seq order, in chunks of 2;
    # each chunk's head is its last seq, the done chunk's the room head.
    assert [[c.seq for c in unpack_data(p.data)] for p in catchup] == [[5, 6], [7]]
    assert [(p.head, p.done) for p in catchup] == [(6, None), (7, True)]
    assert bob.replica.cursor == 7 and bob.replica.get("/p/1") is None
    assert bob.replica.root_hex == room.state.root


def test_a_write_lost_to_a_newer_one_gets_a_superseded_ack() -> None:
    clock = FakeClock()
    room = FakeRoom(clock=clock)
    ann, bob = room.connect("ann"), room.connect("bob")
    room.deliver_all()
    bob.write("/title", b"bob's")  # queued, older
    clock.advance(10)
    ann.write("/title", b"ann's")
    ann.deliver_one(UP)  # ann's arrives first and wins at seq 1
    bob.deliver_one(UP)
    room.deliver_all()
    (ack,) = bob.messages(m.Ack)
    assert ack.seqs == [1] and ack.superseded == [{"index": 0, "seq": 1}]
    (lost,) = bob.superseded
    assert lost.seq == 1 and lost.change.value == b"bob's"
    assert bob.replica.get("/title") == room.state.entries["/title"]
    assert room.state.head == 1 and bob.replica.idle


def test_a_write_resent_after_a_lost_ack_is_acked_with_its_seq_not_superseded() -> None:
    room = FakeRoom()
    ann = room.connect("ann")
    room.deliver_all()
    ann.write("/x", b"1")
    ann.deliver_one(UP)  # applied by the server...
    room.commit()
    ann.drop()  # ...but the ack is lost with the connection
    assert ann.replica.unsent and not ann.replica.idle
    ann.reconnect()
    room.deliver_all()
    assert [a.seqs for a in ann.messages(m.Ack)] == [[1]]
    assert ann.superseded == [] and ann.replica.idle and room.state.head == 1


def test_superseded_winner_outside_the_subscription_is_fetched_by_paths() -> None:
    clock = FakeClock()
    room = FakeRoom(clock=clock)
    ann = room.connect("ann")
    bob = room.connect(Replica("bob", subscribe=["/mine"]))
    room.deliver_all()
    bob.write("/theirs", b"old")
    clock.advance(5)
    ann.write("/theirs", b"new")
    ann.deliver_one(UP)
    room.deliver_all()
    assert bob.superseded and bob.replica.idle
    requests = [wire for wire in map(json.loads, bob.sent) if wire["type"] == "request"]
    assert requests == [{"type": "request", "paths": ["/theirs"]}]
    assert bob.replica.entries["/theirs"] == room.state.entries["/theirs"]


# -- resync, rate limits, what is not modeled -------------------------------------------------


def test_a_cursor_older_than_retention_gets_4001_then_a_full_catch_up() -> None:
    room = FakeRoom()
    ann, bob = room.connect("ann"), room.connect("bob")
    room.deliver_all()
    ann.write("/gone", b"1")
    room.deliver_all()
    bob.drop()
    ann.delete("/gone")
    ann.write("/kept", b"1")
    room.deliver_all()
    room.compact(3)
    bob.reconnect()
    room.deliver_all()
    assert errors(bob) == [("resync-required", "hello")] and bob.closes == [4001]
    bob.reconnect()
    assert "cursor" not in json.loads(bob.frames(UP)[0])
    room.deliver_all()
    assert bob.replica.get("/gone") is None and bob.replica.root_hex == room.state.root
    bob.send(m.Request(since=1))
    room.deliver_all()
    assert bob.closes == [4001, 4001]


def test_a_rate_limited_pack_is_acked_retry_and_sent_again_at_the_next_flush() -> None:
    clock = FakeClock()
    policy = Policy(anonymous_caps=["read", "write"], rate_burst_messages=2, rate_messages_per_s=1)
    room = FakeRoom(clock=clock, policy=policy)
    ann = room.connect("ann")
    room.deliver_all()  # the hello took one token
    ann.write("/a", b"1")
    ann.write("/b", b"2")  # the bucket is empty now
    room.deliver_all()
    assert [e.code for e in ann.messages(m.Error)] == ["rate-limited"]
    assert [a.seqs for a in ann.messages(m.Ack)] == [[1], []]
    assert [c.path for c in ann.replica.unsent] == ["/b"]
    clock.advance(1_000)
    ann.flush()
    room.deliver_all()
    assert ann.replica.idle and room.state.head == 2 and ann.connected


def test_presence_and_blobs_are_not_modeled() -> None:
    room = FakeRoom()
    ann = room.connect("ann")
    room.deliver_all()
    ann.send(m.Presence(state={"x": 1}))
    with pytest.raises(AssertionError, match="'presence' is not modeled"):
        room.deliver_all()


def test_mst_root_and_nodes_are_served_from_the_room_tree() -> None:
    room = FakeRoom()
    ann = room.connect("ann")
    room.deliver_all()
    ann.write("/a", b"1")
    room.deliver_all()
    ann.send(m.MstRoot())
    room.deliver_all()
    (root,) = ann.messages(m.MstRoot)
    assert (root.root, root.count) == (room.state.root, 1)
    ann.send(m.MstGet(hashes=(room.state.root,)))
    room.deliver_all()
    (nodes,) = ann.messages(m.MstNodes)
    assert [n["hash"] for n in nodes.nodes] == [room.state.root]


def test_a_seeded_interleaving_is_deterministic() -> None:
    def run(seed: int) -> list[list[str]]:
        room = FakeRoom()
        links = [room.connect(name) for name in ("ann", "bob", "cat")]
        rng = random.Random(seed)
        for i in range(30):
            rng.choice(links).write(f"/k/{i % 4}", str(i).encode())
            room.step(rng)
        room.deliver_random(rng)
        assert {link.replica.root_hex for link in links} == {room.state.root}
        return [[json.dumps(msg.to_wire()) for msg in link.received] for link in links]

    assert run(7) == run(7)
    assert run(7) != run(8)
