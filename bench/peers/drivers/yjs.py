"""The Yjs sync protocol (y-protocols/sync), for y-websocket, pycrdt-websocket, Hocuspocus.

Framing, all binary, lib0 encoding (varUint, varString, varUint8Array)::

    y-websocket, pycrdt-websocket:  [varUint type][...]             room = URL path
    Hocuspocus:                     [varString doc][varUint type][...]  (every message)

    type 0 Sync: [varUint step][varUint8Array payload]
        step 0 SyncStep1 (state vector) -> answered with SyncStep2 (the missing update)
        step 1 SyncStep2 (update)
        step 2 Update    (update)
    type 1 Awareness (ignored here)
    Hocuspocus only: 2 Auth (client sends [0 Token][varString token] first; the server
    answers [2 Authenticated][scope]), 4 SyncReply (a Sync the client must not re-answer
    with a SyncStep1), 8 SyncStatus (per-update ack to the writer).

Updates are built with pycrdt: the writer's doc sets ``m["k<seq>"] = value(seq)`` in a
root ``Y.Map`` named ``m``; each transaction's update becomes one Update message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from pycrdt import Doc, Map

from .base import SETTLE_S, Client, DeliveryCallback, Driver, Message, chunks, value

SYNC, AWARENESS, AUTH, SYNC_REPLY, SYNC_STATUS = 0, 1, 2, 4, 8
STEP1, STEP2, UPDATE = 0, 1, 2
EMPTY_UPDATE = b"\x00\x00"  # v1 update: no structs, empty delete set
EMPTY_STATE_VECTOR = b"\x00"


def var_uint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def var_bytes(data: bytes) -> bytes:
    return var_uint(len(data)) + data


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7


def parse(data: bytes, hocuspocus: bool) -> tuple[int, int, bytes]:
    """``(type, step, payload)`` of a message; ``step``/``payload`` are -1/b"" if not Sync."""
    pos = 0
    if hocuspocus:
        n, pos = read_var_uint(data, pos)
        pos += n
    mtype, pos = read_var_uint(data, pos)
    if mtype in (SYNC, SYNC_REPLY):
        step, pos = read_var_uint(data, pos)
        n, pos = read_var_uint(data, pos)
        return mtype, step, data[pos : pos + n]
    return mtype, -1, b""


def new_doc() -> tuple[Doc, Map]:
    doc = Doc()
    return doc, doc.get("m", type=Map)


class YjsClient(Client):
    """A Yjs peer. With ``doc`` it applies what it receives (late joiner); without, it only
    finds the delivery markers and keeps frames for :meth:`YjsDriver.verify`."""

    def __init__(
        self, session: aiohttp.ClientSession, url: str, *, room: str, hocuspocus: bool,
        ident: str, on_delivery: DeliveryCallback | None = None, keep: bool = False,
        doc: Doc | None = None,
    ) -> None:
        super().__init__(session, url, ident=ident, on_delivery=on_delivery, keep=keep)
        self.hocuspocus = hocuspocus
        self.prefix = var_bytes(room.encode()) if hocuspocus else b""
        self.doc = doc
        self.step2_received = 0
        self.update_acks = 0  # Hocuspocus SyncStatus
        self.t_last_step2 = 0.0

    def msg(self, mtype: int, step: int, payload: bytes) -> bytes:
        return self.prefix + bytes((mtype, step)) + var_bytes(payload)

    async def connect(self, timeout: float = 30.0) -> None:
        await self._open(timeout)
        self._start_reader()
        if self.hocuspocus:  # Auth Token (empty: no onAuthenticate hook configured)
            await self.send(self.prefix + bytes((AUTH, 0)) + var_bytes(b""))
        await self.sync_step1()
        await self.wait_until(lambda: self.step2_received >= 1, timeout, "SyncStep2")

    async def sync_step1(self) -> None:
        sv = self.doc.get_state() if self.doc is not None else EMPTY_STATE_VECTOR
        await self.send(self.msg(SYNC, STEP1, sv))

    async def barrier(self, state_vector: bytes, timeout: float) -> None:
        """SyncStep1 round trip: the answer comes after everything sent before is applied."""
        want = self.step2_received + 1
        await self.send(self.msg(SYNC, STEP1, state_vector))
        await self.wait_until(lambda: self.step2_received >= want, timeout, "barrier SyncStep2")

    def on_binary(self, data: bytes, t: float) -> None:
        if self.on_delivery is not None:
            self.deliver_marks(data, t)
        if self.keep:
            self.frames.append(data)
        mtype, step, payload = parse(data, self.hocuspocus)
        if mtype in (SYNC, SYNC_REPLY):
            if step == STEP1:
                diff = self.doc.get_update(payload) if self.doc is not None else EMPTY_UPDATE
                self.send_soon(self.msg(SYNC, STEP2, diff))
                return
            if self.doc is not None:
                self.doc.apply_update(payload)
            if step == STEP2:
                self.step2_received += 1
                self.t_last_step2 = t
        elif mtype == SYNC_STATUS:
            self.update_acks += 1


class YjsDriver(Driver):
    family = "yjs"

    def __init__(self, system: str, hocuspocus: bool = False) -> None:
        super().__init__(system)
        self.hocuspocus = hocuspocus
        self._docs: dict[tuple[str, str], tuple[Doc, Map]] = {}

    def url(self, base: str, room: str) -> str:
        return f"{base}/{room}"

    def client(
        self, session: aiohttp.ClientSession, base: str, room: str, *, ident: str,
        on_delivery: DeliveryCallback | None = None, keep: bool = False, doc: Doc | None = None,
    ) -> YjsClient:
        return YjsClient(session, self.url(base, room), room=room, hocuspocus=self.hocuspocus,
                         ident=ident, on_delivery=on_delivery, keep=keep, doc=doc)

    def writer_doc(self, room: str, ident: str) -> tuple[Doc, Map]:
        key = (room, ident)
        if key not in self._docs:
            self._docs[key] = new_doc()
        return self._docs[key]

    def make_updates(
        self, room: str, ident: str, seqs: Sequence[int], value_size: int, gen: int = 0,
        batch: int = 1,
    ) -> list[Message]:
        doc, m = self.writer_doc(room, ident)
        updates: list[bytes] = []
        sub = doc.observe(lambda ev: updates.append(ev.update))
        try:
            for part in chunks(seqs, batch):
                with doc.transaction():
                    for s in part:
                        m[f"k{s}"] = value(s, value_size, gen)
        finally:
            doc.unobserve(sub)
        prefix = var_bytes(room.encode()) if self.hocuspocus else b""
        return [prefix + bytes((SYNC, UPDATE)) + var_bytes(u) for u in updates]

    def verify(self, client: Client, seqs: Sequence[int], value_size: int) -> int:
        doc, m = new_doc()
        for frame in client.frames:
            mtype, step, payload = parse(frame, self.hocuspocus)
            if mtype in (SYNC, SYNC_REPLY) and step in (STEP2, UPDATE):
                doc.apply_update(payload)
        return sum(1 for s in seqs if m.get(f"k{s}") != value(s, value_size))

    async def late_joiner(
        self, session: aiohttp.ClientSession, base: str, *, room: str, entries: int,
        divergence: float, value_size: int, batch: int, timeout: float,
    ) -> dict[str, Any]:
        """Full sync of a fresh peer, then re-sync after the room diverged by ``divergence``.

        A populator fills the room (``batch`` entries per update) and waits for a SyncStep1
        barrier. The joiner connects with an empty doc (SyncStep1 with an empty state
        vector, the server answers SyncStep2 = the whole state); it is timed from before
        the WebSocket connect to the arrival of SyncStep2 (``ms``) and to the state applied
        (``ms_applied``), bytes are WebSocket payload bytes both ways. Then the joiner
        leaves, the populator overwrites ``divergence`` of the entries, and the joiner
        reconnects with its doc (SyncStep1 with its state vector: the server sends the
        difference).
        """
        pop = self.client(session, base, room, ident="populator")
        await pop.connect(timeout)
        doc, _ = self.writer_doc(room, "populator")
        seqs = list(range(entries))
        for msg in self.make_updates(room, "populator", seqs, value_size, batch=batch):
            await pop.send(msg)
        await pop.barrier(doc.get_state(), timeout)
        await asyncio.sleep(SETTLE_S)

        out: dict[str, Any] = {"entries": entries}
        jdoc, jm = new_doc()
        joiner = self.client(session, base, room, ident="joiner", doc=jdoc)
        t0 = time.perf_counter()
        await joiner.connect(timeout)
        t1 = time.perf_counter()
        out["full_ms"] = (joiner.t_last_step2 - t0) * 1e3
        out["full_ms_applied"] = (t1 - t0) * 1e3
        out["full_bytes_in"] = joiner.bytes_in
        out["full_bytes_out"] = joiner.bytes_out
        out["full_ok"] = len(jm) == entries and jm.get("k0") == value(0, value_size)
        await joiner.close()

        n_div = max(1, int(entries * divergence))
        changed = seqs[:: max(1, entries // n_div)][:n_div]
        for msg in self.make_updates(room, "populator", changed, value_size, gen=1,
                                     batch=max(1, batch // 10)):
            await pop.send(msg)
        await pop.barrier(doc.get_state(), timeout)
        await asyncio.sleep(SETTLE_S)

        joiner = self.client(session, base, room, ident="joiner", doc=jdoc)
        t0 = time.perf_counter()
        await joiner.connect(timeout)
        t1 = time.perf_counter()
        out["diverged"] = n_div
        out["diff_ms"] = (joiner.t_last_step2 - t0) * 1e3
        out["diff_ms_applied"] = (t1 - t0) * 1e3
        out["diff_bytes_in"] = joiner.bytes_in
        out["diff_bytes_out"] = joiner.bytes_out
        out["diff_ok"] = len(jm) == entries and all(
            jm.get(f"k{s}") == value(s, value_size, 1) for s in changed
        )
        out["method"] = "SyncStep1/SyncStep2 (state vector)"
        await joiner.close()
        await pop.close()
        return out
