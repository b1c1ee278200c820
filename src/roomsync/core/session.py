"""One peer's protocol state machine (SPEC §2), as tables.

A session is AWAIT_HELLO until its ``hello`` is accepted, then OPEN until it closes.
:data:`ALLOWED` lists, per phase, the message types a client may send and the data
capability each needs; anything else is refused with its SPEC error code. The shell
feeds every decoded frame to :meth:`Session.receive` and acts on the message it returns
or the error it raises (``error.close`` says whether to close and with which code).
"""

from __future__ import annotations

import functools
from enum import Enum
from typing import Any

from . import messages as m
from .binpack import parse_client_frame
from .codec import parse_client
from .errors import (
    ExpectedHello,
    Forbidden,
    MalformedEnvelope,
    PeerSilent,
    ProtocolError,
    RateLimited,
    RoomsyncError,
    TokenExpired,
    UnknownType,
)
from .ratelimit import RateLimiter, Verdict
from .types import validate_prefix


class Phase(Enum):
    AWAIT_HELLO = "await-hello"
    OPEN = "open"
    CLOSED = "closed"


#: phase -> {message type: capability required (None: no capability needed)}
ALLOWED: dict[Phase, dict[str, str | None]] = {
    Phase.AWAIT_HELLO: {"hello": None},
    Phase.OPEN: {
        "pack": "write",
        "request": "read",
        "subscribe": "read",
        "mst-root": "reconcile",
        "mst-get": "reconcile",
        "mst-probe": "reconcile",
        "presence": "presence",
        "blob-upload": "blob",
        "request-upload": "blob",
        "blob-uploaded": "blob",
        "blob-request": "blob",
        "ping": None,
        "pong": None,
    },
    Phase.CLOSED: {},
}


@functools.lru_cache(maxsize=256)
def _caps_set(caps: tuple[str, ...]) -> frozenset[str]:
    """One shared frozenset per distinct grant: a small set costs ~700 bytes, and every
    session of a deployment holds one of a handful of grants."""
    return frozenset(caps)


#: A peer silent for this many heartbeat intervals is closed (SPEC §5: liveness).
LIVENESS_HEARTBEATS = 3


