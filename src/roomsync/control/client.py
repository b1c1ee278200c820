"""The Python control client (SPEC §6): one async method per registered command.

    async with ControlClient("http://127.0.0.1:8787", token) as ops:
        info = await ops.room_get(room="doc-1")
        await ops.call("room", "lock", room="doc-1")

A refusal raises the :class:`ControlRejected` subclass of its reject class, carrying
``code``, ``field``, ``required`` and ``next`` (:data:`REJECTED_BY_CLASS`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import aiohttp

from ..core.codes import RejectClass
from .registry import REGISTRY
from .rejects import Rejected


class ControlRejected(Rejected):
    """A refusal as the client sees it; ``next`` is the server's next action."""

    reject_class_of: RejectClass = RejectClass.UNAVAILABLE

    def __init__(self, reject: dict[str, Any], *, retry_after_s: int | None = None) -> None:
        super().__init__(
            self.reject_class_of,
            str(reject.get("code", "")),
            str(reject.get("message", "")),
            field=reject.get("field"),
            required=reject.get("required"),
            retry_after_s=retry_after_s,
        )
        self.next = str(reject.get("next", self.reject_class_of.next_action))


class ControlUnauthenticated(ControlRejected):
    reject_class_of = RejectClass.UNAUTHENTICATED


class ControlForbidden(ControlRejected):
    reject_class_of = RejectClass.FORBIDDEN


class ControlInvalidPayload(ControlRejected):
    reject_class_of = RejectClass.INVALID_PAYLOAD


class ControlNotFound(ControlRejected):
    reject_class_of = RejectClass.NOT_FOUND


class ControlPreconditionFailed(ControlRejected):
    reject_class_of = RejectClass.PRECONDITION_FAILED


class ControlConflict(ControlRejected):
    reject_class_of = RejectClass.CONFLICT


class ControlRateLimited(ControlRejected):
    reject_class_of = RejectClass.RATE_LIMITED


class ControlUnavailable(ControlRejected):
    reject_class_of = RejectClass.UNAVAILABLE


#: The exception raised for each reject class.
REJECTED_BY_CLASS: dict[RejectClass, type[ControlRejected]] = {
    cls.reject_class_of: cls
    for cls in (
        ControlUnauthenticated,
        ControlForbidden,
        ControlInvalidPayload,
        ControlNotFound,
        ControlPreconditionFailed,
        ControlConflict,
        ControlRateLimited,
        ControlUnavailable,
    )
}


class ControlClient:
    """Calls ``POST /v1/control/{family}/{command}`` on ``url`` with ``token``."""

    def __init__(
        self, url: str, token: str, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._session = session
        self._own = session is None

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own and self._session is not None:
            await self._session.close()
        self._session = None

    async def call(self, family: str, command: str, **payload: Any) -> Any:
        """Run a command; its ``result``, or the :class:`ControlRejected` of its class."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._own = True
        async with self._session.post(
            f"{self.url}/v1/control/{family}/{command}",
            json=payload,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as resp:
            body = await resp.json(content_type=None)
        if body.get("ok") is True:
            return body.get("result")
        reject = body.get("reject") or {}
        try:
            cls = REJECTED_BY_CLASS[RejectClass(str(reject.get("class")))]
        except ValueError:
            cls = ControlUnavailable
        retry = resp.headers.get("Retry-After")
        raise cls(reject, retry_after_s=int(retry) if retry and retry.isdigit() else None)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        """``client.room_get(room=...)``: one method per registered command."""
        family, _, command = name.partition("_")
        if REGISTRY.get(family, command.removesuffix("_")) is None:
            raise AttributeError(name)

        async def method(**payload: Any) -> Any:
            return await self.call(family, command.removesuffix("_"), **payload)

        return method
