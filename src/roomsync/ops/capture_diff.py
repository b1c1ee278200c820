"""Align two peers' captured streams and say where they diverge (runbook workflow 2,
"compare one healthy vs failing peer command stream"; issue 12).

The input is what ``room capture`` answers (:mod:`roomsync.server.capture`): a room's
recent envelope records, oldest first, ``{at, dir, peer, type, bytes, ...}``. What can
be aligned from it:

- each peer's **own** records: what it sent (``in``: packs, requests, ``mst-*``,
  subscribes, blob messages) and what it was sent (``out``: acks, answers, errors), and
  its close;
- the room's **broadcasts**: one record per broadcast ``pack`` frame with its ``head``
  (the last seq of the batch), its change count and its receivers. In rooms of at most
  :data:`~roomsync.server.capture.MAX_RECEIVER_IDS` peers the record names them
  (``to``), so whether a given peer got a given broadcast is known; in larger rooms it
  is not, and the diff says so instead of guessing.

:func:`diff` finds, in time order:

``missed-broadcast``
    a broadcast one peer received and the other did not, while both were connected
    (the first one gives the other's *first missing seq*). The usual cause is a
    subscription that filters the changed paths (SPEC §2 ``subscribe``); a peer with a
    pack of its own in flight is more likely the author (authors do not get their own
    changes back unless ``policy.echo_to_sender``): that is a note, not a divergence.
``unanswered``
    a request without its answer: ``request``/``subscribe`` (and the hello's catch-up)
    without the streamed answer's ``done`` frame, ``pack`` without ``ack``, ``mst-get``
    without ``mst-nodes`` (``mst-probe`` without ``mst-sketch``), ``mst-root`` without
    one back, ``blob-request`` without ``blob``, ``blob-upload`` without
    ``blob-uploaded``/``upload-rejected``,
    ``request-upload`` without ``upload-url``/``upload-denied``, ``hello`` without
    ``welcome``. An ``error`` naming the request (``ref``) answers it.
``refused``
    an ``ack`` with refused changes;
``error`` / ``close``
    an ``error`` sent to one peer, or a close other than a normal one (1000, 1001).

Pure: no I/O, stdlib only; ``roomsync capture diff`` fetches the capture and prints
:func:`render` or :meth:`CaptureDiff.to_json`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CaptureDiff", "Divergence", "PeerStream", "diff", "render", "resolve_peer"]

#: Who answers what: a request type (``in``) -> the types (``out``) that answer it.
ANSWERS: dict[str, frozenset[str]] = {
    "hello": frozenset({"welcome"}),
    "pack": frozenset({"ack"}),
    "mst-get": frozenset({"mst-nodes"}),
    "mst-probe": frozenset({"mst-sketch"}),
    "mst-root": frozenset({"mst-root"}),
    "blob-request": frozenset({"blob"}),
    "blob-upload": frozenset({"blob-uploaded", "upload-rejected"}),
    "request-upload": frozenset({"upload-url", "upload-denied"}),
}
#: Requests answered by a streamed ``pack`` answer (its last frame has ``done``).
STREAMED = frozenset({"request", "subscribe"})
#: What the handshake asks (not counted as requests; still reported when unanswered).
_HANDSHAKE = frozenset({"hello", "catch-up"})
#: Closes that are not trouble.
NORMAL_CLOSES = frozenset({1000, 1001})


@dataclass(frozen=True, slots=True)
class Divergence:
    """One place where the two streams differ. ``peer`` is the side it happened on (the
    one that missed, was refused, got the error); ``other`` the peer compared with."""

    at: int
    kind: str
    peer: str
    other: str
    detail: str
    head: int | None = None
    first_seq: int | None = None
    changes: int | None = None
    type: str | None = None
    code: int | str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "at": self.at,
            "kind": self.kind,
            "peer": self.peer,
            "other": self.other,
            "detail": self.detail,
        }
        for key in ("head", "first_seq", "changes", "type", "code"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(slots=True)
class PeerStream:
    """One peer's side of the capture, summed up."""

    peer: str
    selector: str
    actor: str | None = None
    first_at: int | None = None
    joined_at: int | None = None  # its hello, when the capture still holds it
    closed_at: int | None = None
    close: dict[str, Any] | None = None
    welcome_head: int | None = None
    last_head: int | None = None
    packs_sent: int = 0
    changes_sent: int = 0
    acks: int = 0
    refused: int = 0
    requests: int = 0
    answered: int = 0
    unanswered: int = 0
    broadcasts_received: int = 0
    broadcasts_missed: int = 0
    first_missing_seq: int | None = None
    subscribe_paths: int | None = None
    errors: list[str] = field(default_factory=list)
    records: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "selector": self.selector,
            "actor": self.actor,
            "records": self.records,
            "joined_at": self.joined_at,
            "closed_at": self.closed_at,
            "close": self.close,
            "welcome_head": self.welcome_head,
            "last_head": self.last_head,
            "packs_sent": self.packs_sent,
            "changes_sent": self.changes_sent,
            "acks": self.acks,
            "refused": self.refused,
            "requests": self.requests,
            "answered": self.answered,
            "unanswered": self.unanswered,
            "broadcasts_received": self.broadcasts_received,
            "broadcasts_missed": self.broadcasts_missed,
            "first_missing_seq": self.first_missing_seq,
            "subscribe_paths": self.subscribe_paths,
            "errors": self.errors,
        }


