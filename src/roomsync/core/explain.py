"""What every code roomsync speaks means, why it happens and what to do next (issue 12).

One table, :data:`TABLE`, holds an :class:`Explanation` per code, whatever its kind:

============  ==========================================================================
kind          codes
============  ==========================================================================
close         WebSocket close codes: RFC 6455 §7.4.1 and the IANA registry (1000-1015,
              some never sent on the wire), and SPEC §2's 4001 4002 4003 4004 4008
error         ``error{code}`` and ``ack`` refusal codes (:class:`~.codes.ErrorCode`)
reject-class  control-plane reject classes (:class:`~.codes.RejectClass`, SPEC §6)
reject-code   the ``code`` of a control-plane reject (``archive-ref-unknown``, ...)
auth-reason   why a token was refused (:class:`~.codes.AuthReason`): the label of
              ``roomsync_auth_total`` and the ``code`` of an ``unauthenticated`` reject
============  ==========================================================================

``roomsync explain``, ``docs/codes.md`` (:func:`markdown`) and the SDK's errors
(:func:`close_next_action`) all read it. The next actions are derived, never copied, so
nothing can drift:

- a :class:`~.codes.CloseCode`'s next action *is* :data:`~.codes.CLOSE_ACTIONS` (what the
  server's errors and the SDK already say); the SDK's automatic action beside it is
  :func:`~.reconnect.close_action`, and ``tests/cli/test_explain.py`` checks the two say
  the same thing (resync / refresh the token / retry / stop);
- a reject class's next action *is* :attr:`~.codes.RejectClass.next_action` (SPEC §6);
- an error code, reject code or auth reason either has its own, more precise action, or
  takes the one of the close code or reject class it comes with; ``{next}`` in its text
  stands for that one.

Meanings and causes are written here, in the runbook's words where it has them
(``4001``: "peer fell behind or stream budget issue"). ``runbook`` names the section of
:data:`RUNBOOK_DOC` to read. Codes may repeat across kinds (``forbidden`` is an error
code and a reject class): :func:`explain` answers every match.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from .codes import CLOSE_ACTIONS, AuthReason, CloseCode, ErrorCode, RejectClass
from .reconnect import ABNORMAL_CLOSURE, CloseAction, close_action

__all__ = [
    "RUNBOOK_DOC",
    "TABLE",
    "Explanation",
    "Kind",
    "close_next_action",
    "explain",
    "known_codes",
    "markdown",
    "related",
    "suggest",
]

RUNBOOK_DOC = "docs/operations.md"
"""Where the runbook's sections (:attr:`Explanation.runbook`) are, as ``###`` headings."""

# The runbook's sections, as headed in docs/operations.md ("The runbook, step by step").
_TRIAGE = "Triage order"
_CONNECT = "Clients cannot connect"
_CONVERGE = "Room does not converge"
_BLOBS = "Blob operations fail"
_CONTROL = "Control-plane commands rejected"
_CLOSES = "Close codes"


class Kind(StrEnum):
    """What a code is (module doc)."""

    CLOSE = "close"
    ERROR = "error"
    REJECT_CLASS = "reject-class"
    REJECT_CODE = "reject-code"
    AUTH_REASON = "auth-reason"

    @property
    def label(self) -> str:
        return _KIND_LABELS[self]


_KIND_LABELS = {
    Kind.CLOSE: "close code",
    Kind.ERROR: "error code",
    Kind.REJECT_CLASS: "reject class",
    Kind.REJECT_CODE: "reject code",
    Kind.AUTH_REASON: "auth reason",
}


@dataclass(frozen=True, slots=True)
class Explanation:
    """One code: what it means, its likely causes and the next action.

    ``close``: the close code it comes with, if any (error codes, auth reasons).
    ``reject_class``: the class it is refused with (reject classes, reject codes, auth
    reasons, which are also the codes of ``unauthenticated`` rejects). ``client_action``:
    for close codes, what the SDK does by itself (:func:`~.reconnect.close_action`).
    """

    code: str
    kind: Kind
    meaning: str
    causes: tuple[str, ...]
    next_action: str
    runbook: str | None
    close: int | None = None
    reject_class: RejectClass | None = None
    client_action: CloseAction | None = None

    @property
    def http_status(self) -> int | None:
        """The HTTP status of its reject class, if it has one."""
        return self.reject_class.http_status if self.reject_class is not None else None

    def to_json(self) -> dict[str, object]:
        """A JSON object (``roomsync explain --json``); every field, null when absent."""
        return {
            "code": self.code,
            "kind": str(self.kind),
            "meaning": self.meaning,
            "causes": list(self.causes),
            "next_action": self.next_action,
            "runbook": self.runbook,
            "close": self.close,
            "reject_class": str(self.reject_class) if self.reject_class else None,
            "http_status": self.http_status,
            "client_action": str(self.client_action) if self.client_action else None,
            "see_also": list(related(self)),
        }


@dataclass(frozen=True, slots=True)
class _Entry:
    meaning: str
    causes: tuple[str, ...]
    runbook: str | None
    next_action: str | None = None  # None: the action of its close code or reject class
    close: int | None = None
    reject_class: RejectClass | None = None


# -- close codes -------------------------------------------------------------------------
# A CloseCode's next action is CLOSE_ACTIONS[code]; only the codes roomsync never sends
# (RFC 6455 / IANA, met through proxies, browsers and libraries) carry their own here.

