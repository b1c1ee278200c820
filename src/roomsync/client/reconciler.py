"""The SDK's Merkle Search Tree reconcile (SPEC §1): ``server_root``, ``reconcile``, the
resync after 4001, and fetching the winners of superseded writes.

Each pass starts from ``mst-root``. By default it runs the batched flow,
:func:`roomsync.core.reconcile.reconcile_batched`, over ``mst-probe``/``mst-sketch``: the
differing entries come inline (the replica imposes them, :meth:`Replica.impose_entries`),
the few paths they do not cover are asked for with ``request{paths}`` (cut by
:func:`roomsync.core.packing.path_chunks`), and the replica's root must then equal the
root the server answered at. When it does not (a truncated fingerprint hid a difference,
or the room moved meanwhile), or the server refuses ``mst-probe`` (an older server:
``unknown-type``), the next pass runs the exact flow,
:func:`roomsync.core.reconcile.reconcile`, over ``mst-get``/``mst-nodes``, then
``request{paths}`` for every differing path. The server is the authority for entries it
confirmed (the replica imposes the answers); unacknowledged local writes go out as usual
and LWW decides them on the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..core import messages as m
from ..core.codec import b64decode, b64encode
from ..core.codes import ErrorCode
from ..core.entries import Change
from ..core.errors import CodecError, RoomsyncError
from ..core.mst import EMPTY_ROOT_HEX
from ..core.packing import path_chunks
from ..core.reconcile import DEFAULT_MAX_HASHES, ReconcileResult, reconcile_batched
from ..core.reconcile import reconcile as reconcile_flow
from ..core.replica import Replica
from .connection import Connection
from .errors import RequestRefused
from .link import Link, _LinkDown

log = logging.getLogger("roomsync.client")

MAX_RECONCILE_PASSES = 8
"""Reconcile rounds from a fresh ``mst-root`` while the server's tree keeps moving."""


