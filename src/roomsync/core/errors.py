"""The error tree of roomsync. Every error says whose fault it is and what to do next.

One root for every error roomsync raises on purpose, wherever it lives::

    RoomsyncError                      code, close (or None: the session survives), next_action
     ├── ProtocolError                 peer broke the protocol
     │    ├── ExpectedHello            expected-hello, 1002
     │    ├── MalformedEnvelope        malformed-envelope (1002 before welcome)
     │    ├── UnknownType              unknown-type, session survives
     │    └── UnsupportedVersion       unsupported-version, 1002
     ├── CodecError                    malformed-pack "bad postcard: ..." / "bad base64"
     ├── InvalidPath                   invalid-path, refused per change
     ├── InvalidRoom                   invalid-room, 1002 at connect
     ├── AuthError                     auth "auth: <why>", 4003 (TokenExpired: 4002);
     │    │                            .reason: AuthReason (the roomsync_auth_total label)
     │    └── TokenExpired
     ├── Forbidden                     forbidden, 4003 or per message
     ├── TooLarge                      too-large (FrameTooBig: 1009)
     │    └── FrameTooBig
     ├── RateLimited                   rate-limited, 4008
     ├── ResyncRequired                resync-required, 4001
     ├── RoomClosed                    room-closed, 4004
     ├── Overload                      overload, 1011, with retry_after_ms
     ├── Draining                      draining, 1012: the node drains, reconnect elsewhere
     ├── PeerSilent                    timeout, 1011: no frame for 3 heartbeat intervals
     ├── InternalError                 internal, 1011: the server's own failure; a peer
     │    │                            gets "internal server error", never the message
     │    ├── BlobStoreError           roomsync.blobs: .reason, a short stable label
     │    │    ├── BlobMissing         "missing": nothing stored under the hash
     │    │    ├── BlobVerifyFailed    the bytes do not match the hash or size
     │    │    └── BlobBackendError    the blob backend cannot work: an operator must act
     │    ├── ConfigError              roomsync.config: .key, the dotted setting at fault
     │    ├── StoreError               roomsync.storage: the store failed or refused a write
     │    │    └── StoreConflict       fencing: another writer moved the room's head
     │    └── BusError                 roomsync.bus: events cannot be carried
     ├── QuerySpecError                roomsync.core.query: a query spec that cannot run,
     │                                 .field at fault; also a ValueError (invalid-payload)
     ├── QueryCursorError              roomsync.core.query: a cursor the query did not hand
     │                                 out; also a ValueError (invalid-payload)
     ├── Rejected                      roomsync.control: a control command refused, with
     │    │                            its reject class, code, field? and required?
     │    └── ControlRejected          roomsync.control.client: the client's, one per class:
     │         ├── ControlUnauthenticated
     │         ├── ControlForbidden
     │         ├── ControlInvalidPayload
     │         ├── ControlNotFound
     │         ├── ControlPreconditionFailed
     │         ├── ControlConflict
     │         ├── ControlRateLimited
     │         └── ControlUnavailable
     ├── BlobNotInRoom                 roomsync.server.blobs: not-found, session survives
     ├── BlobUnavailable               roomsync.server.blobs: internal, session survives;
     │                                 the message names the backend's reason only
     └── (the SDK, roomsync.client.errors)
          ├── ConnectionClosed         the client stopped for good: close code + last error
          │    └── ConnectError        no first session could be opened
          ├── RequestRefused           an error answer to a request; the session goes on
          └── BlobError                a blob operation failed: .hash, .reason
               ├── BlobRejected        put_blob refused, nothing stored
               ├── BlobNotFound        not-found: the room has no such blob
               └── BlobFetchFailed     get_blob got bad bytes, none, or a backend failure

Class names are unique across packages (``tests/core/test_errors.py`` checks it).
Parsers in the core raise only these; a shell that meets anything else answers 1011
with ``internal`` and no details (the traceback goes to the log, never to the peer).
"""

from __future__ import annotations

from .codes import CLOSE_ACTIONS, AuthReason, CloseCode, ErrorCode


