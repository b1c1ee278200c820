"""The room policy (SPEC §6 ``policy``): behaviour limits every room gets, as one value.

:class:`Policy` is the ``[policy]`` section of the settings (the global defaults) and the
domain object rooms read their limits from. Overrides (the control plane's ``policy
set``: a global patch stored as a node-wide setting, a room's in its record) are patches
merged with :func:`merge_patch` and applied with :meth:`Policy.patched`, validated by the
same rules: room effective = config defaults + global patch + room patch. The one secret
in a policy is a webhook's ``secret``: :func:`masked_policy` hides it wherever a policy
is shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .errors import ConfigError, validation_error

__all__ = ["DataCap", "Policy", "Webhook", "WebhookEvent", "masked_policy", "merge_patch"]

#: A data capability (SPEC §3); equal to ``roomsync.core.types.DATA_CAPS`` (a test checks).
DataCap = Literal["read", "write", "presence", "blob", "blob-direct", "reconcile", "binary"]


#: A webhook event type (``roomsync.hooks.webhooks.WEBHOOK_EVENTS``; a test checks).
WebhookEvent = Literal[
    "room.created",
    "room.deleted",
    "peer.joined",
    "peer.left",
    "changes.committed",
    "blob.stored",
    "proposal.promoted",
    "archive.created",
]
_ALL_EVENTS: list[WebhookEvent] = list(WebhookEvent.__args__)  # type: ignore[attr-defined]


class Webhook(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One webhook endpoint of ``policy.webhooks``: where events go, the secret that
    signs them (HMAC-SHA256) and which event types it wants (default: all)."""

    url: Annotated[str, Meta(min_length=8, max_length=2048, pattern=r"^https?://[^\s/]+")]
    secret: Annotated[str, Meta(min_length=16, max_length=512)]
    events: list[WebhookEvent] = msgspec.field(default_factory=lambda: list(_ALL_EVENTS))


def masked_policy(data: dict[str, Any]) -> dict[str, Any]:
    """Policy data (effective or a patch) with every webhook secret replaced by ``***``:
    what ``policy get`` and ``room get`` show."""
    hooks = data.get("webhooks")
    if not isinstance(hooks, list):
        return data
    masked = [{**h, "secret": "***"} if isinstance(h, dict) else h for h in hooks]
    return {**data, "webhooks": masked}


