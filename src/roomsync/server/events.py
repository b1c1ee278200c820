"""The node's recent events (SPEC §7 evidence, issue 12), for ``topology events``.

A node keeps two bounded rings, ``server.events_ring`` entries each (0: none):

- the **log ring**: the structured records of the ``roomsync.*`` loggers (what
  :func:`~.logs.event` writes: ``session.close``, ``control.request``, ``store.*``,
  ``blob.*``, ...), at ``info`` and above. :class:`EventHandler`, a
  :class:`logging.Handler`, feeds it; :meth:`NodeEvents.attach` adds it to the
  ``roomsync`` logger when the server starts and :meth:`NodeEvents.detach` removes it
  at stop. Every record goes through :mod:`roomsync.redaction` *before* it is kept, as
  the JSON formatter does before it writes: values under sensitive keys become ``***``
  and anything shaped like a JWT or a URL signature is masked, so tokens and keys never
  enter the ring. The SDK's own loggers (``roomsync.client``) and the CLI's are left
  out: they are not this node's events.
- the **session ring**: one entry per connection that ended (:meth:`NodeEvents.ended`,
  called by :meth:`~.node.Node.connection_closed` for every connection, so drops
  without a CLOSE frame (1006) and handshakes refused before any ``welcome`` are there
  too): when, room, peer, session, the actor of a welcomed session, the close code.

:meth:`NodeEvents.query` answers from both: the log window (filtered by time, event
kind and room, newest last, paged backwards with a cursor), close counts by code,
reconnects by actor (a *reconnect* is one more session of the same actor in the same
room within the window: the ended ones plus those still open) and the failing control
requests with the capabilities they carried (from ``control.request`` records).

The log level decides what reaches the ring: a ``roomsync`` logger nobody configured
(no ``roomsync serve``, e.g. a server embedded in tests) would drop ``info`` records
before any handler sees them, so :meth:`attach` then sets it to ``log.level`` (and
:meth:`detach` puts it back once no node needs it). A level an operator chose is left
alone. Several nodes in one process (tests) share the loggers: each ring then holds
every node's records.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..redaction import redact, redact_text

__all__ = ["EventHandler", "LogEvent", "NodeEvents", "SessionEnd"]

#: The logger every server module logs under (``roomsync.server``, ``roomsync.node``, ...).
ROOT_LOGGER = "roomsync"
#: Loggers under :data:`ROOT_LOGGER` that are not the node's: the SDK and the CLI.
FOREIGN_LOGGERS = ("roomsync.client", "roomsync.cli")
#: A traceback kept with a record is cut to this many characters.
MAX_EXC_CHARS = 2000
#: A reconnect entry lists at most this many peer ids.
MAX_PEERS_LISTED = 20


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One structured log record, redacted. ``id`` increases by one per record kept."""

    id: int
    at: int
    level: str
    logger: str
    event: str
    fields: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "at": self.at,
            "level": self.level,
            "logger": self.logger,
            "event": self.event,
        }
        for key in ("room", "peer", "session"):
            value = self.fields.get(key)
            if isinstance(value, str):
                out[key] = value
        code = self.fields.get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            out["code"] = code
        out["fields"] = self.fields
        return out


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """A connection that ended: ``actor`` is None when it was never welcomed (refused at
    the handshake, or gone before its hello)."""

    at: int
    room: str
    peer: str
    session: str
    actor: str | None
    code: int | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "at": self.at,
            "room": self.room,
            "peer": self.peer,
            "session": self.session,
            "welcomed": self.actor is not None,
        }
        if self.actor is not None:
            out["actor"] = self.actor
        if self.code is not None:
            out["code"] = self.code
        return out


class EventHandler(logging.Handler):
    """The ``logging`` side of :class:`NodeEvents`: every record it is handed is kept."""

    def __init__(self, events: NodeEvents) -> None:
        super().__init__(logging.INFO)
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.events.keep(record)
        except Exception:  # a log handler must never break the code that logs
            self.handleError(record)


