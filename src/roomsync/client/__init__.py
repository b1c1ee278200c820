"""The roomsync client SDK: a live local replica of a room over WebSocket (SPEC §2).

::

    from roomsync.client import connect

    async with await connect("http://127.0.0.1:8787", "room-1", token=token) as room:
        room.set_json("/todos/1", {"title": "milk", "done": False})
        await room.flush()

See ``docs/sdk.md`` for reconnect, resync, offline and cursor semantics, presence,
blobs and ticks. The modules behind this API are private: :mod:`.room_client` (the
:class:`RoomClient` facade), :mod:`.connection` (lifecycle), :mod:`.local_replica`
(reads, writes, subscriptions), :mod:`.reconciler` (MST), :mod:`.presence`,
:mod:`.blobs`, :mod:`.ticks`; each is a thin asyncio shell over the rules in
:mod:`roomsync.core` (``reconnect``, ``keepalive``, ``packing``, ``blobflow``,
``presence_view``, ``replica``).
"""

from __future__ import annotations

from ..core.entries import Change
from ..core.presence_view import PresenceEvent, PresenceInfo
from ..core.reconcile import ReconcileResult
from ..core.reconnect import Backoff
from ..core.replica import RefusedChange, SupersededChange
from .blobs import BlobInfo
from .connection import ws_url
from .errors import (
    BlobError,
    BlobFetchFailed,
    BlobNotFound,
    BlobRejected,
    ConnectError,
    ConnectionClosed,
    RequestRefused,
)
from .events import ChangeStream, PresenceStream
from .room_client import RoomClient, connect
from .stats import ConnectionStats, RetryWait
from .ticks import TickInfo

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
    "TickInfo",
    "connect",
    "ws_url",
]
