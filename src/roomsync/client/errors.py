"""Errors the SDK raises (they join the tree of :mod:`roomsync.core.errors`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.codes import CloseCode, ErrorCode
from ..core.errors import RoomsyncError
from ..core.explain import close_next_action
from ..core.reconnect import ABNORMAL_CLOSURE


def _close_code(code: int) -> CloseCode | None:
    try:
        return CloseCode(code)
    except ValueError:
        return None


def _error_code(error: Mapping[str, Any] | None) -> ErrorCode:
    try:
        return ErrorCode(str((error or {}).get("code")))
    except ValueError:
        return ErrorCode.INTERNAL


class ConnectionClosed(RoomsyncError):
    """The client stopped for good and will not reconnect.

    Raised by :meth:`RoomClient.flush`, :meth:`RoomClient.changes` iterators and the other
    awaitables of a stopped client, and passed to ``on_close`` callbacks. The server
    decided it (4003 forbidden, 4004 room closed, 1002 protocol error, 4002 without a
    ``token_provider``), or reconnecting was turned off, or the app called ``close()``
    (``close_code`` 1000, ``error`` None).

    ``close_code`` is the WebSocket close code (1006 when the connection dropped without
    one); ``error`` the server's last ``error`` envelope before the close, if any.
    """

    def __init__(
        self, close_code: int, error: Mapping[str, Any] | None = None, message: str | None = None
    ) -> None:
        self.close_code = close_code
        self.error: dict[str, Any] | None = dict(error) if error is not None else None
        if message is None:
            detail = (
                f": {self.error.get('code')}: {self.error.get('message')}" if self.error else ""
            )
            message = f"connection closed with code {close_code}{detail}"
        self.code = _error_code(error)
        super().__init__(message, close=_close_code(close_code))

    @property
    def error_code(self) -> str | None:
        """The ``code`` of the server's ``error`` envelope, if one came before the close."""
        code = (self.error or {}).get("code")
        return code if isinstance(code, str) else None

    @property
    def next_action(self) -> str:
        return close_next_action(self.close_code)


class ConnectError(ConnectionClosed):
    """:func:`~roomsync.client.connect` could not open a first session with the server.

    Raised when no ``welcome`` came within ``connect_timeout_s`` (the server is not
    running, the URL is wrong, the network or TLS fails, the server keeps refusing with a
    retryable close such as 1011 overload), or at the first failure with
    ``reconnect=False``. The message names the WebSocket ``url`` and the ``cause`` of the
    last failed attempt, e.g. ``cannot connect to ws://127.0.0.1:8787/ws/my-room:
    connection refused``. ``attempts`` counts the attempts made. A subclass of
    :class:`ConnectionClosed` (``close_code`` 1006 unless the server closed the last
    attempt with a code), so code that catches that keeps working. Once a session was
    welcomed the client reconnects by itself and never raises this.
    """

    def __init__(
        self,
        url: str,
        cause: str,
        *,
        attempts: int = 1,
        close_code: int = ABNORMAL_CLOSURE,
        error: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.cause = cause
        self.attempts = attempts
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        super().__init__(close_code, error, f"cannot connect to {url}: {cause} ({tries})")

    @property
    def next_action(self) -> str:
        if self.close is not None and self.error is not None:
            return close_next_action(self.close_code)
        return (
            f"check that a roomsync server is running and reachable at {self.url} "
            "(host, port, TLS, proxy), then connect again; raise connect_timeout_s on a "
            "slow network"
        )


class RequestRefused(RoomsyncError):
    """The server answered a request (``subscribe``, ``mst-root``, ``request``...) with an
    ``error``; the session goes on. ``error`` is that envelope, ``code`` its error code
    (``forbidden`` when a capability is missing)."""

    close: CloseCode | None = None

    def __init__(self, error: Mapping[str, Any]) -> None:
        self.error = dict(error)
        self.code = _error_code(error)
        super().__init__(f"{self.error.get('code')}: {self.error.get('message')}", close=None)


class BlobError(RoomsyncError):
    """A blob operation failed; the session goes on. ``hash`` is the blob's
    ``sha256:<hex>``, ``reason`` why (the server's reason when it gave one)."""

    close: CloseCode | None = None

    def __init__(self, hash: str, reason: str, message: str | None = None) -> None:
        self.hash = hash
        self.reason = reason
        super().__init__(message or f"blob {hash}: {reason}", close=None)


class BlobRejected(BlobError):
    """:meth:`RoomClient.put_blob` failed: the server answered ``upload-rejected`` (hash or
    size mismatch, ``verify-failed``, a storage failure), or refused the blob as too large
    (``too-large: ...``), or it cannot be sent inline (bigger than a frame) and no direct
    upload was possible. Nothing was stored."""

    def __init__(self, hash: str, reason: str) -> None:
        super().__init__(hash, reason, f"blob {hash} rejected: {reason}")
        if reason.startswith("too-large"):
            self.code = ErrorCode.TOO_LARGE


class BlobNotFound(BlobError):
    """:meth:`RoomClient.get_blob` of a hash the room does not have
    (``error{code:"not-found", ref:"blob-request"}``)."""

    code = ErrorCode.NOT_FOUND


class BlobFetchFailed(BlobError):
    """:meth:`RoomClient.get_blob` got bytes it cannot trust or none at all: the server's
    blob backend failed (``reason`` ``internal: blob storage failed (<backend reason>) ...``;
    the blob is not lost, retry later), the download URL failed (``http-<status>: ...`` or
    ``network: ...``), or the bytes do not match the requested hash or announced size
    (``hash-mismatch``, ``size-mismatch``)."""