_CLOSE: dict[int, _Entry] = {
    1000: _Entry(
        "normal closure (RFC 6455): the connection ended on purpose",
        (
            "the app closed the connection itself (`RoomClient.close()`)",
            "a proxy or load balancer ended it (an idle or connection lifetime limit)",
        ),
        _CONNECT,
    ),
    1001: _Entry(
        "going away (RFC 6455): an endpoint is leaving; roomsync itself sends 1012",
        (
            "the browser navigated away or the app's process stopped",
            "a proxy or load balancer in front restarted or shut down",
        ),
        _CONNECT,
        next_action="retry with backoff; if it repeats, check the proxy's restarts and timeouts",
    ),
    int(CloseCode.PROTOCOL_ERROR): _Entry(
        "protocol error: the client broke the protocol (no `hello`, a bad envelope, a bad "
        "version or room id)",
        (
            "the first frame was not a JSON `hello`, or none came within "
            "`server.hello_timeout_ms` (`expected-hello`)",
            "an envelope that is not JSON, not an object or has a field of the wrong type "
            "before `welcome` (`malformed-envelope`)",
            "`hello.v` is not 1 (`unsupported-version`)",
            "the room id in `/ws/{room_id}` is not valid (`invalid-room`)",
        ),
        _CONNECT,
    ),
    1003: _Entry(
        "unsupported data (RFC 6455): the endpoint cannot accept this kind of frame; "
        "roomsync never sends it",
        ("a proxy, gateway or another WebSocket server closed the connection, not roomsync",),
        _CONNECT,
        next_action="check the URL and what sits between the client and roomsync, then "
        "retry with backoff",
    ),
    1004: _Entry(
        "reserved (RFC 6455): no meaning, never sent",
        ("a broken endpoint, library or proxy",),
        _CONNECT,
        next_action="check the library or proxy that sent it, then retry with backoff",
    ),
    1005: _Entry(
        "no status received (RFC 6455): a CLOSE frame without a code; a library reports "
        "it, it is never sent",
        ("the peer or a proxy closed with an empty CLOSE frame",),
        _CONNECT,
        next_action="retry with backoff; if it repeats, check the proxy in front",
    ),
    ABNORMAL_CLOSURE: _Entry(
        "abnormal closure (RFC 6455): the connection dropped without a CLOSE frame; never "
        "sent, `roomsync_closes_total` counts it",
        (
            "a client crash, a network cut or a proxy timeout",
            "the server process died or was killed",
            "the TCP, TLS or HTTP upgrade step failed before the WebSocket opened",
        ),
        _CONNECT,
        next_action="check the network and any proxy in between, then retry with backoff",
    ),
    1007: _Entry(
        "invalid frame payload data (RFC 6455): a text frame that is not valid UTF-8",
        ("the client's encoder sent bytes that are not UTF-8 in a text frame",),
        _CONNECT,
        next_action="fix the client's encoding (text frames carry UTF-8 JSON), then retry "
        "with backoff",
    ),
    1008: _Entry(
        "policy violation (RFC 6455): a generic refusal; roomsync refuses with 4003 or 4008",
        ("a proxy, gateway or firewall in front refused the connection",),
        _CONNECT,
        next_action="check the proxy's or gateway's rules, then retry with backoff",
    ),
    int(CloseCode.TOO_BIG): _Entry(
        "message too big: a frame larger than `server.max_frame_bytes`",
        (
            "a pack bigger than the frame limit: the client did not size it by the "
            "welcome's `limits`",
            "an inline `blob-upload` too big for one frame (direct upload needs cap `blob-direct`)",
        ),
        _CONVERGE,
    ),
    1010: _Entry(
        "mandatory extension (RFC 6455): the client needs an extension the server did not accept",
        (
            "the client requires a WebSocket extension (e.g. permessage-deflate) that "
            "roomsync or a proxy did not negotiate",
        ),
        _CONNECT,
        next_action="let the client connect without requiring the extension, then retry "
        "with backoff",
    ),
    int(CloseCode.INTERNAL): _Entry(
        "internal error or overload: the server cannot go on with the session",
        (
            "server overload: investigate capacity/backpressure and retry policy",
            "the node or room is full or reloading (`overload` with `retry_after_ms`; "
            "`server.max_connections`, `server.max_queued_bytes`, `policy.max_peers`)",
            "the server's own failure: the store or the blob backend (`internal`)",
            "a silent peer: no frame for three heartbeat intervals (`timeout`)",
        ),
        _CLOSES,
    ),
    int(CloseCode.RESTARTING): _Entry(
        "service restart: the node is draining or restarting (`draining`)",
        (
            "an operator drained the node (`topology drain`)",
            "the server is shutting down (`server.shutdown_grace_ms`)",
        ),
        _CONNECT,
    ),
    1013: _Entry(
        "try again later (IANA): a temporary overload; roomsync sends 1011 instead",
        ("a proxy or gateway in front is overloaded",),
        _CONNECT,
        next_action="retry with backoff",
    ),
    1014: _Entry(
        "bad gateway (IANA): a proxy got an invalid answer from the server behind it",
        ("the proxy cannot reach the roomsync node, or the node failed",),
        _TRIAGE,
        next_action="check the node behind the proxy (`/healthz`, `/readyz`), then retry "
        "with backoff",
    ),
    1015: _Entry(
        "TLS handshake failure (RFC 6455): a library reports it, it is never sent",
        (
            "an untrusted or expired certificate, or a host name the certificate does not name",
            "`wss://` to a plain port, or `ws://` to a TLS one",
        ),
        _CONNECT,
        next_action="fix the TLS setup (certificate chain, host name, `server.tls_cert` and "
        "`server.tls_key`), then retry with backoff",
    ),
    int(CloseCode.RESYNC_REQUIRED): _Entry(
        "resync required: the peer cannot catch up from its cursor",
        (
            "peer fell behind or stream budget issue",
            "the cursor is older than retention (`policy.retention_changes`) or ahead of "
            "the room's head",
            "the outbound queue passed the stream budget (`policy.stream_budget_bytes`): "
            "a slow consumer",
            "the room's state was replaced (`archive restore`, `room fork`)",
        ),
        _CLOSES,
    ),
    int(CloseCode.TOKEN_EXPIRED): _Entry(
        "token expired, at the handshake or mid-session at `exp`",
        (
            "token expired: its `exp` passed (a live session is closed at `exp`)",
            "a token lifetime shorter than the sessions it is used for",
        ),
        _CLOSES,
    ),
    int(CloseCode.FORBIDDEN): _Entry(
        "forbidden: bad token, wrong room, locked room, revoked token, anonymous access refused",
        (
            "a token that does not verify (`bad-signature`, `unknown-kid`, `malformed`)",
            "a token not valid for this room (`not-valid-for-room`)",
            "a locked room and no token (`locked`), or anonymous access disabled (`anonymous`)",
            "the token was revoked (`room revoke`)",
        ),
        _CONNECT,
    ),
    int(CloseCode.ROOM_CLOSED): _Entry(
        "room closed or deleted (`room-closed`)",
        ("an operator ran `room close` or `room delete`",),
        _CONNECT,
    ),
    int(CloseCode.RATE_LIMITED): _Entry(
        "rate limit exceeded: over the token bucket (messages or bytes per second) for "
        "longer than `policy.rate_grace_ms`",
        (
            "rate limit exceeded: tune client send behavior and/or ingress limits",
            "a client sending more than `policy.rate_messages_per_s` or "
            "`policy.rate_bytes_per_s` (bursts `policy.rate_burst_messages`, "
            "`policy.rate_burst_bytes`)",
        ),
        _CLOSES,
    ),
}

