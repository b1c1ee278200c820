"""Shared pieces of the roomsync benchmarks (``bench.handshake``, ``bench.sync``).

* :class:`BenchServer` starts ``roomsync serve --dev`` as a child process pinned to one
  core (``taskset -c 0``), with RLIMIT_NOFILE raised before exec, its output in a log file
  (never a pipe nobody reads) and a fresh data dir; it reads the server's RSS and CPU time
  from ``/proc/PID``.
* :func:`pin_generator` pins the load generator to the other core.
* Small helpers: percentiles, the machine line, the exact command line, target checks,
  an optional py-spy recorder attached to the server for one phase.

Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SERVER_CORE = 0
GENERATOR_CORE = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

#: Per-peer rate limits are lifted (a benchmark floods on purpose) and per-session logs
#: are off (``warning``); everything else is the shipped default policy.
SERVER_ENV: dict[str, str] = {
    "ROOMSYNC_POLICY_RATE_MESSAGES_PER_S": "1000000000",
    "ROOMSYNC_POLICY_RATE_BURST_MESSAGES": "1000000000",
    "ROOMSYNC_POLICY_RATE_BYTES_PER_S": "1000000000000",
    "ROOMSYNC_POLICY_RATE_BURST_BYTES": "1000000000000",
    "ROOMSYNC_LOG_LEVEL": "warning",
}


def log(msg: str) -> None:
    """Progress goes to stderr; results go to stdout."""
    print(msg, file=sys.stderr, flush=True)


# -- machine and command line ---------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line() -> str:
    load = os.getloadavg()
    return (
        f"machine: nproc={os.cpu_count()}  cpu={cpu_model()!r}  "
        f"python={platform.python_version()}  kernel={platform.release()}  "
        f"loadavg(1m,5m)={load[0]:.2f},{load[1]:.2f} (other users share the cores)"
    )


def versions_line() -> str:
    import importlib.metadata as md

    def v(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "-"

    commit = ""
    try:
        repo = str(Path(__file__).resolve().parent.parent)
        git = ["git", "-C", repo]
        sha = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if sha:
            commit = f" @ {sha}" + (" + uncommitted changes in src/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return (
        f"versions: roomsync {v('roomsync')}{commit}, aiohttp {v('aiohttp')}, "
        f"msgspec {v('msgspec')}, uvloop {v('uvloop')}"
    )


def command_line() -> str:
    """The command as typed (``python -m bench.x ...``), from the interpreter's own argv."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    if argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def background_load(seconds: float = 1.0) -> str:
    """How busy each core is before we start (other users share this machine)."""
    c0 = core_times()
    time.sleep(seconds)
    c1 = core_times()
    parts = []
    for k in sorted(c1):
        if k in c0:
            busy, idle, steal = (a - b for a, b in zip(c1[k], c0[k], strict=True))
            total = busy + idle + steal
            parts.append(f"core {k} {100 * busy / total if total else 0:.0f}% busy")
    return "background load before start (1 s): " + ", ".join(parts)


def header(title: str) -> None:
    print(f"== {title}")
    print(f"command: {command_line()}  (cwd {os.getcwd()})")
    print(machine_line())
    print(background_load())
    print(versions_line())
    print(
        f"pinning: server on core {SERVER_CORE} (taskset), generator on core "
        f"{GENERATOR_CORE} (sched_setaffinity)"
    )
    print(flush=True)


def run_main(
    title: str, run: Callable[[Any], Awaitable[int]], args: Any, *, limit_s: float = 300.0
) -> int:
    """Print the header, pin the generator, run ``run(args)`` under uvloop, bounded in time."""
    header(title)
    args.pin = pin_generator(GENERATOR_CORE)
    args.loop = install_uvloop()
    t0 = time.perf_counter()
    try:
        rc = asyncio.run(asyncio.wait_for(run(args), limit_s))
    except TimeoutError:
        print(f"benchmark timed out after {limit_s:.0f} s")
        rc = 2
    print(f"\ntotal run time {time.perf_counter() - t0:.0f} s; all traffic to {HOST}")
    return rc


