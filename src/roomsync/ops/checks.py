"""The doctor's steps and their rules: observation -> verdict, cause, next action (pure).

:data:`STEPS` is the runbook's triage order (``shared/seed/troubleshooting-runbook.txt``,
"Start with this triage order") as data: one :class:`Step` per thing ``roomsync doctor``
observes, in the order it reports them, each in the :class:`Group` of its triage line.
A step's :attr:`Step.rule` reads what :mod:`roomsync.ops.probe` observed (a JSON-able
mapping: HTTP status, close code, error code, reject, latencies, ...) and returns a
:class:`Verdict`: pass / fail / skipped, a one-line summary of what was seen and, on
failure, the likely cause, the next action and the runbook's own lines for it
(:data:`RUNBOOK`, quoted verbatim; ``tests/ops/test_checks.py`` checks them against the
runbook).

What a code means comes from the one table, :mod:`roomsync.core.explain` (close codes,
error codes, auth reasons, reject classes and codes); the rules only add what the probe
knows besides the code (the doctor encodes packs with roomsync's own codec, so a
``malformed-pack`` answer means the bytes changed on the way).

No I/O, no clock: rules are functions of their observation, so every verdict can be
tested without a server. :func:`canary_checks` folds a :class:`Report` into the canary's
pass/fail checks (handshake, sync, blob flow, one control command per family).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..core.codes import CLOSE_ACTIONS, AuthReason, CloseCode, ErrorCode
from ..core.explain import Explanation, Kind, explain
from ..redaction import redact, redact_text

Observation = Mapping[str, Any]


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skipped"


class Group(StrEnum):
    """A line of the runbook's triage order (and the probe's own cleanup)."""

    HEALTH = "health"
    CONNECT = "connect"
    SYNC = "sync"
    BLOBS = "blobs"
    CONTROL = "control"
    CLEANUP = "cleanup"

    @property
    def heading(self) -> str:
        """The runbook's triage line of this group."""
        return _GROUP_TITLES[self]


# -- the runbook's words -----------------------------------------------------------------


class RUNBOOK:
    """Lines of the runbook, verbatim (the seed text; a test checks each one)."""

    TRIAGE_HEALTH = "Check server health and metrics reachability"
    TRIAGE_CONNECT = "Verify WebSocket connectivity and auth outcomes"
    TRIAGE_SYNC = "Confirm room sync progression (pack/request/reconcile)"
    TRIAGE_BLOBS = "Inspect blob availability and upload verification outcomes"
    TRIAGE_CONTROL = "Validate control-plane command authorization and payload shape"
    ROUTE = "Check bind/listener route and proxy upgrade support (/ws/:room_id)"
    TLS = "Verify TLS/wss:// config and cert trust chain"
    HANDSHAKE = "Inspect handshake errors (expected hello, auth: ...)"
    TOKEN = "Confirm token is valid for room and not expired"
    CLOSE_CODES = "Review close codes (4002, 4008, 4001, 1011)"
    PACKS = "Confirm peers exchange pack and request as expected"
    MALFORMED = "Check for malformed pack errors (bad base64, bad postcard)"
    SUBSCRIPTION = "Verify subscription scope is not unintentionally filtering required paths"
    HASH = "Compare canonical hash behavior using replay workflows"
    RESYNC = "Look for frequent resync-required disconnect patterns"
    BLOB_INTEGRITY = "Verify blob-upload hash/data integrity"
    DIRECT = "For direct blob I/O, check capability negotiation and URL grant path"
    DENIED = "Distinguish upload-denied (fallback path) vs upload-rejected (verify failed)"
    AVAILABLE = "Confirm blob-available broadcasts and follow-up blob-request behavior"
    BACKEND = "Validate storage backend permissions and object availability"
    CAPS = "Confirm capability scopes for command family (archive/query/topology/tick/policy/room)"
    PAYLOAD = "Validate required payload fields and value constraints"
    PRECONDITIONS = (
        "Check preconditions (query spec exists, proposal validated, lineage checkpoint valid)"
    )
    REJECT = "Parse reject reason class for deterministic next action"
    LISTENER = "Confirm listener and route exposure"
    HELLO = "Run a known-good client hello"
    WELCOME = "Inspect initial welcome envelope and negotiated caps"
    LOCKED = "Verify token/capability state for locked rooms"
    MINIMAL_SCOPE = "Re-run with minimal subscription scope to isolate filter behavior"
    REPLAY = "Use replay evidence to validate deterministic state"
    TRACE = "Trace request path (blob-upload/request-upload/blob-uploaded)"
    RELAY = "Confirm availability relay and consumer fetch path"
    PERMISSIONS = "Validate backing store read/write permissions"
    CAP_REQUIRED = "Check capability required for command"
    RETRY_SCOPED = "Retry with operator token scoped to exact required capability"

    #: "Close codes and what they usually mean", one line per code.
    CLOSES: Mapping[int, str] = {
        4001: "4001 resync required: peer fell behind or stream budget issue; perform full resync",
        4002: "4002 token expired: refresh token and reconnect",
        4008: "4008 rate limit exceeded: tune client send behavior and/or ingress limits",
        1011: "1011 server overload: investigate capacity/backpressure and retry policy",
    }

    @classmethod
    def lines(cls) -> tuple[str, ...]:
        """Every quoted line (for the test that finds each one in the runbook)."""
        out = [v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str)]
        return (*out, *cls.CLOSES.values())


_GROUP_TITLES = {
    Group.HEALTH: RUNBOOK.TRIAGE_HEALTH,
    Group.CONNECT: RUNBOOK.TRIAGE_CONNECT,
    Group.SYNC: RUNBOOK.TRIAGE_SYNC,
    Group.BLOBS: RUNBOOK.TRIAGE_BLOBS,
    Group.CONTROL: RUNBOOK.TRIAGE_CONTROL,
    Group.CLEANUP: "Clean up what the probe wrote",
}

