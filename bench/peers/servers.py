"""Start and stop each benchmarked system as a subprocess pinned to one core.

Every server runs as ``taskset -c <core> <argv>`` (taskset execs, so the pid we hold is the
server's own), in a new session so that stopping it ends exactly the process group we
started. Its output goes to a log file in a per-run temporary directory.

Resource figures come from /proc: CPU time is utime+stime of the server process and all
its descendants (``/proc/<pid>/stat``), RSS is the sum of their ``VmRSS``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ENV_PYTHON = HERE / ".env" / "bin" / "python"
NODE_MODULES = HERE / "node_modules"
HOST = "127.0.0.1"
SERVER_CORE = "0"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class System:
    """One benchmarked system: how to start it and which driver speaks its protocol."""

    name: str
    driver: str  # key of drivers.DRIVERS
    argv: Callable[[int, Path], list[str]]  # (port, data dir) -> command line
    version: Callable[[], str]
    cwd: Path = HERE
    env: dict[str, str] = field(default_factory=dict)
    needs: Path | None = None  # installed by install.sh
    default: bool = True  # part of a run without --systems
    port_env: bool = False  # the port is passed as $PORT, not in argv
    ready_timeout: float = 30.0

    def check(self) -> str | None:
        """Why this system cannot run here (not installed), or None."""
        if self.needs is not None and not self.needs.exists():
            return f"{self.needs} missing: run bench/peers/install.sh"
        return None


def _npm_version(package: str) -> str:
    try:
        data = json.loads((NODE_MODULES / package / "package.json").read_text())
    except OSError:
        return "not installed"
    return str(data["version"])


def _venv_versions(*names: str) -> str:
    if not ENV_PYTHON.exists():
        return "not installed"
    code = (
        "import importlib.metadata as m, sys\n"
        "print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))"
    )
    out = subprocess.run(
        [str(ENV_PYTHON), "-c", code, *names], capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip() or out.stderr.strip()[-200:]


def _main_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _roomsync_version() -> str:
    sha = ""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10,
        )
        sha = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        if sha and dirty:
            sha += " + uncommitted changes in src/"
    except (OSError, subprocess.SubprocessError):
        pass
    v = _main_version("roomsync")
    return f"roomsync {v}" + (f" @ {sha}" if sha else "") + f", aiohttp {_main_version('aiohttp')}"


def _node_version() -> str:
    try:
        return subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        return "node not found"


# The peers have no per-peer rate limits and log nothing per session: same for roomsync.
ROOMSYNC_ENV = {
    "ROOMSYNC_POLICY_RATE_MESSAGES_PER_S": "1000000000",
    "ROOMSYNC_POLICY_RATE_BYTES_PER_S": "1000000000000000",
    "ROOMSYNC_POLICY_RATE_BURST_MESSAGES": "1000000000",
    "ROOMSYNC_POLICY_RATE_BURST_BYTES": "1000000000000000",
    "ROOMSYNC_LOG_LEVEL": "warning",
}


def _roomsync_argv(port: int, data_dir: Path) -> list[str]:
    exe = shutil.which("roomsync")
    cmd = [exe] if exe else [sys.executable, "-m", "roomsync.cli.main"]
    return [*cmd, "serve", "--host", HOST, "--port", str(port),
            "--data-dir", str(data_dir), "--dev"]


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        System(
            name="roomsync",
            driver="roomsync",
            argv=_roomsync_argv,
            version=_roomsync_version,
            cwd=REPO,
            env=ROOMSYNC_ENV,
        ),
        System(
            name="roomsync-memory",
            driver="roomsync",
            argv=lambda port, d: [*_roomsync_argv(port, d), "--storage", "memory"],
            version=lambda: _roomsync_version() + " (--storage memory)",
            cwd=REPO,
            env=ROOMSYNC_ENV,
            default=False,
        ),
        System(
            name="roomsync-json",
            driver="roomsync-json",
            argv=_roomsync_argv,
            version=lambda: _roomsync_version() + " (JSON packs: no binary cap)",
            cwd=REPO,
            env=ROOMSYNC_ENV,
            default=False,
        ),
        System(
            name="raw-picows",
            driver="raw",
            argv=lambda port, _d: [sys.executable, "-m", "bench.peers.raw_picows", HOST, str(port)],
            version=lambda: f"picows {_main_version('picows')} (minimal broadcast, no state)",
            cwd=REPO,
        ),
        System(
            name="raw-aiohttp",
            driver="raw",
            argv=lambda port, _d: [sys.executable, "-m", "bench.peers.raw_server", HOST, str(port)],
            version=lambda: f"aiohttp {_main_version('aiohttp')} (minimal broadcast, no state)",
            cwd=REPO,
            default=False,
        ),
        System(
            name="y-websocket",
            driver="yjs",
            argv=lambda port, _d: [
                "node", str(NODE_MODULES / "@y" / "websocket-server" / "src" / "server.js")
            ],
            env={"HOST": HOST},
            port_env=True,
            needs=NODE_MODULES / "@y" / "websocket-server",
            version=lambda: (
                f"@y/websocket-server {_npm_version('@y/websocket-server')}, "
                f"yjs {_npm_version('yjs')}, node {_node_version()}"
            ),
        ),
        System(
            name="hocuspocus",
            driver="hocuspocus",
            argv=lambda port, _d: ["node", str(HERE / "js" / "hocuspocus-server.mjs"), HOST,
                                   str(port)],
            version=lambda: (
                f"@hocuspocus/server {_npm_version('@hocuspocus/server')} (in memory), "
                f"yjs {_npm_version('yjs')}, node {_node_version()}"
            ),
            needs=NODE_MODULES / "@hocuspocus" / "server",
        ),
        System(
            name="pycrdt-websocket",
            driver="yjs",
            argv=lambda port, _d: [str(ENV_PYTHON), str(HERE / "pycrdt_server.py"), HOST,
                                   str(port)],
            version=lambda: _venv_versions("pycrdt-websocket", "pycrdt", "uvicorn", "websockets"),
            needs=ENV_PYTHON,
        ),
    )
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    """Pids of all descendants of ``pid`` (one scan of /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out.extend(kids)
        todo.extend(kids)
    return out


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    fields = stat[stat.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Server:
    """A running system. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(self, system: System, workdir: Path | None = None) -> None:
        self.system = system
        self.port = free_port()
        self._own_tmp = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{system.name}-")) if workdir is None \
            else workdir
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / f"{system.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.argv: list[str] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    @property
    def command_line(self) -> str:
        """The command as a shell line, with the environment it adds (temp paths as is)."""
        env = dict(self.system.env)
        if self.system.port_env:
            env["PORT"] = str(self.port)
        return " ".join([*(f"{k}={v}" for k, v in env.items()), *self.argv])

    def start(self) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.argv = ["taskset", "-c", SERVER_CORE, *self.system.argv(self.port, self.data_dir)]
        env = {**os.environ, **self.system.env}
        if self.system.port_env:
            env["PORT"] = str(self.port)
        if self.system.driver in ("raw", "roomsync", "roomsync-json"):
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(REPO), str(REPO / "src"), env.get("PYTHONPATH", "")) if p
            )
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.system.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.system.ready_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.system.name} exited with {self.proc.returncode} at start; "
                    f"log tail:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.system.name} not listening on {self.port} after "
                           f"{self.system.ready_timeout:.0f}s; log tail:\n{self.log_tail()}")

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        return [self.pid, *_children(self.pid)] if self.alive() else []

    def cpu_seconds(self) -> float:
        """CPU time (user+system) used so far by the server and its descendants."""
        return sum(_cpu_ticks(p) for p in self.pids()) / CLK_TCK

    def rss_bytes(self) -> int:
        return sum(_rss_bytes(p) for p in self.pids())

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)  # the group we created (start_new_session)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._own_tmp:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        # keep the log directory only when something went wrong
        if self._own_tmp and exc[0] is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
