"""What a node measures of itself on a timer (SPEC §7), so no request path pays for it.

:class:`Probes` runs one task, started and stopped with the server, that

- samples event-loop lag every :data:`LAG_INTERVAL_S`: how late a timer ran, into
  ``roomsync_event_loop_lag_seconds``. A loop blocked by a slow callback delays every
  peer on the node; this is the number that shows it.
- evaluates readiness every heartbeat (:meth:`~.node.Node.readiness`, the ``/readyz``
  checks), so ``roomsync_ready`` is current even where nothing probes ``/readyz``. A
  check still running after a heartbeat counts as not ready; it is left to finish (not
  cancelled halfway through reopening a backend) and no second one starts meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .logs import event
from .node import Node

log = logging.getLogger("roomsync.probes")

#: Seconds between two event-loop lag samples.
LAG_INTERVAL_S = 0.25


class Probes:
    """The node's periodic self-measurements; :meth:`start` once, :meth:`stop` once."""

    def __init__(self, node: Node, *, lag_interval_s: float = LAG_INTERVAL_S) -> None:
        self.node = node
        self.lag_interval_s = lag_interval_s
        self.readiness_interval_s = node.settings.server.heartbeat_ms / 1000
        self._task: asyncio.Task[None] | None = None
        self._check: asyncio.Task[object] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        for task in (self._task, self._check):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        lag = self.node.metrics.event_loop_lag
        interval = self.lag_interval_s
        next_check = loop.time()
        while True:
            now = loop.time()
            if now >= next_check:
                next_check = now + self.readiness_interval_s
                self._readiness_due()
            due = now + interval
            await asyncio.sleep(interval)
            lag.observe(max(0.0, loop.time() - due))

    def _readiness_due(self) -> None:
        if self._check is not None:  # the last one outlived a heartbeat: not ready
            self.node.metrics.ready.set(0)
            event(log, "readiness.slow", level=logging.WARNING, node=self.node.name)
            return
        check = asyncio.get_running_loop().create_task(self.node.readiness())
        check.add_done_callback(self._checked)
        self._check = check

    def _checked(self, check: asyncio.Task[object]) -> None:
        self._check = None
        if check.cancelled():
            return
        exc = check.exception()
        if exc is not None:  # readiness reports failures; raising at all is a bug
            self.node.metrics.ready.set(0)
            event(log, "readiness.failed", level=logging.ERROR, error=repr(exc))
