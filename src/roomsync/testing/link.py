"""A fake link: client replicas and a pure server room, in memory, frame by frame (STYLE
lesson 7, after trio's ``testing/_check_streams.py`` and h11's ``tests/helpers.py``).

:class:`FakeRoom` is a test double of the server's *protocol* for one room, built from
the same core pieces the real server uses; :class:`FakeLink` is one client
:class:`~roomsync.core.replica.Replica` connected to it. Every frame crosses the link as
the JSON text a socket would carry (encoded with :mod:`roomsync.core.messages`, read with
:mod:`roomsync.core.codec` on both sides, bad JSON included), waits in a queue per
direction, and moves only when the test says so: :meth:`FakeLink.deliver_one`,
:meth:`FakeRoom.deliver_all`, or a seeded random interleaving (:meth:`FakeRoom.step`,
:meth:`FakeRoom.deliver_random`). Time is a :class:`~roomsync.testing.clock.FakeClock`;
nothing sleeps, nothing opens a socket::

    room = FakeRoom()
    ann, bob = room.connect("ann"), room.connect("bob")
    room.deliver_all()                       # hello -> welcome -> catch-up
    room.hold_commits = True
    ann.write("/todo/1", b"milk")
    room.deliver_all()                       # applied, pending: bob sees nothing, no ack
    room.commit()                            # the store commit the server waits for
    room.deliver_all()                       # broadcast to bob, then the ack to ann
    assert ann.replica.root_hex == bob.replica.root_hex == room.state.root

What the server side models, and the core piece that decides each behaviour:

- **handshake**: the first frame must be ``hello`` (:class:`~roomsync.core.session.Session`
  with its :class:`~roomsync.core.ratelimit.RateLimiter`, one per connection); version
  check (:func:`~roomsync.core.handshake.check_version`); admission (locked room,
  anonymous caps, room full, cursor retention) and cap negotiation
  (:func:`~roomsync.core.handshake.admit`); the ``welcome`` envelope
  (:func:`~roomsync.core.handshake.welcome`). A token is modelled by the
  :class:`~roomsync.core.handshake.TokenGrant` its verification would give;
- **packs and acks**: :func:`~roomsync.core.room.client_changes` then
  :meth:`RoomState.apply(pending=True) <roomsync.core.room.RoomState.apply>`; a pack refused
  as a whole gets its ``refused[{index: -1}]`` ack in order with the others;
- **commit, then broadcast, then acks**: the store commit is an explicit step
  (:meth:`FakeRoom.commit`; :attr:`FakeRoom.hold_commits` holds it open). Until it runs
  the changes are pending: no peer receives them, and catch-up, ``request`` and
  ``subscribe`` answers read the durable view. A commit groups everything queued since
  the last one, broadcasts one ``pack`` per peer (filtered by its subscription, without
  the author's own changes unless ``policy.echo_to_sender``) and then sends the acks;
- **catch-up from the cursor** (or of the whole subscribed state), ``request{since}``,
  ``request{paths}`` and ``subscribe`` answers, cut into chunks by
  :mod:`roomsync.core.catchup` (``policy.catchup_chunk`` changes per chunk);
- ``mst-root`` and ``mst-get`` answers (:func:`~roomsync.core.mst.serve_nodes`) and
  ``mst-probe`` answers (:func:`~roomsync.core.sketch.serve_probe_message`), so a test can
  drive :func:`roomsync.core.reconcile.reconcile` and
  :func:`~roomsync.core.reconcile.reconcile_batched` over the link itself; ``ping``;
- errors and closes: every refusal becomes the ``error`` envelope of its
  :class:`~roomsync.core.errors.RoomsyncError` (with ``ref``), followed by a close when
  the error has a close code; the session deadlines (hello timeout, token expiry,
  liveness) when the test calls :meth:`FakeRoom.run_deadlines`; compaction
  (:meth:`FakeRoom.compact`), after which an older cursor gets 4001.

What it does not model: blobs and presence (their messages fail the test with an
``AssertionError``; ``welcome.presence`` is empty), JWT verification and revocation
(pass a ``TokenGrant``), frame size limits (1009), the stream budget and backpressure
(answers are built at once, whole, when the request is read), binary frames, failed
commits, bus fan-out across nodes, and timers of their own (deadlines run only when
asked). On the client side the link drives the replica as the SDK does
(``client/connection.py``, ``client/local_replica.py``) but it sends no keepalive
pings, never pauses after a rate-limited pack (the pack goes again at the next flush)
and never runs an MST resync (``can_reconcile`` is False, so a 4001 is followed by a
full catch-up).
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar, get_args

from ..config import DataCap, Policy
from ..core import messages as m
from ..core.catchup import chunk_count, chunk_message
from ..core.codec import (
    PROTOCOL_VERSION,
    b64encode,
    decode_json,
    pack_data,
    parse_server,
    unpack_data,
)
from ..core.codes import ErrorCode
from ..core.entries import Change
from ..core.errors import ResyncRequired, RoomClosed, RoomsyncError
from ..core.handshake import RoomView, TokenGrant, admit, check_version, welcome
from ..core.limits import WelcomeLimits, announced
from ..core.mst import serve_nodes
from ..core.packing import DEFAULT_PACK_LIMITS, PackLimits, path_chunks
from ..core.ratelimit import RateLimiter
from ..core.reconnect import CloseAction, close_action
from ..core.replica import AnswerKind, RefusedChange, Replica, Settled, SupersededChange
from ..core.room import ApplyLimits, RoomState, client_changes
from ..core.session import Phase, Session, hello_prefixes
from ..core.sketch import serve_probe_message
from ..core.types import any_prefix_matches
from .clock import FakeClock

__all__ = ["Direction", "FakeLink", "FakeRoom"]

_M = TypeVar("_M", bound=m.Message)

#: Messages of features the fake room does not model (see the module docstring).
_NOT_MODELED = frozenset(
    {"presence", "blob-upload", "request-upload", "blob-uploaded", "blob-request"}
)


class Direction(Enum):
    """Which way a frame travels on a :class:`FakeLink`."""

    TO_SERVER = "to-server"
    TO_CLIENT = "to-client"


@dataclass(frozen=True, slots=True)
class _Close:
    """The close frame at the end of a server-closed connection's queue."""

    code: int


