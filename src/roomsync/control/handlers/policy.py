"""The ``policy`` family (SPEC §6): global and per-room settings, applied live.

Effective settings, by scope: **global** = the config file's ``[policy]`` (its explicit
defaults) + the stored global patch; **a room** = the global effective + the room's
patch (kept in its record). ``policy set {room?, patch}`` merges ``patch`` into that
scope's stored patch: a value overrides the setting, ``null`` removes the override (the
setting falls back to the scope below). Every key is a :class:`~roomsync.config.Policy`
field with that field's type and constraints; an unknown key or a bad value is
``invalid-payload`` naming ``patch.<key>``, and nothing changes.

A change applies at once (:meth:`~roomsync.server.rooms.RoomHost.apply_policy`): loaded
rooms take their new effective settings, present peers' presence expires by the new
TTL, every live session's rate limiter and stream budget follow, ``max_peers`` is
checked at the next join, and rooms loaded later start from it. The global patch is a
store setting (``policy``), so it survives restarts, as room patches do in their records.

Both commands answer ``{scope, policy, patch}``: ``scope`` is ``"global"`` or the room id,
``policy`` the effective settings, ``patch`` that scope's own overrides.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from ...config import ConfigError, Policy
from ...config.policy import masked_policy
from ...core.codes import RejectClass
from ..payloads import Payload, Result, RoomId
from ..registry import REGISTRY, Context
from ..rejects import Rejected, not_found
from ..snapshots import record_of

PolicyPatch = Annotated[
    dict[str, Any],
    Meta(
        description=(
            "Policy settings to change, by name (see `policy get`); a null value removes "
            "that override. Unknown names are refused."
        )
    ),
]


class PolicyScope(Payload):
    room: RoomId | None = None


class PolicySet(Payload, kw_only=True):
    room: RoomId | None = None
    patch: PolicyPatch


class PolicyView(Result):
    scope: str
    policy: dict[str, Any]
    patch: dict[str, Any]


def _refused(exc: ConfigError) -> Rejected:
    """A patch the policy refused, naming its key as ``patch.<key>``."""
    key = exc.key or "policy"
    name = key.removeprefix("policy").lstrip(".").split("[")[0]  # anonymous_caps[1] -> ..caps
    return Rejected(
        RejectClass.INVALID_PAYLOAD,
        "invalid",
        exc.message.replace("policy.", "patch.", 1),
        field=f"patch.{name}" if name else "patch",
    )


def _view(scope: str, policy: Policy, patch: dict[str, object]) -> dict[str, Any]:
    return {
        "scope": scope,
        "policy": masked_policy(msgspec.to_builtins(policy)),
        "patch": masked_policy(dict(patch)),
    }


@REGISTRY.command(
    "policy",
    "get",
    PolicyScope,
    "The effective policy, global or of a room, with that scope's own overrides.",
    result=PolicyView,
)
async def get(ctx: Context, p: PolicyScope) -> dict[str, Any]:
    node = ctx.node
    if p.room is None:
        return _view("global", node.policy, node.policy_patch)
    record = await record_of(ctx, p.room)
    host = node.rooms.hosts.get(p.room)
    effective = host.policy if host is not None else node.policy.patched(record.policy)
    return _view(p.room, effective, record.policy)


@REGISTRY.command(
    "policy",
    "set",
    PolicySet,
    "Change policy settings, global or of a room (null removes an override); live at once.",
    result=PolicyView,
)
async def set_(ctx: Context, p: PolicySet) -> dict[str, Any]:
    node = ctx.node
    try:
        if p.room is None:
            policy = await node.set_global_policy(p.patch)
            return _view("global", policy, node.policy_patch)
        record = await node.set_room_policy(p.room, p.patch)
    except ConfigError as exc:
        raise _refused(exc) from None
    if record is None:
        raise not_found("room", p.room, field="room")
    return _view(p.room, node.policy.patched(record.policy), record.policy)
