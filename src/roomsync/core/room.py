"""The state of one room and the one place changes are applied (SPEC §1, §2 ``pack``/``ack``).

:meth:`RoomState.apply` validates each change, merges it with the LWW rule, assigns the
room-wide gap-free ``seq`` to the winners, keeps the Merkle Search Tree in step, and says
what to acknowledge, persist and broadcast. It does no I/O: the server persists the
``accepted`` changes (in one transaction) before it sends the ack and the broadcast.

Ack semantics: an accepted change is acked with its new seq; a change that loses LWW (or
repeats a write already applied) is acked with the seq of the entry that supersedes it,
changes nothing and is not broadcast; a refused change is acked with ``null`` and listed
in ``refused`` with its error code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .codes import ErrorCode
from .entries import Change
from .merge import wins
from .mst import MerkleSearchTree
from .types import any_prefix_matches, path_error

MAX_ACTOR_BYTES = 256


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


class RoomState:
    """The in-memory replica the server holds for a loaded room.

    Invariant: ``entries`` is the LWW state (tombstones included, each entry carrying the
    seq that last changed it) and ``tree`` is the MST of its live entries.
    """

    __slots__ = ("compacted_through", "entries", "head", "room", "tree")

    def __init__(
        self,
        room: str,
        entries: Iterable[Change] = (),
        *,
        head: int = 0,
        compacted_through: int = 0,
    ) -> None:
        self.room = room
        self.entries: dict[str, Change] = {c.path: c for c in entries}
        self.tree = MerkleSearchTree(c for c in self.entries.values() if c.value is not None)
        self.head = max([head, *(c.seq or 0 for c in self.entries.values())])
        self.compacted_through = compacted_through

    @property
    def root(self) -> str:
        return self.tree.root_hex

    def apply(self, changes: list[Change], *, now_ms: int, limits: ApplyLimits) -> ApplyResult:
        result = ApplyResult()
        entries = self.entries
        for index, change in enumerate(changes):
            problem = refusal(change, now_ms=now_ms, limits=limits)
            if problem is not None:
                code, message = problem
                result.seqs.append(None)
                result.refused.append({"index": index, "code": str(code), "message": message})
                continue
            current = entries.get(change.path)
            if not wins(change, current):
                assert current is not None
                result.seqs.append(current.seq)
                continue
            self.head += 1
            stored = Change(
                change.path, change.ts, change.counter, change.actor, change.value, self.head
            )
            entries[change.path] = stored
            self.tree.put(stored)
            result.seqs.append(self.head)
            result.accepted.append(stored)
        return result

    def changes_since(self, since: int, prefixes: tuple[str, ...] = ("/",)) -> list[Change]:
        """The latest change of every path changed after ``since``, in seq order.

        That is enough to bring a replica at ``since`` to the current state: intermediate
        overwritten values do not matter under LWW. The caller checks retention first.
        """
        everything = prefixes == ("/",)
        out = [
            c
            for c in self.entries.values()
            if (c.seq or 0) > since and (everything or any_prefix_matches(prefixes, c.path))
        ]
        out.sort(key=lambda c: c.seq or 0)
        return out

    def get_paths(self, paths: Iterable[str]) -> list[Change]:
        """Current entries (tombstones included) of ``paths``; unknown paths are skipped."""
        entries = self.entries
        return [entries[p] for p in dict.fromkeys(paths) if p in entries]

    def live_count(self) -> int:
        return self.tree.count

    def forget_tombstones(self, through_seq: int) -> int:
        """Drop tombstones with seq <= ``through_seq`` (after the store compacted them)."""
        dead = [
            p for p, c in self.entries.items() if c.value is None and (c.seq or 0) <= through_seq
        ]
        for path in dead:
            del self.entries[path]
        self.compacted_through = max(self.compacted_through, through_seq)
        return len(dead)
