"""Driver for roomsync, written against SPEC §2 (WebSocket ``/ws/{room}``, JSON envelopes).

Session::

    -> {"type":"hello","v":1,"actor":A,"subscribe":["/"], "token"?: T, "cursor"?: SEQ}
    <- {"type":"welcome", "head": SEQ, "root": HEX, ...}
    <- {"type":"pack","data": base64(postcard Pack)}*        catch-up (seq filled in)
    -> {"type":"pack","data": ...}                          a write (seq None)
    <- {"type":"ack","seqs":[...]}                           to the writer
    <- {"type":"pack","data": ...}                           broadcast to the others

An update ``seq`` is ``Change(path="/k/<seq>", value=value(seq))``; the server may coalesce
several into one pack, each change counts as one delivery. The server is started in dev
mode (anonymous read/write); set ROOMSYNC_BENCH_TOKEN to send a token anyway.

Status: the server is being written; everything here follows the SPEC and has been
exercised only against it on paper. :func:`roomsync_late_joiner` is the hook for scenario
(d): full state = catch-up packs after a cursor-less hello; after the divergence the
joiner comes back with ``catchup: false`` and reconciles through the Merkle Search Tree
(``mst-root``, batched ``mst-probe``/``mst-sketch`` rounds with the differing entries
inline, the exact ``mst-get``/``mst-nodes`` walk only as the fallback), the way the SDK
resyncs.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from roomsync.core.binpack import client_frame, parse_server_frame
from roomsync.core.entries import Change
from roomsync.core.mst import MerkleSearchTree
from roomsync.core.postcard import decode_pack, encode_pack
from roomsync.core.reconcile import (
    FetchNodes,
    ReconcileResult,
    SendProbes,
    reconcile,
    reconcile_batched,
)

from .base import SETTLE_S, Client, DeliveryCallback, Driver, Message, chunks, value

TOKEN = os.environ.get("ROOMSYNC_BENCH_TOKEN")


def _leading_varint(data: bytes) -> int:
    n = shift = 0
    for b in data[:10]:
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
    return n


def pack_message(changes: Sequence[Change], binary: bool = False) -> Message:
    """A client pack: a binary frame (SPEC §2 cap ``binary``) or a JSON envelope."""
    if binary:
        return client_frame(list(changes))
    data = base64.b64encode(encode_pack(list(changes))).decode("ascii")
    return json.dumps({"type": "pack", "data": data}, separators=(",", ":"))


class RoomsyncClient(Client):
    """A roomsync peer.

    Packs are scanned for delivery markers and, with ``keep``, kept for
    :meth:`RoomsyncDriver.verify` / :meth:`apply_frames`. ``changes_received`` counts
    changes from each pack's leading length varint only, so that a catch-up can be timed
    to its last byte without decoding in between.
    """

    def __init__(
        self, *args: Any, cursor: int | None = None, binary: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.cursor = cursor
        #: Ask for binary packs, as the SDK does (``roomsync-json``: JSON only).
        self.binary = binary
        self.welcome: dict[str, Any] | None = None
        self.errors: list[dict[str, Any]] = []
        self.acked = 0  # number of ack'ed changes (one seq or null each)
        self.acks_refused = 0
        self.state: dict[str, Change] = {}
        self.head_seen = 0
        self.changes_received = 0
        self.t_last_pack = 0.0
        self.catchup = True
        self.replies: dict[str, dict[str, Any]] = {}  # last mst-root / mst-nodes answer
        self.sketches: list[dict[str, Any]] = []  # mst-sketch answers, in order
        self.done_packs = 0

    def hello(self) -> str:
        msg: dict[str, Any] = {"type": "hello", "v": 1, "actor": self.ident, "subscribe": ["/"]}
        if self.binary:
            msg["caps"] = ["*", "binary"]
        if TOKEN:
            msg["token"] = TOKEN
        if self.cursor:
            msg["cursor"] = self.cursor
        if not self.catchup:
            msg["catchup"] = False
        return json.dumps(msg, separators=(",", ":"))

    async def connect(self, timeout: float = 30.0) -> None:
        await self._open(timeout)
        self._start_reader()
        await self.send(self.hello())
        await self.wait_until(lambda: self.welcome is not None or bool(self.errors), timeout,
                              "welcome")
        if self.welcome is None:
            raise ConnectionError(f"{self.ident}: refused: {self.errors[0]}")

    @property
    def head(self) -> int:
        return int(self.welcome.get("head", 0)) if self.welcome else 0

    def _on_pack(self, raw: bytes, done: bool, t: float) -> None:
        self.t_last_pack = t
        if self.on_delivery is not None:
            self.deliver_marks(raw, t)
        if self.keep:
            self.frames.append(raw)
        self.changes_received += _leading_varint(raw)
        if done:
            self.done_packs += 1

    def on_binary(self, data: bytes, t: float) -> None:
        pack = parse_server_frame(data)
        assert isinstance(pack.data, bytes)
        self._on_pack(pack.data, bool(pack.done), t)

    def on_text(self, data: str, t: float) -> None:
        msg = json.loads(data)
        kind = msg.get("type")
        if kind == "pack":
            self._on_pack(base64.b64decode(msg["data"]), bool(msg.get("done")), t)
        elif kind in ("mst-root", "mst-nodes"):
            self.replies[kind] = msg
        elif kind == "mst-sketch":
            self.sketches.append(msg)
        elif kind == "ack":
            seqs = msg.get("seqs") or []
            self.acked += len(seqs)
            self.acks_refused += sum(1 for s in seqs if s is None)
        elif kind == "welcome":
            self.welcome = msg
        elif kind == "error":
            self.errors.append(msg)
        # presence, tick, pong, blob-*: not part of these scenarios

    def apply_frames(self) -> None:
        """Decode the kept packs into ``state`` (LWW per path) and ``head_seen``."""
        for raw in self.frames:
            for c in decode_pack(raw):
                cur = self.state.get(c.path)
                if cur is None or c.key > cur.key:
                    self.state[c.path] = c
                if c.seq is not None and c.seq > self.head_seen:
                    self.head_seen = c.seq
        self.frames.clear()

    async def wait_acks(self, n: int, timeout: float) -> None:
        await self.wait_until(lambda: self.acked >= n, timeout, f"{n} acks")

    async def ask(self, msg: dict[str, Any], answer: str, timeout: float) -> dict[str, Any]:
        self.replies.pop(answer, None)
        await self.send(json.dumps(msg, separators=(",", ":")))
        await self.wait_until(lambda: answer in self.replies, timeout, answer)
        return self.replies.pop(answer)

    async def mst_reconcile(
        self, timeout: float, tree: MerkleSearchTree | None = None
    ) -> ReconcileResult:
        """Resync ``state`` with the server through the MST, as the SDK does after 4001.

        The batched walk (``mst-probe``/``mst-sketch``: the differing entries come inline),
        ``request{paths}`` for the differing paths they do not cover, then the root check;
        only when the roots still differ, the exact walk (``mst-get``) as the fallback.
        Then it pushes the local entries that still win (none in this scenario).
        ``rounds`` of the result counts the round trips of every walk it ran.
        """
        if tree is None:
            tree = MerkleSearchTree(c for c in self.state.values() if c.value is not None)
        root = await self.ask({"type": "mst-root"}, "mst-root", timeout)
        result = await self._batched(tree, bytes.fromhex(root["root"]), timeout)
        if not result.complete or tree.root_hash != result.remote_root:
            rounds = result.rounds
            root = await self.ask({"type": "mst-root"}, "mst-root", timeout)
            result = await self._exact(tree, bytes.fromhex(root["root"]), timeout)
            result = dataclasses.replace(result, rounds=rounds + result.rounds)
        newer = [c for p in result.push if (c := self.state.get(p)) is not None
                 and c.actor == self.ident]
        if newer:
            await self.send(pack_message(newer, self.binary))
        return result

    async def _batched(self, tree: MerkleSearchTree, remote: bytes,
                       timeout: float) -> ReconcileResult:
        flow = reconcile_batched(tree, remote)
        try:
            step = next(flow)
            while True:
                assert isinstance(step, SendProbes)
                self.sketches.clear()
                for data in step.requests:
                    await self.send(json.dumps(
                        {"type": "mst-probe", "data": base64.b64encode(data).decode("ascii")},
                        separators=(",", ":")))
                want = len(step.requests)
                await self.wait_until(lambda want=want: len(self.sketches) >= want, timeout,
                                      "mst-sketch")
                step = flow.send([base64.b64decode(a["data"]) for a in self.sketches])
        except StopIteration as stop:
            result: ReconcileResult = stop.value
        for change in result.entries:
            self.state[change.path] = change
            tree.put(change)
        await self._fetch(tree, result.to_request, timeout)
        return result

    async def _exact(self, tree: MerkleSearchTree, remote: bytes,
                     timeout: float) -> ReconcileResult:
        flow = reconcile(tree, remote)
        try:
            step = next(flow)
            while True:
                assert isinstance(step, FetchNodes)
                hashes = [h.hex() for h in step.hashes]
                nodes = await self.ask({"type": "mst-get", "hashes": hashes}, "mst-nodes",
                                       timeout)
                step = flow.send({bytes.fromhex(n["hash"]): base64.b64decode(n["data"])
                                  for n in nodes["nodes"]})
        except StopIteration as stop:
            result: ReconcileResult = stop.value
        await self._fetch(tree, result.differing, timeout)
        return result

    async def _fetch(self, tree: MerkleSearchTree, paths: Sequence[str],
                     timeout: float) -> None:
        """``request{paths}``, applied to ``state`` and ``tree``."""
        if not paths:
            return
        done = self.done_packs
        await self.send(json.dumps({"type": "request", "paths": list(paths)},
                                   separators=(",", ":")))
        await self.wait_until(lambda: self.done_packs > done, timeout, "request answer")
        self.apply_frames()
        for path in paths:
            change = self.state.get(path)
            if change is None or change.value is None:
                tree.remove(path)
            else:
                tree.put(change)


class RoomsyncDriver(Driver):
    family = "roomsync"

    def __init__(self, system: str, *, binary: bool = True) -> None:
        super().__init__(system)
        self.binary = binary
        self._clocks: dict[tuple[str, str], tuple[int, int]] = {}

    def url(self, base: str, room: str) -> str:
        return f"{base}/ws/{room}"

    def client(
        self, session: aiohttp.ClientSession, base: str, room: str, *, ident: str,
        on_delivery: DeliveryCallback | None = None, keep: bool = False,
        cursor: int | None = None,
    ) -> RoomsyncClient:
        return RoomsyncClient(session, self.url(base, room), ident=ident, binary=self.binary,
                              on_delivery=on_delivery, keep=keep, cursor=cursor)

    def _tick(self, room: str, ident: str) -> tuple[int, int]:
        """Hybrid logical clock of one writer: (wall ms, counter), strictly increasing."""
        now = int(time.time() * 1000)
        ts, counter = self._clocks.get((room, ident), (0, 0))
        ts, counter = (now, 0) if now > ts else (ts, counter + 1)
        self._clocks[(room, ident)] = (ts, counter)
        return ts, counter

    def changes(self, room: str, ident: str, seqs: Sequence[int], value_size: int,
                gen: int = 0) -> list[Change]:
        out = []
        for s in seqs:
            ts, counter = self._tick(room, ident)
            out.append(Change(f"/k/{s}", ts, counter, ident,
                              value(s, value_size, gen).encode()))
        return out

    def make_updates(
        self, room: str, ident: str, seqs: Sequence[int], value_size: int, gen: int = 0,
        batch: int = 1,
    ) -> list[Message]:
        return [pack_message(self.changes(room, ident, part, value_size, gen), self.binary)
                for part in chunks(seqs, batch)]

    def verify(self, client: Client, seqs: Sequence[int], value_size: int) -> int:
        got: dict[str, bytes | None] = {}
        for raw in client.frames:
            for c in decode_pack(raw):
                got[c.path] = c.value
        return sum(1 for s in seqs if got.get(f"/k/{s}") != value(s, value_size).encode())

    async def late_joiner(
        self, session: aiohttp.ClientSession, base: str, *, room: str, entries: int,
        divergence: float, value_size: int, batch: int, timeout: float,
    ) -> dict[str, Any]:
        return await roomsync_late_joiner(self, session, base, room=room, entries=entries,
                                          divergence=divergence, value_size=value_size,
                                          batch=batch, timeout=timeout)


async def roomsync_late_joiner(
    driver: RoomsyncDriver, session: aiohttp.ClientSession, base: str, *, room: str,
    entries: int, divergence: float, value_size: int, batch: int, timeout: float,
) -> dict[str, Any]:
    """Scenario (d) for roomsync: full-state catch-up, then MST reconcile after divergence.

    1. A populator writes ``entries`` changes in packs of ``batch`` and waits for all acks.
    2. Full state: a joiner says hello without cursor; timed from before the WebSocket
       connect until the catch-up packs hold one change per entry (``full_ms``: arrival of
       the last pack, counted from each pack's length prefix, no decoding in between;
       ``full_ms_applied``: after decoding all packs into a path -> Change dict). Bytes are
       WebSocket payload bytes (JSON + base64) both ways.
    3. Divergence: the joiner leaves, the populator overwrites ``divergence`` of the
       entries, the joiner comes back.
       It reconnects with ``catchup: false`` and runs :meth:`RoomsyncClient.mst_reconcile`;
       bytes are counted the same way (JSON + base64 payload both ways).
       Before that, a second joiner without cursor times a full state again at the new
       head (``full2_ms``, to the last byte; in the JSON only).
    """
    pop = driver.client(session, base, room, ident="populator")
    await pop.connect(timeout)
    seqs = list(range(entries))
    msgs = driver.make_updates(room, "populator", seqs, value_size, batch=batch)
    for msg in msgs:
        await pop.send(msg)
    await pop.wait_acks(entries, timeout)
    await asyncio.sleep(SETTLE_S)

    out: dict[str, Any] = {"entries": entries}
    joiner = driver.client(session, base, room, ident="joiner", keep=True)
    t0 = time.perf_counter()
    await joiner.connect(timeout)
    # full state = one change per live entry
    await joiner.wait_until(lambda: joiner.changes_received >= entries, timeout,
                            f"catch-up of {entries} entries")
    t_rx = joiner.t_last_pack or time.perf_counter()
    joiner.apply_frames()
    t1 = time.perf_counter()
    out["full_ms"] = (t_rx - t0) * 1e3
    out["full_ms_applied"] = (t1 - t0) * 1e3
    out["full_bytes_in"] = joiner.bytes_in
    out["full_bytes_out"] = joiner.bytes_out
    out["full_ok"] = len(joiner.state) == entries and all(
        joiner.state[f"/k/{s}"].value == value(s, value_size).encode() for s in (0, entries - 1)
    )
    state, cursor = joiner.state, joiner.head_seen
    await joiner.close()

    n_div = max(1, int(entries * divergence))
    changed = seqs[:: max(1, entries // n_div)][:n_div]
    for msg in driver.make_updates(room, "populator", changed, value_size, gen=1,
                                   batch=max(1, batch // 10)):
        await pop.send(msg)
    await pop.wait_acks(entries + n_div, timeout)
    await asyncio.sleep(SETTLE_S)

    # 2b. A second full-state joiner after those writes (a new durable head): what the
    # server's encoded-group cache saves (roomsync only; not in the table).
    again = driver.client(session, base, room, ident="joiner2", keep=True)
    t0 = time.perf_counter()
    await again.connect(timeout)
    await again.wait_until(lambda: again.done_packs > 0, timeout, "second full catch-up")
    out["full2_ms"] = ((again.t_last_pack or time.perf_counter()) - t0) * 1e3
    again.apply_frames()
    out["full2_ok"] = _has_generation(again.state, changed, entries, value_size)
    await again.close()

    # 3a. What a reconnecting client does: resume from its cursor (like a Yjs state vector).
    joiner = driver.client(session, base, room, ident="joiner", keep=True, cursor=cursor)
    joiner.state, joiner.head_seen = dict(state), cursor  # it comes back with what it had
    t0 = time.perf_counter()
    await joiner.connect(timeout)
    missing = joiner.head - cursor
    await joiner.wait_until(lambda: joiner.done_packs > 0, timeout,
                            f"catch-up of {missing} changes")
    t_rx = joiner.t_last_pack or time.perf_counter()
    joiner.apply_frames()
    t1 = time.perf_counter()
    out["diverged"] = n_div
    out["diff_ms"] = (t_rx - t0) * 1e3
    out["diff_ms_applied"] = (t1 - t0) * 1e3
    out["diff_bytes_in"] = joiner.bytes_in
    out["diff_bytes_out"] = joiner.bytes_out
    out["diff_ok"] = _has_generation(joiner.state, changed, entries, value_size)
    out["method"] = "catch-up from cursor"
    await joiner.close()

    # 3b. What it does when its cursor is unusable (4001): MST reconcile, no catch-up.
    joiner = driver.client(session, base, room, ident="joiner", keep=True)
    joiner.state, joiner.head_seen = dict(state), cursor
    joiner.catchup = False
    # It comes back with its replica's tree too (the SDK keeps it with the state, as a
    # Yjs client keeps its Y.Doc): building and hashing it is not part of the resync.
    # Hashing 100,000 leaves in Python is paid once in a client's life (later writes
    # re-hash only their paths); it is kept in the JSON as mst_tree_hash_ms.
    tree = MerkleSearchTree(c for c in joiner.state.values() if c.value is not None)
    t_hash = time.perf_counter()
    tree.root_hash  # noqa: B018 - computes and caches every node's hash
    out["mst_tree_hash_ms"] = (time.perf_counter() - t_hash) * 1e3
    t0 = time.perf_counter()
    await joiner.connect(timeout)
    result = await joiner.mst_reconcile(timeout, tree)
    t1 = time.perf_counter()
    out["mst_ms"] = (t1 - t0) * 1e3
    out["mst_bytes"] = joiner.bytes_in + joiner.bytes_out
    out["mst_rounds"] = result.rounds
    out["mst_nodes"] = result.nodes_fetched
    out["mst_ok"] = _has_generation(joiner.state, changed, entries, value_size)
    await joiner.close()
    await pop.close()
    return out


def _has_generation(state: dict[str, Change], changed: Sequence[int], entries: int,
                    value_size: int) -> bool:
    return len(state) == entries and all(
        (c := state.get(f"/k/{s}")) is not None and c.value == value(s, value_size, 1).encode()
        for s in changed
    )
