"""How an answer (catch-up, ``request``, ``subscribe``) is cut into ``pack`` frames
(SPEC §2 catch-up; the cursor rule of ``docs/protocol.md``).

An answer of ``changes`` in seq order goes out in chunks of ``chunk`` changes. Every
chunk's ``head`` is the highest seq in it; the last chunk (there is always one, empty
when the answer is) carries ``done: true`` and ``head`` = the room's durable head when
the answer was built, so a client that applied it may set its cursor there.
"""

from __future__ import annotations

from typing import Any

from .codec import pack_data
from .entries import Change


def chunk_count(n_changes: int, chunk: int) -> int:
    """Frames of an answer of ``n_changes`` (at least one: the ``done`` frame)."""
    return max(1, -(-n_changes // max(1, chunk)))


def chunk_message(
    changes: list[Change], index: int, *, chunk: int, final_head: int
) -> dict[str, Any]:
    """The ``pack`` envelope of chunk ``index`` of an answer."""
    chunk = max(1, chunk)
    part = changes[index * chunk : (index + 1) * chunk]
    last = index == chunk_count(len(changes), chunk) - 1
    msg: dict[str, Any] = {
        "type": "pack",
        "data": pack_data(part),
        "head": final_head if last else (part[-1].seq or 0),
    }
    if last:
        msg["done"] = True
    return msg
