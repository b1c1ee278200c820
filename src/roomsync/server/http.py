"""Plain HTTP routes: ``/healthz``, ``/readyz``, ``/metrics`` (SPEC §7)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .. import __version__

if TYPE_CHECKING:
    from .app import RoomsyncServer


def add_routes(app: web.Application, server: RoomsyncServer) -> None:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ok": True,
                "version": __version__,
                "node": server.node_name,
                "uptime_ms": server.now_ms() - server.started_ms,
                "connections": len(server.connections),
                "rooms": len(server.rooms.hosts),
                "draining": server.draining,
            }
        )

    async def readyz(request: web.Request) -> web.Response:
        report = await server.readiness()
        return web.json_response(report, status=200 if report["ok"] else 503)

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = server.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
