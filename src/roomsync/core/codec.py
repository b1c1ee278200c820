"""JSON envelopes <-> :mod:`.messages` (SPEC §2), and the base64 wrapping of postcard data.

``parse_client`` is what the server applies to every decoded client frame and
``parse_server`` what the SDK applies to every server frame. Both accept the result of a
JSON decode (any object) and either return a message or raise a documented error:
:class:`MalformedEnvelope` (wrong shape, wrong field type), :class:`UnknownType`, or for
``pack`` data :class:`CodecError` (``bad base64`` / ``bad postcard: ...``). They never
raise anything else (fuzzed in ``tests/properties/test_envelope_fuzz.py``).

JSON text itself is parsed by the shells (msgspec on the server, for speed);
:func:`decode_json` is the stdlib fallback with the same error contract.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from . import messages as m
from .entries import Change
from .errors import CodecError, MalformedEnvelope, UnknownType
from .postcard import decode_pack, encode_pack

PROTOCOL_VERSION = 1


def decode_json(text: str | bytes) -> Any:
    """Parse a text frame; :class:`MalformedEnvelope` when it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedEnvelope(f"frame is not valid JSON: {exc}") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: object, what: str = "data") -> bytes:
    """Standard, padded base64; :class:`CodecError` ``bad base64`` otherwise."""
    if not isinstance(text, str):
        raise CodecError(f"bad base64: {what} must be a string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CodecError(f"bad base64 in {what}") from None


def pack_data(changes: list[Change] | tuple[Change, ...]) -> str:
    """The ``data`` field of a ``pack`` envelope for ``changes``."""
    return b64encode(encode_pack(changes))


def unpack_data(data: object) -> list[Change]:
    """Decode a ``pack``'s ``data``: base64 of postcard (a JSON envelope) or the postcard
    bytes of a binary frame; :class:`CodecError` on bad base64/postcard."""
    if isinstance(data, bytes):
        return decode_pack(data)
    return decode_pack(b64decode(data))


# -- field readers -------------------------------------------------------------------------


class _Fields:
    """Typed access to an envelope's fields, raising MalformedEnvelope that names them."""

    __slots__ = ("obj", "type")

    def __init__(self, obj: dict[str, Any], type_: str) -> None:
        self.obj = obj
        self.type = type_

    def _bad(self, name: str, expected: str) -> MalformedEnvelope:
        return MalformedEnvelope(f"{self.type}.{name}: expected {expected}")

    def string(self, name: str, *, optional: bool = False, max_len: int = 1 << 20) -> Any:
        value = self.obj.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, str) or len(value) > max_len:
            raise self._bad(name, "a string" if max_len >= 1 << 20 else f"a string <= {max_len}")
        return value

    def integer(self, name: str, *, optional: bool = False, minimum: int = 0) -> Any:
        value = self.obj.get(name)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._bad(name, f"an integer >= {minimum}")
        return value

    def flag(self, name: str, *, optional: bool = False) -> Any:
        value = self.obj.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, bool):
            raise self._bad(name, "a boolean")
        return value

    def strings(self, name: str, *, optional: bool = False, max_items: int = 10_000) -> Any:
        value = self.obj.get(name)
        if value is None and optional:
            return None
        if (
            not isinstance(value, list)
            or len(value) > max_items
            or not all(isinstance(v, str) for v in value)
        ):
            raise self._bad(name, f"a list of at most {max_items} strings")
        return tuple(value)

    def raw(self, name: str) -> Any:
        return self.obj.get(name)

    def mapping(self, name: str, *, optional: bool = False) -> Any:
        value = self.obj.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, dict):
            raise self._bad(name, "an object")
        return value

    def array(self, name: str, *, optional: bool = False) -> Any:
        value = self.obj.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, list):
            raise self._bad(name, "a list")
        return value


def _hello(f: _Fields) -> m.Message:
    v = f.integer("v", minimum=0)
    return m.Hello(
        v=v,
        token=f.string("token", optional=True, max_len=16_384),
        actor=f.string("actor", optional=True, max_len=256),
        caps=f.strings("caps", optional=True, max_items=64),
        subscribe=f.strings("subscribe", optional=True, max_items=256) or ("/",),
        cursor=f.integer("cursor", optional=True),
        catchup=f.flag("catchup", optional=True),
    )


def _request(f: _Fields) -> m.Message:
    since = f.integer("since", optional=True)
    paths = f.strings("paths", optional=True)
    if (since is None) == (paths is None):
        raise MalformedEnvelope("request: give exactly one of `since` or `paths`")
    return m.Request(since=since, paths=paths)


def _hex_list(f: _Fields, name: str) -> tuple[str, ...]:
    values: tuple[str, ...] = f.strings(name, max_items=4096)
    for value in values:
        if len(value) != 64:
            raise MalformedEnvelope(f"{f.type}.{name}: expected 64-hex-digit hashes")
        try:
            bytes.fromhex(value)
        except ValueError:
            raise MalformedEnvelope(f"{f.type}.{name}: expected 64-hex-digit hashes") from None
    return values


def _nodes(f: _Fields) -> m.Message:
    nodes = f.array("nodes")
    out: list[dict[str, str]] = []
    for node in nodes:
        if (
            not isinstance(node, dict)
            or not isinstance(node.get("hash"), str)
            or not isinstance(node.get("data"), str)
        ):
            raise MalformedEnvelope("mst-nodes.nodes: expected [{hash, data}]")
        out.append({"hash": node["hash"], "data": node["data"]})
    return m.MstNodes(nodes=out)