# -- verdicts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a step concluded. ``summary``: what was observed, in one line; on failure
    ``cause`` (the likely cause), ``next_action``, ``runbook`` (its lines for this, verbatim)
    and ``codes`` (to look up with ``roomsync explain``)."""

    status: Status
    summary: str
    cause: str | None = None
    next_action: str | None = None
    runbook: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()


def passed(summary: str) -> Verdict:
    return Verdict(Status.PASS, summary)


def skipped(summary: str) -> Verdict:
    return Verdict(Status.SKIP, summary)


def failed(
    summary: str,
    cause: str,
    next_action: str,
    runbook: Sequence[str] = (),
    codes: Sequence[str] = (),
) -> Verdict:
    return Verdict(
        Status.FAIL,
        summary,
        cause,
        next_action,
        tuple(dict.fromkeys(runbook)),
        tuple(dict.fromkeys(c for c in codes if c)),
    )


Rule = Callable[[Observation], Verdict]


@dataclass(frozen=True, slots=True)
class Step:
    """One thing the doctor observes: its id, triage group, title and rule. ``canary``
    is the canary check it counts towards."""

    id: str
    group: Group
    title: str
    rule: Rule
    canary: str


@dataclass(frozen=True, slots=True)
class StepResult:
    step: Step
    verdict: Verdict
    observed: Mapping[str, Any] = field(default_factory=dict)
    ms: float | None = None

    @property
    def status(self) -> Status:
        return self.verdict.status

    def to_json(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "id": self.step.id,
            "group": str(self.step.group),
            "title": self.step.title,
            "status": str(v.status),
            "summary": v.summary,
            "cause": v.cause,
            "next_action": v.next_action,
            "runbook": list(v.runbook),
            "codes": list(v.codes),
            "ms": None if self.ms is None else round(self.ms, 2),
            "observed": dict(self.observed),
        }


# -- explanations of what was observed -------------------------------------------------------

_AUTH_MESSAGES: tuple[tuple[str, AuthReason], ...] = (
    ("token expired", AuthReason.EXPIRED),
    ("not valid for room", AuthReason.WRONG_ROOM),
    ("is locked", AuthReason.LOCKED),
    ("revoked", AuthReason.REVOKED),
    ("anonymous access is disabled", AuthReason.ANONYMOUS_DISABLED),
    ("bad signature", AuthReason.BAD_SIGNATURE),
    ("unknown kid", AuthReason.UNKNOWN_KID),
    ("malformed token", AuthReason.MALFORMED),
    ("missing claim", AuthReason.MISSING_CLAIM),
    ("unsupported algorithm", AuthReason.UNSUPPORTED_ALG),
    ("not yet valid", AuthReason.NOT_YET_VALID),
)


def auth_reason(message: object, close: object = None, reason: object = None) -> AuthReason:
    """Why a hello's token was refused, from its ``error{code:"auth"}``.

    The error's ``reason`` field (``AuthReason``, e.g. ``token-expired``) says it; from
    servers that send only the message (``auth: token expired``), it is read from the
    wording (``roomsync.auth.tokens`` and ``core.handshake``). Close 4002 always means
    expired.
    """
    if isinstance(reason, str):
        try:
            return AuthReason(reason)
        except ValueError:
            pass
    if close == int(CloseCode.TOKEN_EXPIRED):
        return AuthReason.EXPIRED
    text = message.lower() if isinstance(message, str) else ""
    for needle, found in _AUTH_MESSAGES:
        if needle in text:
            return found
    return AuthReason.OTHER


def _one(code: object, kind: Kind) -> Explanation | None:
    if code is None or code == "":
        return None
    found = explain(str(code), kind)
    return found[0] if found else None


def explanation_of(obs: Observation) -> Explanation | None:
    """The most precise explanation of what ended a step: the auth reason of an ``auth``
    error, else the error code, else the close code."""
    code = obs.get("error_code")
    if code == ErrorCode.AUTH:
        reason = auth_reason(obs.get("error_message"), obs.get("close"), obs.get("error_reason"))
        return _one(reason, Kind.AUTH_REASON)
    return _one(code, Kind.ERROR) or _one(obs.get("close"), Kind.CLOSE)


def describe(obs: Observation) -> str:
    """What ended a step, for a summary: ``error rate-limited: "..." then close 4008``."""
    parts = []
    if obs.get("error_code"):
        message = obs.get("error_message")
        parts.append(f"error {obs['error_code']}" + (f': "{message}"' if message else ""))
    if obs.get("close") is not None:
        parts.append(f"close {obs['close']}")
    if obs.get("timeout_s") is not None and not parts:
        parts.append(f"no answer within {obs['timeout_s']:g} s")
    if obs.get("error") and not parts:
        parts.append(str(obs["error"]))
    return " then ".join(parts) or "no answer"


def _ended(obs: Observation) -> bool:
    """True when the observation records an error frame, a close or no answer."""
    return any(obs.get(k) not in (None, "") for k in ("error_code", "close", "timeout_s", "error"))


def code_failure(obs: Observation, what: str, runbook: Sequence[str] = ()) -> Verdict:
    """A failure explained by the code(s) observed, from :mod:`roomsync.core.explain`;
    no code (a timeout, a transport error): said as such."""
    e = explanation_of(obs)
    close = obs.get("close")
    lines = list(runbook)
    if isinstance(close, int) and close in RUNBOOK.CLOSES:
        lines.append(RUNBOOK.CLOSES[close])
    if isinstance(close, int):
        lines.append(RUNBOOK.CLOSE_CODES)
    summary = f"{what}: {describe(obs)}"
    if e is None:
        if obs.get("timeout_s") is not None:
            return failed(
                summary,
                f"no answer within {obs['timeout_s']:g} s: the server, or a proxy in front, "
                "holds or drops frames",
                "look for the session in the server log (`session.*` events) and at the "
                "proxy's buffering and timeouts; retry with a longer --timeout",
                lines,
            )
        return failed(
            summary,
            f"the connection failed: {obs.get('error') or 'dropped without a close code'}",
            "check the network and any proxy in between, then retry",
            lines,
        )
    cause = e.meaning
    # An auth reason's meaning is already precise; elsewhere the first cause is often the
    # runbook's own words ("rate limit exceeded: tune client send behavior ...").
    if e.kind is not Kind.AUTH_REASON and e.causes and e.causes[0] not in cause:
        cause = f"{cause} (likely: {e.causes[0]})"
    codes = [str(obs.get("error_code") or ""), str(close) if close is not None else ""]
    if e.kind is Kind.AUTH_REASON:
        codes.insert(0, e.code)
    return failed(summary, cause, e.next_action, lines, codes)


def _ms(obs: Observation, key: str = "ms") -> str:
    value = obs.get(key)
    return f" in {value:.0f} ms" if isinstance(value, int | float) else ""


# -- 1. health -----------------------------------------------------------------------------


def _unreachable(obs: Observation, what: str) -> Verdict:
    return failed(
        f"{what} failed: {obs.get('error')}",
        "the server is not reachable at this address: nothing listens there, a firewall, "
        "or a wrong host or port",
        "check that `roomsync serve` runs and listens on that host and port "
        "(`server.host`, `server.port`) and what sits in front of it",
        (RUNBOOK.LISTENER, RUNBOOK.TRIAGE_HEALTH),
    )


def _not_roomsync(obs: Observation, what: str) -> Verdict:
    status = obs.get("status")
    if status == 404:
        cause = (
            "no roomsync answers this path: a wrong base path or port in the URL, or a "
            "proxy that does not forward it"
        )
    elif status in (502, 503, 504):
        cause = f"HTTP {status}: a proxy in front cannot reach the node behind it"
    else:
        cause = f"HTTP {status}: something other than roomsync answers"
    return failed(
        f"{what} answered HTTP {status}",
        cause,
        "use the node's base URL (`http(s)://host:port`, or the prefix the proxy forwards "
        "to it): `curl -fsS $URL/healthz` must answer roomsync's JSON",
        (RUNBOOK.LISTENER, RUNBOOK.ROUTE),
    )


def rule_healthz(obs: Observation) -> Verdict:
    if obs.get("error"):
        return _unreachable(obs, "GET /healthz")
    if obs.get("status") != 200 or not obs.get("roomsync"):
        return _not_roomsync(obs, "GET /healthz")
    if obs.get("draining"):
        e = _one(int(CloseCode.RESTARTING), Kind.CLOSE)
        assert e is not None
        return failed(
            "GET /healthz 200, but the node is draining",
            e.meaning,
            e.next_action,
            (RUNBOOK.TRIAGE_HEALTH,),
            ("1012", str(ErrorCode.DRAINING)),
        )
    return passed(
        f"GET /healthz 200{_ms(obs)}: version {obs.get('version')}, node {obs.get('node')}, "
        f"{obs.get('connections')} connections, {obs.get('rooms')} rooms"
    )


_READY_NEXT = {
    "store": "read `checks.store.error` (disk full, I/O error, lost database connection) and "
    "the `store.*` log events; the check passes again without a restart once a write fits",
    "blobs": "check the blob backend's permissions and space (`checks.blobs.reason`: "
    "`permission-denied`, `no-space`, `missing-bucket`, `unavailable`), "
    '`roomsync_blob_ops_total{outcome="error"}` and the `blob.backend_error` log events',
    "bus": "check the bus connection (`checks.bus.error`) and the bus server itself",
    "draining": "the node is draining (`topology drain` or shutdown): "
    + CLOSE_ACTIONS[CloseCode.RESTARTING],
}


def rule_readyz(obs: Observation) -> Verdict:
    if obs.get("error"):
        return _unreachable(obs, "GET /readyz")
    checks = obs.get("checks")
    if obs.get("status") not in (200, 503) or not isinstance(checks, Mapping):
        return _not_roomsync(obs, "GET /readyz")
    failing: list[str] = []
    details: list[str] = []
    for name, check in checks.items():
        if name == "draining":
            if check:
                failing.append("draining")
                details.append("draining")
            continue
        if isinstance(check, Mapping) and not check.get("ok"):
            failing.append(str(name))
            reason = check.get("reason")
            error = check.get("error")
            details.append(
                f"{name} ({check.get('backend')}): "
                + (f"{reason}: " if reason else "")
                + str(error or "failed")
            )
    if obs.get("status") == 200 and not failing:
        listed = ", ".join(
            f"{name} {check.get('backend')}"
            for name, check in checks.items()
            if isinstance(check, Mapping)
        )
        return passed(f"GET /readyz 200{_ms(obs)}: {listed} ok")
    if not failing:
        failing, details = ["unknown"], ["503 without a failing check"]
    runbook = [RUNBOOK.TRIAGE_HEALTH]
    if "blobs" in failing:
        runbook += [RUNBOOK.BACKEND, RUNBOOK.PERMISSIONS]
    return failed(
        f"GET /readyz {obs.get('status')}: failing {', '.join(failing)}",
        "readiness check failing: " + "; ".join(details),
        "; ".join(_READY_NEXT.get(name, "read `/readyz` and the server log") for name in failing),
        runbook,
    )


def rule_metrics(obs: Observation) -> Verdict:
    if obs.get("error"):
        return _unreachable(obs, "GET /metrics")
    if obs.get("status") != 200:
        return _not_roomsync(obs, "GET /metrics")
    if obs.get("parse_error") or not obs.get("roomsync_families"):
        return failed(
            "GET /metrics 200 but not roomsync's Prometheus exposition",
            f"the body is not Prometheus text with `roomsync_*` metrics: "
            f"{obs.get('parse_error') or 'no roomsync_ family'}",
            "point the URL at the node itself (`curl -fsS $URL/metrics | head`), not at a "
            "proxy page",
            (RUNBOOK.TRIAGE_HEALTH,),
        )
    return passed(
        f"GET /metrics 200{_ms(obs)}: {obs.get('roomsync_families')} roomsync_* metric families"
    )


# -- 2. connect ----------------------------------------------------------------------------


def rule_tls(obs: Observation) -> Verdict:
    e = _one(1015, Kind.CLOSE)
    assert e is not None
    if obs.get("verify_message") is not None:
        return failed(
            f"TLS handshake failed: certificate verify failed: {obs['verify_message']}",
            f"the certificate is not trusted ({obs['verify_message']}): {e.causes[0]}",
            f"{e.next_action}; a private CA: give its certificate with --cafile "
            "(`openssl s_client -connect host:port -showcerts` shows the chain)",
            (RUNBOOK.TLS,),
            ("1015",),
        )
    if obs.get("ssl_error"):
        return failed(
            f"TLS handshake failed: {obs['ssl_error']}",
            f"no TLS handshake: {e.causes[1]}",
            "use `ws://`/`http://` for a plain port and `wss://`/`https://` for one that "
            "serves `server.tls_cert`",
            (RUNBOOK.TLS,),
            ("1015",),
        )
    if obs.get("error"):
        return skipped(f"no TCP connection for TLS ({obs['error']}): see health.healthz")
    return passed(
        f"{obs.get('version')} with {obs.get('cipher')}{_ms(obs)}: certificate for "
        f"{obs.get('subject')} from {obs.get('issuer')}, valid until {obs.get('not_after')}"
    )


def _route_missing(obs: Observation, what: str) -> Verdict:
    return failed(
        f"{what} answered HTTP 404",
        "no `/ws/{room}` route at this URL: a wrong path prefix or port, or a proxy that "
        "does not forward `/ws/`",
        "use the node's base URL; a proxy must forward `/ws/` with the `Upgrade`/"
        '`Connection` headers (docs/operations.md, "Running")',
        (RUNBOOK.ROUTE, RUNBOOK.LISTENER),
    )


def rule_route(obs: Observation) -> Verdict:
    what = f"plain GET {obs.get('path', '/ws/{room}')}"
    if obs.get("error"):
        return _unreachable(obs, what)
    status = obs.get("status")
    if status == 426:
        return passed(f"{what} answered 426 Upgrade Required{_ms(obs)}: the route reaches roomsync")
    if status == 404:
        return _route_missing(obs, what)
    return failed(
        f"{what} answered HTTP {status}",
        f"HTTP {status} instead of roomsync's 426: "
        + (
            "a proxy in front cannot reach the node"
            if status in (502, 503, 504)
            else "something other than roomsync answers `/ws/`"
        ),
        'route `/ws/` to the node (docs/operations.md, "Running")',
        (RUNBOOK.ROUTE, RUNBOOK.LISTENER),
    )


def rule_upgrade(obs: Observation) -> Verdict:
    what = f"WebSocket upgrade of {obs.get('path', '/ws/{room}')}"
    if obs.get("error"):
        return _unreachable(obs, what)
    status = obs.get("status")
    if status == 101:
        return passed(f"101 Switching Protocols{_ms(obs)}")
    if status == 426:
        return failed(
            f"{what} answered 426 Upgrade Required",
            "the `Upgrade` header did not reach roomsync: the server saw a plain GET, so a "
            "proxy in front strips `Upgrade`/`Connection`",
            "make the proxy forward `/ws/` as a WebSocket: HTTP/1.1 with the `Upgrade` and "
            "`Connection: upgrade` headers passed on (nginx: `proxy_http_version 1.1; "
            "proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection upgrade;`)",
            (RUNBOOK.ROUTE,),
        )
    if status == 404:
        return _route_missing(obs, what)
    return failed(
        f"{what} answered HTTP {status}",
        f"the upgrade was refused with HTTP {status}"
        + (": a proxy in front cannot reach the node" if status in (502, 503, 504) else ""),
        "compare with `curl -i -H 'Connection: Upgrade' -H 'Upgrade: websocket' "
        "-H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' "
        "$URL/ws/ROOM`, which must answer 101",
        (RUNBOOK.ROUTE, RUNBOOK.LISTENER),
    )


def rule_hello(obs: Observation) -> Verdict:
    if obs.get("welcome"):
        return passed(f"welcome{_ms(obs)}")
    if obs.get("error_code") == ErrorCode.AUTH:
        return passed(
            f"the server answered the hello{_ms(obs)}: refused by auth "
            f'("{obs.get("error_message")}", close {obs.get("close")}): see connect.token'
        )
    return code_failure(obs, "hello refused", (RUNBOOK.HELLO, RUNBOOK.HANDSHAKE))


#: Caps the probe needs to walk the sync steps.
PROBE_CAPS = ("read", "write")


def rule_welcome(obs: Observation) -> Verdict:
    if obs.get("malformed"):
        return failed(
            "the welcome envelope is malformed",
            f"the welcome breaks SPEC §2: {obs['malformed']}",
            "stop and fix the server, or whatever rewrites its frames (compare with "
            "`vectors/envelopes.json`)",
            (RUNBOOK.WELCOME,),
        )
    caps = list(obs.get("caps") or ())
    summary = (
        f"session {obs.get('session')}, peer {obs.get('peer')}, node {obs.get('node')}, "
        f"actor {obs.get('actor')}; caps {' '.join(caps) or '(none)'}; head {obs.get('head')}, "
        f"heartbeat {obs.get('heartbeat_ms')} ms"
    )
    missing = [cap for cap in PROBE_CAPS if cap not in caps]
    if missing:
        e = _one(ErrorCode.FORBIDDEN, Kind.ERROR)
        assert e is not None
        return failed(
            summary,
            f"the session lacks {', '.join(missing)}: {e.causes[0]}",
            e.next_action,
            (RUNBOOK.WELCOME, RUNBOOK.LOCKED),
            (str(ErrorCode.FORBIDDEN),),
        )
    if not obs.get("catchup_done"):
        return failed(
            summary + "; no catch-up",
            f"the catch-up after the welcome did not end (no `pack{{done}}`) within "
            f"{obs.get('timeout_s', 0):g} s",
            "look for the session in the server log and at `roomsync_outbound_queue_bytes`",
            (RUNBOOK.WELCOME, RUNBOOK.PACKS),
        )
    return passed(summary + f"; catch-up done{_ms(obs, 'catchup_ms')}")


def _token_detail(reason: AuthReason, obs: Observation) -> str:
    claims = obs.get("claims")
    if not isinstance(claims, Mapping):
        return ""
    if reason is AuthReason.EXPIRED and isinstance(obs.get("expires_in_s"), int):
        return f" (its `exp` passed {-int(obs['expires_in_s'])} s ago)"
    if reason is AuthReason.WRONG_ROOM:
        return f" (claim `room` is {claims.get('room')!r}, the room is {obs.get('room')!r})"
    if reason is AuthReason.REVOKED:
        return f" (sub {claims.get('sub')!r}, jti {claims.get('jti')!r})"
    return ""


def rule_token(obs: Observation) -> Verdict:
    if obs.get("welcome"):
        if not obs.get("token_given"):
            return passed(
                f"no token: admitted anonymously with caps {' '.join(obs.get('caps') or ())}"
            )
        claims = obs.get("claims")
        sub = claims.get("sub") if isinstance(claims, Mapping) else None
        room = claims.get("room") if isinstance(claims, Mapping) else None
        left = obs.get("expires_in_s")
        return passed(
            f"token accepted: sub {sub!r}, room claim {room!r}"
            + (f", expires in {left} s" if isinstance(left, int) else ", no expiry")
        )
    if obs.get("error_code") != ErrorCode.AUTH:
        return skipped("the hello failed before the token was checked: see connect.hello")
    reason = auth_reason(obs.get("error_message"), obs.get("close"), obs.get("error_reason"))
    verdict = code_failure(obs, "hello refused", (RUNBOOK.TOKEN, RUNBOOK.LOCKED))
    if reason is AuthReason.LOCKED:
        lines = (RUNBOOK.LOCKED, RUNBOOK.TOKEN, *verdict.runbook)
    else:
        lines = verdict.runbook
    return failed(
        verdict.summary,
        f"{verdict.cause}{_token_detail(reason, obs)}",
        verdict.next_action or "",
        lines,
        verdict.codes,
    )


# -- 3. sync -------------------------------------------------------------------------------

_MALFORMED_CAUSE = (
    "the server could not decode the probe's pack, which the doctor encodes with roomsync's "
    "own codec (the golden vectors): the bytes changed between the doctor and the server's "
    "decoder (a proxy or middlebox rewriting frames), or the server's decoder is broken"
)


def rule_write(obs: Observation) -> Verdict:
    seq = obs.get("seq")
    if isinstance(seq, int):
        return passed(f"wrote {obs.get('path')}: ack seq {seq}{_ms(obs)}")
    refused = obs.get("refused") or []
    first = refused[0] if refused and isinstance(refused[0], Mapping) else {}
    code = first.get("code") or obs.get("error_code")
    message = first.get("message") or obs.get("error_message")
    if code == ErrorCode.MALFORMED_PACK:
        return failed(
            f"pack refused: malformed-pack: {message}",
            _MALFORMED_CAUSE,
            "compare what the client sent with what the node received (`roomsync control "
            "room capture room=R`) to find what rewrites frames; `roomsync explain "
            "malformed-pack`",
            (RUNBOOK.MALFORMED, RUNBOOK.PACKS),
            (str(ErrorCode.MALFORMED_PACK),),
        )
    if code and obs.get("close") is None:
        merged = {**obs, "error_code": code, "error_message": message}
        return code_failure(merged, "the probe's change was refused", (RUNBOOK.PACKS,))
    return code_failure(obs, "no ack for the probe's pack", (RUNBOOK.PACKS,))


def rule_broadcast(obs: Observation) -> Verdict:
    if obs.get("peer_failed"):
        return code_failure(obs, "the second connection failed", (RUNBOOK.PACKS,))
    seq = obs.get("seq")
    if isinstance(seq, int):
        if obs.get("expected_seq") not in (None, seq):
            return failed(
                f"broadcast with seq {seq}, but the ack said {obs.get('expected_seq')}",
                "the broadcast and the ack disagree on the change's seq",
                "capture the room's window (`roomsync control room capture room=R`) and "
                "report it: seqs are room-wide and gap-free (SPEC §1)",
                (RUNBOOK.PACKS,),
            )
        return passed(f"a second peer received the change (seq {seq}){_ms(obs)}")
    if _ended(obs) and obs.get("timeout_s") is None:
        return code_failure(obs, "the second peer saw no broadcast", (RUNBOOK.PACKS,))
    return failed(
        f"no broadcast to a second peer within {obs.get('timeout_s', 0):g} s",
        "the change was acknowledged but not broadcast to another peer of the room",
        "check `roomsync_deliveries_total` and `roomsync_broadcast_seconds`; on several "
        "nodes, the bus (`/readyz` `checks.bus`)",
        (RUNBOOK.PACKS,),
    )


def rule_request(obs: Observation) -> Verdict:
    if obs.get("found"):
        if obs.get("value_matches") is False:
            return failed(
                "request{paths} answered another value for the probe path",
                "the answer to `request{paths}` is not the change just acknowledged",
                "capture the room's window (`roomsync control room capture room=R`) and "
                "compare the `pack` answers",
                (RUNBOOK.PACKS,),
            )
        return passed(f"request{{paths}} answered the probe's change{_ms(obs)}")
    if _ended(obs) and obs.get("timeout_s") is None:
        return code_failure(obs, "request{paths} failed", (RUNBOOK.PACKS,))
    if obs.get("answered"):
        return failed(
            "request{paths} answered without the probe path",
            "the server's answer misses a change it acknowledged",
            "compare `roomsync control room get room=R` with `request{paths}` and the op log "
            "(`roomsync replay --room R`)",
            (RUNBOOK.PACKS, RUNBOOK.REPLAY),
        )
    return code_failure(obs, "no answer to request{paths}", (RUNBOOK.PACKS,))


def rule_roots(obs: Observation) -> Verdict:
    roots = obs.get("roots")
    if not isinstance(roots, Mapping) or not roots:
        return skipped(
            "no root to compare: "
            + str(obs.get("why") or "needs cap `reconcile` (mst-root) or --operator-token")
        )
    distinct = set(roots.values())
    listed = ", ".join(f"{k} {str(v)[:12]}" for k, v in roots.items())
    if len(distinct) == 1:
        note = f" ({obs['why']})" if obs.get("why") else ""
        return passed(f"{len(roots)} canonical roots agree: {listed}{note}")
    return failed(
        f"canonical roots differ: {listed}",
        "the peers' and the server's canonical hashes differ after the probe's change was "
        "acknowledged and broadcast",
        "`roomsync control room get room=R` gives the durable root; `roomsync replay --room "
        "R` rebuilds it from the op log (exit 1 on mismatch); retry when the room is quiet",
        (RUNBOOK.HASH, RUNBOOK.REPLAY),
    )


def rule_subscribe(obs: Observation) -> Verdict:
    prefixes = list(obs.get("prefixes") or ())
    path = obs.get("path")
    if obs.get("peer_failed"):
        return code_failure(
            obs, f"the connection subscribed to {prefixes} failed", (RUNBOOK.SUBSCRIPTION,)
        )
    delivered = bool(obs.get("delivered"))
    expected = bool(obs.get("expected"))
    answered = obs.get("request_found")
    if delivered and expected:
        return passed(f"the scope {prefixes} delivers the probe path {path}{_ms(obs)}")
    lines = (RUNBOOK.SUBSCRIPTION, RUNBOOK.MINIMAL_SCOPE)
    if not delivered and not expected:
        return failed(
            f"the scope {prefixes} filters the probe path {path}: no broadcast within "
            f"{obs.get('settle_s', 0):g} s of the other peer's"
            + ("; request{paths} still answers it" if answered else ""),
            f"the subscription {prefixes} filters the probe path {path}: a peer with this "
            "scope never gets broadcasts of paths outside it",
            "subscribe to prefixes that cover every path the app needs (`hello.subscribe`, "
            "`subscribe{paths}`), or fetch such paths with `request{paths}`",
            lines,
        )
    if not delivered:
        return failed(
            f"the scope {prefixes} covers {path}, but its broadcast did not arrive within "
            f"{obs.get('settle_s', 0):g} s of the other peer's",
            "the server filtered or dropped a broadcast the subscription covers",
            "capture the room's window (`roomsync control room capture room=R`) and compare "
            "the two peers' `pack` envelopes",
            lines,
        )
    return failed(
        f"the scope {prefixes} does not cover {path}, but its broadcast arrived",
        "the server delivered a change outside the peer's subscription",
        "capture the room's window (`roomsync control room capture room=R`) and report it",
        lines,
    )


def rule_cleanup(obs: Observation) -> Verdict:
    seq = obs.get("seq")
    if isinstance(seq, int):
        return passed(
            f"deleted {obs.get('path')} (a tombstone, seq {seq}: not in the canonical hash)"
        )
    return code_failure(obs, f"could not delete the probe path {obs.get('path')}", (RUNBOOK.PACKS,))


# -- 4. blobs ------------------------------------------------------------------------------

#: ``upload-rejected`` reasons that mean the bytes changed between the doctor and the server.
_INTEGRITY = ("hash-mismatch", "size-mismatch", "bad-base64")
#: Reasons of a blob backend failure (``roomsync.blobs.base.BlobStoreError.reason``).
_BACKEND = ("permission-denied", "no-space", "missing-bucket", "unavailable", "error")


def _reason_kind(reason: object) -> str:
    return str(reason or "").split(":", 1)[0].strip()


def _rejected(reason: str, what: str, fallback: str = "") -> Verdict:
    kind = _reason_kind(reason)
    if kind in _INTEGRITY:
        return failed(
            f"{what}: upload-rejected {reason}{fallback}",
            "the server received other bytes than the doctor sent (it hashed what it sent): "
            "something between rewrites frames or bodies",
            "compare the bytes at the producer and at the node; `upload-rejected{reason}` "
            "says which check failed",
            (RUNBOOK.BLOB_INTEGRITY, RUNBOOK.DENIED, RUNBOOK.TRACE),
        )
    if kind in _BACKEND:
        return failed(
            f"{what}: upload-rejected {reason}{fallback}",
            f"the blob backend failed ({kind}): nothing was stored",
            _READY_NEXT["blobs"],
            (RUNBOOK.BACKEND, RUNBOOK.PERMISSIONS),
        )
    if kind == "verify-failed":
        cause = "the staged bytes of the direct upload did not verify, and were deleted"
    elif kind == "too-large":
        cause = "the probe's blob is larger than the room's `policy.blob_max_bytes`"
    elif kind == "no-grant":
        cause = "the server holds no live upload grant for this session and hash"
    else:
        cause = f"the server refused the upload: {reason}"
    return failed(
        f"{what}: upload-rejected {reason}{fallback}",
        cause,
        'read `upload-rejected{reason}` (docs/operations.md, "Blob operations fail")',
        (RUNBOOK.DENIED, RUNBOOK.TRACE),
    )


def rule_inline(obs: Observation) -> Verdict:
    if obs.get("result") == "blob-uploaded":
        return passed(f"blob-upload of {obs.get('size')} bytes verified and stored{_ms(obs)}")
    if obs.get("result") == "upload-rejected":
        return _rejected(str(obs.get("reason")), "inline upload")
    return code_failure(obs, "inline upload", (RUNBOOK.TRACE,))


def _fallback(obs: Observation) -> str:
    result = obs.get("fallback_result")
    if result is None:
        return ""
    if result == "blob-uploaded":
        return "; the inline fallback worked"
    return f"; the inline fallback failed too ({obs.get('fallback_reason') or result})"


def rule_direct(obs: Observation) -> Verdict:
    lines = (RUNBOOK.DIRECT, RUNBOOK.DENIED, RUNBOOK.TRACE)
    fallback = _fallback(obs)
    grant = obs.get("grant")
    if grant == "upload-denied":
        reason = str(obs.get("denied_reason"))
        kind = _reason_kind(reason)
        if kind == "capability-missing":
            cause = (
                "the session has no `blob-direct` cap (the token or the room's policy does "
                "not grant it), so every upload falls back to inline"
            )
            action = (
                "to use direct I/O, mint a token with `blob-direct` (`roomsync token mint "
                "--room R --caps ...,blob-direct`) or grant it in `policy.anonymous_caps`; "
                'upload-denied means "fall back to inline `blob-upload`"'
            )
        elif kind == "backend-cannot-grant":
            cause = "the blob backend cannot grant upload URLs (the memory backend)"
            action = "use the filesystem or S3 blob backend (`blobs.backend`)"
        elif kind == "too-large":
            cause = "the probe's blob is larger than the room's `policy.blob_max_bytes`"
            action = "raise `policy.blob_max_bytes` (`roomsync control policy set`)"
        else:
            cause = f"the server cannot grant an upload URL: {reason}"
            action = _READY_NEXT["blobs"]
        return failed(
            f"request-upload answered upload-denied {reason}{fallback}",
            cause,
            action,
            lines,
        )
    if grant == "upload-url":
        if obs.get("put_error") or not (200 <= int(obs.get("put_status") or 0) < 300):
            why = obs.get("put_error") or f"HTTP {obs.get('put_status')}"
            return failed(
                f"upload-url granted, but the PUT failed: {why}{fallback}",
                f"the upload URL grant could not be used: {why}",
                "the URL must reach the node (or bucket) from clients: set `blobs.public_url` "
                "to the address clients use (filesystem) or check the endpoint (S3); "
                f"{_READY_NEXT['blobs']}",
                (*lines, RUNBOOK.BACKEND),
            )
        if obs.get("confirm") == "blob-uploaded":
            return passed(
                f"upload-url granted, PUT {obs.get('put_status')}, verified (blob-uploaded)"
                f"{_ms(obs)}"
            )
        if obs.get("confirm") == "upload-rejected":
            return _rejected(str(obs.get("confirm_reason")), "direct upload", fallback)
    if _ended(obs):
        return code_failure(obs, "direct upload", lines)
    return failed(
        f"direct upload: unexpected answers ({obs.get('outcome')})",
        f"the server answered the direct-upload flow unexpectedly: {obs.get('outcome')}",
        "capture the room's window (`roomsync control room capture room=R`)",
        lines,
    )


def rule_available(obs: Observation) -> Verdict:
    expected = list(obs.get("expected") or ())
    seen = obs.get("seen") or {}
    missing = [h for h in expected if h not in seen]
    if not missing:
        return passed(f"blob-available reached a second peer for {len(expected)} blob(s){_ms(obs)}")
    if _ended(obs) and obs.get("timeout_s") is None:
        return code_failure(obs, "the second peer saw no blob-available", (RUNBOOK.AVAILABLE,))
    return failed(
        f"no blob-available on a second peer within {obs.get('timeout_s', 0):g} s for "
        + ", ".join(h[:19] for h in missing),
        "the upload was stored but `blob-available` was not broadcast to the room's other peers",
        'look for `blob.available` log events and `roomsync_messages_total{type="blob-available"}`',
        (RUNBOOK.AVAILABLE, RUNBOOK.RELAY),
    )


def rule_fetch(obs: Observation) -> Verdict:
    fetched = [f for f in obs.get("fetched") or () if isinstance(f, Mapping)]
    bad = [f for f in fetched if not f.get("ok")]
    if fetched and not bad:
        how = ", ".join(("URL" if f.get("direct") else "inline") for f in fetched)
        return passed(f"fetched {len(fetched)} blob(s) ({how}), hashes verified{_ms(obs)}")
    if not fetched:
        return code_failure(obs, "blob-request", (RUNBOOK.AVAILABLE, RUNBOOK.RELAY))
    reason = str(bad[0].get("reason"))
    kind = _reason_kind(reason)
    lines = (RUNBOOK.AVAILABLE, RUNBOOK.RELAY)
    if kind == "not-found":
        e = _one(ErrorCode.NOT_FOUND, Kind.ERROR)
        assert e is not None
        return failed(f"blob-request: {reason}", e.meaning, e.next_action, lines, ("not-found",))
    if kind in ("hash-mismatch", "size-mismatch", "bad-base64"):
        cause = "the bytes served are not the blob's: they do not hash to its address"
        action = "check the backend's object for that hash and what sits between"
    elif kind.startswith("http-") or kind == "network":
        cause = f"the download URL grant could not be used: {reason}"
        action = "the URL must reach the node (or bucket) from clients: `blobs.public_url`"
    elif kind == "internal":
        cause = f"the blob backend failed reading the blob: {reason}"
        action = _READY_NEXT["blobs"]
    else:
        cause = f"the fetch failed: {reason}"
        action = "read the server log around the request"
    return failed(f"blob-request: {reason}", cause, action, (*lines, RUNBOOK.BACKEND))


# -- 5. control ----------------------------------------------------------------------------


def rule_control(obs: Observation) -> Verdict:
    command = str(obs.get("command"))
    if obs.get("ok"):
        detail = f": {obs['detail']}" if obs.get("detail") else ""
        return passed(f"{command} ok{_ms(obs)}{detail}")
    reject = obs.get("reject")
    if not isinstance(reject, Mapping):
        return failed(
            f"{command}: no control-plane answer: {obs.get('error')}",
            "no roomsync JSON answer from `POST /v1/control/...`: a wrong URL, a proxy that "
            "does not forward `/v1/control/`, or the node is down",
            "`roomsync control --url URL room list` must answer JSON; route `/v1/` to the node",
            (RUNBOOK.TRIAGE_CONTROL, RUNBOOK.LISTENER),
        )
    klass = str(reject.get("class"))
    code = str(reject.get("code") or "")
    required = reject.get("required")
    # An `unauthenticated` reject's code is an auth reason (`token-expired`, ...).
    code_e = _one(code, Kind.REJECT_CODE) or (
        _one(code, Kind.AUTH_REASON) if klass == "unauthenticated" else None
    )
    e = code_e or _one(klass, Kind.REJECT_CLASS)
    meaning = e.meaning if e is not None else str(reject.get("message"))
    # The table's action for the code is the precise one; the server's `next` is its class's.
    next_action = code_e.next_action if code_e is not None else str(reject.get("next") or "")
    if not next_action and e is not None:
        next_action = e.next_action
    summary = f"{command}: {klass} {code}: {reject.get('message')}"
    if klass == "forbidden" and required:
        return failed(
            summary,
            f"the operator token's caps do not cover {command}: it needs `{required}`",
            f"retry with an operator token scoped to `{required}`: `roomsync token mint "
            f"--room '*' --caps {required} --ttl 15m --actor ops`",
            (RUNBOOK.CAPS, RUNBOOK.CAP_REQUIRED, RUNBOOK.RETRY_SCOPED),
            (klass, code),
        )
    lines = {
        "unauthenticated": (RUNBOOK.CAPS, RUNBOOK.REJECT),
        "invalid-payload": (RUNBOOK.PAYLOAD, RUNBOOK.REJECT),
        "precondition-failed": (RUNBOOK.PRECONDITIONS, RUNBOOK.REJECT),
    }.get(klass, (RUNBOOK.REJECT,))
    return failed(summary, meaning, next_action, lines, (klass, code))


# -- the catalogue -------------------------------------------------------------------------


def _step(id: str, group: Group, title: str, rule: Rule, canary: str) -> Step:
    return Step(id, group, title, rule, canary)


_CONTROL_FAMILIES = ("room", "archive", "query", "topology", "tick", "policy")

#: The control command each family's step runs (read-only), and its payload's room field.
CONTROL_COMMANDS: Mapping[str, tuple[str, bool]] = {
    "room": ("get", True),
    "archive": ("list", True),
    "query": ("list", False),
    "topology": ("get", False),
    "tick": ("get", True),
    "policy": ("get", True),
}

STEPS: tuple[Step, ...] = (
    _step("health.healthz", Group.HEALTH, "GET /healthz", rule_healthz, "health"),
    _step("health.readyz", Group.HEALTH, "GET /readyz, each check", rule_readyz, "health"),
    _step("health.metrics", Group.HEALTH, "GET /metrics", rule_metrics, "health"),
    _step("connect.tls", Group.CONNECT, "TLS and certificate trust", rule_tls, "handshake"),
    _step("connect.route", Group.CONNECT, "plain GET of /ws/{room}", rule_route, "handshake"),
    _step("connect.upgrade", Group.CONNECT, "WebSocket upgrade", rule_upgrade, "handshake"),
    _step("connect.hello", Group.CONNECT, "a known-good hello", rule_hello, "handshake"),
    _step("connect.welcome", Group.CONNECT, "welcome and caps", rule_welcome, "handshake"),
    _step("connect.token", Group.CONNECT, "token state", rule_token, "handshake"),
    _step("sync.write", Group.SYNC, "pack of a probe path -> ack", rule_write, "sync"),
    _step("sync.broadcast", Group.SYNC, "broadcast to a 2nd peer", rule_broadcast, "sync"),
    _step("sync.request", Group.SYNC, "request{paths} answers it", rule_request, "sync"),
    _step("sync.roots", Group.SYNC, "canonical roots agree", rule_roots, "sync"),
    _step("sync.subscribe", Group.SYNC, "minimal subscription scope", rule_subscribe, "sync"),
    _step("blobs.inline", Group.BLOBS, "inline blob-upload", rule_inline, "blob"),
    _step("blobs.direct", Group.BLOBS, "direct upload (URL grant)", rule_direct, "blob"),
    _step("blobs.available", Group.BLOBS, "blob-available on a 2nd peer", rule_available, "blob"),
    _step("blobs.fetch", Group.BLOBS, "blob-request and hash check", rule_fetch, "blob"),
    *(
        _step(
            f"control.{family}",
            Group.CONTROL,
            f"{family} {CONTROL_COMMANDS[family][0]}",
            rule_control,
            f"control.{family}",
        )
        for family in _CONTROL_FAMILIES
    ),
    _step(
        "control.query_run", Group.CONTROL, "query run of --query", rule_control, "control.query"
    ),
    _step("cleanup.probe", Group.CLEANUP, "delete the probe path", rule_cleanup, "sync"),
)

STEP_BY_ID: Mapping[str, Step] = {s.id: s for s in STEPS}


def judge(step_id: str, observed: Observation, ms: float | None = None) -> StepResult:
    """Run ``step_id``'s rule on what was observed. What the result keeps, and its
    texts, are redacted (:mod:`roomsync.redaction`: JWTs, URL signatures, secret keys),
    since server messages and HTTP errors end up in the report."""
    step = STEP_BY_ID[step_id]
    v = step.rule(observed)
    safe = Verdict(
        v.status,
        redact_text(v.summary),
        None if v.cause is None else redact_text(v.cause),
        v.next_action,
        v.runbook,
        v.codes,
    )
    kept = redact(dict(observed))
    return StepResult(step, safe, kept if isinstance(kept, dict) else {}, ms)


def skip(step_id: str, why: str, observed: Observation | None = None) -> StepResult:
    """A step that was not run, and why."""
    return StepResult(STEP_BY_ID[step_id], skipped(why), dict(observed or {}))


# -- the report ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    """Every step's result in :data:`STEPS` order, and notes the reader should know."""

    url: str
    room: str
    results: tuple[StepResult, ...]
    notes: tuple[str, ...] = ()
    started_at: float = 0.0
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no step failed (skipped steps do not fail a run)."""
        return not any(r.status is Status.FAIL for r in self.results)

    def result(self, step_id: str) -> StepResult:
        for r in self.results:
            if r.step.id == step_id:
                return r
        raise KeyError(step_id)

    @property
    def failures(self) -> tuple[StepResult, ...]:
        return tuple(r for r in self.results if r.status is Status.FAIL)

    def counts(self) -> dict[str, int]:
        return {str(s): sum(1 for r in self.results if r.status is s) for s in Status}

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "room": self.room,
            "ok": self.ok,
            "counts": self.counts(),
            "started_at": self.started_at,
            "duration_ms": round(self.duration_ms, 2),
            "steps": [r.to_json() for r in self.results],
            "notes": list(self.notes),
        }


def ordered(results: Mapping[str, StepResult]) -> tuple[StepResult, ...]:
    """``results`` in :data:`STEPS` order; a step missing from it is skipped."""
    return tuple(results.get(s.id) or skip(s.id, "not run") for s in STEPS)


# -- canary --------------------------------------------------------------------------------

#: The canary's checks, in order (runbook "Preventive practices": handshake, sync, blob
#: flow, and one control-plane command per family).
CANARY_CHECKS: tuple[str, ...] = (
    "health",
    "handshake",
    "sync",
    "blob",
    *(f"control.{family}" for family in _CONTROL_FAMILIES),
)


@dataclass(frozen=True, slots=True)
class Check:
    """One canary check: fails when one of its steps failed; skipped when all were."""

    name: str
    status: Status
    seconds: float
    failures: tuple[StepResult, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "status": str(self.status),
            "seconds": round(self.seconds, 4),
            "failed_steps": [
                {"id": r.step.id, "summary": r.verdict.summary, "cause": r.verdict.cause}
                for r in self.failures
            ],
        }


def canary_checks(report: Report) -> tuple[Check, ...]:
    """Fold a report's steps into :data:`CANARY_CHECKS`; ``seconds`` sums their times."""
    out = []
    for name in CANARY_CHECKS:
        mine = [r for r in report.results if r.step.canary == name]
        failures = tuple(r for r in mine if r.status is Status.FAIL)
        if failures:
            status = Status.FAIL
        elif any(r.status is Status.PASS for r in mine):
            status = Status.PASS
        else:
            status = Status.SKIP
        seconds = sum((r.ms or 0.0) for r in mine) / 1000
        out.append(Check(name, status, seconds, failures))
    return tuple(out)
