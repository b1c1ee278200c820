"""Changes and entries of the replicated state (SPEC §1 and the ``Change`` of SPEC §2).

A :class:`Change` is one write to one path. The same type is used for a stored entry: the
state of a room is ``path -> Change`` (the winning change), a tombstone being a change
whose ``value`` is ``None`` (``Op::Delete``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Change:
    """One write: ``Op::Set(value)`` when ``value`` is bytes, ``Op::Delete`` when None.

    ``seq`` is None as sent by clients; the server fills it when it accepts the change.
    """

    path: str
    ts: int
    counter: int
    actor: str
    value: bytes | None
    seq: int | None = None

    @property
    def deleted(self) -> bool:
        return self.value is None

    @property
    def key(self) -> tuple[int, int, str]:
        """The LWW ordering key ``(ts, counter, actor)``; equal keys mean the same write."""
        return (self.ts, self.counter, self.actor)

    def with_seq(self, seq: int | None) -> Change:
        return replace(self, seq=seq)