# -- error codes -------------------------------------------------------------------------

_ERROR: dict[ErrorCode, _Entry] = {
    ErrorCode.EXPECTED_HELLO: _Entry(
        "the first frame was not a JSON `hello`, or none came within `server.hello_timeout_ms`",
        (
            "the client sent another message before `hello`",
            "the client connected and sent nothing (a probe, a stuck client)",
            "a client that does not speak the roomsync protocol",
        ),
        _CONNECT,
        next_action="{next}; send `hello` as the first frame (SPEC §2)",
        close=int(CloseCode.PROTOCOL_ERROR),
    ),
    ErrorCode.AUTH: _Entry(
        "the token was refused; the message says why after `auth: ` (the auth reasons, "
        "e.g. `roomsync explain token-expired`)",
        (
            "token expired (closed with 4002)",
            "a bad signature or unknown kid: signed with a key this server does not hold",
            "token not valid for room",
            "a malformed or revoked token, a locked room without a token, anonymous "
            "access disabled",
        ),
        _CONNECT,
        next_action="`roomsync token inspect $TOKEN` shows its claims and whether this "
        "server verifies it; {next}",
        close=int(CloseCode.FORBIDDEN),
    ),
    ErrorCode.MALFORMED_ENVELOPE: _Entry(
        "not JSON, not an object, a field of the wrong type, a binary frame without the "
        "`binary` cap or with an unknown tag, a broken fragmented frame (closes with 1002); "
        "an `mst-probe` whose `data` does not decode (refused, the session survives)",
        (
            "a client encoder bug (compare with `vectors/envelopes.json`; `mst-probe` "
            "against `vectors/sketch.json`)",
            "a binary frame without the negotiated `binary` cap (the hello must name it: "
            '`caps: ["*", "binary"]`), or not `01 | Pack` (`vectors/binary.json`)',
        ),
        _CONNECT,
        next_action="stop and fix the client's envelope encoder against `vectors/envelopes.json`",
        close=int(CloseCode.PROTOCOL_ERROR),
    ),
    ErrorCode.MALFORMED_PACK: _Entry(
        "a pack's data is `bad base64…` or `bad postcard: …`; the pack is refused, the "
        "session survives",
        (
            "a client encoder bug: postcard layout, base64 alphabet or padding",
            "a change with a bad actor",
        ),
        _CONVERGE,
        next_action="fix the client's pack encoder against the golden vectors in "
        "`vectors/`, then resend the changes",
    ),
    ErrorCode.INVALID_PATH: _Entry(
        "a change's path breaks the path rules (starts with `/`, no empty segment, at "
        "most 1,024 bytes); that change is refused",
        ("the app built a path from unchecked input",),
        _CONVERGE,
        next_action="fix the path in the app; the other changes of the pack were applied",
    ),
    ErrorCode.INVALID_VALUE: _Entry(
        "the app's `validate` hook refused a change's value (e.g. it breaks the JSON "
        "Schema of its path prefix); that change is refused, the rest of the pack commits",
        (
            "the client wrote a value the app's rules do not allow",
            "the app's schema or rules changed and the client is older",
        ),
        _CONVERGE,
        next_action="read the ack's `refused[].message`; fix the value in the app (see "
        "docs/hooks.md)",
    ),
    ErrorCode.INVALID_ROOM: _Entry(
        "the room id in `/ws/{room_id}` is not `[A-Za-z0-9._-]{1,128}`",
        ("the app built the URL from unchecked input, or a proxy rewrote it",),
        _CONNECT,
        next_action="stop and connect to a valid room id",
        close=int(CloseCode.PROTOCOL_ERROR),
    ),
    ErrorCode.FORBIDDEN: _Entry(
        "the session lacks the cap a message needs, or writes as an actor its token does "
        "not allow; that message is refused, the session survives",
        (
            "the token or the room's policy does not grant the cap (`read`, `write`, "
            "`presence`, `blob`, `blob-direct`, `reconcile`, `binary`)",
            "a change's actor is not the token's `sub`",
        ),
        _CONNECT,
        next_action="check `welcome.caps`; get a token with the needed caps (`roomsync "
        "token mint --room R --caps ...`)",
    ),
    ErrorCode.TOO_LARGE: _Entry(
        "a frame over `server.max_frame_bytes` (1009), a pack over `policy.max_pack_bytes`, "
        "a value over `policy.max_value_bytes` or presence over `policy.presence_max_bytes`; "
        "an `mst-probe` with more probes or digests than its limits (`docs/protocol.md`, "
        "batched reconcile; refused, the session survives)",
        (
            "the client does not size its packs by the welcome's `limits`",
            "large values that belong in blobs",
        ),
        _CONVERGE,
        next_action="split packs by the welcome's `limits`; store large values as blobs",
        close=int(CloseCode.TOO_BIG),
    ),
    ErrorCode.RATE_LIMITED: _Entry(
        "over the token bucket: the message is refused, or 4008 once over it for longer "
        "than `policy.rate_grace_ms`",
        (
            "rate limit exceeded: tune client send behavior and/or ingress limits",
            "too many queued answers for one peer",
        ),
        _CLOSES,
        close=int(CloseCode.RATE_LIMITED),
    ),
    ErrorCode.RESYNC_REQUIRED: _Entry(
        "the peer cannot catch up from its cursor (sent before close 4001)",
        (
            "peer fell behind or stream budget issue",
            "the cursor is behind retention or ahead of the head",
            "the room's state was replaced (`archive restore`, `room fork`)",
        ),
        _CONVERGE,
        close=int(CloseCode.RESYNC_REQUIRED),
    ),
    ErrorCode.OVERLOAD: _Entry(
        "the node or room is full or reloading; `retry_after_ms` says when to come back",
        (
            "server overload: investigate capacity/backpressure and retry policy",
            "`server.max_connections`, `server.max_queued_bytes` or `policy.max_peers` reached",
            "the room is reloading after a store failure",
        ),
        _CLOSES,
        next_action="{next}, no sooner than `retry_after_ms`",
        close=int(CloseCode.INTERNAL),
    ),
    ErrorCode.UNKNOWN_TYPE: _Entry(
        "a `type` this server does not know; the session survives",
        ("a client newer than the server, or a typo in `type`",),
        _CONVERGE,
        next_action="send only the message types of `docs/protocol.md`; check the client "
        "and server versions",
    ),
    ErrorCode.UNSUPPORTED_VERSION: _Entry(
        "`hello.v` is not 1",
        ("a client built for another protocol version",),
        _CONNECT,
        next_action="stop and use a client that speaks protocol v1",
        close=int(CloseCode.PROTOCOL_ERROR),
    ),
    ErrorCode.CLOCK_SKEW: _Entry(
        "a change stamped more than `policy.max_clock_skew_ms` ahead of the server clock; "
        "that change is refused",
        ("the client's clock is ahead (no NTP)", "a client bug in stamping changes"),
        _CONVERGE,
        next_action="fix the client's clock (NTP) or raise `policy.max_clock_skew_ms`, "
        "then resend the refused changes",
    ),
    ErrorCode.NOT_FOUND: _Entry(
        "`blob-request` for a hash this room does not have",
        (
            "the blob was never uploaded to this room, or its upload was rejected",
            "the request came before `blob-available`",
        ),
        _BLOBS,
        next_action="upload the blob, or wait for its `blob-available`",
    ),
    ErrorCode.ROOM_CLOSED: _Entry(
        "the room is closed or deleted (sent before close 4004)",
        ("an operator ran `room close` or `room delete`",),
        _CONNECT,
        close=int(CloseCode.ROOM_CLOSED),
    ),
    ErrorCode.INTERNAL: _Entry(
        "the server failed: `internal server error` (1011), a failed commit, or a blob "
        "backend failure naming its reason",
        (
            "the store failed (`/readyz` `checks.store`, `store.*` logs)",
            "the blob backend failed (`/readyz` `checks.blobs`, `blob.backend_error` logs)",
            "a bug: the traceback is in the server log",
        ),
        _TRIAGE,
        next_action="{next}; operators: read `/readyz` and the server log of that moment",
        close=int(CloseCode.INTERNAL),
    ),
    ErrorCode.DRAINING: _Entry(
        "the node is draining or shutting down (sent before close 1012)",
        ("an operator drained the node (`topology drain`), or it is shutting down",),
        _CONNECT,
        close=int(CloseCode.RESTARTING),
    ),
    ErrorCode.TIMEOUT: _Entry(
        "no frame from the peer for three heartbeat intervals (sent before close 1011)",
        (
            "the client stopped sending: a frozen tab, a suspended process",
            "a network or proxy that drops or buffers frames",
        ),
        _CONNECT,
        next_action="{next}; keep the client's heartbeat (`ping` every `heartbeat_ms`) running",
        close=int(CloseCode.INTERNAL),
    ),
}