class Session:
    """Protocol state of one connected peer. Pure: the shell passes ``now_ms``.

    Deadlines come from here, the shell only sleeps until them: :meth:`next_deadline`
    is the earliest instant something may be due (the hello deadline, the token's
    expiry, the liveness limit), and :meth:`due` says what is due at ``now_ms``. Every
    frame from the peer moves the liveness limit (:meth:`seen`), so the shell need not
    re-arm its timer per frame: when it fires early, :meth:`due` answers None and the
    shell sleeps until the next deadline. :meth:`timer_deadline` leaves the liveness
    limit out: a server that checks :meth:`due` at every heartbeat anyway (it pings each
    peer then) needs a timer per connection only for the deadlines that must be met on
    time, and none at all for an idle, welcomed, token-less peer.
    """

    __slots__ = (
        "actor",
        "caps",
        "exp_ms",
        "heartbeat_ms",
        "hello_deadline_ms",
        "last_seen_ms",
        "limiter",
        "peer",
        "phase",
        "prefixes",
        "room",
        "session",
    )

    def __init__(
        self,
        *,
        session: str,
        peer: str,
        room: str,
        limiter: RateLimiter,
        now_ms: int = 0,
        hello_timeout_ms: int = 5_000,
        heartbeat_ms: int = 15_000,
    ) -> None:
        self.session = session
        self.peer = peer
        self.room = room
        self.limiter = limiter
        self.phase = Phase.AWAIT_HELLO
        self.caps: frozenset[str] = frozenset()
        self.actor = peer
        self.prefixes: tuple[str, ...] = ("/",)
        self.exp_ms: int | None = None
        self.hello_deadline_ms = now_ms + hello_timeout_ms
        self.heartbeat_ms = heartbeat_ms
        self.last_seen_ms = now_ms

    # -- deadlines ------------------------------------------------------------------------

    def seen(self, now_ms: int) -> None:
        """A frame (any frame) arrived from the peer."""
        self.last_seen_ms = now_ms

    def next_deadline(self) -> int | None:
        """The earliest instant (ms) at which :meth:`due` may answer something; None
        once closed."""
        if self.phase is Phase.CLOSED:
            return None
        liveness = self.last_seen_ms + LIVENESS_HEARTBEATS * self.heartbeat_ms
        if self.phase is Phase.AWAIT_HELLO:
            return min(self.hello_deadline_ms, liveness)
        if self.exp_ms is not None:
            return min(self.exp_ms, liveness)
        return liveness

    def timer_deadline(self) -> int | None:
        """The hello deadline (before the hello) or the token's expiry (after), or None:
        :meth:`next_deadline` without the liveness limit."""
        if self.phase is Phase.AWAIT_HELLO:
            return self.hello_deadline_ms
        if self.phase is Phase.OPEN:
            return self.exp_ms
        return None

    def due(self, now_ms: int) -> RoomsyncError | None:
        """The error to close with when a deadline has passed at ``now_ms``, else None:
        no hello in time (``expected-hello``, 1002), the token expired (``auth``, 4002),
        or the peer went silent (``timeout``, 1011)."""
        if self.phase is Phase.CLOSED:
            return None
        if self.phase is Phase.AWAIT_HELLO and now_ms >= self.hello_deadline_ms:
            return ExpectedHello("no hello received in time")
        if self.phase is Phase.OPEN and self.exp_ms is not None and now_ms >= self.exp_ms:
            return TokenExpired("token expired")
        silent = now_ms - self.last_seen_ms
        limit = LIVENESS_HEARTBEATS * self.heartbeat_ms
        if silent >= limit:
            return PeerSilent(f"no frame from the peer for {silent} ms (limit {limit} ms)")
        return None

    def receive(self, obj: Any, nbytes: int, now_ms: int) -> m.Message:
        """Check one decoded frame against rate limits, the phase table and caps.

        Raises :class:`RateLimited` (``close`` None: refused; 4008: limit held past the
        grace), :class:`ExpectedHello`, :class:`ProtocolError`, :class:`UnknownType`,
        :class:`Forbidden` (session survives) or a parse error of :mod:`.codec`.
        """
        verdict = self.limiter.check(nbytes, now_ms)
        if verdict is Verdict.CLOSE:
            raise RateLimited("rate limit exceeded for longer than the grace period")
        if self.phase is Phase.AWAIT_HELLO:
            if not isinstance(obj, dict) or obj.get("type") != "hello":
                raise ExpectedHello("the first frame must be hello")
        if verdict is Verdict.REFUSE:
            raise RateLimited("rate limit exceeded: message refused, slow down", close=None)
        try:
            msg = parse_client(obj)
        except UnknownType:
            if self.phase is Phase.AWAIT_HELLO:
                raise ExpectedHello("the first frame must be hello") from None
            raise
        return self._admit(msg)

    def receive_binary(self, payload: bytes, now_ms: int) -> m.PackMsg:
        """Check one binary frame (:mod:`.binpack`) as :meth:`receive` checks a text one.

        Only a session that negotiated ``binary`` may send them; before the hello it is
        ``expected-hello``, without the cap ``malformed-envelope`` (both 1002). The
        ``PackMsg`` returned holds the undecoded postcard ``Pack`` as its ``data``.
        """
        verdict = self.limiter.check(len(payload), now_ms)
        if verdict is Verdict.CLOSE:
            raise RateLimited("rate limit exceeded for longer than the grace period")
        if self.phase is Phase.AWAIT_HELLO:
            raise ExpectedHello("the first frame must be a JSON hello")
        if "binary" not in self.caps:
            raise MalformedEnvelope(
                "a binary frame without the negotiated 'binary' cap: send JSON text"
            )
        if verdict is Verdict.REFUSE:
            raise RateLimited("rate limit exceeded: message refused, slow down", close=None)
        msg = m.PackMsg(data=parse_client_frame(payload))
        self._admit(msg)
        return msg

    def _admit(self, msg: m.Message) -> m.Message:
        """``msg`` if the phase table allows it and the session holds its cap."""
        allowed = ALLOWED[self.phase]
        if msg.type not in allowed:
            if msg.type == "hello":
                raise ProtocolError("hello was already received on this session")
            raise ProtocolError(f"{msg.type} is not allowed in phase {self.phase.value}")
        cap = allowed[msg.type]
        if cap is not None and cap not in self.caps:
            raise Forbidden(f"{msg.type} needs capability '{cap}'", close=None)
        return msg

    def resubscribe(self, paths: tuple[str, ...]) -> tuple[str, ...]:
        """Apply a ``subscribe``'s prefixes (validated: MalformedEnvelope, the session
        survives) and return the ones they replace. The shell calls it once the room has
        admitted the answer, so a refused ``subscribe`` changes nothing."""
        new = tuple(validate_prefix(p) for p in paths) or ("/",)
        old, self.prefixes = self.prefixes, new
        return old

    def undecodable(self, detail: str) -> ProtocolError:
        """The error for a text frame that is not JSON: ``expected-hello`` before the
        hello, ``malformed-envelope`` after (both close with 1002)."""
        if self.phase is Phase.AWAIT_HELLO:
            return ExpectedHello("the first frame must be a JSON hello")
        return MalformedEnvelope(f"frame is not valid JSON: {detail}")

    def open(
        self, *, caps: tuple[str, ...], actor: str, prefixes: tuple[str, ...], exp_ms: int | None
    ) -> None:
        """Move to OPEN once the shell authenticated the hello."""
        if self.phase is not Phase.AWAIT_HELLO:
            raise ProtocolError("session is not awaiting hello")
        self.caps = _caps_set(caps)
        self.actor = actor
        self.prefixes = tuple(validate_prefix(p) for p in prefixes) or ("/",)
        self.exp_ms = exp_ms
        self.phase = Phase.OPEN

    def close(self) -> None:
        self.phase = Phase.CLOSED


def hello_prefixes(hello: m.Hello) -> tuple[str, ...]:
    """Validated subscription prefixes of a hello (MalformedEnvelope on a bad one)."""
    try:
        return tuple(validate_prefix(p) for p in hello.subscribe) or ("/",)
    except MalformedEnvelope as exc:
        raise MalformedEnvelope(exc.message) from None
