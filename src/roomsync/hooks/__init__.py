"""App logic next to the sync server: the hooks an application object may implement.

An *app* is any object with some of these optional ``async`` methods; the server calls
each one it has at a fixed point, with a typed context, within a time budget
(``app.budget_ms`` for the two that decide, ``app.event_budget_ms`` for the others)::

    class TodoApp:
        async def authorize(self, hello: HelloContext) -> Allow | Refuse | None: ...
        async def validate(self, pack: ChangesContext) -> Iterable[Refusal] | None: ...
        async def on_commit(self, event: CommitEvent) -> None: ...
        async def on_join(self, event: PeerEvent) -> None: ...
        async def on_leave(self, event: PeerEvent) -> None: ...
        async def on_room_loaded(self, event: RoomInfo) -> None: ...
        async def on_room_unloaded(self, event: RoomInfo) -> None: ...

Load one with ``roomsync serve --app module:object`` (or ``[app] object`` in the config,
with ``[app.options]`` passed as keyword arguments when ``object`` names a class), or
pass it to :class:`roomsync.server.app.RoomsyncServer` as ``app=``.

Who decides what:

- ``authorize`` runs during the handshake after roomsync has checked the hello's token
  (``claims`` when it verified, ``token_error`` when it did not or when anonymous access
  would be refused). :class:`Allow` admits the peer with those caps, also when roomsync
  would not (an app's own sessions or tokens); :class:`Refuse` closes it with an
  ``auth:`` error and 4003, also when roomsync would admit; None keeps roomsync's
  decision. Room checks (closed, full, cursor) still apply after an :class:`Allow`.
- ``validate`` runs before the commit with every change of one client pack; each
  :class:`Refusal` refuses one change (by index) with its code in the pack's ack while
  the rest of the pack commits. Packs of one room are validated one at a time, in order,
  so acks keep their order.
- A decision hook that raises or passes its budget **fails closed**: the hello is
  refused, or every change of the pack is refused with ``internal``.
- The other hooks are for side effects. They run one at a time on a queue of their own,
  never on the delivery path: a slow or failing one delays only the hooks after it.
  Errors and timeouts are logged and counted (``roomsync_hook_calls_total``), and never
  drop a change. ``on_commit`` is called once per commit, in seq order per room, on the
  node that committed it.

Hooks must not block the event loop: do I/O with ``await``, CPU-heavy work in a thread
(``asyncio.to_thread``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..auth.tokens import Claims
from ..core.entries import Change

__all__ = [
    "DECISION_HOOKS",
    "EVENT_HOOKS",
    "HOOK_NAMES",
    "REFUSAL_CODES",
    "Allow",
    "ChangesContext",
    "Claims",
    "CommitEvent",
    "HelloContext",
    "JsonSchemaValidator",
    "PeerEvent",
    "Refusal",
    "Refuse",
    "RoomInfo",
]

#: The hooks whose answer decides (fail closed), and the side-effect ones.
DECISION_HOOKS = ("authorize", "validate")
EVENT_HOOKS = ("on_commit", "on_join", "on_leave", "on_room_loaded", "on_room_unloaded")
HOOK_NAMES = DECISION_HOOKS + EVENT_HOOKS

#: The codes a :class:`Refusal` may carry (what the client sees in ``ack.refused``).
REFUSAL_CODES = ("invalid-value", "forbidden")


@dataclass(frozen=True, slots=True)
class HelloContext:
    """What ``authorize`` sees of a ``hello``.

    ``fields`` is the hello as received (an app may read its own fields from it, e.g. a
    session id); ``headers`` the WebSocket upgrade request's headers (cookies included);
    ``token`` the hello's token as sent, whatever it is.
    """

    room: str
    peer: str
    actor: str | None
    caps: tuple[str, ...] | None
    token: str | None
    claims: Claims | None
    token_error: str | None
    fields: Mapping[str, Any]
    headers: Mapping[str, str]
    remote: str | None


@dataclass(frozen=True, slots=True)
class Allow:
    """Admit the peer with ``caps`` (data caps, negotiated with the hello's as a token's
    would be). ``actor``, when set, binds the session's changes to it as a token's
    ``sub`` does (``actor`` or ``actor#suffix``); None leaves them unbound."""

    caps: tuple[str, ...]
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse the hello: the peer gets ``error{code: auth, message: "auth: <reason>"}``
    and close 4003."""

    reason: str


@dataclass(frozen=True, slots=True)
class ChangesContext:
    """One client pack, for ``validate``: its changes as sent (``seq`` None)."""

    room: str
    peer: str
    actor: str
    claims: Claims | None
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Refuse change ``index`` of the pack with ``code`` (one of :data:`REFUSAL_CODES`)
    and ``message``; the client sees both in its ack."""

    index: int
    message: str
    code: str = "invalid-value"


@dataclass(frozen=True, slots=True)
class CommitEvent:
    """Changes made durable by one commit of a room, in seq order. ``authors[i]`` is the
    peer that wrote ``changes[i]`` (None: the server, e.g. a promotion)."""

    room: str
    first_seq: int
    last_seq: int
    changes: tuple[Change, ...]
    authors: tuple[str | None, ...]
    node: str

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.path for c in self.changes))


@dataclass(frozen=True, slots=True)
class PeerEvent:
    """A peer joined (after its welcome) or left a room."""

    room: str
    peer: str
    actor: str
    caps: tuple[str, ...]
    claims: Claims | None = None


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """A room was loaded into memory, or unloaded."""

    room: str
    head: int
    entries: int


from .schema import JsonSchemaValidator  # noqa: E402 - it uses the types above
