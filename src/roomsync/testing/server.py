"""Start a real roomsync server for tests: in-process on a free port, or as a subprocess.

Published as part of the test kit so that applications can test against the real thing::

    async with running_server(tmp_path, dev=True) as srv:
        ws = await session.ws_connect(srv.ws_url("room-1"))
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..auth.tokens import TokenService
from ..config import Settings, load_settings
from ..core.types import DATA_CAPS
from ..server.app import RoomsyncServer
from ..storage.base import Store

ALL_DATA_CAPS = DATA_CAPS


#: The signing key every test server uses, so tests can mint tokens for it.
TEST_KEYS = {"test-k1": "test-secret-0123456789abcdef0123456789abcdef"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_settings(
    data_dir: Path, *, dev: bool = True, env: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Settings for a test server: no config file, no environment, a fixed signing key."""
    values: dict[str, Any] = {
        "server.data_dir": str(data_dir),
        "auth.keys": dict(TEST_KEYS),
        "server.room_idle_unload_ms": 0,
    }
    if dev:
        values["server.dev"] = True
        values["policy.anonymous_caps"] = list(ALL_DATA_CAPS)
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_settings(None, env=env or {}, overrides=values)


class _Endpoint(abc.ABC):
    """URLs and tokens of a test server; subclasses say where it listens and who signs."""

    host: str
    port: int
    scheme: str

    @property
    @abc.abstractmethod
    def tokens(self) -> TokenService:
        """The token service whose keys the server verifies with."""

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def ws_url(self, room: str) -> str:
        ws = "wss" if self.scheme == "https" else "ws"
        return f"{ws}://{self.host}:{self.port}/ws/{room}"

    def mint(
        self,
        room: str = "*",
        caps: Sequence[str] = ALL_DATA_CAPS,
        *,
        ttl_s: int = 3600,
        actor: str | None = None,
        now_s: int | None = None,
    ) -> str:
        return self.tokens.mint(
            room=room,
            caps=caps,
            ttl_s=ttl_s,
            now_s=int(time.time()) if now_s is None else now_s,
            actor=actor,
        )


@dataclass
class ServerHandle(_Endpoint):
    server: RoomsyncServer
    host: str
    port: int
    scheme: str = "http"

    @property
    def tokens(self) -> TokenService:
        return self.server.tokens


@contextlib.asynccontextmanager
async def running_server(
    data_dir: Path,
    *,
    settings: Settings | None = None,
    store: Store | None = None,
    now_ms: Callable[[], int] | None = None,
    app: object | None = None,
    **overrides: Any,
) -> AsyncIterator[ServerHandle]:
    """An in-process server on 127.0.0.1 and a free port, stopped on exit; ``store``
    replaces the one the settings would build (e.g. a :class:`~.faults.FaultyStore`),
    ``now_ms`` the wall clock the server reads (e.g. :meth:`.clock.FakeClock.now_ms`),
    ``app`` is the object whose hooks it calls (``docs/hooks.md``)."""
    settings = settings or test_settings(data_dir, **overrides)
    if now_ms is None:
        server = RoomsyncServer(settings, store=store, app=app)
    else:
        server = RoomsyncServer(settings, store=store, now_ms=now_ms, app=app)
    await server.start("127.0.0.1", 0)
    assert server.port is not None
    scheme = "https" if settings.server.tls_cert else "http"
    try:
        yield ServerHandle(server, "127.0.0.1", server.port, scheme)
    finally:
        await server.stop()


@dataclass
class ServerProcess(_Endpoint):
    proc: subprocess.Popen[str]
    port: int
    data_dir: Path
    host: str = "127.0.0.1"
    scheme: str = "http"

    @property
    def tokens(self) -> TokenService:
        return TokenService(dict(TEST_KEYS))

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@contextlib.contextmanager
def server_process(
    data_dir: Path,
    *,
    port: int | None = None,
    dev: bool = True,
    extra_env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> Iterator[ServerProcess]:
    """``roomsync serve`` as a child process (for signals, crashes and restarts)."""
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMSYNC_")}
    env["ROOMSYNC_AUTH_KEYS"] = ",".join(f"{k}:{v}" for k, v in TEST_KEYS.items())
    env.update(extra_env or {})
    cmd = [
        sys.executable,
        "-m",
        "roomsync.cli.main",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        *(["--dev"] if dev else []),
        *args,
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    handle = ServerProcess(proc, port, data_dir)
    try:
        wait_for_port(port, proc)
        yield handle
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def wait_for_port(
    port: int,
    proc: subprocess.Popen[str] | None = None,
    timeout: float = 20.0,
    host: str = "127.0.0.1",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode}:\n{out}")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout} s")


async def wait_until(predicate: Any, *, timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll ``predicate()`` (sync or async) until true; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)
