"""A webhook receiver for the todo app of docs/hooks.md: verifies every signature and
handles each event once (by its id), whatever the retries.

    python receiver.py 8788        # then POSTs arrive at http://127.0.0.1:8788/hooks
"""

from __future__ import annotations

import json
import sys

from aiohttp import web

from roomsync.hooks.webhooks import SIGNATURE_HEADER, verify

SECRET = "todo-webhook-secret-change-me"
#: The events handled so far, by id (read by tests/test_examples.py).
SEEN = web.AppKey("seen", dict[str, dict[str, object]])


def make_app(secret: str = SECRET) -> web.Application:
    seen: dict[str, dict[str, object]] = {}

    async def hooks(request: web.Request) -> web.Response:
        body = await request.read()  # the raw bytes: the signature covers them exactly
        if not verify(secret, request.headers.get(SIGNATURE_HEADER, ""), body):
            return web.Response(status=401, text="bad signature")
        event = json.loads(body)
        if event["id"] not in seen:  # a retry of an event already handled: ack it again
            seen[event["id"]] = event
            print(f"{event['type']:<18} room={event['room']} {json.dumps(event['data'])}",
                  flush=True)  # fmt: skip
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks", hooks)
    app[SEEN] = seen
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 8788)