def pin_generator(core: int = GENERATOR_CORE) -> str:
    """Pin this process to ``core`` (when the machine has it); say what was done."""
    cpus = os.cpu_count() or 1
    if cpus <= core:
        return f"not pinned (only {cpus} cpu)"
    os.sched_setaffinity(0, {core})
    return f"pinned to core {core}"


def raise_nofile(want: int) -> int:
    """Raise this process's RLIMIT_NOFILE soft limit towards ``want``; return the new one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    uvloop.install()
    return "uvloop"


# -- numbers ---------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def verdict(ok: bool) -> str:
    return "MEETS" if ok else "MISSES"


def fmt_int(n: float) -> str:
    return f"{n:,.0f}"


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` (all its threads), in seconds, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    return sum(proc_cpu_split(pid))


def proc_runqueue_wait_s(pid: int) -> float:
    """Time the main thread of ``pid`` spent runnable but not running (schedstat), s.

    That is how long something else held its core: on a shared machine mostly other
    people's processes, but also the server's own SQLite writer thread (same core).
    """
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def core_times() -> dict[int, tuple[int, int, int]]:
    """Per core from /proc/stat: (busy ticks, idle ticks, steal ticks)."""
    out: dict[int, tuple[int, int, int]] = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *vals = line.split()
                    v = [int(x) for x in vals[:8]]
                    idle = v[3] + v[4]
                    steal = v[7]
                    out[int(name[3:])] = (sum(v[:8]) - idle - steal, idle, steal)
    except OSError:
        pass
    return out


@dataclass
class CpuMeter:
    """CPU used by the server, by this generator and by each core, between start/stop."""

    server_pid: int
    t0: float = 0.0
    s0: float = 0.0
    sys0: float = 0.0
    server_sys: float = 0.0
    wait0: float = 0.0
    server_wait: float = 0.0
    g0: float = 0.0
    c0: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    elapsed: float = 0.0
    server_s: float = 0.0
    gen_s: float = 0.0
    cores: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    def start(self) -> CpuMeter:
        self.t0 = time.perf_counter()
        user, sys_ = proc_cpu_split(self.server_pid)
        self.s0, self.sys0 = user + sys_, sys_
        self.wait0 = proc_runqueue_wait_s(self.server_pid)
        self.g0 = time.process_time()
        self.c0 = core_times()
        return self

    def stop(self) -> CpuMeter:
        self.elapsed = time.perf_counter() - self.t0
        user, sys_ = proc_cpu_split(self.server_pid)
        self.server_s = user + sys_ - self.s0
        self.server_sys = sys_ - self.sys0
        self.server_wait = proc_runqueue_wait_s(self.server_pid) - self.wait0
        self.gen_s = time.process_time() - self.g0
        c1 = core_times()
        self.cores = {
            k: tuple(a - b for a, b in zip(c1[k], self.c0[k], strict=True))  # type: ignore[misc]
            for k in c1
            if k in self.c0
        }
        return self

    def core_busy(self, core: int) -> float:
        """Share of ``core`` busy with anything (all processes, irq), 0..1."""
        busy, idle, steal = self.cores.get(core, (0, 0, 0))
        total = busy + idle + steal
        return busy / total if total else float("nan")

    def line(self) -> str:
        e = self.elapsed or float("nan")
        cores = "  ".join(
            f"core {k}: {100 * self.core_busy(k):.0f}% busy"
            + (f", steal {100 * v[2] / max(sum(v), 1):.0f}%" if v[2] else "")
            for k, v in sorted(self.cores.items())
        )
        return (
            f"cpu during the run: server {100 * self.server_s / e:.0f}% of a core, "
            f"generator {100 * self.gen_s / e:.0f}% of a core "
            f"(server {self.server_s:.2f} s of which kernel {self.server_sys:.2f} s, "
            f"generator {self.gen_s:.2f} s cpu in {self.elapsed:.2f} s); server main thread "
            f"runnable but waiting for its core {self.server_wait:.2f} s "
            f"({100 * self.server_wait / e:.0f}% of the run); all processes: {cores}"
        )


# -- the server under test -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class BenchServer:
    """A running ``roomsync serve`` child; see :func:`bench_server`."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ws_url(self, room: str) -> str:
        return f"ws://{HOST}:{self.port}/ws/{room}"

    def rss_kb(self) -> int:
        return proc_rss_kb(self.pid)

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def describe(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        return (
            f"server: pid {self.pid}: {env} {shlex.join(self.argv)}\n"
            f"server settings in effect: {effective_settings(self.env)}"
        )

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def effective_settings(env: Mapping[str, str]) -> str:
    """The settings the server resolves from the same environment (its own loader)."""
    try:
        from roomsync.config import load_settings

        st = load_settings(None, env=dict(env), overrides={"server.dev": True})
    except Exception as exc:  # informative only
        return f"(could not load: {exc})"
    p, sv, sto = st.policy, st.server, st.storage
    keys = {
        "storage": sto.backend,
        "sqlite_synchronous": getattr(sto, "sqlite_synchronous", "?"),
        "broadcast_window_ms": p.broadcast_window_ms,
        "echo_to_sender": p.echo_to_sender,
        "stream_budget_bytes": p.stream_budget_bytes,
        "max_peers": p.max_peers,
        "catchup_chunk": p.catchup_chunk,
        "heartbeat_ms": sv.heartbeat_ms,
        "max_connections": sv.max_connections,
        "log": f"{st.log.level}/{st.log.format}",
    }
    return " ".join(f"{k}={v}" for k, v in keys.items())


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout} s")


