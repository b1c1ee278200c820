"""The decisions of the handshake (SPEC §2 ``hello``/``welcome``, §3 auth), pure.

The shell does the I/O around them: it loads the room, verifies the token's signature,
room and revocation (``roomsync.auth``), then asks :func:`admit` whether and how the
peer is admitted, and sends :func:`welcome` (built here too, so a port of the server or
a test double produces the same envelope). Order of the checks, each with its error:

1. protocol version (:func:`check_version`): ``unsupported-version``, 1002;
2. the room: failed after a store error → ``overload`` 1011 with a retry hint;
   closed → ``room-closed`` 4004;
3. who: a token grant, or, without a token, a locked room → ``auth`` 4003, no anonymous
   caps in the room's policy → ``auth`` 4003;
4. room full (``max_peers``) → ``overload`` 1011 with a retry hint;
5. the cursor, only for a session that can read (a writer's cursor means nothing):
   older than retention or ahead of the durable head → ``resync-required`` 4001;
6. caps: requested ∩ granted ∩ supported (:func:`negotiate`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import messages as m
from .codec import PROTOCOL_VERSION
from .codes import AuthReason
from .errors import AuthError, Overload, ResyncRequired, RoomClosed, UnsupportedVersion
from .types import DATA_CAPS, actor_allowed

#: The data caps this server implements; the third input of :func:`negotiate`.
SUPPORTED_DATA_CAPS: frozenset[str] = frozenset(DATA_CAPS)
#: The cap that grants everything.
WILDCARD = "*"
#: Data caps a session holds only when its hello asks for them by name.
OPT_IN_CAPS: frozenset[str] = frozenset({"binary"})


def negotiate(
    requested: Iterable[str] | None,
    granted: Iterable[str],
    supported: Iterable[str],
) -> tuple[str, ...]:
    """The data caps of a session: requested ∩ granted ∩ supported, in DATA_CAPS order.

    ``requested is None`` (no ``caps`` in ``hello``) asks for everything granted, as does
    a requested ``*``, except the opt-in caps (:data:`OPT_IN_CAPS`: ``binary``), which a
    session gets only when its hello names them: they change what the server sends, and
    a client that did not ask for them may not understand it. A granted ``*`` grants
    every supported data cap. Control caps and unknown names in any input are ignored:
    they never become session caps.
    """
    granted_set = set(granted)
    if WILDCARD in granted_set:
        granted_set = set(DATA_CAPS)
    if requested is None:
        wanted = granted_set - OPT_IN_CAPS
    else:
        requested_set = set(requested)
        if WILDCARD in requested_set:
            wanted = (granted_set - OPT_IN_CAPS) | (granted_set & requested_set)
        else:
            wanted = granted_set & requested_set
    supported_set = set(supported)
    return tuple(cap for cap in DATA_CAPS if cap in wanted and cap in supported_set)


@dataclass(frozen=True, slots=True)
class RoomView:
    """What the handshake needs to know about the room being joined."""

    room: str
    locked: bool
    closed: bool
    failed: bool
    peers: int
    max_peers: int
    durable_head: int
    compacted_through: int
    anonymous_caps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A token the shell verified: signature, expiry, room pattern, not revoked."""

    sub: str | None
    caps: tuple[str, ...]
    exp_ms: int | None
    jti: str | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """How a peer is admitted: its session caps and actor, what its changes are bound to
    (the token's ``sub``, or None), when its token expires, and the auth outcome
    (``ok`` or ``anonymous``, the ``roomsync_auth_total`` label)."""

    caps: tuple[str, ...]
    actor: str
    bound: str | None
    exp_ms: int | None
    outcome: str


def check_version(hello: m.Hello) -> None:
    if hello.v != PROTOCOL_VERSION:
        raise UnsupportedVersion(
            f"protocol version {hello.v} is not supported; this server speaks v{PROTOCOL_VERSION}"
        )


def check_cursor(cursor: int | None, *, durable_head: int, compacted_through: int) -> None:
    """Raise ResyncRequired (4001) when ``cursor`` cannot be caught up from."""
    if not cursor:
        return
    if cursor > durable_head:
        raise ResyncRequired(
            f"cursor {cursor} is ahead of the room head {durable_head}: "
            "the room was restored or replaced; do a full resync"
        )
    if cursor < compacted_through:
        raise ResyncRequired(
            f"cursor {cursor} is older than retention "
            f"(compacted through {compacted_through}); do a full resync"
        )


def anonymous_refusal(room: RoomView) -> AuthError | None:
    """Why a hello without a token may not enter ``room`` (locked, or no anonymous
    caps), or None when it may."""
    if room.locked:
        return AuthError(
            f"room '{room.room}' is locked: a token for it is required", reason=AuthReason.LOCKED
        )
    if not room.anonymous_caps:
        return AuthError(
            "anonymous access is disabled: send a token", reason=AuthReason.ANONYMOUS_DISABLED
        )
    return None


def admit(
    hello: m.Hello,
    room: RoomView,
    grant: TokenGrant | None,
    *,
    fallback_actor: str,
    retry_after_ms: int,
) -> Admission:
    """Admit a peer or raise the error of the first check it fails (module docstring)."""
    if room.failed:
        raise Overload(
            f"room {room.room!r} is reloading after a store failure: retry",
            retry_after_ms=retry_after_ms,
        )
    if room.closed:
        raise RoomClosed(f"room {room.room!r} is closed")
    if grant is not None:
        sub = grant.sub or None
        if sub:
            asked = hello.actor
            actor = asked if asked and actor_allowed(sub, asked) else sub
        else:
            actor = hello.actor or fallback_actor
        granted, exp_ms, outcome = grant.caps, grant.exp_ms, "ok"
    else:
        refusal = anonymous_refusal(room)
        if refusal is not None:
            raise refusal
        sub, actor = None, hello.actor or fallback_actor
        granted, exp_ms, outcome = room.anonymous_caps, None, "anonymous"
    if room.peers >= room.max_peers:
        raise Overload(
            f"room {room.room!r} is full ({room.max_peers} peers)",
            retry_after_ms=retry_after_ms,
        )
    caps = negotiate(hello.caps, granted, SUPPORTED_DATA_CAPS)
    if "read" in caps:
        check_cursor(
            hello.cursor if hello.catchup is not False else None,
            durable_head=room.durable_head,
            compacted_through=room.compacted_through,
        )
    return Admission(caps, actor, sub, exp_ms, outcome)


def welcome(
    *,
    session: str,
    peer: str,
    room: str,
    admission: Admission,
    head: int,
    root: str,
    heartbeat_ms: int,
    limits: dict[str, Any],
    presence: list[dict[str, Any]],
    node: str,
) -> dict[str, Any]:
    """The ``welcome`` envelope (SPEC §2 fixed fields, plus ``node`` and ``actor``)."""
    return m.Welcome(
        v=PROTOCOL_VERSION,
        session=session,
        peer=peer,
        room=room,
        caps=list(admission.caps),
        head=head,
        root=root,
        heartbeat_ms=heartbeat_ms,
        limits=limits,
        presence=presence,
        node=node,
        actor=admission.actor,
    ).to_wire()
