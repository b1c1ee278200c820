"""The one last-writer-wins rule (SPEC §1).

``(ts, counter, actor)`` orders writes; the greater wins, equal triples are the same write.
Because the rule is a total order on keys, applying any set of changes in any order,
any number of times, ends in the same state (commutative, associative, idempotent;
property-tested in ``tests/properties/test_merge_laws.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .entries import Change


def wins(incoming: Change, current: Change | None) -> bool:
    """True when ``incoming`` must replace ``current`` (strictly newer key)."""
    return current is None or incoming.key > current.key


def merge_into(state: dict[str, Change], changes: Iterable[Change]) -> list[Change]:
    """Apply ``changes`` to ``state`` in place; return those that won (in input order)."""
    won: list[Change] = []
    for change in changes:
        if wins(change, state.get(change.path)):
            state[change.path] = change
            won.append(change)
    return won


def live_items(state: Mapping[str, Change]) -> dict[str, Change]:
    """The live (non-tombstone) entries of ``state``."""
    return {p: c for p, c in state.items() if c.value is not None}
