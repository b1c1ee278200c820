"""The state of one room and the one place changes are applied (SPEC §1, §2 ``pack``/``ack``).

:meth:`RoomState.apply` validates each change, merges it with the LWW rule, assigns the
room-wide gap-free ``seq`` to the winners, keeps the Merkle Search Tree in step, and says
what to acknowledge, persist and broadcast. It does no I/O.

Durability (the server's rule, SPEC §2 "an acked change is durable"): the server applies
with ``pending=True``, persists the ``accepted`` changes in one transaction, then calls
:meth:`RoomState.committed`. Until then those changes are *pending*: every read that
hands changes to a peer (:meth:`changes_since`, :meth:`get_paths`,
:meth:`changes_under`) sees the *durable view*, the entry each path had before its first
pending write, so no peer ever receives a change the store does not hold.
Invariant: ``durable_head <= head``, and ``durable_head == head`` when nothing is pending.

Ack semantics: an accepted change is acked with its new seq; a change that loses LWW to
a newer entry is acked with the seq of the entry that beat it, changes nothing, is not
broadcast and is listed in ``superseded`` (``{index, seq}``) so the writer knows plainly
that its write lost; a change that repeats a write already applied (the same
``(ts, counter, actor)``) is acked with that write's seq and is not listed; a refused
change is acked with ``null`` and listed in ``refused`` with its error code.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from .codec import unpack_data
from .codes import ErrorCode
from .entries import Change
from .errors import CodecError, Forbidden, TooLarge
from .merge import wins
from .mst import MerkleSearchTree
from .types import ACTOR_SUFFIX_SEP, actor_allowed, any_prefix_matches, path_error

MAX_ACTOR_BYTES = 256
#: New paths are inserted into the sorted index one by one up to this many per query;
#: more are sorted and merged in one pass (Timsort merges two sorted runs in O(n)).
_INSORT_MAX = 64


@dataclass(frozen=True, slots=True)
class ApplyLimits:
    """The policy values :meth:`RoomState.apply` enforces."""

    max_value_bytes: int = 262_144
    max_clock_skew_ms: int = 60_000


@dataclass(slots=True)
class ApplyResult:
    seqs: list[int | None] = field(default_factory=list)
    refused: list[dict[str, object]] = field(default_factory=list)
    accepted: list[Change] = field(default_factory=list)
    #: ``{index, seq}`` of every change that lost LWW to a newer entry (``seq`` is the
    #: winner's).
    superseded: list[dict[str, int]] = field(default_factory=list)


def refusal(change: Change, *, now_ms: int, limits: ApplyLimits) -> tuple[ErrorCode, str] | None:
    """Why the server must refuse ``change`` (code, message), or None when it is acceptable."""
    why = path_error(change.path)
    if why is not None:
        return ErrorCode.INVALID_PATH, f"invalid path {change.path[:80]!r}: {why}"
    if change.value is not None and len(change.value) > limits.max_value_bytes:
        return ErrorCode.TOO_LARGE, (
            f"value of {change.path[:80]!r} is {len(change.value)} bytes, "
            f"limit {limits.max_value_bytes}"
        )
    if not change.actor or len(change.actor.encode("utf-8")) > MAX_ACTOR_BYTES:
        return ErrorCode.MALFORMED_PACK, f"actor must be 1..{MAX_ACTOR_BYTES} bytes"
    if change.ts > now_ms + limits.max_clock_skew_ms:
        return ErrorCode.CLOCK_SKEW, (
            f"ts {change.ts} is {change.ts - now_ms} ms in the future "
            f"(max skew {limits.max_clock_skew_ms} ms)"
        )
    return None


def client_changes(
    data: object,
    *,
    max_pack_bytes: int,
    max_changes: int,
    bound_actor: str | None,
) -> list[Change]:
    """Decode a client ``pack``'s ``data`` and check it as a whole (SPEC §2, §3).

    Raises :class:`TooLarge` (more than ``max_pack_bytes`` of postcard, or more than
    ``max_changes`` changes), :class:`CodecError` (bad base64 / postcard, or a change that
    carries a seq: clients send ``seq: None``) or :class:`Forbidden` (a change whose actor
    the session's token does not allow, see :func:`~.types.actor_allowed`). A pack that
    passes goes to :meth:`RoomState.apply`, which judges each change on its own.
    """
    if isinstance(data, bytes):  # a binary frame: the postcard itself
        if len(data) > max_pack_bytes:
            raise TooLarge(
                f"pack of {len(data)} bytes exceeds max_pack_bytes {max_pack_bytes}: split it"
            )
    elif isinstance(data, str) and len(data) > max_pack_bytes * 4 // 3 + 4:
        raise TooLarge(
            f"pack of {len(data) * 3 // 4} bytes exceeds max_pack_bytes {max_pack_bytes}: split it"
        )
    changes = unpack_data(data)
    if len(changes) > max_changes:
        raise TooLarge(
            f"pack of {len(changes)} changes exceeds max_changes_per_pack {max_changes}: split it"
        )
    for change in changes:
        if change.seq is not None:
            raise CodecError("bad postcard: clients must send seq: None")
        if bound_actor is not None and not actor_allowed(bound_actor, change.actor):
            raise Forbidden(
                f"change actor {change.actor[:64]!r} is not this session's: with a token "
                f"for {bound_actor!r}, write as {bound_actor!r} or "
                f"{bound_actor + ACTOR_SUFFIX_SEP}<suffix>",
                close=None,
            )
    return changes


class PathIndex:
    """The room's paths in sorted order, for prefix queries by bisection.

    Adding a path is an append; the list is brought back to order when a query needs it
    (a few :func:`bisect.insort` calls, or one merge of two sorted runs), so writes pay
    nothing and a query pays ``O(log n)`` plus its answer.
    """

    __slots__ = ("_new", "_sorted")

    def __init__(self, paths: Iterable[str] = ()) -> None:
        self._sorted = sorted(paths)
        self._new: list[str] = []

    def __len__(self) -> int:
        return len(self._sorted) + len(self._new)

    def add(self, path: str) -> None:
        """Record a path that is new to the room (never one already indexed)."""
        self._new.append(path)

    def rebuild(self, paths: Iterable[str]) -> None:
        self._sorted = sorted(paths)
        self._new = []

    def _settle(self) -> list[str]:
        new = self._new
        if new:
            s = self._sorted
            if len(new) <= _INSORT_MAX:
                for path in new:
                    bisect.insort(s, path)
            else:
                new.sort()
                s += new
                s.sort()
            self._new = []
        return self._sorted

    def under(self, prefix: str) -> Iterator[str]:
        """Every indexed path that ``prefix`` matches (itself and everything below it)."""
        s = self._settle()
        if prefix == "/":
            yield from s
            return
        i = bisect.bisect_left(s, prefix)
        if i < len(s) and s[i] == prefix:
            yield prefix
        # Below ``prefix`` means starting with ``prefix + "/"``; "0" is the code point
        # right after "/", so the subtree is exactly the range [prefix/, prefix0).
        lo = bisect.bisect_left(s, prefix + "/", i)
        hi = bisect.bisect_left(s, prefix + "0", lo)
        yield from s[lo:hi]

    def under_after(self, prefix: str, after: str | None) -> Iterator[str]:
        """The paths ``prefix`` matches that sort strictly after ``after`` (all of them
        when None), in path order and lazily: the first costs ``O(log n)``, each next
        one ``O(1)`` (a page of a listing). Do not add paths while iterating."""
        s = self._settle()
        if prefix == "/":
            lo, hi = 0, len(s)
        else:
            i = bisect.bisect_left(s, prefix)
            # ``prefix`` itself sorts before its subtree, so it comes first.
            if i < len(s) and s[i] == prefix and (after is None or prefix > after):
                yield prefix
            lo = bisect.bisect_left(s, prefix + "/", i)
            hi = bisect.bisect_left(s, prefix + "0", lo)
        if after is not None:
            lo = max(lo, bisect.bisect_right(s, after, lo))
        for k in range(lo, hi):
            yield s[k]


def _seq_of(change: Change) -> int:
    return change.seq or 0


class RoomState:
    """The in-memory replica the server holds for a loaded room.

    Invariant: ``entries`` is the LWW state (tombstones included, each entry carrying the
    seq that last changed it) **in ascending seq order** (a write moves its path to the
    end), so a catch-up from a cursor reads only the entries after it, newest first;
    ``tree`` is the MST of its live entries, ``index`` holds every path of ``entries``,
    and ``_pending`` maps each path with a pending write to (its durable entry or None,
    the seq of its last pending write).
    """

    __slots__ = (
        "_pending",
        "compacted_through",
        "durable_head",
        "entries",
        "head",
        "index",
        "room",
        "tree",
    )

    def __init__(
        self,
        room: str,
        entries: Iterable[Change] = (),
        *,
        head: int = 0,
        compacted_through: int = 0,
    ) -> None:
        self.room = room
        self.entries: dict[str, Change] = {c.path: c for c in sorted(entries, key=_seq_of)}
        self.tree = MerkleSearchTree(c for c in self.entries.values() if c.value is not None)
        self.index = PathIndex(self.entries)
        self.head = max([head, *(c.seq or 0 for c in self.entries.values())])
        self.durable_head = self.head
        self.compacted_through = compacted_through
        self._pending: dict[str, tuple[Change | None, int]] = {}

    @property
    def root(self) -> str:
        return self.tree.root_hex

    @property
    def pending(self) -> bool:
        """True while some applied change is not yet durable."""
        return self.durable_head != self.head

    def apply(
        self,
        changes: list[Change],
        *,
        now_ms: int,
        limits: ApplyLimits,
        pending: bool = False,
        refuse: Mapping[int, tuple[str, str]] | None = None,
    ) -> ApplyResult:
        """Merge ``changes``; with ``pending`` the winners stay out of the durable view
        until :meth:`committed` is called with their seqs. ``refuse`` maps indices of
        ``changes`` to the (code, message) an app's ``validate`` hook refused them with;
        the server's own checks come first."""
        result = ApplyResult()
        entries = self.entries
        pending_map = self._pending
        for index, change in enumerate(changes):
            problem: tuple[str, str] | None = refusal(change, now_ms=now_ms, limits=limits)
            if problem is None and refuse:
                problem = refuse.get(index)
            if problem is not None:
                code, message = problem
                result.seqs.append(None)
                result.refused.append({"index": index, "code": str(code), "message": message})
                continue
            current = entries.get(change.path)
            if not wins(change, current):
                assert current is not None
                seq = current.seq or 0
                result.seqs.append(current.seq)
                if (change.ts, change.counter, change.actor) != (
                    current.ts,
                    current.counter,
                    current.actor,
                ):
                    result.superseded.append({"index": index, "seq": seq})
                continue
            self.head += 1
            stored = Change(
                change.path, change.ts, change.counter, change.actor, change.value, self.head
            )
            if current is None:
                self.index.add(change.path)
            else:
                del entries[change.path]  # to the end: entries stay in seq order
            if pending:
                before = pending_map.get(change.path)
                pending_map[change.path] = (current if before is None else before[0], self.head)
            entries[change.path] = stored
            self.tree.put(stored)
            result.seqs.append(self.head)
            result.accepted.append(stored)
        if not pending and not pending_map:
            self.durable_head = self.head
        return result

    def committed(self, through_seq: int) -> None:
        """Every change with a seq up to ``through_seq`` is durable now."""
        self.durable_head = max(self.durable_head, min(through_seq, self.head))
        if self._pending:
            done = [p for p, (_, seq) in self._pending.items() if seq <= through_seq]
            for path in done:
                del self._pending[path]

    def rollback(self) -> None:
        """Undo every pending change: the state is the durable one again (``head`` back
        to ``durable_head``). The server calls it when its pending changes cannot be
        committed as they are (another node committed first: their seqs are taken), and
        applies the writes again on top of what that node committed."""
        pending = self._pending
        if not pending:
            self.head = self.durable_head
            return
        entries = self.entries
        new_paths = False
        for path, (before, _) in pending.items():
            del entries[path]
            if before is None:
                self.tree.remove(path)
                new_paths = True
            else:
                entries[path] = before
                self.tree.put(before)
        pending.clear()
        # The restored entries went to the end: back to seq order (nearly sorted: cheap).
        self.entries = dict(sorted(entries.items(), key=lambda kv: kv[1].seq or 0))
        if new_paths:
            self.index.rebuild(self.entries)
        self.head = self.durable_head

    def absorb(self, changes: Iterable[Change]) -> None:
        """Take durable changes another writer committed, in seq order, each the next
        seq after the durable head (:class:`ValueError` otherwise, nothing of the rest
        taken). They won LWW against this very state when they were committed (the
        store fences a commit on the head it was merged at), so they are kept as they
        are. Only while nothing is pending (:meth:`rollback` first)."""
        if self._pending:
            raise ValueError("absorb with pending changes: roll them back first")
        entries = self.entries
        for change in changes:
            seq = change.seq or 0
            if seq != self.durable_head + 1:
                raise ValueError(f"absorb: seq {seq} does not follow head {self.durable_head}")
            current = entries.pop(change.path, None)
            if current is None:
                self.index.add(change.path)
            entries[change.path] = change
            self.tree.put(change)
            self.head = self.durable_head = seq

    def durable(self, path: str) -> Change | None:
        """The durable entry of ``path`` (tombstones included), or None."""
        entry = self.entries.get(path)
        if entry is not None and self._pending:
            held = self._pending.get(path)
            if held is not None:
                return held[0]
        return entry

    def changes_since(self, since: int, prefixes: tuple[str, ...] = ("/",)) -> list[Change]:
        """The latest durable change of every path changed after ``since``, in seq order.

        That is enough to bring a replica at ``since`` to the durable state: intermediate
        overwritten values do not matter under LWW. The caller checks retention first.
        """
        everything = prefixes == ("/",)
        out: list[Change] = []
        pending = self._pending
        # Newest first; stop at the first durable entry at or before ``since`` (a cursor
        # is never past the durable head). Pending entries are the newest (the server
        # applies every write as pending, so their seqs pass the durable head), each
        # standing for its durable entry, whose seq may be anything: sorted in below.
        for c in reversed(self.entries.values()):
            if pending and (held := pending.get(c.path)) is not None:
                d = held[0]
                if d is not None and (d.seq or 0) > since:
                    if everything or any_prefix_matches(prefixes, d.path):
                        out.append(d)
                continue
            if (c.seq or 0) <= since:
                break
            if everything or any_prefix_matches(prefixes, c.path):
                out.append(c)
        out.reverse()
        if pending:
            out.sort(key=_seq_of)
        return out

    def changes_under(
        self, prefixes: Iterable[str], *, excluding: tuple[str, ...] = ()
    ) -> list[Change]:
        """The durable entries below any of ``prefixes`` and below none of ``excluding``,
        in seq order. Costs ``O(len(prefixes) * log n)`` plus the answer (the index)."""
        seen: set[str] = set()
        out: list[Change] = []
        for prefix in dict.fromkeys(prefixes):
            if excluding and any_prefix_matches(excluding, prefix):
                continue  # everything below it was already in scope
            for path in self.index.under(prefix):
                if path in seen or (excluding and any_prefix_matches(excluding, path)):
                    continue
                seen.add(path)
                entry = self.durable(path)
                if entry is not None:
                    out.append(entry)
        out.sort(key=lambda c: c.seq or 0)
        return out

    def get_paths(self, paths: Iterable[str]) -> list[Change]:
        """Durable entries (tombstones included) of ``paths``; unknown paths are skipped."""
        out = []
        for p in dict.fromkeys(paths):
            entry = self.durable(p)
            if entry is not None:
                out.append(entry)
        return out

    def live_count(self) -> int:
        return self.tree.count

    def forget_tombstones(self, through_seq: int) -> int:
        """Drop tombstones with seq <= ``through_seq`` (after the store compacted them)."""
        dead = [
            p
            for p, c in self.entries.items()
            if c.value is None and (c.seq or 0) <= through_seq and p not in self._pending
        ]
        for path in dead:
            del self.entries[path]
        if dead:
            self.index.rebuild(self.entries)
        self.compacted_through = max(self.compacted_through, through_seq)
        return len(dead)