# -- control plane -----------------------------------------------------------------------

_REJECT_CLASS: dict[RejectClass, _Entry] = {
    RejectClass.UNAUTHENTICATED: _Entry(
        "no operator token, one that does not verify, or a revoked one", (), _CONTROL
    ),
    RejectClass.FORBIDDEN: _Entry(
        "the token's caps do not cover the command; `required` names the cap", (), _CONTROL
    ),
    RejectClass.INVALID_PAYLOAD: _Entry(
        "the payload breaks its schema or a command's rule; `field` names the first field at fault",
        (),
        _CONTROL,
    ),
    RejectClass.NOT_FOUND: _Entry(
        "the command or an id the payload names does not exist", (), _CONTROL
    ),
    RejectClass.PRECONDITION_FAILED: _Entry(
        "a domain precondition of the command does not hold; `code` names it", (), _CONTROL
    ),
    RejectClass.CONFLICT: _Entry(
        "the state is not what the command needs (it exists, is in use or is final)",
        (),
        _CONTROL,
    ),
    RejectClass.RATE_LIMITED: _Entry(
        "too many control requests from this operator; `Retry-After` says when", (), _CONTROL
    ),
    RejectClass.UNAVAILABLE: _Entry(
        "the node cannot run the command now (the store failed, the room is reloading)",
        (),
        _CONTROL,
    ),
}

