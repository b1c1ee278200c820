"""``roomsync serve``: run a node on its embedded defaults or a config file."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

from ..auth.keyfile import signing_keys
from ..auth.tokens import TokenService
from ..config import POSTGRES_BACKENDS, ConfigError, Settings
from ..core.types import DATA_CAPS
from ..redaction import redact_dsn
from ..server.app import RoomsyncServer
from ..server.logs import setup_logging
from ..server.web import APPS, add_web_routes
from .common import add_config_flags, die, settings_from

#: Allocations between young-generation collections (CPython's default is 700).
GC_GEN0_THRESHOLD = 20_000

#: What ``--dev`` grants anonymous peers on unlocked rooms.
DEV_ANONYMOUS_CAPS = DATA_CAPS


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the server")
    add_config_flags(p)
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8787)")
    p.add_argument(
        "--dev",
        action="store_true",
        help="development mode: anonymous read/write on unlocked rooms, prints a token",
    )
    p.add_argument("--tls-cert", default=None, help="PEM certificate chain: serve wss://")
    p.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    # No argparse choices: the settings loader names the key and says what is planned.
    p.add_argument(
        "--storage",
        default=None,
        metavar="BACKEND",
        help="store backend: sqlite (default, in the data dir), memory or postgres",
    )
    p.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help=(
            "PostgreSQL store shared by several nodes, e.g. postgresql://USER@HOST/DB: "
            "sets storage.backend postgres and storage.postgres_dsn"
        ),
    )
    p.add_argument(
        "--bus",
        default=None,
        metavar="URL",
        help=(
            "Redis bus between nodes, e.g. redis://HOST:6379/0: sets bus.backend redis and "
            "bus.redis_url (with a PostgreSQL --store)"
        ),
    )
    p.add_argument(
        "--node-id",
        default=None,
        metavar="NAME",
        help="this node's id in topology (server.node_id; default <hostname>:<port>)",
    )
    p.add_argument(
        "--app",
        default=None,
        metavar="MODULE:OBJECT",
        help="the app whose hooks the server calls (docs/hooks.md), e.g. todo.hooks:TodoApp",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="serve the demo board at /demo/ and the room inspector at /inspect/",
    )
    p.add_argument(
        "--inspect",
        action="store_true",
        help="serve the room inspector at /inspect/ (read-only, needs an operator token)",
    )
    p.set_defaults(run=run)


def serve_settings(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """The settings ``roomsync serve`` runs with: ``args`` (its parsed flags) over the
    environment ``env`` (default the process's) over the config file; exits 2 with the
    message when they do not make a valid configuration."""
    overrides: dict[str, Any] = {
        "server.host": args.host,
        "server.port": args.port,
        "server.tls_cert": args.tls_cert,
        "server.tls_key": args.tls_key,
        "storage.backend": args.storage,
        "app.object": args.app,
        "server.node_id": args.node_id,
    }
    if args.bus is not None:
        if not args.bus.startswith(("redis://", "rediss://", "unix://")):
            die(f"--bus: expected a redis:// URL, got {redact_dsn(args.bus)!r}", code=2)
        overrides["bus.backend"] = "redis"
        overrides["bus.redis_url"] = args.bus
    if args.store is not None:
        if not args.store.startswith(("postgresql://", "postgres://")):
            die(f"--store: expected a postgresql:// URL, got {redact_dsn(args.store)!r}", code=2)
        if args.storage is not None and args.storage not in POSTGRES_BACKENDS:
            die(f"--store names a PostgreSQL store, --storage says {args.storage!r}", code=2)
        overrides["storage.backend"] = "postgres"
        overrides["storage.postgres_dsn"] = args.store
    if args.dev:
        overrides["server.dev"] = True
    settings = settings_from(args, env=env, **overrides)
    if settings.server.dev and not settings.policy.anonymous_caps:
        settings = settings_from(
            args, env=env, **overrides, **{"policy.anonymous_caps": ",".join(DEV_ANONYMOUS_CAPS)}
        )
    return settings


def run(args: argparse.Namespace) -> int:
    settings = serve_settings(args)
    setup_logging(settings.log.level, settings.log.format)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvloop is optional on platforms without it
        pass
    try:
        return asyncio.run(_serve(settings, _web_apps(args)))
    except KeyboardInterrupt:
        return 0


def _web_apps(args: argparse.Namespace) -> tuple[str, ...]:
    """The web apps to serve: ``--demo`` both, ``--inspect`` the inspector alone."""
    if args.demo:
        return ("demo", "inspect")
    return ("inspect",) if args.inspect else ()


async def _serve(settings: Any, web_apps: tuple[str, ...] = ()) -> int:
    try:
        server = RoomsyncServer(settings)
        add_web_routes(server.app, web_apps)
        await server.start()
    except OSError as exc:
        die(f"cannot start: {exc}")
    except ConfigError as exc:  # the app of --app / [app] could not be loaded
        die(f"cannot start: {exc}")
    except FileNotFoundError as exc:  # --demo/--inspect in a checkout without the builds
        die(f"cannot start: {exc}")
    # Everything allocated at start-up lives as long as the process: keep it out of the
    # cyclic collector's way, and collect young objects less often (thousands of
    # connections make each collection expensive).
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
    s = settings.server
    scheme = "wss" if s.tls_cert else "ws"
    http_scheme = "https" if s.tls_cert else "http"
    base = f"{s.host}:{server.port}"
    print(
        f"roomsync listening on {http_scheme}://{base} (WebSocket {scheme}://{base}/ws/ROOM)",
        file=sys.stderr,
        flush=True,
    )
    print(
        f"data dir: {s.data_dir}  storage: {settings.storage.backend}", file=sys.stderr, flush=True
    )
    if server.hooks.app is not None:
        hooks = ", ".join(server.hooks.names) or "none"
        name = settings.app.object or type(server.hooks.app).__name__
        print(f"app: {name}  hooks: {hooks}", file=sys.stderr, flush=True)
    for name in web_apps:
        print(f"{name}: {http_scheme}://{base}{APPS[name]}", file=sys.stderr, flush=True)
    if "demo" in web_apps and not s.dev:
        print("demo: no --dev, so open it with #room=ROOM&token=DATA_TOKEN", file=sys.stderr)
    if s.dev:
        tokens = TokenService(signing_keys(settings))
        token = tokens.mint(
            room="*", caps=DATA_CAPS, ttl_s=24 * 3600, now_s=int(time.time()), actor="dev"
        )
        print("dev mode: anonymous peers may read/write unlocked rooms", file=sys.stderr)
        print(f"dev token (all rooms, 24h): {token}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("roomsync: shutting down (closing peers with 1012)", file=sys.stderr, flush=True)
    await server.stop()
    return 0
