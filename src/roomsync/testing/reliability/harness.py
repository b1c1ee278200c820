"""The machinery every scenario shares: the profile's counts, a real ``roomsync serve``
that a scenario can kill and restart, probes of ``/healthz`` latency and of the server's
RSS, and the server's own counters read from ``/metrics``.

A scenario is ``async def run(ctx: Context, out: Outcome) -> None``: it drives load and
faults against a real server, records what it measured in ``out`` and every broken
invariant with ``out.check``. It starts and stops everything it uses (in ``finally``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ..server import TEST_KEYS, free_port, wait_for_port
from .scorecard import Outcome

__all__ = [
    "DOCUMENTED_CLOSES",
    "NOT_COVERED",
    "Context",
    "Node",
    "Probes",
    "Scenario",
    "metric_samples",
    "raise_fd_limit",
]

#: Close codes a server may use under load and faults (SPEC §2 close codes): normal,
#: going away, protocol error, frame too big, overload, draining, resync, expired token,
#: forbidden, room closed, rate limit. 1006 is no code at all (the socket dropped).
DOCUMENTED_CLOSES = frozenset({1000, 1001, 1002, 1009, 1011, 1012, 4001, 4002, 4003, 4004, 4008})

#: Scenarios of issue 16 this build cannot run, with why: listed in every scorecard,
#: never faked. Empty: every scenario the issue names runs.
NOT_COVERED: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Context:
    """The run's profile and a private working directory for the scenario."""

    profile: str
    workdir: Path

    @property
    def long(self) -> bool:
        return self.profile == "long"

    def pick(self, quick: Any, long: Any) -> Any:
        """The quick or the long profile's value of a count."""
        return long if self.long else quick

    def scaled(self, out: Outcome, what: str, quick: int, long: int, full: int) -> int:
        """A count of this profile; notes it on the scorecard when it is below ``full``
        (the figure the issue asks for)."""
        n = int(self.pick(quick, long))
        if n < full:
            out.notes.append(f"{what}: {n:,} ({self.profile} profile; the full figure is {full:,})")
        return n


@dataclass(frozen=True)
class Scenario:
    """A registered scenario; ``needs`` names what it cannot run without (``root``)."""

    name: str
    title: str
    run: Callable[[Context, Outcome], Awaitable[None]]
    needs: tuple[str, ...] = ()
    quick: bool = True


def raise_fd_limit(want: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``want``; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes(pid: int) -> tuple[int | None, int | None]:
    """(current RSS, peak RSS) of ``pid`` from /proc, or Nones when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None, None
    now = peak = None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return now, peak


class Node:
    """``roomsync serve`` as a child process on a fixed port and data dir, so it can be
    killed (``kill -9``) and started again where it was. Its stderr (JSON logs) goes to a
    file in the data dir's parent, read by :meth:`log_events`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        dev: bool = True,
        host: str = "127.0.0.1",
        prefix: Sequence[str] = (),
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        #: Where it listens (and is reached); ``prefix`` goes before the command, e.g.
        #: ``ip netns exec NS`` to run it in a network namespace.
        self.host = host
        self.prefix = list(prefix)
        self.env = dict(env or {})
        self.args = list(args)
        self.dev = dev
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.peak_rss = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, room: str) -> str:
        return f"ws://{self.host}:{self.port}/ws/{room}"

    def start(self, timeout: float = 30.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMSYNC_")}
        env["ROOMSYNC_AUTH_KEYS"] = ",".join(f"{k}:{v}" for k, v in TEST_KEYS.items())
        env.update(self.env)
        cmd = [
            *self.prefix,
            sys.executable,
            "-m",
            "roomsync.cli.main",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *(["--dev"] if self.dev else []),
            *self.args,
        ]
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        finally:
            log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"roomsync serve exited with {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                wait_for_port(self.port, None, timeout=0.2, host=self.host)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def sample_rss(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        now, peak = rss_bytes(self.proc.pid)
        self.peak_rss = max(self.peak_rss, peak or 0, now or 0)
        return now

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int | None:
        """Send ``sig`` and wait for the exit; the exit code (None if it was not running)."""
        if self.proc is None:
            return None
        self.sample_rss()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout)
        self.proc = None
        return code

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def log_events(self, event: str) -> list[str]:
        """The log lines of ``event`` (e.g. ``session.internal_error``) so far."""
        with contextlib.suppress(OSError):
            needle = f'"event": "{event}"'
            compact = f'"event":"{event}"'
            return [
                line
                for line in self.log_path.read_text(errors="replace").splitlines()
                if needle in line or compact in line
            ]
        return []

    @contextlib.contextmanager
    def running(self) -> Any:
        """Start now, and kill whatever is still running at the end of the block."""
        self.start()
        try:
            yield self
        finally:
            self.kill()


async def metric_samples(
    http: aiohttp.ClientSession, url: str, name: str
) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of metric ``name`` on the server at ``url``, by its sorted labels."""
    async with http.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=30)) as resp:
        text = await resp.text()
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def counts_by(http: aiohttp.ClientSession, url: str, name: str, label: str) -> dict[str, int]:
    """Metric ``name`` summed by the value of ``label`` (e.g. closes by ``code``)."""
    out: dict[str, int] = {}
    for labels, value in (await metric_samples(http, url, name)).items():
        key = dict(labels).get(label, "")
        if value:
            out[key] = out.get(key, 0) + int(value)
    return out


@dataclass
class Probes:
    """Background probes while a scenario runs: ``GET /healthz`` every ``interval`` s
    (latency in ms into ``out.healthz_ms``; failures counted) and, for a child process,
    its RSS."""

    out: Outcome
    url: str
    node: Node | None = None
    interval: float = 0.05
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Probes]:
        stop = asyncio.Event()
        task = asyncio.create_task(self._loop(stop))
        try:
            yield self
        finally:
            stop.set()
            await task
            if self.node is not None:
                self.node.sample_rss()
                peak = self.node.peak_rss or None
                if peak is not None:
                    self.out.peak_rss_bytes = max(self.out.peak_rss_bytes or 0, peak)

    async def _loop(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while not stop.is_set():
                if self.node is not None:
                    self.node.sample_rss()
                if self.node is None or self.node.alive():
                    t0 = time.perf_counter()
                    try:
                        async with http.get(self.url + "/healthz") as resp:
                            await resp.read()
                            if resp.status == 200:
                                self.out.healthz_ms.append((time.perf_counter() - t0) * 1000)
                            else:
                                self.failed += 1
                    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                        if self.node is None or self.node.alive():
                            self.failed += 1
                            self.errors.append(type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)


def private_dir(prefix: str) -> Path:
    """A fresh private directory (``mktemp -d``), for a run without a caller's workdir."""
    return Path(tempfile.mkdtemp(prefix=prefix))
