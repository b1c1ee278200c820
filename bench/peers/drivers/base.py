"""What every protocol driver provides, so that scenarios are written once.

A *driver* knows one protocol family. It builds the writer's wire messages ahead of time
(``make_updates``), opens *clients* (``client``), checks afterwards that a client really
holds every update (``verify``), and runs the late-joiner scenario in its protocol's own
way (``late_joiner``).

A *client* is one WebSocket peer living in the load-generator process:
``await connect()`` returns once the handshake and initial sync are done,
``await send(msg)`` sends one prebuilt message, and every update that arrives is reported
as ``on_delivery(seq, t)`` with ``t = time.perf_counter()`` at frame arrival.

Payload: update ``seq`` carries the value :func:`value` (``<000000042>`` + padding,
``value_size`` bytes). Receivers find the markers in the frame with one regex (cheap, so the
generator's CPU goes to the transport, not to decoding); ``verify`` then decodes the kept
frames with the real codec (pycrdt for Yjs, ``decode_pack`` for roomsync) after the timed
window. Send times stay in the generator process: all peers live there.
"""

from __future__ import annotations

import abc
import asyncio
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import aiohttp

MARK_RE = re.compile(rb"<(\d{9})>")
DeliveryCallback = Callable[[int, float], None]
Message = bytes | str


def value(seq: int, size: int = 64, gen: int = 0) -> str:
    """The ``size``-byte value of update ``seq`` (generation ``gen`` for overwrites)."""
    head = f"<{seq:09d}>g{gen}."
    return head + "x" * max(0, size - len(head))


def chunks(seq: Sequence[int], n: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]



#: Scenario (d): the room sits idle this long after its writes are acknowledged and
#: before each timed join (every system alike). A joiner rarely arrives in the same
#: millisecond as a bulk load's last ack; roomsync uses a quiet moment to encode a large
#: room's catch-up ahead (``server/rooms.py``, ``RoomHost.on_quiet``), the Yjs servers
#: encode their state on demand.
SETTLE_S = 1.0

class Client(abc.ABC):
    """One WebSocket peer. Subclasses implement the handshake and frame handling."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        ident: str,
        on_delivery: DeliveryCallback | None = None,
        keep: bool = False,
    ) -> None:
        self.session = session
        self.url = url
        self.ident = ident
        self.on_delivery = on_delivery
        self.keep = keep
        self.frames: list[bytes] = []
        self.bytes_in = 0
        self.bytes_out = 0
        self.error: BaseException | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # pulsed on every frame; see wait_until
        self._pending: set[asyncio.Task[None]] = set()

    async def _open(self, timeout: float) -> aiohttp.ClientWebSocketResponse:
        self.ws = await asyncio.wait_for(
            self.session.ws_connect(
                self.url,
                max_msg_size=0,
                compress=0,
                autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            ),
            timeout,
        )
        return self.ws

    def _start_reader(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    async def _read_loop(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                t = time.perf_counter()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self.bytes_in += len(msg.data)
                    self.on_binary(msg.data, t)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    self.bytes_in += len(msg.data)  # JSON envelopes are ASCII
                    self.on_text(msg.data, t)
                else:
                    break
                self._changed.set()
        except Exception as exc:  # surfaced by wait_until and the scenarios
            self.error = exc
        finally:
            self._changed.set()

    def on_binary(self, data: bytes, t: float) -> None:  # noqa: B027 - optional hook
        """A binary frame arrived at ``t`` (protocols that use them override this)."""

    def on_text(self, data: str, t: float) -> None:  # noqa: B027 - optional hook
        """A text frame arrived at ``t`` (protocols that use them override this)."""

    def deliver_marks(self, data: bytes, t: float) -> None:
        cb = self.on_delivery
        if cb is not None:
            for m in MARK_RE.finditer(data):
                cb(int(m.group(1)), t)

    @property
    def closed(self) -> bool:
        return self.ws is None or self.ws.closed or (
            self._reader is not None and self._reader.done()
        )

    async def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait (bounded) until ``predicate()`` holds, re-checking on every received frame."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.closed and not predicate():
                raise ConnectionError(f"{self.ident}: connection closed while waiting for {what}"
                                      + (f" ({self.error!r})" if self.error else ""))
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.ident}: no {what} after {timeout:.0f}s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
            except TimeoutError:
                pass

    async def send(self, msg: Message) -> None:
        assert self.ws is not None
        if isinstance(msg, bytes):
            self.bytes_out += len(msg)
            await self.ws.send_bytes(msg)
        else:
            self.bytes_out += len(msg)
            await self.ws.send_str(msg)

    def send_soon(self, msg: Message) -> None:
        """Send from a frame handler (not a coroutine): tasks run in creation order."""
        task = asyncio.get_running_loop().create_task(self.send(msg))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @abc.abstractmethod
    async def connect(self, timeout: float = 30.0) -> None:
        """Open the WebSocket and complete the protocol's handshake/initial sync."""

    async def close(self) -> None:
        ws, reader = self.ws, self._reader
        if ws is not None and not ws.closed:
            try:
                await asyncio.wait_for(ws.close(), 3.0)
            except (TimeoutError, OSError, aiohttp.ClientError):
                pass
        if reader is not None and not reader.done():
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):
                pass


class Driver(abc.ABC):
    """One protocol family. ``name`` is the system, ``family`` the protocol."""

    family = "?"
    late_joiner_supported = True

    def __init__(self, system: str) -> None:
        self.system = system

    @abc.abstractmethod
    def url(self, base: str, room: str) -> str:
        """The WebSocket URL of ``room`` on the server at ``base``."""

    @abc.abstractmethod
    def client(
        self,
        session: aiohttp.ClientSession,
        base: str,
        room: str,
        *,
        ident: str,
        on_delivery: DeliveryCallback | None = None,
        keep: bool = False,
    ) -> Client:
        """A client of this protocol (not yet connected)."""

    @abc.abstractmethod
    def make_updates(
        self, room: str, ident: str, seqs: Sequence[int], value_size: int, gen: int = 0,
        batch: int = 1,
    ) -> list[Message]:
        """Prebuilt writer messages: ``batch`` updates of ``seqs`` per message, in order."""

    @abc.abstractmethod
    def verify(self, client: Client, seqs: Sequence[int], value_size: int) -> int:
        """How many of ``seqs`` the client's kept frames do not hold with the right value."""

    @abc.abstractmethod
    async def late_joiner(
        self, session: aiohttp.ClientSession, base: str, *, room: str, entries: int,
        divergence: float, value_size: int, batch: int, timeout: float,
    ) -> dict[str, Any]:
        """Scenario (d): full-state and post-divergence sync of a late peer (see scenarios)."""