@dataclass(frozen=True, slots=True)
class CaptureDiff:
    """What :func:`diff` found: both peers' summaries, the divergences in time order
    (``first`` is where the streams part), and notes on what could not be told."""

    room: str | None
    a: PeerStream
    b: PeerStream
    records: int
    broadcasts: int
    receivers_named: bool
    divergences: tuple[Divergence, ...]
    notes: tuple[str, ...]

    @property
    def first(self) -> Divergence | None:
        return self.divergences[0] if self.divergences else None

    @property
    def diverged(self) -> bool:
        return bool(self.divergences)

    def to_json(self) -> dict[str, Any]:
        first = self.first
        return {
            "room": self.room,
            "records": self.records,
            "broadcasts": self.broadcasts,
            "receivers_named": self.receivers_named,
            "peers": [self.a.to_json(), self.b.to_json()],
            "diverged": self.diverged,
            "first": first.to_json() if first is not None else None,
            "divergences": [d.to_json() for d in self.divergences],
            "notes": list(self.notes),
        }


def resolve_peer(records: Sequence[Mapping[str, Any]], selector: str) -> tuple[str, list[str]]:
    """The peer id ``selector`` names: a peer id seen in the capture, or an actor (the
    ``actor`` of a ``hello``), then its newest session's peer. Returns (peer id, notes);
    a selector that matches nothing is returned as is (its stream is then empty)."""
    if any(r.get("peer") == selector for r in records):
        return selector, []
    peers = [
        str(r["peer"])
        for r in records
        if r.get("type") == "hello" and r.get("dir") == "in" and r.get("actor") == selector
    ]
    if not peers:
        return selector, [f"{selector!r}: no peer id or hello actor in the capture"]
    notes = []
    if len(set(peers)) > 1:
        notes.append(
            f"actor {selector!r} had {len(set(peers))} sessions in the capture; "
            f"compared: the newest, {peers[-1]}"
        )
    return peers[-1], notes


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(slots=True)
class _Broadcast:
    at: int
    head: int
    changes: int  # of the fullest frame of the batch
    receivers: int
    to: set[str] | None  # None when some frame of the batch does not name its receivers
    authors: set[str]  # record peers other than "*": an author's own frame


