"""The client's reading of ``welcome.limits`` (SPEC §2), sans I/O.

The server announces its limits in ``welcome{limits}``; the SDK sizes its packs
(:mod:`.packing`), its inline blob uploads (:mod:`.blobflow`) and its presence state and
heartbeat (:mod:`.keepalive`) by them. A limit that is absent, not an integer, or not
positive counts as not announced: the client falls back to the default below, so an
older or stricter server never makes it divide by zero or send nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