class Reconciler:
    """Drives MST reconciles and ``request{paths}`` fetches for the client's replica."""

    def __init__(self, connection: Connection, replica: Replica) -> None:
        self._connection = connection
        self._replica = replica
        #: Use the batched flow (``mst-probe``); False once a server said ``unknown-type``.
        self.batched = True
        #: Called with every change a reconcile made visible (the replica's listeners).
        self.emit: Callable[[Change], None] | None = None
        connection.handle("mst-root", self._on_mst_root)
        connection.handle("mst-nodes", self._on_mst_nodes)
        connection.handle("mst-sketch", self._on_mst_sketch)
        connection.handle_error("mst-root", self._on_mst_root_refused)
        connection.handle_error("mst-get", self._on_mst_get_refused)
        connection.handle_error("mst-probe", self._on_mst_probe_refused)

    async def server_root(self) -> str:
        """The server's canonical hash (``mst-root``); retried on a new link if one drops."""
        while True:
            link = await self._connection.synced_link()
            try:
                root = (await self._mst_root(link)).root
            except _LinkDown:
                continue
            if root is None:
                raise RequestRefused({"code": "internal", "message": "mst-root without root"})
            return root

    async def reconcile(self) -> ReconcileResult:
        """Reconcile on demand; retried on a new link if the current one drops."""
        while True:
            link = await self._connection.synced_link()
            try:
                return await self._reconcile(link)
            except _LinkDown:
                continue

    async def resync(self, link: Link) -> bool:
        """The MST resync after 4001 (``catchup: false``); True once the replica published
        its cursor. On failure the next session falls back to a full catch-up."""
        try:
            await self._reconcile(link)
        except _LinkDown:
            return False
        except (RoomsyncError, ValueError) as exc:
            log.warning("MST resync failed (%r): falling back to a full catch-up", exc)
            self._connection.drop_cap("reconcile")
            link.abort()
            return False
        self._replica.finish_resync()
        return True

    def fetch_winners(self, link: Link) -> None:
        """``request{paths}`` the entries that beat superseded writes, when the replica
        lacks them (``Replica.fetch_paths``); the answers go through the replica."""
        if link.closing or not link.synced:
            return
        for chunk in path_chunks(self._replica.fetch_paths()):
            link.send(m.Request(paths=tuple(chunk)).to_wire())
            answer = self._replica.expect_paths(chunk)
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.add_done_callback(_ignore_result)
            link.answers[answer] = future

    # -- the flow ----------------------------------------------------------------------------

    async def _reconcile(self, link: Link) -> ReconcileResult:
        self._connection.stats.reconciles += 1
        result: ReconcileResult | None = None
        batched = self.batched
        for _ in range(MAX_RECONCILE_PASSES):
            root = await self._mst_root(link)
            if root.root is None:
                raise CodecError("bad postcard: mst-root without root")
            remote = None if root.root == EMPTY_ROOT_HEX else _hex(root.root)
            if batched:
                result = await self._batched_pass(link, remote)
                if result is not None and result.complete:
                    if self._replica.tree.root_hash == result.remote_root:
                        break
                    log.info("batched reconcile left a difference: an exact pass follows")
                batched = False
                continue
            flow = reconcile_flow(self._replica.tree, remote, max_hashes=DEFAULT_MAX_HASHES)
            try:
                fetch = next(flow)
                while True:
                    answer = await self._mst_get(link, fetch.hashes)
                    fetch = flow.send(
                        {
                            _hex(node["hash"]): b64decode(node["data"], "mst node")
                            for node in answer.nodes
                        }
                    )
            except StopIteration as stop:
                result = stop.value
            assert result is not None
            paths = sorted(set(result.pull) | set(result.push))
            if paths:
                await self._request_paths(link, paths)
            if result.complete:
                break
        assert result is not None
        return result

    async def _batched_pass(self, link: Link, remote: bytes | None) -> ReconcileResult | None:
        """One batched pass: walk, impose the inline entries, fetch the rest. None when
        the server refused ``mst-probe`` (the caller runs the exact flow instead)."""
        replica = self._replica
        flow = reconcile_batched(replica.tree, remote)
        try:
            step = next(flow)
            while True:
                futures = [self._mst_probe(link, data) for data in step.requests]
                outcomes = await asyncio.gather(*futures, return_exceptions=True)
                refused = [o for o in outcomes if isinstance(o, BaseException)]
                for outcome in refused:
                    if isinstance(outcome, _LinkDown):
                        raise outcome
                    if not isinstance(outcome, RequestRefused):
                        raise outcome
                if refused:
                    first = refused[0]
                    assert isinstance(first, RequestRefused)
                    if first.code == ErrorCode.UNKNOWN_TYPE:
                        self.batched = False  # an older server: no mst-probe
                    log.info("mst-probe refused (%s): an exact pass follows", first.code)
                    flow.close()
                    return None
                answers = [
                    b64decode(o.data, "mst-sketch data")
                    for o in outcomes
                    if isinstance(o, m.MstSketch)
                ]
                step = flow.send(answers)
        except StopIteration as stop:
            result: ReconcileResult = stop.value
        emit = self.emit
        for change in replica.impose_entries(result.entries):
            if emit is not None:
                emit(change)
        paths = result.to_request
        if paths:
            await self._request_paths(link, paths)
        return result

    async def _mst_probe(self, link: Link, data: bytes) -> m.MstSketch:
        future: asyncio.Future[m.MstSketch] = asyncio.get_running_loop().create_future()
        link.send(m.MstProbe(data=b64encode(data)).to_wire())
        link.sketches.append(future)
        return await future

    async def _mst_root(self, link: Link) -> m.MstRoot:
        future: asyncio.Future[m.MstRoot] = asyncio.get_running_loop().create_future()
        link.send(m.MstRoot().to_wire())
        link.roots.append(future)
        return await future

    async def _mst_get(self, link: Link, hashes: Sequence[bytes]) -> m.MstNodes:
        future: asyncio.Future[m.MstNodes] = asyncio.get_running_loop().create_future()
        link.send(m.MstGet(hashes=tuple(h.hex() for h in hashes)).to_wire())
        link.nodes.append(future)
        return await future

    async def _request_paths(self, link: Link, paths: Sequence[str]) -> None:
        """``request{paths}`` in chunks; returns when every answer's ``done`` arrived."""
        futures: list[asyncio.Future[None]] = []
        for chunk in path_chunks(paths):
            link.send(m.Request(paths=tuple(chunk)).to_wire())
            answer = self._replica.expect_paths(chunk)
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            link.answers[answer] = future
            futures.append(future)
        for future in futures:
            await future

    # -- incoming frames ---------------------------------------------------------------------

    def _on_mst_root(self, link: Link, msg: m.MstRoot) -> None:
        if link.roots:
            _resolve(link.roots.popleft(), msg)

    def _on_mst_nodes(self, link: Link, msg: m.MstNodes) -> None:
        if link.nodes:
            _resolve(link.nodes.popleft(), msg)

    def _on_mst_sketch(self, link: Link, msg: m.MstSketch) -> None:
        if link.sketches:
            _resolve(link.sketches.popleft(), msg)

    def _on_mst_probe_refused(self, link: Link, error: m.Error, refused: RequestRefused) -> None:
        if link.sketches:
            _reject(link.sketches.popleft(), refused)

    def _on_mst_root_refused(self, link: Link, error: m.Error, refused: RequestRefused) -> None:
        if link.roots:
            _reject(link.roots.popleft(), refused)

    def _on_mst_get_refused(self, link: Link, error: m.Error, refused: RequestRefused) -> None:
        if link.nodes:
            _reject(link.nodes.popleft(), refused)


def _hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise CodecError(f"bad postcard: {text[:80]!r} is not a hex hash") from None


def _resolve(future: asyncio.Future[Any], value: object) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _ignore_result(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