_R = RejectClass

_REJECT_CODE: dict[str, _Entry] = {
    "token-missing": _Entry(
        "no `Authorization: Bearer <token>` header",
        ("the CLI got no `--token` and `ROOMSYNC_OPERATOR_TOKEN` is unset",),
        _CONTROL,
        next_action="{next}; send it as `Authorization: Bearer <token>` (`roomsync "
        "control --token`, `ROOMSYNC_OPERATOR_TOKEN`)",
        reject_class=_R.UNAUTHENTICATED,
    ),
    "capability-missing": _Entry(
        "the operator token's caps do not cover `<family>:<command>`",
        ("a token minted for another family or command",),
        _CONTROL,
        next_action="{next}: `roomsync token mint --room '*' --caps <required> --ttl 15m`",
        reject_class=_R.FORBIDDEN,
    ),
    "invalid": _Entry(
        "a field of the wrong type, out of its constraints, missing or unknown",
        ("the payload does not follow the command's schema (`GET /v1/openapi.json`)",),
        _CONTROL,
        reject_class=_R.INVALID_PAYLOAD,
    ),
    "not-json": _Entry(
        "the body is not a JSON object",
        ("a shell quoting mistake in `--json`, or a body sent without JSON encoding",),
        _CONTROL,
        next_action="send a JSON object (`roomsync control ... --json '{...}'` or key=value pairs)",
        reject_class=_R.INVALID_PAYLOAD,
    ),
    "too-large": _Entry(
        "the payload is over 1 MiB",
        ("a payload that embeds data instead of naming it",),
        _CONTROL,
        next_action="send a smaller payload",
        reject_class=_R.INVALID_PAYLOAD,
    ),
    "sub-or-jti": _Entry(
        "`room revoke` needs exactly one of `sub` and `jti`",
        ("both or neither were given",),
        _CONTROL,
        reject_class=_R.INVALID_PAYLOAD,
    ),
    "n-or-interval": _Entry(
        "`tick set` needs `n`, `interval_ms` or both",
        ("neither was given",),
        _CONTROL,
        reject_class=_R.INVALID_PAYLOAD,
    ),
    "interval-too-short": _Entry(
        "`tick set` `interval_ms` is neither 0 (no timer) nor at least the minimum in `message`",
        ("a timer faster than the node allows",),
        _CONTROL,
        reject_class=_R.INVALID_PAYLOAD,
    ),
    "command-unknown": _Entry(
        "no control command of that family and name",
        ("a typo, or a command this server's version does not have",),
        _CONTROL,
        next_action="{next}: `roomsync control --list` lists every command",
        reject_class=_R.NOT_FOUND,
    ),
    "room-unknown": _Entry(
        "no room with that id",
        ("a typo, or a room that was deleted or never created",),
        _CONTROL,
        next_action="{next}: `roomsync control room list`",
        reject_class=_R.NOT_FOUND,
    ),
    "node-unknown": _Entry(
        "no node with that id",
        ("a typo, or a node that left the cluster",),
        _CONTROL,
        next_action="{next}: `roomsync control topology get` lists the nodes",
        reject_class=_R.NOT_FOUND,
    ),
    "node-not-live": _Entry(
        "`topology drain` of a node whose heartbeat is older than `bus.node_dead_ms`",
        (
            "the node stopped, crashed or lost the store: its peers already reconnect to "
            "the live nodes",
        ),
        _CONTROL,
        next_action="`roomsync control topology get` shows `alive` and `beat_age_ms`; "
        "restart the node, or leave it: nothing of it needs draining",
        reject_class=_R.PRECONDITION_FAILED,
    ),
    "proposal-unknown": _Entry(
        "no proposal with that id",
        ("a typo, or an id from another server",),
        _CONTROL,
        next_action="{next}: `room propose` answers it",
        reject_class=_R.NOT_FOUND,
    ),
    "query-unknown": _Entry(
        "no query spec of that name (`query get`, `query drop`)",
        ("a typo, or a spec never defined or already dropped",),
        _CONTROL,
        next_action="{next}: `roomsync control query list`",
        reject_class=_R.NOT_FOUND,
    ),
    "archive-ref-unknown": _Entry(
        "no archive with that ref, or it is an archive of another room",
        (
            "a typo, or a ref from another server",
            "the archive was deleted (`archive delete`)",
            "`archive restore` of another room's archive (`room fork` starts a room from it)",
        ),
        _CONTROL,
        next_action="list the room's archives: `roomsync control archive list room=R`",
        reject_class=_R.PRECONDITION_FAILED,
    ),
    "archive-corrupt": _Entry(
        "the archive's snapshot does not decode, or reads back with another hash",
        ("damaged storage or a partial write",),
        _CONTROL,
        next_action="`roomsync control archive verify ref=REF`; restore another archive",
        reject_class=_R.PRECONDITION_FAILED,
    ),
    "lineage-checkpoint-invalid": _Entry(
        "the checkpoint archive is not in the parent room's lineage",
        (
            "a restore moved the parent's lineage past the fork's checkpoint",
            "the checkpoint is an archive of another room",
        ),
        _CONTROL,
        next_action="`archive list` shows the lineage; fork again from a current archive",
        reject_class=_R.PRECONDITION_FAILED,
    ),
    "room-not-forked": _Entry(
        "`room propose` of a room that `room fork` did not make: it has no checkpoint",
        ("the wrong room id: propose from the child, not the parent",),
        _CONTROL,
        next_action="propose from a forked room (`room get` shows `lineage.source`)",
        reject_class=_R.PRECONDITION_FAILED,
    ),
    "proposal-not-validated": _Entry(
        "`room promote` of a proposal that is not `validated`",
        ("`room validate` was not run, or answered `invalid`",),
        _CONTROL,
        next_action="run `room validate` (with `resolve` for conflicts), then promote",
        reject_class=_R.PRECONDITION_FAILED,
    ),
    "proposal-stale": _Entry(
        "the parent room moved since the proposal was validated",
        ("writes to the parent between `room validate` and `room promote`",),
        _CONTROL,
        next_action="validate again, then promote",
        reject_class=_R.PRECONDITION_FAILED,
    ),
    "promotion-refused": _Entry(
        "the parent's policy refuses one of the proposal's changes; nothing was promoted",
        ("a value, path or clock the parent's policy does not accept (named in `message`)",),
        _CONTROL,
        next_action="fix that path in the child (or the parent's policy), then propose and "
        "validate again",
        reject_class=_R.PRECONDITION_FAILED,
    ),
    "query-spec-missing": _Entry(
        "`query run` of a spec name that is not defined",
        ("the spec was never defined or was dropped (`query drop`)", "a typo in `name`"),
        _CONTROL,
        next_action="`roomsync control query list`, then `query define`",
        reject_class=_R.PRECONDITION_FAILED,
    ),
    "query-spec-invalid": _Entry(
        "`query run` of a stored spec that no longer parses",
        (
            "the spec was stored by something other than `query define` (an older version, "
            "a direct store write)",
        ),
        _CONTROL,
        next_action="define it again (`query define`), then run it",
        reject_class=_R.PRECONDITION_FAILED,
    ),
    "room-exists": _Entry(
        "`room create` or `room fork` of a room that already exists",
        ("the id is taken, or an earlier attempt already succeeded",),
        _CONTROL,
        next_action="{next}: `room get` it, or pick another id",
        reject_class=_R.CONFLICT,
    ),
    "archive-is-checkpoint": _Entry(
        "`archive delete` of an archive that is a fork's lineage checkpoint",
        ("forks made from it still exist (named in `message`)",),
        _CONTROL,
        next_action="delete or promote those forks first",
        reject_class=_R.CONFLICT,
    ),
    "proposal-final": _Entry(
        "the proposal is already `promoted` or `rejected`",
        ("a repeated `room promote` or `room reject`",),
        _CONTROL,
        next_action="propose again for a new one",
        reject_class=_R.CONFLICT,
    ),
    "room-closed": _Entry(
        "the parent room is closed: the promotion cannot be applied",
        ("an operator closed the parent (`room close`)",),
        _CONTROL,
        reject_class=_R.CONFLICT,
    ),
    "tick-overflow": _Entry(
        "`tick advance` would pass the largest tick (2^53 - 1)",
        ("a large `n`, or a counter set near the limit",),
        _CONTROL,
        next_action="{next}: `tick get`, then advance by less or `tick set` a smaller `n`",
        reject_class=_R.CONFLICT,
    ),
    "control-rate": _Entry(
        "more control requests per second from this operator than `server.control_rate_per_s` "
        "(burst `server.control_burst`)",
        ("a script calling in a loop without waiting",),
        _CONTROL,
        reject_class=_R.RATE_LIMITED,
    ),
    "store-unavailable": _Entry(
        "the store failed while running the command; nothing was changed",
        ("the database is down, full or locked (`/readyz` `checks.store`)",),
        _CONTROL,
        next_action="{next}; check `/readyz` `checks.store`",
        reject_class=_R.UNAVAILABLE,
    ),
    "room-unavailable": _Entry(
        "the room is full or reloading and cannot take the change now",
        ("server overload: investigate capacity/backpressure and retry policy",),
        _CONTROL,
        reject_class=_R.UNAVAILABLE,
    ),
}

