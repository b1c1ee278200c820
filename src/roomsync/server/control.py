"""``POST /v1/control/{family}/{command}`` (SPEC §6): the control plane's HTTP route.

Every request goes through the same steps, each with its reject class:

1. the command exists (``not-found``);
2. a bearer operator token (JWT, SPEC §3) that verifies (``unauthenticated``, 401) and
   whose caps cover ``<family>:<command>`` (``forbidden``, 403, naming ``required``);
3. the operator's token bucket (``server.control_rate_per_s``/``control_burst``;
   ``rate-limited``, 429 with ``Retry-After``);
4. the payload, decoded against the command's model: types, constraints, unknown
   fields (``invalid-payload``, 422, naming the first field at fault);
5. the handler (its own rejects; a store that fails is ``unavailable``, 503).

Success is ``{"ok": true, "result": ...}``. Every request is counted in
``roomsync_control_requests_total{family, command, outcome}`` and logged with the
operator's ``sub``, caps, outcome and duration (never the token).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import msgspec
from aiohttp import web

from ..auth.caps import covers
from ..control import REGISTRY, Context, Rejected
from ..control.openapi import document
from ..core.codes import RejectClass
from ..core.errors import AuthError
from ..core.ratelimit import TokenBucket
from ..storage.base import StoreError
from .logs import event
from .node import Node

log = logging.getLogger("roomsync.control")
_MAX_BODY = 1 << 20
# Operators' token buckets kept before the refilled ones are forgotten.
_MAX_BUCKETS = 1024


def _field_of(error: msgspec.ValidationError) -> str | None:
    """The payload field a msgspec error names: ``... - at `$.room` `` (a bad value),
    ``missing required field `room` `` or ``unknown field `extra` ``."""
    text = str(error)
    at = text.rfind("`$.")
    if at >= 0:
        name = text[at + 3 :].rstrip("`").split(".")[0].split("[")[0]
        return name or None
    for marker in ("required field `", "unknown field `"):
        at = text.find(marker)
        if at >= 0:
            return text[at + len(marker) :].split("`", 1)[0] or None
    return None


class ControlRoute:
    """The handler of ``POST /v1/control/{family}/{command}`` for one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._buckets: dict[str, TokenBucket] = {}
        self._openapi: dict[str, Any] | None = None

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/v1/control/{family}/{command}", self.handle)
        app.router.add_get("/v1/openapi.json", self.openapi)

    async def openapi(self, request: web.Request) -> web.Response:
        """``GET /v1/openapi.json``: generated from the registry, no token needed."""
        if self._openapi is None:
            self._openapi = document()
        return web.json_response(self._openapi)

    async def handle(self, request: web.Request) -> web.Response:
        family = request.match_info["family"]
        name = request.match_info["command"]
        t0 = time.perf_counter()
        sub: str | None = None
        caps: tuple[str, ...] = ()
        try:
            command = REGISTRY.get(family, name)
            if command is None:
                family = name = "unknown"  # bounded metric labels
                raise Rejected(
                    RejectClass.NOT_FOUND,
                    "command-unknown",
                    f"no control command {request.match_info['family']} "
                    f"{request.match_info['command']}",
                )
            sub, caps = self._operator(request)
            if not covers(caps, command.cap):
                raise Rejected(
                    RejectClass.FORBIDDEN,
                    "capability-missing",
                    f"{family} {name} needs capability {command.cap!r}",
                    required=command.cap,
                )
            self._take(sub or "", request)
            payload = await self._payload(request, command.payload)
            ctx = Context(node=self.node, operator=sub, now_ms=self.node.now_ms())
            result = await command.handler(ctx, payload)
            if command.result is not None:
                # A result that breaks its published schema is a bug: fail loudly (500)
                # rather than serve it.
                msgspec.convert(result, command.result)
            return self._answer(
                family, name, "ok", 200, {"ok": True, "result": result}, t0, sub, caps
            )
        except Rejected as exc:
            headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
            return self._answer(
                family, name, str(exc.reject_class), exc.status, exc.envelope(), t0, sub, caps,
                headers=headers,
            )  # fmt: skip
        except StoreError as exc:
            event(log, "control.store_failed", level=logging.ERROR, error=str(exc))
            rej = Rejected(RejectClass.UNAVAILABLE, "store-unavailable", "the store failed: retry")
            return self._answer(family, name, "unavailable", 503, rej.envelope(), t0, sub, caps)

    def _operator(self, request: web.Request) -> tuple[str | None, tuple[str, ...]]:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Rejected(
                RejectClass.UNAUTHENTICATED,
                "token-missing",
                "send an operator token: Authorization: Bearer <token>",
            )
        try:
            claims = self.node.tokens.verify(token.strip(), now_s=self.node.now_ms() / 1000)
        except AuthError as exc:
            raise Rejected(RejectClass.UNAUTHENTICATED, str(exc.reason), exc.message) from None
        if self.node.is_revoked(claims, self.node.now_ms()):
            raise Rejected(RejectClass.UNAUTHENTICATED, "revoked", "auth: token revoked")
        return claims.sub, tuple(claims.caps)

    def _take(self, operator: str, request: web.Request) -> None:
        s = self.node.settings.server
        now = self.node.now_ms()
        bucket = self._buckets.get(operator)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._forget_full_buckets(now)
            bucket = self._buckets[operator] = TokenBucket(
                s.control_rate_per_s, s.control_burst, now
            )
        if not bucket.take(1, now):
            raise Rejected(
                RejectClass.RATE_LIMITED,
                "control-rate",
                f"more than {s.control_rate_per_s:g} control requests/s: slow down",
                retry_after_s=max(1, math.ceil(1 / s.control_rate_per_s)),
            )

    def _forget_full_buckets(self, now: int) -> None:
        """Drop the buckets that have refilled: a new one would be the same, so the
        table holds only operators who sent requests lately."""
        for operator, bucket in list(self._buckets.items()):
            bucket.refill(now)
            if bucket.tokens >= bucket.burst:
                del self._buckets[operator]

    async def _payload(self, request: web.Request, model: type[Any]) -> Any:
        body = await request.read()
        if len(body) > _MAX_BODY:
            raise Rejected(RejectClass.INVALID_PAYLOAD, "too-large", "payload over 1 MiB")
        try:
            return msgspec.json.decode(body or b"{}", type=model)
        except msgspec.ValidationError as exc:
            raise Rejected(
                RejectClass.INVALID_PAYLOAD, "invalid", str(exc), field=_field_of(exc)
            ) from None
        except (msgspec.DecodeError, RecursionError) as exc:
            raise Rejected(
                RejectClass.INVALID_PAYLOAD, "not-json", f"payload is not a JSON object: {exc}"
            ) from None

    def _answer(
        self,
        family: str,
        name: str,
        outcome: str,
        status: int,
        body: dict[str, Any],
        t0: float,
        sub: str | None,
        caps: tuple[str, ...],
        *,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        elapsed = time.perf_counter() - t0
        metrics = self.node.metrics
        metrics.control_requests.labels(family, name, outcome).inc()
        metrics.control_seconds.observe(elapsed)
        reject = body.get("reject")
        extra: dict[str, Any] = {}
        if isinstance(reject, dict):  # the precise code and what would have been enough
            extra = {k: reject[k] for k in ("code", "field", "required") if k in reject}
        event(
            log,
            "control.request",
            family=family,
            command=name,
            outcome=outcome,
            operator=sub,
            caps=list(caps),
            ms=round(elapsed * 1000, 2),
            **extra,
        )
        return web.json_response(body, status=status, headers=headers)
