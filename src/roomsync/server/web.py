"""The web apps shipped in the package: the demo board at ``/demo/`` and the room
inspector at ``/inspect/`` (issue 14), served as static files by ``roomsync serve --demo``
(both) or ``--inspect`` (the inspector alone); neither is served otherwise.

The files are the Vite builds under ``roomsync/web/<app>/`` (built from ``clients/demo``
and ``clients/inspector``; ``build.json`` records the sources they were built from). They
are read once, when the routes are added, and answered from memory with:

- a content type from a fixed table (anything else is not served: 404);
- a strict Content-Security-Policy: scripts, styles and fetches from this origin only (the
  demo also opens its WebSocket to this host), images from this origin, ``blob:`` and
  ``data:`` (the board shows blobs through object URLs), no inline script, no framing;
- ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``;
- ``no-cache`` for the HTML (it names the current assets), a year's ``immutable`` cache
  for the content-hashed files under ``assets/``.

Tokens reach these apps in the URL fragment (``#token=…``) or pasted, and the apps send
them only in WebSocket hellos and ``Authorization`` headers: never in a URL, so never in a
request line.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web

__all__ = ["APPS", "CONTENT_TYPES", "WebApp", "add_web_routes", "load_app"]

#: ``app -> URL prefix``: the apps this module serves.
APPS = {"demo": "/demo/", "inspect": "/inspect/"}

#: Content types by file suffix; a file of another suffix is not served.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}

_IMMUTABLE = "public, max-age=31536000, immutable"


def _csp(connect: str) -> str:
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' blob: data:",
            "font-src 'self'",
            f"connect-src {connect}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        )
    )


class WebApp:
    """One built app held in memory: ``files`` maps a relative path to its bytes."""

    def __init__(self, name: str, files: dict[str, bytes]) -> None:
        self.name = name
        self.prefix = APPS[name]
        self.files = files

    def headers(self, request: web.Request, rel: str, content_type: str) -> dict[str, str]:
        if self.name == "demo":
            # The board's WebSocket goes to this host; name it, as 'self' does not cover
            # ws:/wss: in every browser.
            host = request.host
            connect = f"'self' ws://{host} wss://{host}"
        else:
            connect = "'self'"
        return {
            "Content-Type": content_type,
            "Content-Security-Policy": _csp(connect),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": _IMMUTABLE if rel.startswith("assets/") else "no-cache",
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        rel = request.match_info.get("path", "") or "index.html"
        body = self.files.get(rel)
        suffix = rel[rel.rfind(".") :] if "." in rel else ""
        content_type = CONTENT_TYPES.get(suffix)
        if body is None or content_type is None:
            raise web.HTTPNotFound(text=f"no file {rel!r} in {self.prefix}")
        return web.Response(body=body, headers=self.headers(request, rel, content_type))


def _walk(node: Traversable, prefix: str, out: dict[str, bytes]) -> None:
    for child in node.iterdir():
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            _walk(child, f"{rel}/", out)
        elif not child.name.startswith("."):
            out[rel] = child.read_bytes()


def load_app(name: str) -> WebApp:
    """The built app ``name`` (``demo`` or ``inspect``) from the package; a build that is
    missing (a source checkout that never built it) raises FileNotFoundError."""
    root = resources.files("roomsync.web").joinpath(name)
    files: dict[str, bytes] = {}
    if root.is_dir():
        _walk(root, "", files)
    if "index.html" not in files:
        raise FileNotFoundError(f"roomsync/web/{name}/index.html: the {name} app is not built")
    return WebApp(name, files)


def add_web_routes(app: web.Application, names: tuple[str, ...] = ("demo", "inspect")) -> None:
    """Serve the apps ``names`` at their prefixes; call before the server starts."""
    for name in names:
        web_app = load_app(name)
        prefix = web_app.prefix
        bare = prefix.rstrip("/")

        async def redirect(request: web.Request, to: str = prefix) -> web.StreamResponse:
            raise web.HTTPPermanentRedirect(to)

        app.router.add_get(bare, redirect)
        app.router.add_get(prefix, web_app.handle)
        app.router.add_get(prefix + "{path:.+}", web_app.handle)
