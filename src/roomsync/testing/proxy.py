"""A TCP proxy whose connections a test can cut and restore: a service (Redis,
PostgreSQL) that goes away and comes back, for one client only.

::

    async with TcpProxy("127.0.0.1", 6379) as proxy:
        bus = RedisBus(f"redis://127.0.0.1:{proxy.port}/0")
        ...
        await proxy.cut()       # every connection through it ends; new ones are refused
        await proxy.restore()   # it listens again, on the same port
        proxy.silence()         # a black hole: connections stay open, nothing passes
        proxy.resume()          # what was held back passes, in order

``listen`` is the address it listens on (``127.0.0.1``; the host side of a veth pair to
serve a network namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

__all__ = ["TcpProxy"]


class TcpProxy:
    """Forwards 127.0.0.1:``port`` (picked by the OS at :meth:`start`) to ``host:port``."""

    def __init__(self, host: str, port: int, *, listen: str = "127.0.0.1") -> None:
        self.target = (host, port)
        self.listen = listen
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.cut()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.listen, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def restore(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            await self.start()

    async def cut(self) -> None:
        """Stop listening and end every connection (both sides see it closed), also the
        ones :meth:`silence` holds; it ends the silence."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for writer in list(self._writers):
            # abort, not close: a close waits for the write buffer to drain, which never
            # happens towards a peer that is unreachable (a link down), and the socket
            # would outlive the proxy.
            writer.transport.abort()
        for task in list(self._pumps):
            task.cancel()
        for task in list(self._pumps):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        self._writers.clear()
        self._flowing.set()  # connections held by silence() end here too

    def silence(self) -> None:
        """Stop forwarding in both directions without closing anything (a partition:
        the peers see silence, not a reset); new connections are accepted and held."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again (after :meth:`silence`)."""
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)  # held while silent; cut() closes it like the others
        await self._flowing.wait()
        if writer.is_closing():
            self._writers.discard(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pump(src, dst))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            dst.close()  # flushes what it holds; cut() aborts it if that never ends
