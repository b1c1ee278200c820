"""What a client does when its connection ends (SPEC §2 "Close codes", client action), sans I/O.

The SDK's connection loop asks :class:`ReconnectPolicy` after every close and does what
the :class:`Decision` says; it only sleeps and dials. The rules, as data:

``ACTION_ON_CLOSE`` (close code -> :class:`CloseAction`; a code not listed is ``RETRY``):

====  =========================================  ===========================================
code  meaning (SPEC §2)                          client action
====  =========================================  ===========================================
1000  normal                                     ``RETRY``: the server never ends a live
                                                 session normally; one that does (a proxy)
                                                 dropped the link
1002  protocol error                             ``STOP``: fix the client
1006  dropped without a close frame (network)    ``RETRY``
1009  frame too big                              ``RETRY``: the client sizes its packs by
                                                 the new welcome's limits
1011  server overload or internal error          ``RETRY`` (at least ``retry_after_ms``)
1012  node draining / restarting                 ``RETRY``, maybe elsewhere
4001  resync required                            ``RESYNC``: reconnect at once, full resync
4002  token expired                              ``REFRESH_TOKEN``: ask for a new token,
                                                 reconnect at once; ``STOP`` without a way
                                                 to get one
4003  forbidden                                  ``STOP``: get a proper token
4004  room closed or deleted                     ``STOP``
4008  rate limit exceeded                        ``RETRY``: the backoff slows the client down
====  =========================================  ===========================================

Delays: retry number ``n`` (0 for the first since the last ``welcome``) waits
:meth:`Backoff.jittered` ``(n, u)``: a delay in ``[cap/2, cap]`` with ``cap = min(max,
base * factor**n)`` and ``u`` a random float in ``[0, 1)``; never less than the
``retry_after_ms`` of an ``error{code: "overload"}`` sent before the close. ``RESYNC`` and
``REFRESH_TOKEN`` reconnect at once when they are the first retry since a welcome: the
server asked for something the client can do right away.

Randomness is an argument (a float, or any object with ``random()`` such as
:class:`random.Random`), so tests pick the delays and this module stays pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

from .codes import CloseCode, ErrorCode

ABNORMAL_CLOSURE = 1006
"""The close code of a connection that ended without a close frame (RFC 6455 §7.1.5).

Never sent on the wire, so it is not a :class:`~roomsync.core.codes.CloseCode`."""


class CloseAction(StrEnum):
    """What a close code asks the client to do."""

    RETRY = "retry"
    """Reconnect after a jittered backoff and resume from the cursor."""
    RESYNC = "resync"
    """Reconnect and do a full resync (the cursor is useless)."""
    REFRESH_TOKEN = "refresh-token"
    """Get a new token, then reconnect."""
    STOP = "stop"
    """Terminal: surface the error and stop; the app must change something."""


ACTION_ON_CLOSE: Mapping[int, CloseAction] = MappingProxyType(
    {
        CloseCode.NORMAL: CloseAction.RETRY,
        CloseCode.PROTOCOL_ERROR: CloseAction.STOP,
        ABNORMAL_CLOSURE: CloseAction.RETRY,
        CloseCode.TOO_BIG: CloseAction.RETRY,
        CloseCode.INTERNAL: CloseAction.RETRY,
        CloseCode.RESTARTING: CloseAction.RETRY,
        CloseCode.RESYNC_REQUIRED: CloseAction.RESYNC,
        CloseCode.TOKEN_EXPIRED: CloseAction.REFRESH_TOKEN,
        CloseCode.FORBIDDEN: CloseAction.STOP,
        CloseCode.ROOM_CLOSED: CloseAction.STOP,
        CloseCode.RATE_LIMITED: CloseAction.RETRY,
    }
)
"""Close code -> client action (module doc). Codes not listed: :attr:`CloseAction.RETRY`."""

DEFAULT_ACTION = CloseAction.RETRY

TERMINAL_CLOSE_CODES = frozenset(
    code for code, action in ACTION_ON_CLOSE.items() if action is CloseAction.STOP
)
"""Close codes after which the client stops: 1002, 4003, 4004."""


def close_action(code: int) -> CloseAction:
    """The action for close ``code`` (:data:`ACTION_ON_CLOSE`, else ``RETRY``)."""
    return ACTION_ON_CLOSE.get(code, DEFAULT_ACTION)


class RandomSource(Protocol):
    """Where jitter comes from: :class:`random.Random` or anything with ``random()``."""

    def random(self) -> float:
        """A float in ``[0, 1)``."""
        ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """``delay(n)`` lies in ``[cap/2, cap]`` with ``cap = min(max, base * factor**n)`` seconds.

    Half of the delay is fixed and half random ("equal jitter"): clients that lost their
    connection together spread their retries, and none retries at once in a loop.
    """

    base: float = 0.1
    factor: float = 2.0
    max: float = 10.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.max < 0 or self.factor < 1:
            raise ValueError("Backoff needs base >= 0, max >= 0 and factor >= 1")

    def cap(self, attempt: int) -> float:
        """The largest delay for retry number ``attempt`` (0 for the first retry)."""
        if self.base == 0:
            return 0.0
        # Past ~60 doublings every sane cap is reached; avoid float overflow beyond.
        return min(self.max, self.base * self.factor ** min(attempt, 64))

    def jittered(self, attempt: int, u: float) -> float:
        """Seconds to wait before retry number ``attempt``, ``u`` a random float in [0, 1)."""
        if not 0.0 <= u < 1.0:
            raise ValueError(f"u must be in [0, 1), got {u!r}")
        cap = self.cap(attempt)
        return cap / 2 + u * cap / 2

    def delay(self, attempt: int, rng: RandomSource) -> float:
        """Seconds to wait before retry number ``attempt``, jittered by ``rng.random()``."""
        return self.jittered(attempt, rng.random())


def retry_delay(
    backoff: Backoff,
    attempt: int,
    u: float,
    *,
    immediate: bool = False,
    retry_after_ms: int | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0: the first since a welcome).

    ``immediate``: the close asked for something the client can do right away (0, and
    ``u`` is not used); else :meth:`Backoff.jittered`. Never less than ``retry_after_ms``.
    """
    delay = 0.0 if immediate else backoff.jittered(attempt, u)
    if retry_after_ms is not None:
        delay = max(delay, retry_after_ms / 1000)
    return delay


