"""Raw-transport ceiling on picows, the WebSocket library roomsync's data plane uses.

The same contract as ``raw_server.py`` (aiohttp): no state, no merge, no protocol; every
binary frame a client sends is relayed as is to the other clients of its room
(``/ws/{room}``), and a client gets the text frame ``ok`` once it is registered. Built
with picows's public ``ws_create_server``, on uvloop when available, as roomsync runs.

Usage: python -m bench.peers.raw_picows HOST PORT
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import defaultdict

from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

ROOMS: defaultdict[bytes, set[WSTransport]] = defaultdict(set)


class Relay(WSListener):
    __slots__ = ("room",)

    def __init__(self, room: bytes) -> None:
        self.room = room

    def on_ws_connected(self, transport: WSTransport) -> None:
        ROOMS[self.room].add(transport)
        transport.send(WSMsgType.TEXT, b"ok")

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.BINARY:
            data = frame.get_payload_as_bytes()
            for peer in tuple(ROOMS[self.room]):
                if peer is not transport:
                    peer.send(WSMsgType.BINARY, data)
        elif frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        room = ROOMS.get(self.room)
        if room is not None:
            room.discard(transport)
            if not room:
                ROOMS.pop(self.room, None)


def route(request: WSUpgradeRequest) -> Relay | None:
    path = request.path.split(b"?", 1)[0]
    if not path.startswith(b"/ws/") or len(path) == 4:
        return None
    return Relay(path[4:])


async def serve(host: str, port: int) -> None:
    quiet = logging.LoggerAdapter(logging.getLogger("raw_picows"), {})  # no per-conn loggers
    server = await ws_create_server(
        route, host, port, backlog=4096, logger_name=quiet, use_aiofastnet=False
    )
    print(f"raw picows broadcast listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(host, port))
    else:
        uvloop.run(serve(host, port))


if __name__ == "__main__":
    main()
