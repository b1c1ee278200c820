"""Close codes, error codes and reject classes: the fixed vocabulary of SPEC §2 and §6."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    """WebSocket close codes (SPEC §2 "Close codes")."""

    NORMAL = 1000
    PROTOCOL_ERROR = 1002
    TOO_BIG = 1009
    INTERNAL = 1011  # server overload or internal error: back off with jitter
    RESTARTING = 1012  # node draining / restarting: reconnect, maybe elsewhere
    RESYNC_REQUIRED = 4001
    TOKEN_EXPIRED = 4002
    FORBIDDEN = 4003
    ROOM_CLOSED = 4004
    RATE_LIMITED = 4008


#: What a client should do after each close code (SPEC §2 table, "client action"): the
#: one text of it, read by the errors' ``next_action``, ``roomsync explain`` and
#: ``docs/codes.md`` (:mod:`roomsync.core.explain`). Each says what the SDK's
#: :data:`~roomsync.core.reconnect.ACTION_ON_CLOSE` does (retry, resync, refresh, stop);
#: ``tests/cli/test_explain.py`` keeps the two in step.
CLOSE_ACTIONS: dict[CloseCode, str] = {
    CloseCode.NORMAL: "nothing if the app closed it; otherwise retry: the server never ends "
    "a live session with 1000, so a proxy or the network ended it",
    CloseCode.PROTOCOL_ERROR: "stop and fix the client: it broke the protocol",
    CloseCode.TOO_BIG: "split the pack into smaller frames, then retry",
    CloseCode.INTERNAL: "back off with jitter and retry",
    CloseCode.RESTARTING: "reconnect after a backoff, possibly to another node",
    CloseCode.RESYNC_REQUIRED: "reconnect and do a full resync",
    CloseCode.TOKEN_EXPIRED: "refresh the token and reconnect",
    CloseCode.FORBIDDEN: "stop and get a token valid for this room with the needed caps",
    CloseCode.ROOM_CLOSED: "stop: the room is closed or deleted",
    CloseCode.RATE_LIMITED: "slow down, then retry after a backoff: send fewer messages or "
    "bytes per second",
}


class ErrorCode(StrEnum):
    """``error{code}`` values and per-change refusal codes (SPEC §2 "Error codes").

    Every code the server or the SDK uses is a member here and has a row in the
    "Error codes" table of ``docs/protocol.md`` (``tests/test_docs.py`` checks both).
    """

    EXPECTED_HELLO = "expected-hello"
    AUTH = "auth"
    MALFORMED_ENVELOPE = "malformed-envelope"
    MALFORMED_PACK = "malformed-pack"
    INVALID_PATH = "invalid-path"
    INVALID_ROOM = "invalid-room"
    INVALID_VALUE = "invalid-value"  # refused by the app's validate hook (docs/hooks.md)
    FORBIDDEN = "forbidden"
    TOO_LARGE = "too-large"
    RATE_LIMITED = "rate-limited"
    RESYNC_REQUIRED = "resync-required"
    OVERLOAD = "overload"
    UNKNOWN_TYPE = "unknown-type"
    UNSUPPORTED_VERSION = "unsupported-version"
    CLOCK_SKEW = "clock-skew"
    NOT_FOUND = "not-found"
    ROOM_CLOSED = "room-closed"
    INTERNAL = "internal"
    DRAINING = "draining"
    TIMEOUT = "timeout"  # a peer silent for three heartbeat intervals (closed with 1011)


class AuthReason(StrEnum):
    """Why an :class:`~roomsync.core.errors.AuthError` was raised.

    The values are the ``outcome`` labels of ``roomsync_auth_total`` (SPEC §7 "auth
    outcomes"), so dashboards select on them: they never change once published.
    """

    EXPIRED = "token-expired"
    BAD_SIGNATURE = "bad-signature"
    UNKNOWN_KID = "unknown-kid"
    WRONG_ROOM = "not-valid-for-room"
    MALFORMED = "malformed"
    LOCKED = "locked"
    ANONYMOUS_DISABLED = "anonymous"
    REVOKED = "revoked"
    MISSING_CLAIM = "missing-claim"
    UNSUPPORTED_ALG = "unsupported-algorithm"
    NOT_YET_VALID = "not-yet-valid"
    APP = "refused-by-app"  # the app's authorize hook refused the hello (docs/hooks.md)
    OTHER = "other"


class RejectClass(StrEnum):
    """Control-plane refusal classes (SPEC §6), each with its HTTP status."""

    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    INVALID_PAYLOAD = "invalid-payload"
    NOT_FOUND = "not-found"
    PRECONDITION_FAILED = "precondition-failed"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate-limited"
    UNAVAILABLE = "unavailable"

    @property
    def http_status(self) -> int:
        return _REJECT_HTTP[self]

    @property
    def next_action(self) -> str:
        return _REJECT_NEXT[self]


_REJECT_HTTP = {
    RejectClass.UNAUTHENTICATED: 401,
    RejectClass.FORBIDDEN: 403,
    RejectClass.INVALID_PAYLOAD: 422,
    RejectClass.NOT_FOUND: 404,
    RejectClass.PRECONDITION_FAILED: 412,
    RejectClass.CONFLICT: 409,
    RejectClass.RATE_LIMITED: 429,
    RejectClass.UNAVAILABLE: 503,
}
_REJECT_NEXT = {
    RejectClass.UNAUTHENTICATED: "obtain or refresh an operator token",
    RejectClass.FORBIDDEN: "retry with a token scoped to `required`",
    RejectClass.INVALID_PAYLOAD: "fix `field` per `message`",
    RejectClass.NOT_FOUND: "check the id",
    RejectClass.PRECONDITION_FAILED: "satisfy the precondition named in `code`",
    RejectClass.CONFLICT: "re-read state, retry",
    RejectClass.RATE_LIMITED: "wait `Retry-After`",
    RejectClass.UNAVAILABLE: "retry with backoff",
}
