"""Lineage and promotion (SPEC §6 ``room fork``/``propose``/``validate``/``promote``), as
pure functions over states (``path -> Change`` maps). No I/O.

- :func:`proposed_changes`: what ``propose`` collects, the child's entries that differ
  from its checkpoint, tombstones included (a path live in the checkpoint and not live in
  the child is proposed as a delete, even when compaction has dropped the child's
  tombstone).
- :func:`conflicts`: the paths the parent *also* changed since the checkpoint, to a
  different outcome than the child's. Outcomes are compared by value (a delete being the
  value "absent"): both sides writing the same bytes, or both deleting, is no conflict.
- :func:`resolved`: the changes left after a ``resolve`` choice (``child`` keeps them all,
  ``parent`` drops the conflicting paths).
- :func:`promotion_batch`: the changes ``promote`` writes into the parent: restamped by a
  hybrid clock past every parent entry they touch (so they win LWW there, as a write made
  now would) and past ``now_ms``, with the child's actor kept; changes the parent already
  has (same value, or a delete of an absent path) are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .entries import Change
from .hlc import HybridClock

__all__ = ["RESOLVE_CHOICES", "conflicts", "promotion_batch", "proposed_changes", "resolved"]

#: ``room validate``'s ``resolve`` choices.
RESOLVE_CHOICES = ("child", "parent")

State = Mapping[str, Change]


def _value(entry: Change | None) -> bytes | None:
    """An entry's outcome: its bytes, or None when the path is deleted or absent."""
    return None if entry is None else entry.value


def _same_write(a: Change | None, b: Change | None) -> bool:
    """Whether two entries are the same state of a path (absent == tombstone)."""
    if a is None or a.value is None:
        return b is None or b.value is None
    return b is not None and a.key == b.key and a.value == b.value


def proposed_changes(checkpoint: State, child: State) -> list[Change]:
    """The child's live entries and deletes that differ from ``checkpoint`` (the live
    entries of the archive the child was forked from), in path order, without seqs."""
    out: dict[str, Change] = {}
    for path, entry in child.items():
        if not _same_write(entry, checkpoint.get(path)):
            out[path] = entry.with_seq(None)
    for path, entry in checkpoint.items():
        if path not in out and _value(child.get(path)) is None and entry.value is not None:
            mine = child.get(path)
            base = mine if mine is not None else entry
            out[path] = Change(path, base.ts, base.counter, base.actor, None)
    return [out[p] for p in sorted(out)]


def conflicts(checkpoint: State, parent: State, changes: Iterable[Change]) -> list[str]:
    """The paths of ``changes`` that ``parent`` changed since ``checkpoint`` to another
    outcome than the change's, in path order."""
    found = []
    for change in changes:
        now = parent.get(change.path)
        if _same_write(now, checkpoint.get(change.path)):
            continue  # the parent did not touch it
        if _value(now) != change.value:
            found.append(change.path)
    return sorted(found)


def resolved(changes: Iterable[Change], conflicting: Iterable[str], choice: str) -> list[Change]:
    """``changes`` after resolving ``conflicting`` paths with ``choice``."""
    if choice not in RESOLVE_CHOICES:
        raise ValueError(f"resolve must be one of {list(RESOLVE_CHOICES)}, not {choice!r}")
    if choice == "child":
        return list(changes)
    drop = set(conflicting)
    return [c for c in changes if c.path not in drop]


def promotion_batch(changes: Iterable[Change], parent: State, *, now_ms: int) -> list[Change]:
    """The writes that apply ``changes`` to ``parent`` now (see the module docstring)."""
    todo = [c for c in changes if _value(parent.get(c.path)) != c.value]
    clock = HybridClock()
    for change in todo:
        current = parent.get(change.path)
        if current is not None:
            clock.observe(current.ts, current.counter)
    out = []
    for change in todo:
        ts, counter = clock.tick(now_ms)
        out.append(Change(change.path, ts, counter, change.actor, change.value))
    return out
