"""Fuzz targets: the parsers a peer's bytes reach, each taking one ``bytes`` input.

A target returns or raises a documented error (:class:`~roomsync.core.errors.RoomsyncError`
and its subclasses: ``MalformedEnvelope``, ``CodecError``, ``TooLarge`` ...); anything
else is a crash (STYLE lesson 4: parsers never leak exceptions). The same targets run
under hypothesis (:mod:`.fuzz`) and under atheris, coverage-guided, in a child process
(:mod:`.atheris_main`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from ...core import binpack, sketch
from ...core.codec import decode_json, parse_client, parse_server, unpack_data
from ...core.entries import Change
from ...core.errors import RoomsyncError
from ...core.mst import MerkleSearchTree
from ...core.postcard import decode_node, decode_pack

__all__ = ["DOCUMENTED", "TARGETS", "run_target"]

#: What a target may raise: the documented error tree.
DOCUMENTED: tuple[type[BaseException], ...] = (RoomsyncError,)


@cache
def _tree() -> MerkleSearchTree:
    """A small room for the server side of ``mst-probe``."""
    return MerkleSearchTree(
        Change(f"/doc/{i:04d}", 1000 + i, 0, "fuzz", b"v%d" % i) for i in range(300)
    )


def envelope_client(data: bytes) -> None:
    """A client text frame as the server parses it (JSON, then the envelope table)."""
    parse_client(decode_json(data))


def envelope_server(data: bytes) -> None:
    """A server text frame as the SDK parses it."""
    parse_server(decode_json(data))


def pack(data: bytes) -> None:
    """A ``Pack``'s postcard bytes (JSON ``pack.data`` after base64, or a binary frame)."""
    decode_pack(data)


def pack_base64(data: bytes) -> None:
    """``pack.data`` as text: base64, then postcard."""
    unpack_data(data.decode("latin-1"))


def binary_frame(data: bytes) -> None:
    """A binary frame from a client (tag byte, postcard) and one from a server."""
    try:
        decode_pack(binpack.parse_client_frame(data))
    finally:
        binpack.parse_server_frame(data)


def mst_node(data: bytes) -> None:
    """An ``mst-nodes`` node's postcard bytes, as the SDK decodes them."""
    decode_node(data)


def mst_probe(data: bytes) -> None:
    """``mst-probe.data`` answered by the server from a 300-entry tree."""
    sketch.serve_probes(_tree(), data)


def mst_sketch(data: bytes) -> None:
    """``mst-sketch.data`` decoded by the SDK as the answer to a typical probe."""
    request = sketch.ProbeRequest(
        bits=16, leaf_bits=32, budget=256, probes=(sketch.Probe(None, True, None, depth=2),)
    )
    sketch.decode_answer(data, request)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "envelope-client": envelope_client,
    "envelope-server": envelope_server,
    "pack": pack,
    "pack-base64": pack_base64,
    "binary-frame": binary_frame,
    "mst-node": mst_node,
    "mst-probe": mst_probe,
    "mst-sketch": mst_sketch,
}


def run_target(name: str, data: bytes) -> BaseException | None:
    """Run target ``name`` on ``data``: None, or the undocumented exception it raised."""
    try:
        TARGETS[name](data)
    except DOCUMENTED:
        return None
    except Exception as exc:  # a crash: what the suite looks for
        return exc
    return None
