"""Webhook events and their signatures (``docs/hooks.md`` "Webhooks"): what a receiver
needs to check that a delivery came from roomsync.

Every delivery is an HTTP ``POST`` of a JSON body::

    {"id": "evt_…", "type": "peer.joined", "room": "r", "created_ms": 1764000000000,
     "node": "host:8787", "data": {...}}

with the headers ``Roomsync-Event-Id`` (the idempotency key: the same on every retry
and for every endpoint), ``Roomsync-Event`` (the type) and ``Roomsync-Signature``::

    Roomsync-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

A receiver recomputes the HMAC over the timestamp, a dot and the raw body bytes with the
endpoint's secret, compares it in constant time, and refuses timestamps older than a few
minutes (a replayed delivery). :func:`verify` does exactly that.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = [
    "EVENT_HEADER",
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "WEBHOOK_EVENTS",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "Roomsync-Signature"
EVENT_ID_HEADER = "Roomsync-Event-Id"
EVENT_HEADER = "Roomsync-Event"

#: Every event type, in the order of ``docs/hooks.md``.
WEBHOOK_EVENTS = (
    "room.created",
    "room.deleted",
    "peer.joined",
    "peer.left",
    "changes.committed",
    "blob.stored",
    "proposal.promoted",
    "archive.created",
)

#: Signatures older (or further ahead) than this are refused by :func:`verify`.
DEFAULT_TOLERANCE_S = 300


def sign(secret: str, body: bytes, *, timestamp: int) -> str:
    """The ``Roomsync-Signature`` header value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), b"%d." % timestamp + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    now_s: float | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> bool:
    """True when ``header`` is a valid signature of ``body`` with ``secret``, made within
    ``tolerance_s`` of ``now_s`` (default: now)."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    now = time.time() if now_s is None else now_s
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp=timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))
