"""Payloads of the control commands (SPEC §6), validated before any handler runs.

Field names are shared across families (``room``, ``node``, ``limit``, ``cursor``, ...).
Unknown fields are refused, types and constraints are checked by msgspec, and the first
offending field is named in the ``invalid-payload`` reject.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

RoomId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9._-]{1,128}$")]
Limit = Annotated[int, Meta(ge=1, le=1000)]
#: An archive ref (SPEC §6): ``sha256:`` and the 64 hex digits of the snapshot's hash.
ArchiveRef = Annotated[str, Meta(pattern=r"^sha256:[0-9a-f]{64}$")]


class Payload(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every payload: unknown fields are an error."""


class Result(msgspec.Struct, kw_only=True):
    """Base of every result model: the fields SPEC §6 fixes (more may be added; extra
    fields a handler returns are allowed, none may be missing or mistyped)."""


class Empty(Payload):
    """No fields."""


class RoomRef(Payload):
    room: RoomId


class RoomCreate(Payload):
    """``policy``: the room's policy overrides (as ``policy set`` takes them)."""

    room: RoomId
    locked: bool = False
    policy: dict[str, Any] | None = None


class RoomList(Payload):
    limit: Limit = 100
    cursor: str | None = None


class Revoke(Payload):
    """Exactly one of ``sub`` or ``jti``; ``expires_ms`` ends the revocation (default:
    never)."""

    sub: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    jti: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    expires_ms: Annotated[int, Meta(ge=0)] | None = None


class NodeRef(Payload):
    node: Annotated[str, Meta(min_length=1, max_length=256)]
