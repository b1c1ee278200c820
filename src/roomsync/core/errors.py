"""The error tree of roomsync. Every error says whose fault it is and what to do next.

::

    RoomsyncError                      code, close (or None: the session survives), next_action
     ├── ProtocolError                 peer broke the protocol
     │    ├── ExpectedHello            expected-hello, 1002
     │    ├── MalformedEnvelope        malformed-envelope (1002 before welcome)
     │    ├── UnknownType              unknown-type, session survives
     │    └── UnsupportedVersion       unsupported-version, 1002
     ├── CodecError                    malformed-pack "bad postcard: ..." / "bad base64"
     ├── InvalidPath                   invalid-path, refused per change
     ├── InvalidRoom                   invalid-room, 1002 at connect
     ├── AuthError                     auth "auth: <why>", 4003 (TokenExpired: 4002)
     │    └── TokenExpired
     ├── Forbidden                     forbidden, 4003 or per message
     ├── TooLarge                      too-large (FrameTooBig: 1009)
     │    └── FrameTooBig
     ├── RateLimited                   rate-limited, 4008
     ├── ResyncRequired                resync-required, 4001
     ├── RoomClosed                    room-closed, 4004
     └── Overload                      overload, 1011, with retry_after_ms

Parsers in the core raise only these; a shell that meets anything else answers 1011
with ``internal`` and no details (the traceback goes to the log, never to the peer).
"""

from __future__ import annotations

from .codes import CLOSE_ACTIONS, CloseCode, ErrorCode


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
    """Token problems. ``message`` always starts with ``auth: ``."""

    code = ErrorCode.AUTH
    close: CloseCode | None = CloseCode.FORBIDDEN

    def __init__(self, why: str, *, close: CloseCode | bool | None = True) -> None:
        super().__init__(why if why.startswith("auth: ") else f"auth: {why}", close=close)


class TokenExpired(AuthError):
    close: CloseCode | None = CloseCode.TOKEN_EXPIRED


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
