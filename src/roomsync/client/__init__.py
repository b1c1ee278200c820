"""The roomsync client SDK: a live local replica of a room over WebSocket (SPEC §2).

::

    from roomsync.client import connect

    async with await connect("http://127.0.0.1:8787", "room-1", token=token) as room:
        room.set_json("/todos/1", {"title": "milk", "done": False})
        await room.flush()

See ``docs/sdk.md`` for reconnect, resync, offline and cursor semantics, presence and
blobs.
"""

from __future__ import annotations

from ..core.entries import Change
from ..core.presence_view import PresenceEvent, PresenceInfo
from ..core.reconcile import ReconcileResult
from ..core.replica import RefusedChange, SupersededChange
from .backoff import Backoff
from .blobs import BlobInfo
from .errors import (
    BlobError,
    BlobFetchFailed,
    BlobNotFound,
    BlobRejected,
    ConnectError,
    ConnectionClosed,
    RequestRefused,
)
from .room import ChangeStream, PresenceStream, RoomClient, connect, ws_url
from .stats import ConnectionStats, RetryWait

__all__ = [
    "Backoff",
    "BlobError",
    "BlobFetchFailed",
    "BlobInfo",
    "BlobNotFound",
    "BlobRejected",
    "Change",
    "ChangeStream",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionStats",
    "PresenceEvent",
    "PresenceInfo",
    "PresenceStream",
    "ReconcileResult",
    "RefusedChange",
    "RequestRefused",
    "RetryWait",
    "RoomClient",
    "SupersededChange",
    "connect",
    "ws_url",
]
