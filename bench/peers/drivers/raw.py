"""Driver for the raw-transport ceiling (``bench/peers/raw_server.py``).

Protocol: connect to ``/ws/{room}``, wait for the server's ``ok`` text frame (registered in
the room), then every binary frame sent is relayed verbatim to the room's other peers. An
update is just its value bytes. There is no state, so no late-joiner figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp

from .base import MARK_RE, Client, DeliveryCallback, Driver, Message, chunks, value


class RawClient(Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ready = False

    async def connect(self, timeout: float = 30.0) -> None:
        await self._open(timeout)
        self._start_reader()
        await self.wait_until(lambda: self.ready, timeout, "ok")

    def on_text(self, data: str, t: float) -> None:
        if data == "ok":
            self.ready = True

    def on_binary(self, data: bytes, t: float) -> None:
        if self.on_delivery is not None:
            self.deliver_marks(data, t)
        if self.keep:
            self.frames.append(data)


class RawDriver(Driver):
    family = "raw"
    late_joiner_supported = False

    def url(self, base: str, room: str) -> str:
        return f"{base}/ws/{room}"

    def client(
        self, session: aiohttp.ClientSession, base: str, room: str, *, ident: str,
        on_delivery: DeliveryCallback | None = None, keep: bool = False,
    ) -> RawClient:
        return RawClient(session, self.url(base, room), ident=ident, on_delivery=on_delivery,
                         keep=keep)

    def make_updates(
        self, room: str, ident: str, seqs: Sequence[int], value_size: int, gen: int = 0,
        batch: int = 1,
    ) -> list[Message]:
        return [
            "".join(value(s, value_size, gen) for s in part).encode()
            for part in chunks(seqs, batch)
        ]

    def verify(self, client: Client, seqs: Sequence[int], value_size: int) -> int:
        got: dict[int, bytes] = {}
        for frame in client.frames:
            for m in MARK_RE.finditer(frame):
                s = int(m.group(1))
                got[s] = frame[m.start() : m.start() + value_size]
        return sum(1 for s in seqs if got.get(s) != value(s, value_size).encode())

    async def late_joiner(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Not run (``late_joiner_supported`` is False): a relay keeps no room state."""
        return {"skipped": "no room state (transport ceiling)"}