# -- auth reasons ------------------------------------------------------------------------
# Closed with 4003 (expired: 4002) on a data connection; the code of an `unauthenticated`
# reject on the control plane.

_AUTH: dict[AuthReason, _Entry] = {
    AuthReason.EXPIRED: _Entry(
        "the token's `exp` has passed",
        (
            "token expired",
            "a token lifetime shorter than the session, or a minting host's clock behind",
        ),
        _CONNECT,
        close=int(CloseCode.TOKEN_EXPIRED),
    ),
    AuthReason.BAD_SIGNATURE: _Entry(
        "the signature does not verify with the key of the token's `kid`",
        ("minted with another server's key or an old secret", "the token was altered"),
        _CONNECT,
        next_action="mint it with this server's keys; `roomsync token inspect` says whether "
        "this server verifies it",
    ),
    AuthReason.UNKNOWN_KID: _Entry(
        "the token's `kid` names no key this server holds",
        ("a key rotated out of `[auth] keys`", "a token of another deployment"),
        _CONNECT,
        next_action="keep old kids in `[auth] keys` while their tokens live, or mint a new token",
    ),
    AuthReason.WRONG_ROOM: _Entry(
        "token not valid for room: its `room` claim does not match",
        ("a token minted for another room or prefix",),
        _CONNECT,
        next_action="mint a token whose `room` is this room, a `prefix*` of it, or `*`",
    ),
    AuthReason.MALFORMED: _Entry(
        "not a JWT: bad base64url, not JSON, wrong segments or claim types",
        ("the token was truncated, quoted or wrapped on the way", "a hand-made token"),
        _CONNECT,
        next_action="send the token exactly as `roomsync token mint` printed it",
    ),
    AuthReason.LOCKED: _Entry(
        "the room is locked: it admits only valid tokens for it, and none was sent",
        ("an anonymous client of a locked room",),
        _CONNECT,
        next_action="send a token for the room in `hello.token`, or `room unlock` it",
    ),
    AuthReason.ANONYMOUS_DISABLED: _Entry(
        "anonymous access is disabled: a token is needed",
        ("a client without a token, and no `policy.anonymous_caps`",),
        _CONNECT,
        next_action="send a token in `hello.token`, or grant `policy.anonymous_caps`",
    ),
    AuthReason.REVOKED: _Entry(
        "the token was revoked (`room revoke` by `sub` or `jti`)",
        ("an operator revoked it, or every token of its `sub`",),
        _CONNECT,
        next_action="get a new token; `roomsync token inspect` shows its `sub` and `jti`",
    ),
    AuthReason.MISSING_CLAIM: _Entry(
        "the token lacks its `room` or `caps` claim",
        ("a token minted by another tool",),
        _CONNECT,
        next_action="mint it with `roomsync token mint`, which sets every claim",
    ),
    AuthReason.UNSUPPORTED_ALG: _Entry(
        "the token's `alg` is not HS256",
        ("a token minted by another tool or for another system",),
        _CONNECT,
        next_action="mint an HS256 token (`roomsync token mint`)",
    ),
    AuthReason.NOT_YET_VALID: _Entry(
        "the token's `iat` or `nbf` is further in the future than the allowed skew",
        ("the minting host's clock is ahead",),
        _CONNECT,
        next_action="fix the clock of the host that mints tokens (NTP)",
    ),
    AuthReason.APP: _Entry(
        "the app's `authorize` hook refused the hello, or failed or passed its budget "
        "(fail closed)",
        (
            "the app does not let this user into this room",
            "the app's hook raised or was slower than `app.budget_ms`: see "
            '`roomsync_hook_calls_total{hook="authorize"}` and the server log',
        ),
        _CONNECT,
        next_action="read the message after `auth: `; for a hook failure, the server log",
    ),
    AuthReason.OTHER: _Entry(
        "a token check that fits no other reason",
        ("see the message after `auth: `",),
        _CONNECT,
        next_action="read the message after `auth: ` and the server log",
    ),
}


