"""Calls an app's hooks (:mod:`roomsync.hooks`) with budgets, fail-closed decisions,
a queue for side effects and metrics per hook and outcome.

:class:`AppHooks` is the one place the server touches the app object. With no app (or an
app without a given hook) every call here is a cheap no-op, so the hot paths only test a
boolean (:attr:`AppHooks.validates`, :attr:`AppHooks.events`).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from ..config.errors import ConfigError
from ..core.codes import ErrorCode
from ..core.types import DATA_CAPS
from ..hooks import (
    HOOK_NAMES,
    REFUSAL_CODES,
    Allow,
    ChangesContext,
    CommitEvent,
    HelloContext,
    PeerEvent,
    Refusal,
    Refuse,
    RoomInfo,
)
from .logs import event
from .metrics import Metrics

log = logging.getLogger("roomsync.hooks")

__all__ = ["AppHooks", "load_app"]

Event = CommitEvent | PeerEvent | RoomInfo


def load_app(spec: str, options: Mapping[str, Any] | None = None) -> object:
    """The app object ``spec`` names (``module:attribute``, attributes may be dotted).

    A class is instantiated with ``options`` as keyword arguments; any other object is
    used as it is (and may not be given options). Raises :class:`ConfigError` (key
    ``app.object``) when it cannot be imported or built.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"app {spec!r}: expected 'module:object'", key="app.object")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"app {spec!r} cannot be loaded: {exc}", key="app.object") from exc
    if isinstance(obj, type):
        try:
            return obj(**dict(options or {}))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"app {spec!r} could not be built: {exc}", key="app.options") from exc
    if options:
        raise ConfigError(
            f"app {spec!r} is an object, not a class: app.options cannot be passed to it",
            key="app.options",
        )
    return obj