def _broadcasts(records: Iterable[Mapping[str, Any]]) -> list[_Broadcast]:
    """The room's broadcast batches, one per ``head``, in time order."""
    by_head: dict[int, _Broadcast] = {}
    for r in records:
        if r.get("type") != "pack" or r.get("dir") != "out" or r.get("answer"):
            continue
        head = r.get("head")
        if not isinstance(head, int):
            continue
        to = r.get("to")
        names = {str(p) for p in to} if isinstance(to, list) else None
        changes = _int(r.get("changes"))
        b = by_head.get(head)
        if b is None:
            b = by_head[head] = _Broadcast(int(r.get("at", 0)), head, 0, 0, set(), set())
        b.changes = max(b.changes, changes)
        b.receivers += _int(r.get("receivers"))
        if b.to is not None:
            b.to = None if names is None else b.to | names
        peer = r.get("peer")
        if peer != "*" and isinstance(peer, str):
            b.authors.add(peer)
    return sorted(by_head.values(), key=lambda b: (b.at, b.head))


class _Pending:
    """A peer's requests waiting for their answers, by what answers them."""

    def __init__(self) -> None:
        self.streamed: deque[dict[str, Any]] = deque()
        self.by_answer: dict[str, deque[dict[str, Any]]] = {}

    def ask(self, r: Mapping[str, Any]) -> None:
        type_ = str(r.get("type"))
        item = dict(r)
        if type_ in STREAMED or type_ == "catch-up":
            self.streamed.append(item)
        elif type_ in ANSWERS:
            self.by_answer.setdefault(type_, deque()).append(item)

    def answer(self, r: Mapping[str, Any]) -> dict[str, Any] | None:
        """The oldest request ``r`` (an ``out`` record to the peer) answers, if any."""
        type_ = r.get("type")
        if type_ == "pack" and r.get("answer"):
            return self.streamed.popleft() if r.get("done") and self.streamed else None
        if type_ == "error":
            ref = r.get("ref")
            if ref in STREAMED and self.streamed:
                return self.streamed.popleft()
            # Every pack gets its ack, refused ones too: an error about a pack answers nothing.
            if isinstance(ref, str) and ref != "pack" and self.by_answer.get(ref):
                return self.by_answer[ref].popleft()
            return None
        for request, answers in ANSWERS.items():
            if type_ in answers and self.by_answer.get(request):
                return self.by_answer[request].popleft()
        return None

    def left(self) -> list[dict[str, Any]]:
        out = list(self.streamed)
        for items in self.by_answer.values():
            out += items
        return sorted(out, key=lambda r: int(r.get("at", 0)))