class _LevelClaims:
    """The ``roomsync`` logger's level while nodes need it and nobody chose one: set by
    the first node that attaches to an unconfigured logger, put back to NOTSET when the
    last of the nodes relying on it detaches (unless someone changed it meanwhile)."""

    def __init__(self) -> None:
        self.level: int | None = None  # the level set here, None when none is
        self.holders: set[int] = set()

    def claim(self, holder: object, logger: logging.Logger, level: int) -> None:
        if logger.level == logging.NOTSET:
            logger.setLevel(level)
            self.level = level
        if self.level is not None and logger.level == self.level:
            self.holders.add(id(holder))

    def release(self, holder: object, logger: logging.Logger) -> None:
        self.holders.discard(id(holder))
        if not self.holders and self.level is not None:
            if logger.level == self.level:
                logger.setLevel(logging.NOTSET)
            self.level = None


_LEVEL = _LevelClaims()


class NodeEvents:
    """The log ring and the session ring of one node, ``size`` entries each.

    Safe to feed from any thread (a lock guards the rings); queried on the event loop.
    """

    def __init__(self, size: int, now_ms: Callable[[], int], *, level: str = "info") -> None:
        self.size = size
        self.now_ms = now_ms
        self.level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        self._log: deque[LogEvent] = deque(maxlen=size or 1)
        self._sessions: deque[SessionEnd] = deque(maxlen=size or 1)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.kept = 0  # log records kept since start (the ring holds the newest ``size``)
        self.ended_total = 0
        self.handler = EventHandler(self)

    # -- feeding ---------------------------------------------------------------------------

    def attach(self) -> None:
        """Start keeping the ``roomsync`` loggers' records (at server start)."""
        if not self.size:
            return
        root = logging.getLogger(ROOT_LOGGER)
        if self.handler not in root.handlers:
            root.addHandler(self.handler)
        _LEVEL.claim(self, root, self.level)

    def detach(self) -> None:
        """Stop keeping records (at server stop); the rings stay readable."""
        root = logging.getLogger(ROOT_LOGGER)
        root.removeHandler(self.handler)
        _LEVEL.release(self, root)

    def keep(self, record: logging.LogRecord) -> None:
        """Keep one log record, redacted (the handler calls it)."""
        name = record.name
        if name.startswith(FOREIGN_LOGGERS) or not self.size:
            return
        raw = getattr(record, "fields", None)
        fields: dict[str, Any] = redact(jsonable(raw)) if isinstance(raw, dict) else {}
        if record.exc_info and record.exc_info[0] is not None:
            exc = logging.Formatter().formatException(record.exc_info)
            fields["exc"] = redact_text(exc[-MAX_EXC_CHARS:])
        at = self.now_ms()
        with self._lock:
            self._log.append(
                LogEvent(
                    id=next(self._ids),
                    at=at,
                    level=record.levelname.lower(),
                    logger=name,
                    event=redact_text(record.getMessage()),
                    fields=fields,
                )
            )
            self.kept += 1

    def ended(
        self, *, room: str, peer: str, session: str, actor: str | None, code: int | None
    ) -> None:
        """A connection ended with ``code`` (1006: it dropped without a CLOSE frame)."""
        if not self.size:
            return
        entry = SessionEnd(self.now_ms(), room, peer, session, actor, code)
        with self._lock:
            self._sessions.append(entry)
            self.ended_total += 1

    # -- reading ---------------------------------------------------------------------------

    def log_events(self) -> list[LogEvent]:
        """Every record the ring holds, oldest first."""
        if not self.size:
            return []
        with self._lock:
            return list(self._log)

    def session_ends(self) -> list[SessionEnd]:
        if not self.size:
            return []
        with self._lock:
            return list(self._sessions)

    def query(
        self,
        *,
        since_ms: int | None = None,
        limit: int = 200,
        before: int | None = None,
        kind: str | None = None,
        room: str | None = None,
        live: Iterable[tuple[str, str, str]] = (),
    ) -> dict[str, Any]:
        """What ``topology events`` answers (see the module docstring).

        ``before``: only records with an id below it (the previous page's ``cursor``);
        ``kind``: an event name (``control.request``) or a prefix of one (``session``);
        ``room``: only records, closes and reconnects of that room; ``live``: the open
        welcomed sessions as ``(room, actor, peer)``, counted in the reconnects.
        """
        since = since_ms if since_ms is not None else 0
        held = self.log_events()
        window = [e for e in held if e.at >= since]
        matching = [
            e
            for e in window
            if (before is None or e.id < before)
            and (kind is None or e.event == kind or e.event.startswith(kind + "."))
            and (room is None or e.fields.get("room") == room)
        ]
        page = matching[-limit:] if limit > 0 else []
        more = len(matching) > len(page)
        ends = [
            s for s in self.session_ends() if s.at >= since and (room is None or s.room == room)
        ]
        return {
            "since_ms": since,
            "now_ms": self.now_ms(),
            "events": [e.to_json() for e in page],
            "cursor": str(page[0].id) if more and page else None,
            "ring": {
                "size": self.size,
                "held": len(held),
                "kept": self.kept,
                "dropped": max(0, self.kept - len(held)),
                "oldest_at": held[0].at if held else None,
                # A window that starts before the oldest record held is incomplete.
                "complete": not held or self.kept == len(held) or held[0].at <= since,
            },
            "closes": close_counts(ends),
            "closed": [s.to_json() for s in ends[-limit:]],
            "reconnects": reconnects(ends, [x for x in live if room is None or x[0] == room]),
            "control_failures": control_failures(window),
        }


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON can hold it: mappings with string keys, lists, scalars; bytes
    become their length (never their content), anything else its ``str``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if depth > 8:
        return "..."
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    return str(value)