# -- building the table ------------------------------------------------------------------


def _close_code(code: int) -> CloseCode | None:
    try:
        return CloseCode(code)
    except ValueError:
        return None


def close_next_action(code: int) -> str:
    """The next action after close ``code``, whatever the code (the SDK's errors use it).

    A :class:`~.codes.CloseCode`: :data:`~.codes.CLOSE_ACTIONS`. A code of RFC 6455 or
    the IANA registry: its entry here. Anything else: look it up, then retry.
    """
    known = _close_code(code)
    if known is not None:
        return CLOSE_ACTIONS[known]
    entry = _CLOSE.get(code)
    if entry is not None and entry.next_action is not None:
        return entry.next_action
    return (
        f"close code {code} is not one roomsync or RFC 6455 defines: check the proxy or "
        "library in between, then retry with backoff"
    )


def _next_action(text: str | None, close: int | None, klass: RejectClass | None) -> str:
    """``text`` with ``{next}`` filled in, or (None) the action of ``close`` or ``klass``."""
    if close is not None:
        base = close_next_action(close)
    elif klass is not None:
        base = klass.next_action
    else:
        base = ""
    if not base and (text is None or "{next}" in text):
        raise ValueError(f"no close code or reject class to take the next action of: {text!r}")
    return base if text is None else text.replace("{next}", base)


def _build() -> tuple[Explanation, ...]:
    out: list[Explanation] = []
    for number, entry in sorted(_CLOSE.items()):
        known = _close_code(number)
        if (known is None) == (entry.next_action is None):
            # A CloseCode's action is CLOSE_ACTIONS' (one place); the others carry theirs.
            raise ValueError(f"close {number}: next action in the wrong table")
        out.append(
            Explanation(
                str(number),
                Kind.CLOSE,
                entry.meaning,
                entry.causes,
                close_next_action(number),
                entry.runbook,
                client_action=close_action(number),
            )
        )
    for code, entry in _ERROR.items():
        out.append(_explanation(str(code), Kind.ERROR, entry))
    reject_codes = [_explanation(code, Kind.REJECT_CODE, e) for code, e in _REJECT_CODE.items()]
    auth = [
        _explanation(str(reason), Kind.AUTH_REASON, e, _R.UNAUTHENTICATED)
        for reason, e in _AUTH.items()
    ]
    for klass, entry in _REJECT_CLASS.items():
        if entry.next_action is not None:
            raise ValueError(f"reject class {klass}: its next action is RejectClass'")
        codes = [e for e in reject_codes + auth if e.reject_class is klass]
        out.append(
            Explanation(
                str(klass),
                Kind.REJECT_CLASS,
                entry.meaning,
                # The causes are its codes: a code added to the table shows up here.
                tuple(f"`{e.code}`: {e.meaning}" for e in codes) or entry.causes,
                klass.next_action,
                entry.runbook,
                reject_class=klass,
            )
        )
    out += reject_codes + auth
    return tuple(out)


def _explanation(
    code: str, kind: Kind, entry: _Entry, reject_class: RejectClass | None = None
) -> Explanation:
    klass = entry.reject_class or reject_class
    close = entry.close
    if kind is Kind.AUTH_REASON and close is None:
        close = int(CloseCode.FORBIDDEN)  # every refused token but an expired one
    return Explanation(
        code,
        kind,
        entry.meaning,
        entry.causes,
        _next_action(entry.next_action, close, klass),
        entry.runbook,
        close=close,
        reject_class=klass,
    )


TABLE: tuple[Explanation, ...] = _build()
"""Every explanation, grouped by kind in :class:`Kind` order (close codes by number)."""

_BY_CODE: Mapping[str, tuple[Explanation, ...]] = MappingProxyType(
    {
        code: tuple(e for e in TABLE if e.code == code)
        for code in dict.fromkeys(e.code for e in TABLE)
    }
)


