"""Capabilities: what a token or a room policy lets a peer or an operator do (SPEC §3).

Two kinds share one string namespace:

* **data caps** (:data:`DATA_CAPS`): ``read``, ``write``, ``presence``, ``blob``,
  ``blob-direct``, ``reconcile``. A session holds the ones negotiated at ``hello``.
* **control caps**: ``<family>:<command>``, ``<family>:*`` or ``*``. The control plane
  (SPEC §6, ``server/control.py``) checks that an operator token :func:`covers`
  ``<family>:<command>`` before it decodes the payload.

A granted ``*`` covers everything: every supported data cap and every control command.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from roomsync.core.handshake import SUPPORTED_DATA_CAPS, WILDCARD, negotiate
from roomsync.core.types import DATA_CAPS

__all__ = [
    "DATA_CAPS",
    "SUPPORTED_DATA_CAPS",
    "WILDCARD",
    "covers",
    "is_control_cap",
    "negotiate",
    "parse_caps",
    "validate_cap",
]

_NAME = r"[a-z][a-z0-9-]*"
_CONTROL_CAP_RE = re.compile(rf"({_NAME}):({_NAME}|\*)")


def is_control_cap(cap: str) -> bool:
    """True for ``<family>:<command>`` and ``<family>:*`` (not for ``*`` alone)."""
    return _CONTROL_CAP_RE.fullmatch(cap) is not None


def validate_cap(cap: str) -> str:
    """Return ``cap`` if it is a data cap, ``*`` or a control cap; else raise ValueError."""
    if cap in SUPPORTED_DATA_CAPS or cap == WILDCARD or is_control_cap(cap):
        return cap
    raise ValueError(
        f"invalid capability {cap!r}: expected one of {', '.join(DATA_CAPS)}, '*', "
        "'<family>:<command>' or '<family>:*' (lowercase names)"
    )


def parse_caps(text: str) -> tuple[str, ...]:
    """Parse a comma-separated cap list such as ``"read, write,room:*"``.

    Items are stripped, empty items dropped, duplicates removed (first one kept), and
    each item validated by :func:`validate_cap`; a bad item raises ValueError naming it.
    """
    caps: list[str] = []
    for item in text.split(","):
        cap = item.strip()
        if cap and validate_cap(cap) not in caps:
            caps.append(cap)
    return tuple(caps)


def covers(granted: Iterable[str], required: str) -> bool:
    """True when ``granted`` allows ``required`` (usually ``<family>:<command>``).

    Matches a granted ``*``, ``<family>:*`` for the required family, or the exact cap.
    """
    family = required.partition(":")[0] if ":" in required else None
    for cap in granted:
        if cap == WILDCARD or cap == required:
            return True
        if family is not None and cap == f"{family}:*":
            return True
    return False
