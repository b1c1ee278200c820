"""``welcome.limits`` (SPEC §2), sans I/O: what the server announces
(:func:`announced`) and the client's reading of it (:class:`WelcomeLimits`).

The server announces its limits in ``welcome{limits}``; the SDK sizes its packs
(:mod:`.packing`), its inline blob uploads (:mod:`.blobflow`) and its presence state and
heartbeat (:mod:`.keepalive`) by them. A limit that is absent, not an integer, or not
positive counts as not announced: the client falls back to the default below, so an
older or stricter server never makes it divide by zero or send nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

#: The policy values ``welcome.limits`` announces, in this order.
ANNOUNCED = (
    "max_pack_bytes",
    "max_changes_per_pack",
    "max_value_bytes",
    "rate_messages_per_s",
    "rate_bytes_per_s",
    "stream_budget_bytes",
    "blob_max_bytes",
    "presence_max_bytes",
    "presence_ttl_ms",
    "max_clock_skew_ms",
    "retention_changes",
)


class LimitsPolicy(Protocol):
    """The part of a room's effective policy that ``welcome.limits`` announces."""

    max_pack_bytes: int
    max_changes_per_pack: int
    max_value_bytes: int
    rate_messages_per_s: float
    rate_bytes_per_s: float
    stream_budget_bytes: int
    blob_max_bytes: int
    presence_max_bytes: int
    presence_ttl_ms: int
    max_clock_skew_ms: int
    retention_changes: int


def announced(policy: LimitsPolicy, *, max_frame_bytes: int) -> dict[str, Any]:
    """The ``welcome.limits`` object for a room's effective ``policy``."""
    out: dict[str, Any] = {"max_frame_bytes": max_frame_bytes}
    for key in ANNOUNCED:
        out[key] = getattr(policy, key)
    return out


DEFAULT_MAX_FRAME_BYTES = 1 << 20
DEFAULT_MAX_PACK_BYTES = 1 << 20
DEFAULT_MAX_CHANGES_PER_PACK = 10_000


@dataclass(frozen=True, slots=True)
class WelcomeLimits:
    """The limits of one session, as the client uses them.

    ``blob_max_bytes``, ``presence_max_bytes`` and ``presence_ttl_ms`` are 0 when the
    server announced none (no client-side check, no presence keepalive).
    """

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_pack_bytes: int = DEFAULT_MAX_PACK_BYTES
    max_changes_per_pack: int = DEFAULT_MAX_CHANGES_PER_PACK
    blob_max_bytes: int = 0
    presence_max_bytes: int = 0
    presence_ttl_ms: int = 0

    @classmethod
    def parse(cls, limits: Mapping[str, Any]) -> WelcomeLimits:
        """Read ``welcome.limits``; unannounced or invalid limits take the defaults."""
        defaults = cls()
        return cls(
            max_frame_bytes=_positive(limits, "max_frame_bytes", defaults.max_frame_bytes),
            max_pack_bytes=_positive(limits, "max_pack_bytes", defaults.max_pack_bytes),
            max_changes_per_pack=_positive(
                limits, "max_changes_per_pack", defaults.max_changes_per_pack
            ),
            blob_max_bytes=_positive(limits, "blob_max_bytes", 0),
            presence_max_bytes=_positive(limits, "presence_max_bytes", 0),
            presence_ttl_ms=_positive(limits, "presence_ttl_ms", 0),
        )


def _positive(limits: Mapping[str, Any], name: str, default: int) -> int:
    value = limits.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return default
