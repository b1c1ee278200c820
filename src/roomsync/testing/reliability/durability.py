"""Durability: ``kill -9`` of a real ``roomsync serve`` (SQLite, its own data dir) under
a steady write load from several SDK clients, again and again (SPEC §2 "acked = durable").

After each kill, with the node down, the op log is read straight from the database:
every change an SDK ``flush()`` saw acknowledged is there with its value, seqs run 1..head
without a gap, and ``roomsync replay`` (the CLI, as an operator runs it) rebuilds the live
root. The node is then started again on the same port; the clients reconnect by
themselves and the load resumes. At the end every client's root equals the server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...client import Backoff, RefusedChange, RoomClient, connect
from ...storage.base import Store
from ...storage.sqlite import SqliteStore
from .harness import Context, Node, Probes
from .scorecard import Outcome

ROOMS = ("durable-a", "durable-b")


class Writer:
    """One SDK client writing batches of fresh paths plus one path it overwrites; what
    it knows to be acknowledged is what a ``flush()`` that returned covered."""

    def __init__(self, client: RoomClient, actor: str) -> None:
        self.client = client
        self.actor = actor
        self.acked: dict[str, bytes] = {}
        self.last_acked = -1
        self.refused: list[RefusedChange] = []
        self.flush_timeouts = 0
        client.on_refused(self.refused.append)

    async def run(self, stop: asyncio.Event, batch: int = 10, pause: float = 0.0) -> None:
        """Write until ``stop``: ``batch`` fresh paths and ``/last/<actor>``, flushed,
        then ``pause`` seconds (0: at once, as fast as acks come)."""
        i = 0
        while not stop.is_set():
            written: dict[str, bytes] = {}
            for j in range(batch):
                path = f"/w/{self.actor}/{i + j:07d}"
                value = b"%s:%d" % (self.actor.encode(), i + j)
                self.client.set(path, value)
                written[path] = value
            self.client.set(f"/last/{self.actor}", b"%d" % (i + batch - 1))
            try:
                await self.client.flush(timeout=60)
            except TimeoutError:
                self.flush_timeouts += 1
                continue
            refused = {r.change.path for r in self.refused}
            for path, value in written.items():
                if path not in refused:
                    self.acked[path] = value
            if f"/last/{self.actor}" not in refused:
                self.last_acked = i + batch - 1
            i += batch
            await asyncio.sleep(pause)


async def stop_writers(writers: list[Writer], tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the writers' tasks and close their clients (whatever state they are in)."""
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(BaseException):
            await t
    for w in writers:
        with contextlib.suppress(Exception):
            await w.client.close()


async def verify_store(node: Node, writers: list[Writer], out: Outcome, when: str) -> int:
    """With the node down: the acked changes, seqs and replay of every room; the number
    of acked changes missing."""
    store = SqliteStore(node.data_dir / "roomsync.db")
    lost = await verify_log(store, ROOMS, writers, out, when, quiet=True)
    reports = await asyncio.gather(*(replay_cli(room, data_dir=node.data_dir) for room in ROOMS))
    for room, report in zip(ROOMS, reports, strict=True):
        out.check(
            report.get("match") is True,
            f"{when}: roomsync replay --room {room} does not match: {report}",
        )
    return lost


async def verify_log(
    store: Store,
    rooms: Sequence[str],
    writers: list[Writer],
    out: Outcome,
    when: str,
    *,
    quiet: bool = False,
) -> int:
    """Read ``rooms`` from ``store`` (opened and closed here): every change a writer saw
    acked is stored with its value and the op log's seqs are gap-free; the number of
    acked changes missing. Other nodes may go on writing (and compacting) meanwhile: what
    the writers saw acked is taken first, since it is durable before its ack. ``quiet``:
    nothing writes meanwhile, so the log must also end at the room's head."""
    acked = {w.actor: (dict(w.acked), w.last_acked) for w in writers}
    await store.open()
    lost = 0
    try:
        for room in rooms:
            # The log first, then the state: a node may compact meanwhile (it folds a
            # prefix of the log into the state table), so the state read second covers
            # whatever the log read first lacks, and the log must run on from there.
            log = await store.changes_since(room, 0, limit=10_000_000)
            loaded = await store.load_room(room, now_ms=0)
            compacted, head = loaded.record.compacted_through, loaded.record.head
            seqs = [c.seq or 0 for c in log]
            start = seqs[0] if seqs else compacted + 1
            out.check(
                seqs == list(range(start, start + len(seqs))) and start <= compacted + 1,
                f"{when}: {room}: op log seqs are not gap-free after {compacted} "
                f"(head {head}, log {seqs[:1]}..{seqs[-1:]})",
            )
            if quiet:
                end = seqs[-1] if seqs else compacted
                out.check(end == head, f"{when}: {room}: the op log ends at {end}, head {head}")
            latest: dict[str, bytes | None] = {c.path: c.value for c in loaded.entries}
            for w in writers:
                if w.client.room != room:
                    continue
                seen, last_acked = acked[w.actor]
                missing = [p for p, v in seen.items() if latest.get(p) != v]
                lost += len(missing)
                out.check(
                    not missing, f"{when}: {room}: {len(missing)} acked changes of {w.actor} lost"
                )
                last = latest.get(f"/last/{w.actor}")
                if last_acked >= 0:
                    ok = last is not None and int(last) >= last_acked
                    out.check(ok, f"{when}: {room}: /last/{w.actor} is {last!r} < {last_acked}")
                    lost += 0 if ok else 1
    finally:
        await store.close()
    return lost


