"""How a client cuts its pending writes into packs and paces them (SPEC §2 ``pack``), sans I/O.

The server refuses a pack over ``limits.max_pack_bytes`` or ``max_changes_per_pack``, and
closes with 1009 on a frame over ``max_frame_bytes`` (all three from ``welcome.limits``).
So the client cuts its queue of pending writes, in order, into packs that respect all
three (:class:`PackLimits`):

* a pack holds at most ``max_changes`` changes and at most ``max_bytes`` postcard bytes
  (:func:`encoded_size` of its changes plus :data:`PACK_OVERHEAD`), where ``max_bytes``
  is the smaller of ``max_pack_bytes`` and what a ``max_frame_bytes`` JSON frame can carry
  once base64-encoded (:data:`FRAME_OVERHEAD` bytes of envelope around it);
* the first change of a pack is always taken: a change that alone exceeds ``max_bytes``
  could never be sent, so the replica refuses it (``too-large``) before cutting
  (:meth:`PackLimits.fits`, :func:`oversize`);
* packs keep the queue's order, and every change is in exactly one pack
  (:func:`cut_packs`, property-tested).

A pack refused whole by the rate limiter (``refused[{index: -1, code: "rate-limited"}]``)
is queued again and sent after :func:`rate_limit_pause_ms`, which doubles with every such
pack in a row. ``request{paths}`` is cut by :func:`path_chunks` the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from .entries import Change
from .limits import WelcomeLimits

PACK_OVERHEAD = 10
"""Bytes of a ``Pack`` besides its changes: the varint change count (at most 10)."""
FRAME_OVERHEAD = 64
"""Bytes of the ``pack`` JSON envelope around its base64 data, with margin."""
PATHS_PER_REQUEST = 1000
"""Paths in one ``request{paths}``."""
PATH_BYTES_PER_REQUEST = 256 * 1024
"""UTF-8 bytes of the paths of one ``request{paths}`` (4 bytes of JSON each added)."""
RATE_LIMIT_PAUSE_MS = (250, 5000)
"""The first and the largest pause after a pack refused by the rate limiter."""


def _varint_len(value: int) -> int:
    n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n


def encoded_size(change: Change) -> int:
    """Bytes of ``change`` inside a postcard ``Pack`` (computed, not encoded)."""
    path = len(change.path.encode("utf-8"))
    actor = len(change.actor.encode("utf-8"))
    size = _varint_len(path) + path + _varint_len(change.ts) + _varint_len(change.counter)
    size += _varint_len(actor) + actor + 1  # + the Op tag
    if change.value is not None:
        size += _varint_len(len(change.value)) + len(change.value)
    if change.seq is None:
        return size + 1
    return size + 1 + _varint_len(change.seq)


@dataclass(frozen=True, slots=True)
class PackLimits:
    """The largest pack a session may send: ``max_changes`` changes, ``max_bytes`` bytes."""

    max_changes: int
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_changes < 1 or self.max_bytes < 1:
            raise ValueError("PackLimits needs max_changes >= 1 and max_bytes >= 1")

    @classmethod
    def from_welcome(cls, limits: WelcomeLimits) -> PackLimits:
        """The pack limits of a session with ``limits`` (module doc)."""
        frame_payload = (limits.max_frame_bytes - FRAME_OVERHEAD) * 3 // 4
        return cls(
            max_changes=max(1, limits.max_changes_per_pack),
            max_bytes=max(1, min(limits.max_pack_bytes, frame_payload)),
        )

    def fits(self, change: Change) -> bool:
        """Whether ``change`` fits a pack of its own."""
        return encoded_size(change) + PACK_OVERHEAD <= self.max_bytes


DEFAULT_PACK_LIMITS = PackLimits.from_welcome(WelcomeLimits())
"""The pack limits before any welcome said otherwise."""


def next_pack_length(changes: Iterable[Change], limits: PackLimits) -> int:
    """How many of the leading ``changes`` go into the next pack (at least 1 when there
    are any: call :func:`oversize` first so that every change fits)."""
    count = 0
    size = PACK_OVERHEAD
    for change in changes:
        n = encoded_size(change)
        if count and (count >= limits.max_changes or size + n > limits.max_bytes):
            break
        count += 1
        size += n
    return count


def cut_packs(changes: Sequence[Change], limits: PackLimits) -> list[list[Change]]:
    """``changes`` cut in order into consecutive packs, each as full as the limits allow."""
    packs: list[list[Change]] = []
    start = 0
    while start < len(changes):
        n = next_pack_length(changes[start:], limits)
        packs.append(list(changes[start : start + n]))
        start += n
    return packs


def oversize(changes: Iterable[Change], limits: PackLimits) -> list[Change]:
    """The changes that cannot fit any pack (refuse them ``too-large``), in order."""
    return [c for c in changes if not limits.fits(c)]


def rate_limit_pause_ms(streak: int) -> int:
    """The pause before re-sending after the ``streak``-th (0 first) rate-limited pack in
    a row: doubling from 250 ms, at most 5 s."""
    low, high = RATE_LIMIT_PAUSE_MS
    return int(min(high, low * 2 ** min(streak, 16)))


def path_chunks(paths: Iterable[str]) -> Iterator[list[str]]:
    """``paths`` cut in order into ``request{paths}`` lists (:data:`PATHS_PER_REQUEST`
    paths, :data:`PATH_BYTES_PER_REQUEST` bytes at most; a lone longer path still goes)."""
    chunk: list[str] = []
    size = 0
    for path in paths:
        n = len(path.encode("utf-8")) + 4
        if chunk and (len(chunk) >= PATHS_PER_REQUEST or size + n > PATH_BYTES_PER_REQUEST):
            yield chunk
            chunk, size = [], 0
        chunk.append(path)
        size += n
    if chunk:
        yield chunk
