"""A welcomed peer as its room sees it: its core session and its outbox."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..auth.tokens import Claims
from ..core.codes import CloseCode
from ..core.session import Session
from .outbox import Outbox


class Peer:
    """Everything the room needs to deliver to one peer and to close it. Frames go
    through :attr:`out`, the connection's :class:`~.outbox.Outbox`."""

    __slots__ = (
        "__weakref__",
        "actor_bound",
        "claims",
        "on_close",
        "out",
        "pending_acks",
        "reads",
        "session",
        "token_jti",
    )

    def __init__(
        self,
        session: Session,
        out: Outbox,
        *,
        on_close: Callable[[Peer, CloseCode, dict[str, Any] | None], None],
    ) -> None:
        self.session = session
        self.reads = "read" in session.caps  # caps are fixed for a session
        self.out = out
        self.on_close = on_close
        #: With a token naming a ``sub``: the actor every change must be written as
        #: (``sub`` or ``sub#<suffix>``); None for anonymous sessions.
        self.actor_bound: str | None = None
        #: The ``jti`` of the session's token, so a revocation by jti can find it.
        self.token_jti: str | None = None
        #: The verified token's claims, kept only when an app hook may read them.
        self.claims: Claims | None = None
        self.pending_acks = 0

    @property
    def id(self) -> str:
        return self.session.peer

    @property
    def closing(self) -> bool:
        return self.out.closing

    def send(self, obj: dict[str, Any]) -> bool:
        return self.out.send(obj)

    def close(
        self, code: CloseCode, error: dict[str, Any] | None = None, *, reason: str | None = None
    ) -> None:
        """Start closing: the error frame first (SPEC: sent before every non-normal close)."""
        if self.closing:
            return
        if reason is not None and error is not None:
            error = {**error, "reason": reason}
        self.on_close(self, code, error)