async def replay_cli(
    room: str, *, data_dir: Path | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``roomsync replay --json`` of ``room``, as an operator would run it: on the SQLite
    store in ``data_dir``, or the store ``env``'s ``ROOMSYNC_STORAGE_*`` names."""
    cmd = [sys.executable, "-m", "roomsync.cli.main", "replay", "--room", room, "--json"]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    run_env = None
    if env is not None:
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMSYNC_")}
        run_env.update(env)
    proc = await asyncio.to_thread(
        subprocess.run, cmd, capture_output=True, text=True, timeout=120, env=run_env
    )
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        return {"exit": proc.returncode, "stderr": proc.stderr[-500:]}
    report["exit"] = proc.returncode
    return report


async def run(ctx: Context, out: Outcome) -> None:
    cycles = int(ctx.pick(5, 20))
    clients = int(ctx.pick(4, 6))
    load_s = float(ctx.pick(1.0, 3.0))
    node = Node(ctx.workdir / "data")
    writers: list[Writer] = []
    tasks: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    restart_s: list[float] = []
    final_roots: dict[str, str] = {}
    with node.running():
        async with Probes(out, node.url, node).running() as probes:
            try:
                for k in range(clients):
                    actor = f"writer{k}"
                    client = await connect(
                        node.url,
                        ROOMS[k % len(ROOMS)],
                        actor=actor,
                        backoff=Backoff(base=0.05, factor=2, max=0.5),
                        connect_timeout_s=30,
                    )
                    writers.append(Writer(client, actor))
                tasks = [asyncio.create_task(w.run(stop)) for w in writers]
                for cycle in range(cycles):
                    before = sum(len(w.acked) for w in writers)
                    deadline = time.monotonic() + 30
                    await asyncio.sleep(load_s)
                    # Do not kill a node the load has not reached yet.
                    while sum(len(w.acked) for w in writers) <= before:
                        if time.monotonic() > deadline:
                            out.check(False, f"cycle {cycle}: no write acked in 30 s")
                            break
                        await asyncio.sleep(0.05)
                    code = node.kill()
                    out.check(code == -9, f"cycle {cycle}: kill -9 exit status {code}")
                    out.lost += await verify_store(node, writers, out, f"after kill {cycle + 1}")
                    out.faults += 1
                    t0 = time.monotonic()
                    node.start()
                    restart_s.append(time.monotonic() - t0)
                stop.set()
                await asyncio.wait_for(asyncio.gather(*tasks), 90)
                for w in writers:
                    await w.client.flush(timeout=30)
                    server_root = await w.client.server_root()
                    final_roots[w.client.room] = server_root
                    out.check(
                        w.client.root == server_root,
                        f"{w.actor}: client root {w.client.root[:12]} != server {server_root[:12]}",
                    )
            finally:
                stop.set()
                await stop_writers(writers, tasks)
            crashed = node.log_events("session.internal_error")
        code = node.kill(15)
        out.check(code == 0, f"SIGTERM exit status {code}")
    out.lost += await verify_store(node, writers, out, "after the last stop")
    for room, root in final_roots.items():  # the root the live server served = the replay's
        report = await replay_cli(room, data_dir=node.data_dir)
        out.check(
            report.get("replayed_root") == root,
            f"{room}: server root {root[:12]} != replayed {str(report.get('replayed_root'))[:12]}",
        )
    out.crashes += len(crashed)
    out.check(probes.failed == 0, f"{probes.failed} /healthz probes failed while the node was up")
    acked = sum(len(w.acked) for w in writers)
    out.load.update(
        {
            "clients": clients,
            "rooms": len(ROOMS),
            "kill9_cycles": cycles,
            "acked_changes": acked,
        }
    )
    out.figures.update(
        {
            "refused": sum(len(w.refused) for w in writers),
            "flush_timeouts": sum(w.flush_timeouts for w in writers),
            "restart_s_max": round(max(restart_s, default=0.0), 2),
        }
    )
    out.check(not any(w.refused for w in writers), "writes were refused")
