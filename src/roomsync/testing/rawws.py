"""A raw WebSocket client for hostile-client tests: it speaks RFC 6455 by hand over a
plain socket, so a test can do what no polite library does: never read, flood control
frames, shrink its receive buffer, or never answer a CLOSE.

Frames it sends are masked (as clients must); frames it reads are parsed whole.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def client_frame(payload: bytes, opcode: int = OP_TEXT, *, fin: bool = True) -> bytes:
    """One masked client frame."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


@dataclass
class Frame:
    opcode: int
    payload: bytes

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])


class RawWebSocket:
    """One upgraded connection. Create with :meth:`open`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(
        cls, host: str, port: int, path: str, *, rcvbuf: int | None = None, timeout: float = 10
    ) -> RawWebSocket:
        """Connect and upgrade; ``rcvbuf`` shrinks the socket's receive buffer first, so
        what the server writes backs up on its side once this client stops reading."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), timeout)
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 24)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise ConnectionError(f"upgrade refused: {head.splitlines()[0]!r}")
        return cls(reader, writer)

    def send_raw(self, data: bytes) -> None:
        """Queue bytes without waiting for the kernel to take them (a client that floods)."""
        self.writer.write(data)

    async def send(self, payload: bytes, opcode: int = OP_TEXT) -> None:
        self.writer.write(client_frame(payload, opcode))
        await self.writer.drain()

    async def send_json(self, obj: Any) -> None:
        await self.send(json.dumps(obj).encode())

    async def read_frame(self, timeout: float = 10) -> Frame:
        """The next whole frame from the server (server frames are unmasked)."""

        async def read() -> Frame:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return Frame(b0 & 0x0F, await self.reader.readexactly(n))

        return await asyncio.wait_for(read(), timeout)

    async def read_message(self, timeout: float = 10) -> Frame:
        """The next data or CLOSE frame: a PING is answered with its PONG and skipped, a
        PONG skipped, so a slow hello is not mistaken for a non-JSON answer."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            frame = await self.read_frame(max(left, 0.001))
            if frame.opcode == OP_PING:
                self.send_raw(client_frame(frame.payload, OP_PONG))
                continue
            if frame.opcode != OP_PONG:
                return frame

    async def until_close(self, timeout: float = 10) -> tuple[list[Frame], int | None]:
        """Read until the server's CLOSE (or EOF): (the frames before it, its code)."""
        seen: list[Frame] = []
        try:
            while True:
                frame = await self.read_frame(timeout)
                if frame.opcode == OP_CLOSE:
                    return seen, frame.close_code
                seen.append(frame)
        except (asyncio.IncompleteReadError, ConnectionError):
            return seen, None

    async def close(self) -> None:
        """Drop the connection (no CLOSE handshake) and wait until it is gone."""
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