def _text(obj: dict[str, Any]) -> str:
    """One envelope as the text frame a socket would carry."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass(eq=False)
class _Peer:
    """The server side of one connection: its core session and what its token binds."""

    link: FakeLink
    session: Session
    grant: TokenGrant | None
    bound: str | None = None
    open: bool = True

    @property
    def reads(self) -> bool:
        return "read" in self.session.caps

    def send(self, obj: dict[str, Any]) -> None:
        if self.open:
            self.link._down.append(_text(obj))


@dataclass(slots=True)
class _Submitted:
    """A pack applied and waiting for the commit: its changes and its ack."""

    peer: _Peer
    accepted: list[Change]
    ack: dict[str, Any]


class FakeRoom:
    """One room of a fake server: the core's room state, one core session per link.

    ``state`` is the :class:`~roomsync.core.room.RoomState` (its ``root`` is the canonical
    hash), ``log`` every committed change in commit order (the op log a store would hold),
    ``links`` every :class:`FakeLink` ever connected. ``policy`` defaults to the server's
    defaults with every data cap granted to anonymous peers (a dev server); ``entries``
    is a state to start from, as a store would load it (its changes are not in ``log``).
    """

    def __init__(
        self,
        room: str = "room",
        *,
        clock: FakeClock | None = None,
        policy: Policy | None = None,
        heartbeat_ms: int = 15_000,
        hello_timeout_ms: int = 5_000,
        max_frame_bytes: int = 1 << 20,
        node: str = "fake-node",
        entries: Iterable[Change] = (),
    ) -> None:
        self.room = room
        self.clock = clock if clock is not None else FakeClock()
        self.policy = (
            policy if policy is not None else Policy(anonymous_caps=list(get_args(DataCap)))
        )
        self.heartbeat_ms = heartbeat_ms
        self.hello_timeout_ms = hello_timeout_ms
        self.max_frame_bytes = max_frame_bytes
        self.node = node
        self.state = RoomState(room, entries)
        self.log: list[Change] = []
        self.links: list[FakeLink] = []
        #: While True, :meth:`deliver_all` and :meth:`step` never commit: applied changes
        #: stay pending until :meth:`commit` is called.
        self.hold_commits = False
        #: Inputs of the handshake's room checks (``core.handshake.RoomView``).
        self.locked = False
        self.closed = False
        self._peers: list[_Peer] = []
        self._queue: list[_Submitted] = []
        self._ids = 0

    # -- the test's controls ------------------------------------------------------------

    def connect(
        self,
        replica: Replica | str,
        *,
        caps: Sequence[str] | None = None,
        grant: TokenGrant | None = None,
        hello: bool = True,
    ) -> FakeLink:
        """Connect a replica (or a new one for this actor); its ``hello`` is queued.

        ``caps`` are the caps the hello requests (None: all granted). ``grant`` stands for
        a token the server verified (None: the peer is anonymous). ``hello`` False opens
        the connection without a hello, for a test that sends its own first frame.
        """
        if isinstance(replica, str):
            replica = Replica(replica)
        link = FakeLink(self, replica, caps=caps, grant=grant)
        self.links.append(link)
        link.reconnect(hello=hello)
        return link

    @property
    def pending(self) -> bool:
        """True while applied packs wait for :meth:`commit` (their changes or their acks)."""
        return bool(self._queue)

    def commit(self) -> int:
        """Commit every pack applied since the last commit, as the store would in one
        transaction, then broadcast its changes and send the acks. Returns the number of
        packs settled."""
        batch, self._queue = self._queue, []
        accepted = [c for item in batch for c in item.accepted]
        if accepted:
            self.state.committed(accepted[-1].seq or 0)
            self.log.extend(accepted)
            self._broadcast([(item.peer, c) for item in batch for c in item.accepted])
        for item in batch:
            item.peer.send(item.ack)
        return len(batch)

    def compact(self, through: int) -> None:
        """The store compacted the op log through ``through``: tombstones up to it are
        forgotten and an older cursor or ``request{since}`` gets ``resync-required``."""
        self.state.forget_tombstones(through)

    def run_deadlines(self) -> int:
        """Close every session whose deadline has passed at ``clock.now_ms()`` (the hello
        timeout, token expiry, liveness), as the server's per-connection timer would.
        Returns the number closed."""
        now = self.clock.now_ms()
        closed = 0
        for link in self.links:
            peer = link._peer
            if peer is None or not peer.open:
                continue
            due = peer.session.due(now)
            if due is not None:
                self._fail(peer, due)
                closed += 1
        return closed

    def deliver_all(self, *, max_rounds: int = 10_000) -> int:
        """Deliver every queued frame both ways, committing between rounds (unless
        :attr:`hold_commits`), until nothing moves. Deterministic: each round delivers the
        frames to the server, link by link, then commits, then the frames to the clients.
        Returns the number of steps taken."""
        steps = 0
        for _ in range(max_rounds):
            moved = 0
            for link in list(self.links):
                while link.deliver_one(Direction.TO_SERVER):
                    moved += 1
            if self._queue and not self.hold_commits:
                self.commit()
                moved += 1
            for link in list(self.links):
                while link.deliver_one(Direction.TO_CLIENT):
                    moved += 1
            if not moved:
                return steps
            steps += moved
        raise RuntimeError(f"the links did not settle within {max_rounds} rounds")

    def step(self, rng: random.Random) -> bool:
        """Take one step chosen by ``rng`` among those possible now: deliver the next frame
        of some link in some direction, or commit (unless :attr:`hold_commits`). False when
        nothing can move."""
        choices: list[tuple[FakeLink, Direction] | None] = [
            (link, direction)
            for link in self.links
            for direction in Direction
            if link.queued(direction)
        ]
        if self._queue and not self.hold_commits:
            choices.append(None)
        if not choices:
            return False
        choice = rng.choice(choices)
        if choice is None:
            self.commit()
        else:
            choice[0].deliver_one(choice[1])
        return True

    def deliver_random(self, rng: random.Random, *, max_steps: int = 1_000_000) -> int:
        """:meth:`step` until nothing moves; returns the number of steps."""
        for steps in range(max_steps):
            if not self.step(rng):
                return steps
        raise RuntimeError(f"the links did not settle within {max_steps} steps")

    # -- the server side ----------------------------------------------------------------

    def _new_peer(self, link: FakeLink, grant: TokenGrant | None) -> _Peer:
        self._ids += 1
        now = self.clock.now_ms()
        session = Session(
            session=f"s{self._ids}",
            peer=f"p{self._ids}",
            room=self.room,
            limiter=RateLimiter.from_policy(self.policy, now_ms=now),
            now_ms=now,
            hello_timeout_ms=self.hello_timeout_ms,
            heartbeat_ms=self.heartbeat_ms,
        )
        return _Peer(link, session, grant)

    def _leave(self, peer: _Peer) -> None:
        peer.open = False
        peer.session.close()
        if peer in self._peers:
            self._peers.remove(peer)

    def _fail(self, peer: _Peer, exc: RoomsyncError, ref: str | None = None) -> None:
        """Send the error of ``exc``; close the connection when the error says so."""
        fields: dict[str, Any] = {"type": "error", **exc.to_error_fields()}
        if ref is not None:
            fields["ref"] = ref
        peer.send(fields)
        if exc.close is not None:
            self._leave(peer)
            peer.link._down.append(_Close(int(exc.close)))

    def _receive(self, peer: _Peer, text: str) -> None:
        """One text frame from the client, handled as ``server/ws.py`` handles it."""
        if not peer.open:
            return  # closed: the server reads nothing more
        session = peer.session
        now = self.clock.now_ms()
        session.seen(now)
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            self._fail(peer, session.undecodable(str(exc)))
            return
        type_ = obj.get("type") if isinstance(obj, dict) else None
        ref = type_ if isinstance(type_, str) else None
        try:
            msg = session.receive(obj, len(text.encode("utf-8")), now)
        except RoomsyncError as exc:
            if type_ == "pack":
                self._refuse_pack(peer, exc)
            self._fail(peer, exc, ref)
            return
        if msg.type in _NOT_MODELED:
            # The test, not the protocol, went wrong: fail it like an assert would.
            raise AssertionError(
                f"{msg.type!r} is not modeled by roomsync.testing.link: "
                "test it against the real server (roomsync.testing.server)"
            )
        try:
            self._dispatch(peer, msg, now)
        except RoomsyncError as exc:
            if msg.type == "pack":
                self._refuse_pack(peer, exc)
            self._fail(peer, exc, msg.type)

    def _refuse_pack(self, peer: _Peer, exc: RoomsyncError) -> None:
        """A pack refused as a whole still gets its ack, in order with the others."""
        if exc.close is None and peer.session.phase is Phase.OPEN:
            refused = [{"index": -1, "code": str(exc.code), "message": exc.message}]
            ack = {"type": "ack", "seqs": [], "refused": refused}
            self._queue.append(_Submitted(peer, [], ack))

    def _dispatch(self, peer: _Peer, msg: m.Message, now: int) -> None:
        state = self.state
        if isinstance(msg, m.Hello):
            self._hello(peer, msg)
        elif isinstance(msg, m.PackMsg):
            self._pack(peer, msg, now)
        elif isinstance(msg, m.Request) and msg.paths is not None:
            changes = state.get_paths(msg.paths)
            changes.sort(key=lambda c: c.seq or 0)
            self._answer(peer, changes)
        elif isinstance(msg, m.Request):
            since = msg.since or 0
            if since < state.compacted_through:
                raise ResyncRequired(
                    f"request since {since} is older than retention "
                    f"(compacted through {state.compacted_through}); do a full resync"
                )
            self._answer(peer, state.changes_since(since, peer.session.prefixes))
        elif isinstance(msg, m.Subscribe):
            before = peer.session.resubscribe(msg.paths)
            self._answer(peer, state.changes_under(peer.session.prefixes, excluding=before))
        elif isinstance(msg, m.MstRoot):
            peer.send({"type": "mst-root", "root": state.root, "count": state.live_count()})
        elif isinstance(msg, m.MstGet):
            found = serve_nodes(state.tree, [bytes.fromhex(h) for h in msg.hashes])
            nodes = [{"hash": h.hex(), "data": b64encode(data)} for h, data in found]
            peer.send({"type": "mst-nodes", "nodes": nodes})
        elif isinstance(msg, m.MstProbe):
            peer.send({"type": "mst-sketch", "data": serve_probe_message(state.tree, msg.data)})
        elif isinstance(msg, m.Ping):
            peer.send({"type": "pong"})

    def _hello(self, peer: _Peer, hello: m.Hello) -> None:
        """Admit and welcome as :mod:`roomsync.core.handshake` decides, then catch up."""
        check_version(hello)
        prefixes = hello_prefixes(hello)
        state, policy, session = self.state, self.policy, peer.session
        view = RoomView(
            room=self.room,
            locked=self.locked,
            closed=self.closed,
            failed=False,
            peers=len(self._peers),
            max_peers=policy.max_peers,
            durable_head=state.durable_head,
            compacted_through=state.compacted_through,
            anonymous_caps=tuple(policy.anonymous_caps),
        )
        admission = admit(hello, view, peer.grant, fallback_actor=session.peer, retry_after_ms=1000)
        session.open(
            caps=admission.caps, actor=admission.actor, prefixes=prefixes, exp_ms=admission.exp_ms
        )
        peer.bound = admission.bound
        peer.send(
            welcome(
                session=session.session,
                peer=session.peer,
                room=self.room,
                admission=admission,
                head=state.durable_head,
                root=state.root,
                heartbeat_ms=self.heartbeat_ms,
                limits=self._welcome_limits(),
                presence=[],
                node=self.node,
            )
        )
        self._peers.append(peer)
        if peer.reads and hello.catchup is not False:
            self._answer(peer, state.changes_since(hello.cursor or 0, session.prefixes))

    def _pack(self, peer: _Peer, msg: m.PackMsg, now: int) -> None:
        if self.closed:
            raise RoomClosed(f"room {self.room!r} is closed")
        p = self.policy
        changes = client_changes(
            msg.data,
            max_pack_bytes=p.max_pack_bytes,
            max_changes=p.max_changes_per_pack,
            bound_actor=peer.bound,
        )
        limits = ApplyLimits(
            max_value_bytes=p.max_value_bytes, max_clock_skew_ms=p.max_clock_skew_ms
        )
        result = self.state.apply(changes, now_ms=now, limits=limits, pending=True)
        ack: dict[str, Any] = {"type": "ack", "seqs": result.seqs}
        if result.refused:
            ack["refused"] = result.refused
        if result.superseded:
            ack["superseded"] = result.superseded
        self._queue.append(_Submitted(peer, result.accepted, ack))

    def _answer(self, peer: _Peer, changes: list[Change]) -> None:
        """An answer in chunks, ending with ``done`` at the durable head."""
        chunk = max(1, self.policy.catchup_chunk)
        head = self.state.durable_head
        for i in range(chunk_count(len(changes), chunk)):
            peer.send(chunk_message(changes, i, chunk=chunk, final_head=head))

    def _broadcast(self, pairs: list[tuple[_Peer, Change]]) -> None:
        """One ``pack`` per reading peer: what its subscription sees, minus its own writes."""
        head = pairs[-1][1].seq or 0
        echo = self.policy.echo_to_sender
        for peer in list(self._peers):
            if not peer.open or not peer.reads:
                continue
            prefixes = peer.session.prefixes
            changes = [
                c
                for author, c in pairs
                if (echo or author is not peer) and any_prefix_matches(prefixes, c.path)
            ]
            if changes:
                peer.send({"type": "pack", "data": pack_data(changes), "head": head})

    def _welcome_limits(self) -> dict[str, Any]:
        """``welcome.limits``, announced as the server does (:mod:`roomsync.core.limits`)."""
        return announced(self.policy, max_frame_bytes=self.max_frame_bytes)


class FakeLink:
    """One replica's connection to a :class:`FakeRoom`, across reconnects (made by
    :meth:`FakeRoom.connect`).

    Holds the two frame queues of the current connection and drives the replica with
    the server's frames the way the SDK does: the same :class:`~roomsync.core.replica.Replica`
    calls, in the same order (``hello`` from :meth:`Replica.start_session`, ``welcome`` ->
    :meth:`Replica.on_welcome`, packs -> :meth:`Replica.receive`, acks ->
    :meth:`Replica.on_ack`, then subscribe, fetch superseded winners and send the next
    pack). What crossed the link is kept for the test: ``sent`` (every text frame the
    client sent), ``received`` (every parsed server message), ``closes`` (close codes
    from the server), all sessions included, and ``refused`` and ``superseded`` (the
    replica's reports of its settled writes).
    """

    def __init__(
        self,
        room: FakeRoom,
        replica: Replica,
        *,
        caps: Sequence[str] | None = None,
        grant: TokenGrant | None = None,
    ) -> None:
        self.room = room
        self.replica = replica
        self.caps = tuple(caps) if caps is not None else None
        self.grant = grant
        self.received: list[m.Message] = []
        self.sent: list[str] = []
        self.closes: list[int] = []
        self.refused: list[RefusedChange] = []
        self.superseded: list[SupersededChange] = []
        #: The ``welcome`` of the current session (None before it or once disconnected).
        self.welcome: m.Welcome | None = None
        #: True from :meth:`reconnect` until :meth:`drop` or a close from the server.
        self.connected = False
        #: The server closed with a code the client stops on (``core.reconnect``: 1002,
        #: 4003, 4004); :meth:`reconnect` still works, the test decides.
        self.stopped = False
        self._up: deque[str] = deque()
        self._down: deque[str | _Close] = deque()
        self._peer: _Peer | None = None
        self._synced = False
        self._pack_limits: PackLimits = DEFAULT_PACK_LIMITS

    # -- state -----------------------------------------------------------------------------

    @property
    def session(self) -> Session | None:
        """The server's core session of the current connection."""
        return self._peer.session if self._peer is not None else None

    @property
    def synced(self) -> bool:
        """Welcomed and caught up (the SDK's ``link.synced``)."""
        return self.connected and self._synced

    def queued(self, direction: Direction) -> int:
        """Frames waiting to travel in ``direction``."""
        return len(self._up if direction is Direction.TO_SERVER else self._down)

    def frames(self, direction: Direction) -> list[str]:
        """The text frames waiting to travel in ``direction``, oldest first (the JSON a
        socket would carry; a server's close frame is not text and not listed)."""
        queue = self._up if direction is Direction.TO_SERVER else self._down
        return [frame for frame in queue if isinstance(frame, str)]

    def messages(self, kind: type[_M]) -> list[_M]:
        """The received server messages of one type, in order."""
        return [msg for msg in self.received if isinstance(msg, kind)]

    # -- what the application does ---------------------------------------------------------

    def write(self, path: str, value: bytes | None) -> Change:
        """A local write (``value`` None deletes), sent when the session allows."""
        change = self.replica.write(path, value, self.room.clock.now_ms())
        self.flush()
        return change

    def delete(self, path: str) -> Change:
        return self.write(path, None)

    def subscribe(self, prefixes: Sequence[str]) -> None:
        """Replace the subscription; ``subscribe`` goes out once the session is synced."""
        self.replica.set_prefixes(prefixes)
        if self.synced:
            self._maybe_subscribe()

    def flush(self) -> None:
        """Send the next pack of queued writes, if the session and the window allow."""
        welcome_ = self.welcome
        if not self.connected or welcome_ is None:
            return
        if "write" not in welcome_.caps:
            self._settled(
                self.replica.refuse_unsent(
                    str(ErrorCode.FORBIDDEN), "this session has no 'write' capability"
                )
            )
            return
        limits = self._pack_limits
        self._settled(self.replica.refuse_oversize(limits.max_bytes))
        pack = self.replica.take_outgoing(limits.max_changes, limits.max_bytes)
        if pack is not None:
            self.send(m.PackMsg(data=pack_data(pack)))

    def send(self, msg: m.Message) -> None:
        """Queue any client message (e.g. ``request{since}``) as its JSON envelope."""
        self.send_text(_text(msg.to_wire()))

    def send_text(self, text: str) -> None:
        """Queue a raw text frame: what a socket carries, valid JSON or not."""
        if not self.connected:
            raise RuntimeError("not connected: call reconnect() first")
        self.sent.append(text)
        self._up.append(text)

    # -- the connection --------------------------------------------------------------------

    def drop(self) -> None:
        """The connection drops abruptly: frames still in flight either way are lost, the
        server forgets the session, packs in flight go back to the replica's queue."""
        if not self.connected:
            return
        self.connected = False
        self._up.clear()
        self._down.clear()
        if self._peer is not None:
            self.room._leave(self._peer)
        self._link_down()

    def reconnect(self, *, hello: bool = True) -> None:
        """Start a new connection (dropping the current one): the replica plans the
        ``hello`` (cursor, subscription, full or resumed catch-up) and it is queued.
        ``hello`` False: open the connection only (see :meth:`FakeRoom.connect`)."""
        self.drop()
        self._peer = self.room._new_peer(self, self.grant)
        self._up.clear()
        self._down.clear()
        self.connected = True
        self.stopped = False
        if not hello:
            return
        plan = self.replica.start_session(can_reconcile=False)
        self.send(
            m.Hello(
                v=PROTOCOL_VERSION,
                actor=self.replica.actor,
                caps=self.caps,
                subscribe=plan.subscribe,
                cursor=plan.cursor,
                catchup=None if plan.catchup else False,
            )
        )

    def deliver_one(self, direction: Direction) -> bool:
        """Deliver the next frame travelling in ``direction``; False when there is none."""
        if direction is Direction.TO_SERVER:
            if not self._up:
                return False
            text = self._up.popleft()
            if self._peer is not None:
                self.room._receive(self._peer, text)
            return True
        if not self._down:
            return False
        frame = self._down.popleft()
        if isinstance(frame, _Close):
            self._closed(frame.code)
        else:
            self._on_frame(frame)
        return True

    def _closed(self, code: int) -> None:
        """The server's close frame arrived: act as ``core.reconnect`` says."""
        self.closes.append(code)
        self.connected = False
        self._up.clear()
        self._down.clear()
        action = close_action(code)
        if action is CloseAction.RESYNC:
            self.replica.resync_required()
        elif action is CloseAction.STOP:
            self.stopped = True
        self._link_down()

    def _link_down(self) -> None:
        self.welcome = None
        self._synced = False
        self.replica.requeue_inflight()

    # -- server frames, handled as client/local_replica.py handles them --------------------

    def _on_frame(self, text: str) -> None:
        msg = parse_server(decode_json(text))
        self.received.append(msg)
        if isinstance(msg, m.Welcome):
            self._on_welcome(msg)
        elif isinstance(msg, m.PackMsg):
            self._on_pack(msg)
        elif isinstance(msg, m.Ack):
            self._on_ack(msg)
        elif isinstance(msg, m.Error):
            ref = msg.ref or msg.extra.get("ref")  # a field, or an extra one of older parsers
            if ref == "request":
                self.replica.answer_failed(AnswerKind.PATHS)
            elif ref == "subscribe":
                self.replica.answer_failed(AnswerKind.SUBSCRIBE)
        elif isinstance(msg, m.Ping):
            self.send(m.Pong())

    def _on_welcome(self, msg: m.Welcome) -> None:
        self.welcome = msg
        self._pack_limits = PackLimits.from_welcome(WelcomeLimits.parse(msg.limits))
        self.replica.on_welcome(msg.head, can_read="read" in msg.caps)
        if self.replica.synced:
            self._on_synced()  # write-only: no catch-up to wait for
        else:
            self.flush()  # packs go out during the catch-up too

    def _on_synced(self) -> None:
        self._synced = True
        self._maybe_subscribe()
        self._fetch_winners()
        self.flush()

    def _maybe_subscribe(self) -> None:
        answer = self.replica.expect_subscribe()
        if answer is not None:
            self.send(m.Subscribe(paths=answer.scope_in))

    def _fetch_winners(self) -> None:
        if not self.synced:
            return
        for chunk in path_chunks(self.replica.fetch_paths()):
            self.send(m.Request(paths=tuple(chunk)))
            self.replica.expect_paths(chunk)

    def _on_pack(self, msg: m.PackMsg) -> None:
        received = self.replica.receive(unpack_data(msg.data), head=msg.head, done=bool(msg.done))
        finished = received.finished
        if finished is None:
            return
        if finished.kind in (AnswerKind.CATCHUP, AnswerKind.FULL):
            self._on_synced()
        elif finished.kind is AnswerKind.SUBSCRIBE:
            self._maybe_subscribe()

    def _on_ack(self, msg: m.Ack) -> None:
        settled = self.replica.on_ack(msg.seqs, msg.refused or (), msg.superseded or ())
        self._settled(settled)
        if settled.superseded:
            self._fetch_winners()
        if not settled.retry:
            self.flush()

    def _settled(self, settled: Settled) -> None:
        self.refused.extend(settled.refused)
        self.superseded.extend(settled.superseded)
