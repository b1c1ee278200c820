"""One frozen dataclass per wire message type (SPEC §2 "Fixed field names").

Each class knows its ``type`` string and turns itself into the JSON-able dict of its
envelope with :meth:`to_wire`. Parsing from envelopes lives in :mod:`.codec`. Binary room
data stays in its wire form here (base64 text); :mod:`.codec` decodes packs and nodes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Message:
    type: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        names: tuple[str, ...] = getattr(type(self), "__slots__", ())
        for name in names:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


# -- handshake ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello(Message):
    type: ClassVar[str] = "hello"
    v: int
    token: str | None = None
    actor: str | None = None
    caps: tuple[str, ...] | None = None
    subscribe: tuple[str, ...] = ("/",)
    cursor: int | None = None
    #: False: skip the catch-up after welcome (the client reconciles with the MST instead).
    catchup: bool | None = None

    def to_wire(self) -> dict[str, Any]:
        out = Message.to_wire(self)
        for key in ("caps", "subscribe"):
            if key in out:
                out[key] = list(out[key])
        return out


@dataclass(frozen=True, slots=True)
class Welcome(Message):
    type: ClassVar[str] = "welcome"
    v: int
    session: str
    peer: str
    room: str
    caps: list[str]
    head: int
    root: str
    heartbeat_ms: int
    limits: dict[str, Any]
    presence: list[dict[str, Any]]
    node: str | None = None
    actor: str | None = None


# -- room data ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PackMsg(Message):
    """``pack{data}``: ``data`` is base64 of a postcard ``Pack`` (a JSON envelope), or
    the postcard bytes themselves (a binary frame, :mod:`.binpack`)."""

    type: ClassVar[str] = "pack"
    data: str | bytes
    head: int | None = None  # server -> client: room head after this pack (for cursors)
    done: bool | None = None  # server -> client: last chunk of a catch-up / request answer

    def to_wire(self) -> dict[str, Any]:
        out = Message.to_wire(self)
        if isinstance(self.data, bytes):
            out["data"] = base64.b64encode(self.data).decode("ascii")
        return out


@dataclass(frozen=True, slots=True)
class Ack(Message):
    type: ClassVar[str] = "ack"
    seqs: list[int | None]
    refused: list[dict[str, Any]] | None = None
    #: ``[{index, seq}]``: changes that lost LWW to the entry at ``seq`` (absent when none).
    superseded: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class Request(Message):
    type: ClassVar[str] = "request"
    since: int | None = None
    paths: tuple[str, ...] | None = None

    def to_wire(self) -> dict[str, Any]:
        out = Message.to_wire(self)
        if "paths" in out:
            out["paths"] = list(out["paths"])
        return out


@dataclass(frozen=True, slots=True)
class Subscribe(Message):
    type: ClassVar[str] = "subscribe"
    paths: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "paths": list(self.paths)}


@dataclass(frozen=True, slots=True)
class MstRoot(Message):
    type: ClassVar[str] = "mst-root"
    root: str | None = None  # client -> server may omit: "tell me yours"
    count: int | None = None


@dataclass(frozen=True, slots=True)
class MstGet(Message):
    type: ClassVar[str] = "mst-get"
    hashes: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.type, "hashes": list(self.hashes)}


@dataclass(frozen=True, slots=True)
class MstNodes(Message):
    type: ClassVar[str] = "mst-nodes"
    nodes: list[dict[str, str]]  # [{hash: hex, data: base64 postcard Node}]


@dataclass(frozen=True, slots=True)
class MstProbe(Message):
    """``mst-probe{data}`` → (batched reconcile): ``data`` is base64 of a postcard
    ``ProbeRequest`` (:mod:`roomsync.core.sketch`)."""

    type: ClassVar[str] = "mst-probe"
    data: str


@dataclass(frozen=True, slots=True)
class MstSketch(Message):
    """``mst-sketch{data}`` ← the answer to one ``mst-probe``: base64 of a postcard
    ``SketchAnswer`` (:mod:`roomsync.core.sketch`)."""

    type: ClassVar[str] = "mst-sketch"
    data: str


# -- presence ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Presence(Message):
    """Client -> server: ``presence{state}``; server -> client: ``presence{peers}``."""

    type: ClassVar[str] = "presence"
    state: Any = None
    peers: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class PresenceLeave(Message):
    type: ClassVar[str] = "presence-leave"
    peer: str


# -- blobs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlobUpload(Message):
    type: ClassVar[str] = "blob-upload"
    hash: str
    size: int
    data: str


@dataclass(frozen=True, slots=True)
class RequestUpload(Message):
    type: ClassVar[str] = "request-upload"
    hash: str
    size: int


@dataclass(frozen=True, slots=True)
class UploadUrl(Message):
    type: ClassVar[str] = "upload-url"
    hash: str
    url: str
    expires: int
    headers: dict[str, str] | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class UploadDenied(Message):
    type: ClassVar[str] = "upload-denied"
    hash: str
    reason: str


@dataclass(frozen=True, slots=True)
class BlobUploaded(Message):
    type: ClassVar[str] = "blob-uploaded"
    hash: str


@dataclass(frozen=True, slots=True)
class UploadRejected(Message):
    type: ClassVar[str] = "upload-rejected"
    hash: str
    reason: str


@dataclass(frozen=True, slots=True)
class BlobAvailable(Message):
    type: ClassVar[str] = "blob-available"
    hash: str
    size: int


@dataclass(frozen=True, slots=True)
class BlobRequest(Message):
    type: ClassVar[str] = "blob-request"
    hash: str


@dataclass(frozen=True, slots=True)
class Blob(Message):
    type: ClassVar[str] = "blob"
    hash: str
    data: str | None = None
    url: str | None = None
    expires: int | None = None
    size: int | None = None


# -- misc ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick(Message):
    type: ClassVar[str] = "tick"
    n: int
    at: int


@dataclass(frozen=True, slots=True)
class Ping(Message):
    type: ClassVar[str] = "ping"


@dataclass(frozen=True, slots=True)
class Pong(Message):
    type: ClassVar[str] = "pong"


@dataclass(frozen=True, slots=True)
class Error(Message):
    type: ClassVar[str] = "error"
    code: str
    message: str
    retry_after_ms: int | None = None
    ref: str | None = None  # the type of the message that caused it, when known
    extra: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if self.retry_after_ms is not None:
            out["retry_after_ms"] = self.retry_after_ms
        if self.ref is not None:
            out["ref"] = self.ref
        out.update(self.extra)
        return out


ALL_TYPES: tuple[type[Message], ...] = (
    Hello,
    Welcome,
    PackMsg,
    Ack,
    Request,
    Subscribe,
    MstRoot,
    MstGet,
    MstNodes,
    MstProbe,
    MstSketch,
    Presence,
    PresenceLeave,
    BlobUpload,
    RequestUpload,
    UploadUrl,
    UploadDenied,
    BlobUploaded,
    UploadRejected,
    BlobAvailable,
    BlobRequest,
    Blob,
    Tick,
    Ping,
    Pong,
    Error,
)