class StopReason(StrEnum):
    """Why the client stops instead of reconnecting."""

    TERMINAL = "terminal"
    """The close code's action is :attr:`CloseAction.STOP`."""
    NO_TOKEN_PROVIDER = "no-token-provider"
    """4002, and nothing can refresh the token."""
    RECONNECT_OFF = "reconnect-off"
    """The app turned reconnecting off."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after one close.

    ``stop`` set: stop for good (``delay_s`` 0, ``attempt`` unchanged). Otherwise wait
    ``delay_s`` seconds, then make retry number ``attempt`` (1 for the first since the last
    welcome); ``retry_after_ms`` is the server's hint that bounded the delay from below.
    """

    action: CloseAction
    stop: StopReason | None = None
    delay_s: float = 0.0
    attempt: int = 0
    retry_after_ms: int | None = None

    @property
    def resync(self) -> bool:
        """The next session must do a full resync (close 4001)."""
        return self.stop is None and self.action is CloseAction.RESYNC


class ReconnectPolicy:
    """Decides, after every close, whether and when to reconnect (module doc).

    Keeps one number: ``failures``, the closes since the last session that was welcomed,
    which picks the backoff step. ``can_refresh_token``: the app gave a way to get a new
    token (4002 reconnects instead of stopping). ``reconnect`` False: every close stops.
    """

    __slots__ = ("backoff", "can_refresh_token", "failures", "reconnect")

    def __init__(
        self,
        backoff: Backoff | None = None,
        *,
        reconnect: bool = True,
        can_refresh_token: bool = False,
    ) -> None:
        self.backoff = backoff if backoff is not None else Backoff()
        self.reconnect = reconnect
        self.can_refresh_token = can_refresh_token
        self.failures = 0

    def after_close(
        self,
        close_code: int,
        *,
        welcomed: bool,
        rng: RandomSource,
        error_code: str | None = None,
        retry_after_ms: int | None = None,
    ) -> Decision:
        """The decision after a connection closed with ``close_code``.

        ``welcomed``: that connection had a session (the backoff starts over).
        ``error_code``/``retry_after_ms``: the server's last ``error`` before the close;
        the hint counts only for ``overload``. ``rng.random()`` is drawn only when the
        delay is jittered, so a seeded ``rng`` gives the same delays for the same closes.
        """
        if welcomed:
            self.failures = 0
        action = close_action(close_code)
        if action is CloseAction.STOP:
            return Decision(action, StopReason.TERMINAL, attempt=self.failures)
        if action is CloseAction.REFRESH_TOKEN and not self.can_refresh_token:
            return Decision(action, StopReason.NO_TOKEN_PROVIDER, attempt=self.failures)
        if not self.reconnect:
            return Decision(action, StopReason.RECONNECT_OFF, attempt=self.failures)
        hint = retry_after_ms if error_code == ErrorCode.OVERLOAD else None
        immediate = action in (CloseAction.RESYNC, CloseAction.REFRESH_TOKEN) and not (
            self.failures
        )
        u = 0.0 if immediate else rng.random()
        delay = retry_delay(
            self.backoff, self.failures, u, immediate=immediate, retry_after_ms=hint
        )
        self.failures += 1
        return Decision(action, None, delay, self.failures, hint)