def _walk(
    records: Sequence[Mapping[str, Any]], peer: str, other: str, stream: PeerStream
) -> tuple[list[Divergence], list[tuple[int, int]]]:
    """Fill ``stream`` from ``peer``'s own records; its divergences, and the spans
    (from the pack to its ack) during which it had a pack of its own in flight."""
    found: list[Divergence] = []
    pending = _Pending()
    in_flight: list[int] = []  # the ``at`` of its packs not yet acked
    writing: list[tuple[int, int]] = []
    for r in records:
        if r.get("peer") != peer:
            continue
        at = int(r.get("at", 0))
        type_ = r.get("type")
        dir_ = r.get("dir")
        stream.records += 1
        if stream.first_at is None:
            stream.first_at = at
        if dir_ == "in":
            if type_ == "hello":
                stream.joined_at = at
                if isinstance(r.get("actor"), str):
                    stream.actor = r["actor"]
                if isinstance(r.get("paths"), int):
                    stream.subscribe_paths = r["paths"]
            elif type_ == "subscribe" and isinstance(r.get("paths"), int):
                stream.subscribe_paths = r["paths"]
            if type_ == "pack":
                stream.packs_sent += 1
                stream.changes_sent += int(r.get("changes") or 0)
                in_flight.append(at)
            if type_ in STREAMED or type_ in ANSWERS:
                if type_ != "hello":  # the handshake is not counted as a request
                    stream.requests += 1
                pending.ask(r)
            elif type_ == "close":
                stream.closed_at = at
                stream.close = {"code": r.get("code"), "by": "peer"}
        else:
            if type_ == "welcome":
                if isinstance(r.get("head"), int):
                    stream.welcome_head = r["head"]
                    stream.last_head = max(stream.last_head or 0, r["head"])
                caps = r.get("caps")
                if isinstance(caps, list) and "read" in caps:
                    # A reading peer's catch-up comes first, as a streamed answer.
                    pending.ask({"at": at, "type": "catch-up"})
            if type_ == "ack":
                stream.acks += 1
                if in_flight:
                    writing.append((in_flight.pop(0), at))
                if r.get("refused"):
                    stream.refused += int(r["refused"])
                    found.append(
                        Divergence(
                            at, "refused", peer, other,
                            f"{peer}'s pack had {r['refused']} change(s) refused (the ack's "
                            "refused codes say why: invalid-path, forbidden, too-large...)",
                            type="ack",
                        )
                    )  # fmt: skip
            answered = pending.answer(r)
            if answered is not None and answered.get("type") not in _HANDSHAKE:
                stream.answered += 1
            if type_ == "error":
                code = str(r.get("code"))
                stream.errors.append(code)
                ref = f" (about its {r['ref']})" if isinstance(r.get("ref"), str) else ""
                found.append(
                    Divergence(
                        at, "error", peer, other, f"{peer} was sent error {code}{ref}",
                        type=r.get("ref") if isinstance(r.get("ref"), str) else None,
                        code=code,
                    )
                )  # fmt: skip
            elif type_ == "close":
                stream.closed_at = at
                stream.close = {"code": r.get("code"), "by": "server", "error": r.get("error")}
        if type_ == "close":
            close_code = r.get("code")
            if close_code not in NORMAL_CLOSES:
                who = "the server closed it" if dir_ == "out" else "it closed (or dropped)"
                found.append(
                    Divergence(
                        at, "close", peer, other, f"{peer} ended with close {close_code}: {who}",
                        code=close_code if isinstance(close_code, int) else None,
                    )
                )  # fmt: skip
    for left in pending.left():
        type_ = str(left.get("type"))
        if type_ not in _HANDSHAKE:
            stream.unanswered += 1
        after = "before it closed" if stream.closed_at is not None else "(in flight, or lost)"
        found.append(
            Divergence(
                int(left.get("at", 0)), "unanswered", peer, other,
                f"{peer}'s {type_} got no answer {after}", type=type_,
            )
        )  # fmt: skip
    end = stream.closed_at if stream.closed_at is not None else None
    writing += [(start, end if end is not None else 2**62) for start in in_flight]
    return found, writing


def _present(stream: PeerStream, at: int) -> bool:
    """Whether the peer was connected at ``at``, as far as the capture tells."""
    start = stream.joined_at if stream.joined_at is not None else stream.first_at
    if start is None or at < start:
        return False
    return stream.closed_at is None or at < stream.closed_at