class RoomsyncError(Exception):
    """Root of every error roomsync raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL
    close: CloseCode | None = CloseCode.INTERNAL

    def __init__(self, message: str, *, close: CloseCode | bool | None = True) -> None:
        super().__init__(message)
        self.message = message
        if close is not True:
            self.close = close if close is not False else None

    @property
    def next_action(self) -> str:
        if self.close is None:
            return "fix the offending message; the session is still open"
        return CLOSE_ACTIONS[self.close]

    def to_error_fields(self) -> dict[str, object]:
        """The fields of the ``error`` envelope sent for this error."""
        return {"code": str(self.code), "message": self.message}


class ProtocolError(RoomsyncError):
    code = ErrorCode.MALFORMED_ENVELOPE
    close: CloseCode | None = CloseCode.PROTOCOL_ERROR


class ExpectedHello(ProtocolError):
    code = ErrorCode.EXPECTED_HELLO


class MalformedEnvelope(ProtocolError):
    code = ErrorCode.MALFORMED_ENVELOPE


class UnknownType(ProtocolError):
    code = ErrorCode.UNKNOWN_TYPE
    close: CloseCode | None = None


class UnsupportedVersion(ProtocolError):
    code = ErrorCode.UNSUPPORTED_VERSION


class CodecError(RoomsyncError):
    """A pack (or MST node) could not be decoded. ``message`` is ``bad postcard: <why>``."""

    code = ErrorCode.MALFORMED_PACK
    close: CloseCode | None = None


class InvalidPath(RoomsyncError):
    code = ErrorCode.INVALID_PATH
    close: CloseCode | None = None


class InvalidRoom(RoomsyncError):
    code = ErrorCode.INVALID_ROOM
    close: CloseCode | None = CloseCode.PROTOCOL_ERROR


class AuthError(RoomsyncError):
    """Token or access problems. ``message`` always starts with ``auth: ``.

    ``reason`` says which check failed, as data: metrics and tools select on it, never
    on the message text.
    """

    code = ErrorCode.AUTH
    close: CloseCode | None = CloseCode.FORBIDDEN

    def __init__(
        self, why: str, *, reason: AuthReason, close: CloseCode | bool | None = True
    ) -> None:
        super().__init__(why if why.startswith("auth: ") else f"auth: {why}", close=close)
        self.reason = reason

    def to_error_fields(self) -> dict[str, object]:
        """With ``reason`` (e.g. ``token-expired``): tools select on it, not the text."""
        return {**super().to_error_fields(), "reason": str(self.reason)}


class TokenExpired(AuthError):
    """The token's ``exp`` has passed (at the handshake or mid-session): 4002, refresh it."""

    close: CloseCode | None = CloseCode.TOKEN_EXPIRED

    def __init__(self, why: str, *, close: CloseCode | bool | None = True) -> None:
        super().__init__(why, reason=AuthReason.EXPIRED, close=close)


class Forbidden(RoomsyncError):
    code = ErrorCode.FORBIDDEN
    close: CloseCode | None = CloseCode.FORBIDDEN


class TooLarge(RoomsyncError):
    code = ErrorCode.TOO_LARGE
    close: CloseCode | None = None


class FrameTooBig(TooLarge):
    close: CloseCode | None = CloseCode.TOO_BIG


class RateLimited(RoomsyncError):
    code = ErrorCode.RATE_LIMITED
    close: CloseCode | None = CloseCode.RATE_LIMITED


class ResyncRequired(RoomsyncError):
    code = ErrorCode.RESYNC_REQUIRED
    close: CloseCode | None = CloseCode.RESYNC_REQUIRED


class RoomClosed(RoomsyncError):
    code = ErrorCode.ROOM_CLOSED
    close: CloseCode | None = CloseCode.ROOM_CLOSED


class Overload(RoomsyncError):
    code = ErrorCode.OVERLOAD
    close: CloseCode | None = CloseCode.INTERNAL

    def __init__(self, message: str, *, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms

    def to_error_fields(self) -> dict[str, object]:
        return {**super().to_error_fields(), "retry_after_ms": self.retry_after_ms}


class Draining(RoomsyncError):
    """The node is draining (shutdown or ``topology drain``): reconnect, maybe elsewhere."""

    code = ErrorCode.DRAINING
    close: CloseCode | None = CloseCode.RESTARTING


class PeerSilent(RoomsyncError):
    """No frame from the peer for three heartbeat intervals (SPEC §5 liveness): 1011."""

    code = ErrorCode.TIMEOUT
    close: CloseCode | None = CloseCode.INTERNAL


class InternalError(RoomsyncError):
    """The server's own failure (a backend, the configuration), not the peer's.

    A peer that meets one gets ``error{code:"internal", message:"internal server error"}``
    and 1011, exactly like an unexpected exception: the message, which may name
    directories, buckets or settings, is for logs and operators only.
    """

    code = ErrorCode.INTERNAL
    close: CloseCode | None = CloseCode.INTERNAL

    def to_error_fields(self) -> dict[str, object]:
        return {"code": str(self.code), "message": "internal server error"}