@contextlib.contextmanager
def bench_server(
    *,
    nofile: int = 20000,
    core: int = SERVER_CORE,
    extra_env: Mapping[str, str] | None = None,
    keep: bool = False,
    args: Sequence[str] = (),
) -> Iterator[BenchServer]:
    """``roomsync serve --dev`` on a free port, pinned to ``core``, in a fresh data dir;
    ``args`` are more flags of ``serve`` (``--store URL --bus URL --node-id N``).

    RLIMIT_NOFILE is raised in the child before exec (``preexec_fn``). The child runs in
    its own session; on exit it gets SIGTERM, then SIGKILL after 10 s, by its pid only.
    """
    tmp = Path(tempfile.mkdtemp(prefix="roomsync-bench-"))
    data_dir = tmp / "data"
    data_dir.mkdir()
    log_path = tmp / "server.log"
    port = free_port()
    exe = shutil.which("roomsync")
    serve = [exe] if exe else [sys.executable, "-m", "roomsync.cli.main"]
    argv = [
        *serve,
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--dev",
        *args,
    ]
    taskset = shutil.which("taskset")
    if taskset and (os.cpu_count() or 1) > core:
        argv = [taskset, "-c", str(core), *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMSYNC_")}
    bench_env = {**SERVER_ENV, **(extra_env or {})}
    env.update(bench_env)

    def preexec() -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = nofile if hard == resource.RLIM_INFINITY else min(nofile, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))

    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=tmp,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=preexec,
            start_new_session=True,
        )
    server = BenchServer(proc, port, data_dir, log_path, argv, bench_env)
    try:
        _wait_for_port(port, proc, 30.0)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


# -- profiling -------------------------------------------------------------------------------


@contextlib.contextmanager
def py_spy(pid: int, out: str | None, name: str, *, rate: int = 250) -> Iterator[None]:
    """With ``out`` set: ``py-spy record`` the server during this block.

    Writes ``{out}-{name}.txt`` (collapsed stacks, for flamegraph.pl/speedscope) and
    prints the top functions by own time. py-spy runs on the generator core, so profiled
    runs are slower: never read the figures of a profiled run as the benchmark result.
    """
    if not out:
        yield
        return
    exe = shutil.which("py-spy")
    if exe is None:
        log("py-spy not installed (pip install py-spy): not profiling")
        yield
        return
    path = f"{out}-{name}.txt"
    cmd = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--output",
        path,
    ]
    if os.environ.get("BENCH_PYSPY_NATIVE"):
        cmd.append("--native")  # C frames too (uvloop, sqlite, libc); pauses the server
    else:
        cmd.append("--nonblocking")
    if (os.cpu_count() or 1) > GENERATOR_CORE and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(GENERATOR_CORE), *cmd]
    errlog = open(f"{path}.log", "wb")
    prof = subprocess.Popen(cmd, stdout=errlog, stderr=subprocess.STDOUT, start_new_session=True)
    time.sleep(0.5)  # let it attach
    try:
        yield
    finally:
        prof.send_signal(signal.SIGINT)
        try:
            prof.wait(20)
        except subprocess.TimeoutExpired:
            prof.kill()
            prof.wait(5)
        errlog.close()
        summarize_profile(path)