def diff(
    records: Sequence[Mapping[str, Any]], a: str, b: str, *, room: str | None = None
) -> CaptureDiff:
    """Compare peers ``a`` and ``b`` (peer ids or actors, :func:`resolve_peer`) in
    ``records`` (a ``room capture`` answer's ``envelopes``, oldest first)."""
    records = sorted(records, key=lambda r: int(r.get("at", 0)))  # stable: ties keep order
    notes: list[str] = []
    pa, more = resolve_peer(records, a)
    notes += more
    pb, more = resolve_peer(records, b)
    notes += more
    sa, sb = PeerStream(pa, a), PeerStream(pb, b)
    found_a, writing_a = _walk(records, pa, pb, sa)
    found_b, writing_b = _walk(records, pb, pa, sb)
    found = found_a + found_b
    batches = _broadcasts(records)
    named = all(x.to is not None for x in batches)
    if batches and not named:
        notes.append(
            "some broadcasts do not name their receivers (rooms of more than 16 peers "
            "only count them): who missed those cannot be told from the capture"
        )
    streams = {pa: (sa, writing_a), pb: (sb, writing_b)}
    for x in batches:
        if x.to is None:
            continue
        for me, you in ((pa, pb), (pb, pa)):
            mine, writing = streams[me]
            theirs, _ = streams[you]
            if me in x.to:
                mine.broadcasts_received += 1
                mine.last_head = max(mine.last_head or 0, x.head)
                continue
            if you not in x.to or not (_present(mine, x.at) and _present(theirs, x.at)):
                continue
            first_seq = x.head - max(x.changes, 1) + 1
            if me in x.authors or any(s <= x.at <= e for s, e in writing):
                notes.append(
                    f"{me} did not get the broadcast of head {x.head} while a pack of its "
                    "own was in flight: probably its own change (authors do not get their "
                    "changes back unless policy.echo_to_sender)"
                )
                continue
            mine.broadcasts_missed += 1
            if mine.first_missing_seq is None:
                mine.first_missing_seq = first_seq
            paths = (
                f" ({mine.subscribe_paths} prefix(es) vs {theirs.subscribe_paths})"
                if mine.subscribe_paths is not None and theirs.subscribe_paths is not None
                else ""
            )
            found.append(
                Divergence(
                    x.at, "missed-broadcast", me, you,
                    f"{me} did not receive the broadcast of seqs {first_seq}..{x.head} "
                    f"(head {x.head}) that {you} received: most likely its subscription"
                    f"{paths} filters those paths (re-run it with a minimal scope), or it "
                    "cannot read",
                    head=x.head, first_seq=first_seq, changes=x.changes, type="pack",
                )
            )  # fmt: skip
    found.sort(key=lambda d: d.at)
    return CaptureDiff(
        room=room,
        a=sa,
        b=sb,
        records=len(records),
        broadcasts=len(batches),
        receivers_named=named,
        divergences=tuple(found),
        notes=tuple(dict.fromkeys(notes)),
    )


def _clock(at: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at / 1000)) + f".{at % 1000:03d}Z"


def _summary(s: PeerStream) -> str:
    who = f"{s.peer} ({s.actor})" if s.actor and s.actor != s.peer else s.peer
    parts = [
        f"head {s.last_head if s.last_head is not None else '?'}",
        f"{s.packs_sent} pack(s) sent ({s.changes_sent} changes, {s.acks} acked"
        + (f", {s.refused} refused" if s.refused else "")
        + ")",
        f"{s.broadcasts_received} broadcast(s) received"
        + (f", {s.broadcasts_missed} missed" if s.broadcasts_missed else ""),
        f"{s.answered}/{s.requests} request(s) answered",
    ]
    if s.first_missing_seq is not None:
        parts.append(f"first missing seq {s.first_missing_seq}")
    if s.errors:
        parts.append("errors " + ", ".join(s.errors))
    if s.close is not None:
        parts.append(f"closed {s.close.get('code')} by {s.close.get('by')}")
    if not s.records:
        parts = ["no records in the capture"]
    return f"  {who}: " + "; ".join(parts)


def render(result: CaptureDiff) -> str:
    """The diff for a terminal: both summaries, where they part, the rest, the notes."""
    room = f" room {result.room}" if result.room else ""
    named = "receivers named" if result.receivers_named else "receivers not all named"
    lines = [
        f"capture diff{room}: {result.a.peer} vs {result.b.peer}, {result.records} records, "
        f"{result.broadcasts} broadcast(s) ({named})",
        _summary(result.a),
        _summary(result.b),
    ]
    first = result.first
    if first is None:
        lines.append("no divergence: the two streams agree as far as the capture shows")
    else:
        lines.append(f"diverge at {_clock(first.at)}: [{first.kind}] {first.detail}")
        rest = result.divergences[1:]
        if rest:
            lines.append(f"then ({len(rest)}):")
            lines += [f"  {_clock(d.at)} [{d.kind}] {d.detail}" for d in rest]
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)