class Policy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[policy]``: room behaviour limits, the defaults of every room.

    A struct with the options of every settings section (unknown fields are errors,
    fields are keyword-only); :meth:`patched` applies a per-room override.
    """

    anonymous_caps: Annotated[
        list[DataCap],
        Meta(
            description=(
                "Data caps granted to peers without a token in unlocked rooms; empty means "
                "anonymous peers get no access."
            )
        ),
    ] = []
    rate_messages_per_s: Annotated[
        float,
        Meta(
            ge=0.001,
            le=1e9,
            description="Per-peer token-bucket refill, messages per second (over the limit: 4008).",
        ),
    ] = 200.0
    rate_bytes_per_s: Annotated[
        float,
        Meta(
            ge=1.0,
            le=1e15,
            description="Per-peer token-bucket refill, received bytes per second.",
        ),
    ] = 2097152.0
    rate_burst_messages: Annotated[
        int,
        Meta(ge=1, description="Token-bucket capacity in messages (the allowed burst)."),
    ] = 400
    rate_burst_bytes: Annotated[
        int,
        Meta(ge=1, description="Token-bucket capacity in bytes."),
    ] = 4194304
    rate_grace_ms: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "How long a peer may stay over its rate limit (messages refused with "
                "`rate-limited`) before it is closed with 4008."
            ),
        ),
    ] = 1000
    max_pack_bytes: Annotated[
        int,
        Meta(ge=1, description="Largest decoded pack; larger ones are refused with `too-large`."),
    ] = 1048576
    max_changes_per_pack: Annotated[
        int,
        Meta(ge=1, description="Most changes in one pack."),
    ] = 10000
    max_value_bytes: Annotated[
        int,
        Meta(ge=1, description="Largest value of one change; larger changes are refused."),
    ] = 262144
    stream_budget_bytes: Annotated[
        int,
        Meta(
            ge=1,
            description="A peer's outbound queue limit; a peer further behind gets 4001.",
        ),
    ] = 8388608
    broadcast_window_ms: Annotated[
        int,
        Meta(
            ge=0,
            le=1000,
            description="Extra wait that coalesces broadcasts (presence: at least 10 ms); "
            "0 sends at the end of the event-loop turn.",
        ),
    ] = 0
    echo_to_sender: Annotated[
        bool,
        Meta(
            description="Also broadcast a peer's own changes back to it (it always gets an `ack`)."
        ),
    ] = False
    retention_changes: Annotated[
        int,
        Meta(
            ge=1,
            description=(
                "Changes kept in the op log for cursor catch-up; an older cursor gets 4001."
            ),
        ),
    ] = 100000
    max_clock_skew_ms: Annotated[
        int,
        Meta(
            ge=0,
            description="Changes stamped further than this ahead of the server clock are refused.",
        ),
    ] = 60000
    blob_max_bytes: Annotated[
        int,
        Meta(ge=1, description="Largest blob accepted, inline or direct."),
    ] = 67108864
    presence_ttl_ms: Annotated[
        int,
        Meta(ge=1, description="A peer's presence expires when not refreshed within this time."),
    ] = 30000
    presence_max_bytes: Annotated[
        int,
        Meta(ge=1, description="Largest presence state of one peer (JSON bytes)."),
    ] = 4096
    presence_max_members: Annotated[
        int,
        Meta(ge=1, description="Most peers with presence state in one room."),
    ] = 500
    presence_leave_grace_ms: Annotated[
        int,
        Meta(
            ge=0,
            description="Delay before `presence-leave` is broadcast after a disconnect.",
        ),
    ] = 0
    max_peers: Annotated[
        int,
        Meta(ge=1, description="Most peers connected to one room at once."),
    ] = 1000
    catchup_chunk: Annotated[
        int,
        Meta(
            ge=1,
            description=(
                "Most changes per pack during catch-up (a full catch-up is cut by seq "
                "range, so packs may carry fewer)."
            ),
        ),
    ] = 1000
    capture_envelopes: Annotated[
        int,
        Meta(
            ge=0,
            le=100000,
            description=(
                "Recent envelopes kept per room for `room capture` (redacted metadata, "
                "~160 bytes each, held from a room's first traffic until it unloads: "
                "~40 KB per busy room at 256); 0 disables the capture."
            ),
        ),
    ] = 256
    webhooks: Annotated[
        list[Webhook],
        Meta(
            description=(
                "Webhook endpoints, each `{url, secret, events}` (`docs/hooks.md`). A room's "
                "endpoints are the global ones plus those of its own `policy set`; secrets "
                "are shown masked."
            )
        ),
    ] = []

    def patched(self, patch: Mapping[str, object]) -> Policy:
        """A validated copy with ``patch`` (field name -> new value) applied.

        Values must have their JSON types (no string coercion). Raises
        :class:`ConfigError` with ``key`` ``policy.<field>`` on an unknown field or a bad
        value; ``self`` is never modified.
        """
        known = Policy.__struct_fields__
        for name in patch:
            if name not in known:
                raise ConfigError(f"unknown key 'policy.{name}'", key=f"policy.{name}")
        data: dict[str, Any] = msgspec.to_builtins(self)
        data.update(patch)
        try:
            return msgspec.convert(data, Policy)
        except msgspec.ValidationError as exc:
            raise validation_error(exc, data, prefix="policy") from None


def merge_patch(stored: Mapping[str, object], changes: Mapping[str, object]) -> dict[str, object]:
    """``stored`` overrides with ``changes`` applied (``policy set``): a value replaces
    that key's override, ``None`` (JSON null) removes it. Not validated: apply the
    result with :meth:`Policy.patched`."""
    merged = dict(stored)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
