"""How an answer (catch-up, ``request``, ``subscribe``) is cut into ``pack`` frames
(SPEC §2 catch-up; the cursor rule of ``docs/protocol.md``).

An answer of ``changes`` in seq order goes out in chunks of ``chunk`` changes. Every
chunk's ``head`` is the highest seq in it; the last chunk (there is always one, empty
when the answer is) carries ``done: true`` and ``head`` = the room's durable head when
the answer was built, so a client that applied it may set its cursor there.

A full-state catch-up (``hello`` without cursor) is cut differently, so that most of it
is a copy of bytes encoded for an earlier joiner: :func:`seq_blocks` groups the state by
seq range (block ``k`` holds the entries whose seq is in ``(k*chunk, (k+1)*chunk]``,
sparse neighbours merged up to ``chunk`` changes), and :class:`BlockCache` keeps each
group's encoded ``data`` keyed by the very entries it holds. A write moves one path's
entry out of its old block into the newest one, so only those two groups are encoded
again; a group whose entries differ in any way from the cached ones is never served
from the cache (the entries are compared, not trusted).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from .binpack import deflate
from .codec import b64encode, pack_data
from .entries import Change
from .postcard import encode_pack


def chunk_count(n_changes: int, chunk: int) -> int:
    """Frames of an answer of ``n_changes`` (at least one: the ``done`` frame)."""
    return max(1, -(-n_changes // max(1, chunk)))


def chunk_part(
    changes: list[Change], index: int, *, chunk: int, final_head: int
) -> tuple[list[Change], int, bool]:
    """Chunk ``index`` of an answer: its changes, its ``head`` and whether it is ``done``."""
    chunk = max(1, chunk)
    part = changes[index * chunk : (index + 1) * chunk]
    last = index == chunk_count(len(changes), chunk) - 1
    return part, final_head if last else (part[-1].seq or 0), last


def chunk_message(
    changes: list[Change], index: int, *, chunk: int, final_head: int
) -> dict[str, Any]:
    """The ``pack`` envelope of chunk ``index`` of an answer."""
    part, head, last = chunk_part(changes, index, chunk=chunk, final_head=final_head)
    msg: dict[str, Any] = {"type": "pack", "data": pack_data(part), "head": head}
    if last:
        msg["done"] = True
    return msg


def _seq_of(change: Change) -> int:
    return change.seq or 0


def seq_blocks(changes: Sequence[Change], chunk: int) -> list[list[Change]]:
    """Cut ``changes`` (in seq order, every seq set) into the groups of a full catch-up.

    Seq block ``k`` is the changes with seq in ``(k*chunk, (k+1)*chunk]``; consecutive
    blocks are merged while the group stays within ``chunk`` changes. A dense state is
    cut exactly as :func:`chunk_message` cuts it; there is always at least one group
    (empty for an empty state), and the last group is the one carrying ``done``.
    """
    chunk = max(1, chunk)
    groups: list[list[Change]] = []
    group: list[Change] = []
    i, n = 0, len(changes)
    while i < n:
        # The block of changes[i]: everything up to the end of its seq range.
        limit = (((changes[i].seq or 0) - 1) // chunk + 1) * chunk
        j = bisect_right(changes, limit, i + 1, min(n, i + chunk), key=_seq_of)
        if group and len(group) + (j - i) > chunk:
            groups.append(group)
            group = []
        group.extend(changes[i:j])
        i = j
    groups.append(group)
    return groups


def group_head(group: list[Change], *, last: bool, final_head: int) -> int:
    """The ``head`` of one group of a full catch-up."""
    return final_head if last else (group[-1].seq or 0)


def group_message(group: list[Change], data: str, *, last: bool, final_head: int) -> dict[str, Any]:
    """The ``pack`` envelope of one group of a full catch-up, ``data`` being its encoding."""
    msg: dict[str, Any] = {
        "type": "pack",
        "data": data,
        "head": group_head(group, last=last, final_head=final_head),
    }
    if last:
        msg["done"] = True
    return msg


class _Block:
    """One cached group: its entries, their postcard ``Pack``, and (once a reader of that
    kind asked) its base64 and its binary frame body (deflated when that pays)."""

    __slots__ = ("b64", "binary", "changes", "raw")

    def __init__(self, changes: list[Change]) -> None:
        self.changes = changes
        self.raw = encode_pack(changes)
        self.b64: str | None = None
        self.binary: tuple[bytes, bool] | None = None


class BlockCache:
    """The encoded groups of the last full catch-ups of one scope, as postcard (for
    binary frames) and base64 (for JSON envelopes).

    :meth:`binary` and :meth:`data` answer from the cache only when the cached group holds
    equal entries (same paths, clocks, values and seqs, in the same order): a stale group
    is encoded again, never served. Entries are immutable, so equal entries mean equal
    bytes.
    """

    __slots__ = ("_groups",)

    def __init__(self) -> None:
        # first seq of a group -> its block
        self._groups: dict[int, _Block] = {}

    def __len__(self) -> int:
        return len(self._groups)

    def _block(self, group: list[Change]) -> _Block:
        key = (group[0].seq or 0) if group else 0
        hit = self._groups.get(key)
        if hit is not None and hit.changes == group:
            return hit
        block = _Block(group)
        if group:
            self._groups[key] = block
        return block

    def binary(self, group: list[Change]) -> tuple[bytes, bool]:
        """The ``Pack`` of ``group`` for a binary frame and whether it is deflated
        (:func:`~.binpack.deflate`: cached blocks are compressed once, sent many times)."""
        block = self._block(group)
        if block.binary is None:
            zipped = deflate(block.raw)
            block.binary = (block.raw, False) if zipped is None else (zipped, True)
        return block.binary

    def data(self, group: list[Change]) -> str:
        """``pack_data(group)``, from the cache when it holds exactly these entries."""
        block = self._block(group)
        if block.b64 is None:
            block.b64 = b64encode(block.raw)
        return block.b64

    def retain(self, groups: Sequence[list[Change]]) -> None:
        """Forget the cached groups that do not start a group of ``groups``."""
        keep = {g[0].seq or 0 for g in groups if g}
        for key in [k for k in self._groups if k not in keep]:
            del self._groups[key]
