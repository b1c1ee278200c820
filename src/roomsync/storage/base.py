"""What the server needs from a store (SPEC §1, §2, §8): rooms, state, op log, archives later.

Implementations: :mod:`.memory` (tests, ``--storage memory``), :mod:`.sqlite` (the embedded
default, WAL, one writer) and later ``postgres``. ``tests/storage/test_contract.py`` runs
one contract suite against every implementation.

Invariants every store keeps:

- ``append`` writes the op-log rows *and* the state entries of a batch in one transaction;
  when it returns, the batch is durable (it survives ``kill -9`` of the process).
- seqs in the op log of a room are gap-free and increasing; the caller assigns them.
- the state table holds, per path, the winning change (tombstones included) with the seq
  that last changed it; it always equals ``base snapshot + op log`` replayed with LWW.
- ``compact(room, through_seq)`` folds op-log rows ``<= through_seq`` into the base
  snapshot, drops them from the log, purges tombstones whose seq ``<= through_seq`` from
  the state, and records ``compacted_through``; a cursor older than that cannot catch up.
- a room never written costs nothing: ``load_room`` of an unknown room only reads and
  hands out an empty record (head 0) that nothing stores; the first write that needs the
  room (``append`` of seq 1, ``add_blob_ref``, ``put_room``) creates it. Until then it is
  not listed, ``get_room`` returns None and ``delete_room`` returns False.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..core.entries import Change


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """Durable room metadata. ``policy`` holds per-room policy overrides (JSON-able)."""

    room: str
    created_ms: int
    locked: bool = False
    closed: bool = False
    head: int = 0
    compacted_through: int = 0
    policy: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoadedRoom:
    """Everything needed to bring a room into memory."""

    record: RoomRecord
    entries: list[Change]  # the state table, tombstones included, each with its seq


def wall_clock_ms() -> int:
    """Wall-clock milliseconds: the default clock of stores (``created_ms`` of rooms that
    ``append`` creates); tests inject their own."""
    return time.time_ns() // 1_000_000


class StoreError(Exception):
    """The store failed (I/O, permissions, corruption); the message names the cause."""


class Store(Protocol):
    async def open(self) -> None:
        """Connect, create or migrate the schema. Idempotent."""

    async def close(self) -> None:
        """Flush pending writes and release connections."""

    async def check(self) -> None:
        """Raise :class:`StoreError` when the store cannot serve reads and writes (readyz).

        A store that failed to write keeps failing its check until a write big enough to
        prove the failure over commits: the check makes such a real write itself.
        """

    async def get_room(self, room: str) -> RoomRecord | None: ...

    async def put_room(self, record: RoomRecord) -> None:
        """Insert or replace a room's metadata (not its head: ``append`` moves that)."""

    async def list_rooms(self, *, limit: int = 100, cursor: str | None = None) -> list[RoomRecord]:
        """Rooms ordered by id, starting after ``cursor``."""

    async def delete_room(self, room: str) -> bool:
        """Remove a room, its state, op log and blob references. True when it existed."""

    async def load_room(self, room: str, *, now_ms: int) -> LoadedRoom:
        """The room's record and state. Only reads: for a room never written, an empty
        record (head 0, ``created_ms`` = ``now_ms``) that is not stored."""

    async def append(self, room: str, changes: Sequence[Change]) -> None:
        """Durably append accepted changes (each with its seq) to the op log and state.

        The first append to a room never written (seqs from 1) creates its record, with
        ``created_ms`` from the store's clock. A batch whose seqs do not continue the head
        is refused with :class:`StoreError` and writes nothing.

        Concurrent calls may be group-committed into one transaction; each call returns
        only once its own changes are committed.
        """

    async def changes_since(self, room: str, since: int, *, limit: int) -> list[Change]:
        """Op-log rows with ``seq > since`` in seq order, at most ``limit``."""

    async def base_snapshot(self, room: str) -> list[Change]:
        """The compacted base (state as of ``compacted_through``), for replay."""

    async def compact(self, room: str, through_seq: int) -> int:
        """Fold op-log rows ``<= through_seq`` into the base; return rows removed."""

    # -- blob references (SPEC §4: blobs are room-scoped; unreferenced ones are collected) --

    async def add_blob_ref(self, room: str, hash: str, size: int, *, now_ms: int) -> None:
        """Record that ``hash`` was announced in ``room`` (idempotent); creates the room's
        record (``created_ms`` = ``now_ms``) if it was never written."""

    async def has_blob_ref(self, room: str, hash: str) -> bool:
        """True when ``hash`` was announced in ``room``."""

    async def blob_refs(self) -> set[str]:
        """Every hash referenced by any room (the live set for blob garbage collection)."""