def close_counts(ends: Iterable[SessionEnd]) -> dict[str, int]:
    """Sessions ended, by close code (``"none"`` for one closed before any code)."""
    counts = Counter("none" if s.code is None else str(s.code) for s in ends)
    return dict(sorted(counts.items()))


def reconnects(
    ends: Iterable[SessionEnd], live: Iterable[tuple[str, str, str]]
) -> list[dict[str, Any]]:
    """Per ``(room, actor)`` with more than one welcomed session in the window: how many
    sessions (ended + open), the reconnects (sessions - 1), the close codes of the ended
    ones and their peer ids; most reconnects first."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}

    def group(room: str, actor: str) -> dict[str, Any]:
        g = groups.get((room, actor))
        if g is None:
            g = groups[(room, actor)] = {
                "room": room,
                "actor": actor,
                "sessions": 0,
                "open": 0,
                "codes": Counter(),
                "peers": [],
                "first_at": None,
                "last_at": None,
            }
        return g

    for s in ends:
        if s.actor is None:
            continue
        g = group(s.room, s.actor)
        g["sessions"] += 1
        g["codes"]["none" if s.code is None else str(s.code)] += 1
        if len(g["peers"]) < MAX_PEERS_LISTED:
            g["peers"].append(s.peer)
        g["first_at"] = s.at if g["first_at"] is None else min(g["first_at"], s.at)
        g["last_at"] = s.at if g["last_at"] is None else max(g["last_at"], s.at)
    for room, actor, peer in live:
        if (room, actor) not in groups:
            continue  # one open session and nothing ended: no reconnect
        g = groups[(room, actor)]
        g["sessions"] += 1
        g["open"] += 1
        if len(g["peers"]) < MAX_PEERS_LISTED:
            g["peers"].append(peer)
    out = []
    for g in groups.values():
        if g["sessions"] < 2:
            continue
        g["reconnects"] = g["sessions"] - 1
        g["codes"] = dict(sorted(g["codes"].items()))
        out.append(g)
    out.sort(key=lambda g: (-g["reconnects"], g["room"], g["actor"]))
    return out


def control_failures(events: Iterable[LogEvent]) -> list[dict[str, Any]]:
    """The refused control requests among ``events`` (``control.request`` records whose
    outcome is not ``ok``), grouped by command, outcome, operator and the caps the token
    carried; ``required`` is the capability the command needs. Most frequent first."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for e in events:
        f = e.fields
        if e.event != "control.request" or f.get("outcome") in (None, "ok"):
            continue
        caps = f.get("caps")
        caps_list = [c for c in caps if isinstance(c, str)] if isinstance(caps, list) else []
        family, command = str(f.get("family")), str(f.get("command"))
        operator = f.get("operator") if isinstance(f.get("operator"), str) else None
        code = f.get("code") if isinstance(f.get("code"), str) else None
        key = (family, command, str(f["outcome"]), code, operator, tuple(caps_list))
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "family": family,
                "command": command,
                "outcome": str(f["outcome"]),
                "code": code,
                "required": f"{family}:{command}",
                "operator": operator,
                "caps": caps_list,
                "count": 0,
                "first_at": e.at,
                "last_at": e.at,
            }
        g["count"] += 1
        g["last_at"] = e.at
    return sorted(groups.values(), key=lambda g: (-g["count"], g["family"], g["command"]))