_CLIENT_PARSERS: dict[str, Callable[[_Fields], m.Message]] = {
    "hello": _hello,
    "pack": lambda f: m.PackMsg(data=f.string("data")),
    "request": _request,
    "subscribe": lambda f: m.Subscribe(paths=f.strings("paths", max_items=256)),
    "mst-root": lambda f: m.MstRoot(
        root=f.string("root", optional=True, max_len=64), count=f.integer("count", optional=True)
    ),
    "mst-get": lambda f: m.MstGet(hashes=_hex_list(f, "hashes")),
    "mst-probe": lambda f: m.MstProbe(data=f.string("data", max_len=1 << 24)),
    "presence": lambda f: m.Presence(state=f.raw("state")),
    "blob-upload": lambda f: m.BlobUpload(
        hash=f.string("hash", max_len=80),
        size=f.integer("size"),
        data=f.string("data", max_len=1 << 40),
    ),
    "request-upload": lambda f: m.RequestUpload(
        hash=f.string("hash", max_len=80), size=f.integer("size")
    ),
    "blob-uploaded": lambda f: m.BlobUploaded(hash=f.string("hash", max_len=80)),
    "blob-request": lambda f: m.BlobRequest(hash=f.string("hash", max_len=80)),
    "ping": lambda f: m.Ping(),
    "pong": lambda f: m.Pong(),
}

_SERVER_PARSERS: dict[str, Callable[[_Fields], m.Message]] = {
    "welcome": lambda f: m.Welcome(
        v=f.integer("v"),
        session=f.string("session"),
        peer=f.string("peer"),
        room=f.string("room"),
        caps=list(f.strings("caps")),
        head=f.integer("head"),
        root=f.string("root"),
        heartbeat_ms=f.integer("heartbeat_ms"),
        limits=f.mapping("limits"),
        presence=f.array("presence"),
        node=f.string("node", optional=True),
        actor=f.string("actor", optional=True),
    ),
    "pack": lambda f: m.PackMsg(
        data=f.string("data"),
        head=f.integer("head", optional=True),
        done=f.flag("done", optional=True),
    ),
    "ack": lambda f: m.Ack(
        seqs=f.array("seqs"),
        refused=f.array("refused", optional=True),
        superseded=f.array("superseded", optional=True),
    ),
    "mst-root": lambda f: m.MstRoot(root=f.string("root"), count=f.integer("count")),
    "mst-nodes": _nodes,
    "mst-sketch": lambda f: m.MstSketch(data=f.string("data")),
    "presence": lambda f: m.Presence(peers=f.array("peers")),
    "presence-leave": lambda f: m.PresenceLeave(peer=f.string("peer")),
    "upload-url": lambda f: m.UploadUrl(
        hash=f.string("hash"),
        url=f.string("url"),
        expires=f.integer("expires"),
        headers=f.mapping("headers", optional=True),
        method=f.string("method", optional=True),
    ),
    "upload-denied": lambda f: m.UploadDenied(hash=f.string("hash"), reason=f.string("reason")),
    "blob-uploaded": lambda f: m.BlobUploaded(hash=f.string("hash")),
    "upload-rejected": lambda f: m.UploadRejected(hash=f.string("hash"), reason=f.string("reason")),
    "blob-available": lambda f: m.BlobAvailable(hash=f.string("hash"), size=f.integer("size")),
    "blob": lambda f: m.Blob(
        hash=f.string("hash"),
        data=f.string("data", optional=True),
        url=f.string("url", optional=True),
        expires=f.integer("expires", optional=True),
        size=f.integer("size", optional=True),
    ),
    "tick": lambda f: m.Tick(n=f.integer("n"), at=f.integer("at")),
    "ping": lambda f: m.Ping(),
    "pong": lambda f: m.Pong(),
    "error": lambda f: m.Error(
        code=f.string("code"),
        message=f.string("message"),
        retry_after_ms=f.integer("retry_after_ms", optional=True),
        ref=f.string("ref", optional=True, max_len=64),
        extra={
            k: v
            for k, v in f.obj.items()
            if k not in ("type", "code", "message", "retry_after_ms", "ref")
        },
    ),
}


def _parse(obj: Any, table: dict[str, Callable[[_Fields], m.Message]]) -> m.Message:
    if not isinstance(obj, dict):
        raise MalformedEnvelope("envelope must be a JSON object with a `type`")
    type_ = obj.get("type")
    if not isinstance(type_, str):
        raise MalformedEnvelope("envelope has no string `type`")
    parser = table.get(type_)
    if parser is None:
        raise UnknownType(f"unknown message type {type_[:64]!r}")
    return parser(_Fields(obj, type_))


def parse_client(obj: Any) -> m.Message:
    """A client -> server envelope as a message (server side)."""
    return _parse(obj, _CLIENT_PARSERS)


def parse_server(obj: Any) -> m.Message:
    """A server -> client envelope as a message (SDK side)."""
    return _parse(obj, _SERVER_PARSERS)


CLIENT_TYPES = frozenset(_CLIENT_PARSERS)
SERVER_TYPES = frozenset(_SERVER_PARSERS)