def summarize_profile(path: str, top: int = 25) -> None:
    """Print the functions with the most own (self) and total samples of a raw py-spy file."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    pkg: dict[str, int] = {}
    samples = 0
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        log(f"no profile written at {path}")
        return
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        # "func (path/to/file.py:123)" -> "func (path/to/file.py)": one row per function
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        for f in set(frames):
            total[f] = total.get(f, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        m = re.search(r"\(([^/)]+)", frames[-1])
        top_pkg = m.group(1).split(".")[0] if m else "?"
        if frames[-1].startswith("Runner.run ("):
            top_pkg = "event loop (uvloop C code, syscalls)"
        pkg[top_pkg] = pkg.get(top_pkg, 0) + n
    print(
        f"-- py-spy profile {path}: {samples} samples; own = in that function itself, "
        "total = with its callees; time in uvloop's C code (and some idle time) shows as "
        "Runner.run own, an idle executor thread as _worker own"
    )
    print("   own%  total%  function (file)")
    for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / max(samples, 1):5.1f}  {100 * total[f] / max(samples, 1):6.1f}  {f}")
    print("   own time by package (first path segment):")
    for p, n in sorted(pkg.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {100 * n / max(samples, 1):5.1f}  {p}")
    print(flush=True)


def summary_kv(pairs: Mapping[str, Any]) -> str:
    return "  ".join(f"{k}={v}" for k, v in pairs.items())


# -- a minimal WebSocket client ----------------------------------------------------------------


def masked_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client frame with a zero mask key (legal; the payload is then unchanged)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


class RawWS(asyncio.Protocol):
    """A WebSocket client reduced to what a benchmark needs, so the generator stays cheap.

    Sends the upgrade request, then hands every text frame to ``on_text(payload, t)``
    where ``t`` is ``time.perf_counter()`` when the bytes were read (one reading per
    socket read: frames that arrived together share it). Answers pings. Server frames
    are unmasked and unfragmented (roomsync and aiohttp write final frames only).
    """

    def __init__(
        self, host: str, port: int, path: str, on_text: Callable[[bytes, float], None]
    ) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: cm9vbXN5bmMtYmVuY2gtMQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.on_text = on_text
        loop = asyncio.get_running_loop()
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.received_bytes = 0
        self.close_code: int | None = None

    @classmethod
    async def open(
        cls, url: str, on_text: Callable[[bytes, float], None], timeout: float = 10.0
    ) -> RawWS:
        hostport, _, path = url.removeprefix("ws://").partition("/")
        host, _, port = hostport.partition(":")
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(
                lambda: cls(host, int(port), "/" + path, on_text), host, int(port)
            ),
            timeout,
        )
        await asyncio.wait_for(proto.upgraded, timeout)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def send_text(self, text: str | bytes) -> None:
        assert self.transport is not None
        data = text.encode() if isinstance(text, str) else text
        self.transport.write(masked_frame(data, 0x1))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buf
        buf += data
        self.received_bytes += len(data)
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(f"upgrade refused: {bytes(buf[:200])!r}"))
                assert self.transport is not None
                self.transport.abort()
                return
            del buf[: end + 4]
            self.upgraded.set_result(None)
        pos = 0
        n_buf = len(buf)
        while n_buf - pos >= 2:
            opcode = buf[pos] & 0x0F
            n = buf[pos + 1] & 0x7F
            start = pos + 2
            if n == 126:
                if n_buf - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif n == 127:
                if n_buf - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            if n_buf < start + n:
                break
            payload = bytes(buf[start : start + n])
            pos = start + n
            if opcode == 0x1:
                self.on_text(payload, now)
            elif opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                if self.transport is not None:
                    self.transport.close()
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(masked_frame(payload, 0xA))
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(RuntimeError(f"connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    async def close(self, timeout: float = 5.0) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(masked_frame((1000).to_bytes(2, "big"), 0x8))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            t.abort()
