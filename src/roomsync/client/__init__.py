"""The roomsync client SDK: a live local replica of a room over WebSocket (SPEC §2).

::

    from roomsync.client import connect

    async with await connect("http://127.0.0.1:8787", "room-1", token=token) as room:
        room.set_json("/todos/1", {"title": "milk", "done": False})
        await room.flush()

See ``docs/sdk.md`` for reconnect, resync, offline and cursor semantics.
"""

from __future__ import annotations

from ..core.entries import Change
from ..core.reconcile import ReconcileResult
from ..core.replica import RefusedChange
from .backoff import Backoff
from .errors import ConnectionClosed, RequestRefused
from .room import ChangeStream, RoomClient, connect, ws_url
from .stats import ConnectionStats, RetryWait

__all__ = [
    "Backoff",
    "Change",
    "ChangeStream",
    "ConnectionClosed",
    "ConnectionStats",
    "ReconcileResult",
    "RefusedChange",
    "RequestRefused",
    "RetryWait",
    "RoomClient",
    "connect",
    "ws_url",
]
