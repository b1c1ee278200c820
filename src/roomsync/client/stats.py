"""What the client did on the wire: attempts, closes, waits (for diagnostics and tests)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RetryWait:
    """One wait before a reconnect attempt.

    ``delay`` is what the client slept (seconds): the jittered backoff, raised to at least
    ``retry_after_ms`` when the server sent ``error{code: "overload", retry_after_ms}``.
    """

    delay: float
    close_code: int
    error_code: str | None
    retry_after_ms: int | None


@dataclass(slots=True)
class ConnectionStats:
    """Counters of a :class:`~roomsync.client.RoomClient` since it was created."""

    attempts: int = 0
    """Connection attempts (WebSocket handshakes tried)."""
    welcomes: int = 0
    """Sessions the server welcomed."""
    resyncs: int = 0
    """Sessions that started with a full resync after close 4001."""
    reconciles: int = 0
    """MST reconciles run (resyncs and :meth:`RoomClient.reconcile` calls)."""
    token_refreshes: int = 0
    """Calls of ``token_provider``."""
    superseded: int = 0
    """Acknowledged writes that lost LWW to a newer entry (see ``on_superseded``)."""
    last_catchup_changes: int = 0
    """Changes received by the last session before it was synced (its catch-up)."""
    closes: list[tuple[int, str | None]] = field(default_factory=list)
    """``(close code, server error code)`` of every connection that ended, in order."""
    waits: list[RetryWait] = field(default_factory=list)
    """Every wait before a reconnect, in order."""
