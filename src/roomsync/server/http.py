"""Plain HTTP routes: ``/healthz``, ``/readyz``, ``/metrics`` (SPEC §7)."""

from __future__ import annotations

from aiohttp import web

from .. import __version__
from .node import Node


def add_routes(app: web.Application, node: Node) -> None:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ok": True,
                "version": __version__,
                "node": node.name,
                "uptime_ms": node.now_ms() - node.started_ms,
                "connections": len(node.connections),
                "rooms": len(node.rooms.hosts),
                "draining": node.draining,
            }
        )

    async def readyz(request: web.Request) -> web.Response:
        report = await node.readiness()
        return web.json_response(report, status=200 if report["ok"] else 503)

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = node.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