def _normal(code: str | int) -> str:
    return str(code).strip().lower().replace("_", "-")


def explain(code: str | int, kind: Kind | None = None) -> tuple[Explanation, ...]:
    """Every explanation of ``code`` (of ``kind`` only, if given); empty when unknown.

    ``code`` is matched without case, ``_`` as ``-``: ``RESYNC_REQUIRED`` finds
    ``resync-required``.
    """
    found = _BY_CODE.get(_normal(code), ())
    return tuple(e for e in found if kind is None or e.kind is kind)


def known_codes(kind: Kind | None = None) -> tuple[str, ...]:
    """Every explained code (of ``kind``), in table order, each once."""
    return tuple(dict.fromkeys(e.code for e in TABLE if kind is None or e.kind is kind))


def suggest(code: str | int, n: int = 5) -> list[str]:
    """The known codes closest to an unknown ``code`` (:func:`difflib.get_close_matches`)."""
    return difflib.get_close_matches(_normal(code), known_codes(), n=n, cutoff=0.5)


def related(e: Explanation) -> tuple[str, ...]:
    """Codes that come with ``e``: its close code and reject class, the error codes sent
    before a close code, the auth reasons behind ``auth``."""
    out: list[str] = []
    if e.close is not None:
        out.append(str(e.close))
    if e.reject_class is not None and e.kind is not Kind.REJECT_CLASS:
        out.append(str(e.reject_class))
    if e.kind is Kind.CLOSE:
        out += [x.code for x in TABLE if x.kind is Kind.ERROR and x.close == int(e.code)]
    if e.kind is Kind.AUTH_REASON:
        out.append(str(ErrorCode.AUTH))
    if e.code == ErrorCode.AUTH:
        out += [str(r) for r in AuthReason]
    return tuple(dict.fromkeys(out))


# -- docs/codes.md -----------------------------------------------------------------------


def _cell(text: str | None) -> str:
    return "—" if not text else text.replace("|", "\\|").replace("\n", " ")


def _runbook_link(section: str | None) -> str:
    if section is None:
        return "—"
    anchor = "".join(c for c in section.lower() if c.isalnum() or c in " -").replace(" ", "-")
    return f"[{section}](operations.md#{anchor})"


def _rows(head: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    names = list(head)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def markdown() -> str:
    """``docs/codes.md``: the whole table (``roomsync explain --markdown``)."""
    by_kind = {kind: [e for e in TABLE if e.kind is kind] for kind in Kind}

    def causes(e: Explanation) -> str:
        return "; ".join(e.causes)

    lines = [
        "# Codes",
        "",
        "<!-- Generated from roomsync.core.explain: roomsync explain --markdown > "
        "docs/codes.md -->",
        "",
        "What every close code, error code, reject class, reject code and auth reason "
        "means, its likely causes and the next action. `roomsync explain CODE` prints one "
        "(`--json` for tools, `--list` for all); this page is generated from the same "
        "table (`roomsync.core.explain`), and `tests/cli/test_explain.py` fails when they "
        "disagree. The runbook sections are those of [operations.md](operations.md).",
        "",
        "## Close codes",
        "",
        "`client` is what the SDK does by itself (`roomsync.core.reconnect`): `retry` "
        "after a jittered backoff, `resync`, `refresh-token`, or `stop`.",
        "",
        *_rows(
            ["code", "meaning", "likely causes", "next action", "client", "runbook"],
            (
                [
                    e.code,
                    e.meaning,
                    causes(e),
                    e.next_action,
                    f"`{e.client_action}`",
                    _runbook_link(e.runbook),
                ]
                for e in by_kind[Kind.CLOSE]
            ),
        ),
        "",
        "## Error codes",
        "",
        "Sent as `error{code, message}` (before every non-normal close) and in `ack` refusals.",
        "",
        *_rows(
            ["code", "meaning", "likely causes", "next action", "close", "runbook"],
            (
                [
                    f"`{e.code}`",
                    e.meaning,
                    causes(e),
                    e.next_action,
                    str(e.close) if e.close else "—",
                    _runbook_link(e.runbook),
                ]
                for e in by_kind[Kind.ERROR]
            ),
        ),
        "",
        "## Reject classes",
        "",
        'A control-plane refusal: `{"ok": false, "reject": {"class", "code", '
        '"message", "field"?, "required"?, "next"}}` (SPEC §6).',
        "",
        *_rows(
            ["class", "HTTP", "meaning", "next action", "codes"],
            (
                [
                    f"`{e.code}`",
                    str(e.http_status),
                    e.meaning,
                    e.next_action,
                    ", ".join(
                        f"`{x.code}`"
                        for x in TABLE
                        if x.kind is Kind.REJECT_CODE and x.reject_class is e.reject_class
                    ),
                ]
                for e in by_kind[Kind.REJECT_CLASS]
            ),
        ),
        "",
        "## Reject codes",
        "",
        *_rows(
            ["code", "class", "meaning", "likely causes", "next action"],
            (
                [f"`{e.code}`", f"`{e.reject_class}`", e.meaning, causes(e), e.next_action]
                for e in by_kind[Kind.REJECT_CODE]
            ),
        ),
        "",
        "## Auth reasons",
        "",
        "Why a token was refused: the message `auth: <why>` of error `auth` (closed with "
        "4003, expired 4002), the `outcome` label of `roomsync_auth_total`, and the `code` "
        "of an `unauthenticated` control-plane reject.",
        "",
        *_rows(
            ["reason", "meaning", "likely causes", "next action", "close"],
            (
                [f"`{e.code}`", e.meaning, causes(e), e.next_action, str(e.close)]
                for e in by_kind[Kind.AUTH_REASON]
            ),
        ),
        "",
    ]
    return "\n".join(lines)