class AppHooks:
    """The hooks of one app object (None: no app), called as the module docstring says.

    Raises :class:`ConfigError` when a hook the object has is not an ``async`` method.
    """

    def __init__(
        self,
        app: object | None,
        metrics: Metrics,
        *,
        budget_ms: int = 1000,
        event_budget_ms: int = 5000,
        max_queued: int = 10_000,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.budget_s = budget_ms / 1000
        self.event_budget_s = event_budget_ms / 1000
        self.max_queued = max_queued
        self._methods: dict[str, Callable[[Any], Coroutine[Any, Any, Any]]] = {}
        for name in HOOK_NAMES:
            fn = getattr(app, name, None) if app is not None else None
            if fn is None:
                continue
            if not inspect.iscoroutinefunction(fn):
                raise ConfigError(
                    f"app hook {name!r} of {type(app).__name__} must be an async method",
                    key="app.object",
                )
            self._methods[name] = fn
        self.authorizes = "authorize" in self._methods
        self.validates = "validate" in self._methods
        #: Any side-effect hook (the server only builds events when one exists).
        self.events = any(n in self._methods for n in HOOK_NAMES[2:])
        #: Peers' token claims are kept only when a hook may read them.
        self.wants_claims = (
            self.validates or "on_join" in self._methods or "on_leave" in self._methods
        )
        self._queue: deque[tuple[str, Event]] = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closing = False

    def has(self, name: str) -> bool:
        return name in self._methods

    @property
    def names(self) -> tuple[str, ...]:
        """The hooks the app implements."""
        return tuple(self._methods)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.events and self._worker is None:
            self._wake = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, grace_s: float = 5.0) -> None:
        """Run the queued side-effect hooks for at most ``grace_s``, then stop."""
        worker = self._worker
        if worker is None:
            return
        self._closing = True
        assert self._wake is not None
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(worker), grace_s)
        except TimeoutError:
            worker.cancel()
            left = len(self._queue)
            for name, _ in self._queue:
                self._count(name, "dropped")
            self._queue.clear()
            event(log, "hook.dropped_at_stop", level=logging.WARNING, events=left)
        self._worker = None

    # -- decisions -------------------------------------------------------------------------

    async def authorize(self, ctx: HelloContext) -> Allow | Refuse | None:
        """The app's decision on a hello; a failing or late hook refuses it."""
        result: object = await self._decide("authorize", ctx)
        if isinstance(result, _Failed):
            return Refuse(f"authorize hook {result.why}")
        if result is None or isinstance(result, Refuse):
            self._count("authorize", "refused" if result is not None else "ok")
            return result
        if isinstance(result, Allow) and _caps_ok(result.caps) and _actor_ok(result.actor):
            self._count("authorize", "ok")
            return result
        self._count("authorize", "error")
        event(log, "hook.bad_result", level=logging.ERROR, hook="authorize", result=repr(result))
        return Refuse("authorize hook returned an invalid result")

    async def validate(self, ctx: ChangesContext) -> dict[int, tuple[str, str]]:
        """index -> (code, message) for the changes the app refuses; every change when the
        hook fails, passes its budget or answers nonsense (fail closed)."""
        result: object = await self._decide("validate", ctx)
        n = len(ctx.changes)
        if isinstance(result, _Failed):
            why = f"validate hook {result.why}: retry later"
            return dict.fromkeys(range(n), (str(ErrorCode.INTERNAL), why))
        refused: dict[int, tuple[str, str]] = {}
        try:
            for item in result or ():  # type: ignore[attr-defined]
                if (
                    not isinstance(item, Refusal)
                    or not 0 <= item.index < n
                    or item.code not in REFUSAL_CODES
                ):
                    raise TypeError(f"not a Refusal of this pack: {item!r}")
                refused[item.index] = (item.code, str(item.message)[:200])
        except Exception as exc:  # not iterable, a generator that raised, a bad item
            self._count("validate", "error")
            event(log, "hook.bad_result", level=logging.ERROR, hook="validate", error=str(exc))
            why = "validate hook returned an invalid result: retry later"
            return dict.fromkeys(range(n), (str(ErrorCode.INTERNAL), why))
        self._count("validate", "refused" if refused else "ok")
        return refused

    async def _decide(self, name: str, ctx: object) -> object:
        fn = self._methods[name]
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.budget_s):  # not wait_for: see webhooks.py
                return await fn(ctx)
        except TimeoutError:
            self._count(name, "timeout")
            event(log, "hook.timeout", level=logging.ERROR, hook=name, budget_s=self.budget_s)
            return _Failed("timed out")
        except Exception as exc:
            self._count(name, "error")
            log.exception("app hook %s failed", name)
            return _Failed(f"failed ({type(exc).__name__})")
        finally:
            self.metrics.hook_seconds.labels(name).observe(time.perf_counter() - t0)

    # -- side effects ----------------------------------------------------------------------

    def emit(self, name: str, ev: Event) -> None:
        """Queue ``ev`` for the app's ``name`` hook (if it has one); never waits."""
        if name not in self._methods or self._closing:
            return
        if len(self._queue) >= self.max_queued:
            self._count(name, "dropped")
            event(log, "hook.queue_full", level=logging.ERROR, hook=name, queued=self.max_queued)
            return
        self._queue.append((name, ev))
        if self._wake is not None:
            self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            name, ev = self._queue.popleft()
            fn = self._methods[name]
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(self.event_budget_s):
                    await fn(ev)
                self._count(name, "ok")
            except TimeoutError:
                self._count(name, "timeout")
                event(log, "hook.timeout", level=logging.ERROR, hook=name)
            except Exception:
                self._count(name, "error")
                log.exception("app hook %s failed", name)
            finally:
                self.metrics.hook_seconds.labels(name).observe(time.perf_counter() - t0)

    def _count(self, name: str, outcome: str) -> None:
        self.metrics.hook_calls.labels(name, outcome).inc()


class _Failed:
    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def _caps_ok(caps: object) -> bool:
    return isinstance(caps, tuple) and all(isinstance(c, str) and c in DATA_CAPS for c in caps)


def _actor_ok(actor: object) -> bool:
    return actor is None or (isinstance(actor, str) and 0 < len(actor) <= 128)
