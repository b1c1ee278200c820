"""Raw-transport ceiling on aiohttp (roomsync's HTTP library; its WebSocket library until
the data plane moved to picows, see raw_picows.py): a minimal room broadcast server.

No state, no merge, no protocol: every binary frame a client sends is relayed as is to the
other clients of its room (``/ws/{room}``). After registering a client in its room the
server sends it the text frame ``ok``, so a client knows when it will receive broadcasts.
It runs on uvloop when available, as roomsync does.

Usage: python -m bench.peers.raw_server HOST PORT
"""

from __future__ import annotations

import sys
from collections import defaultdict

from aiohttp import WSMsgType, web

ROOMS: defaultdict[str, set[web.WebSocketResponse]] = defaultdict(set)


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    name = request.match_info["room"]
    room = ROOMS[name]
    room.add(ws)
    try:
        await ws.send_str("ok")
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                data = msg.data
                for peer in tuple(room):
                    if peer is not ws and not peer.closed:
                        await peer.send_bytes(data)
    finally:
        room.discard(ws)
        if not room:
            ROOMS.pop(name, None)
    return ws


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = web.Application()
    app.router.add_get("/ws/{room}", ws_handler)
    loop = None
    try:
        import uvloop
    except ImportError:
        pass
    else:
        loop = uvloop.new_event_loop()
    print(f"raw aiohttp broadcast listening on {host}:{port}", flush=True)
    web.run_app(app, host=host, port=port, print=None, backlog=4096, loop=loop)


if __name__ == "__main__":
    main()
