"""Unit tests of roomsync.core.limits: reading ``welcome.limits`` on the client."""

from __future__ import annotations

from typing import Any

import pytest

from roomsync.core.limits import (
    DEFAULT_MAX_CHANGES_PER_PACK,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_PACK_BYTES,
    WelcomeLimits,
)


def test_announced_limits_are_read() -> None:
    limits = WelcomeLimits.parse(
        {
            "max_frame_bytes": 4096,
            "max_pack_bytes": 2048,
            "max_changes_per_pack": 7,
            "blob_max_bytes": 100,
            "presence_max_bytes": 50,
            "presence_ttl_ms": 30_000,
            "retention_changes": 9,  # not the client's business: ignored
        }
    )
    assert limits == WelcomeLimits(4096, 2048, 7, 100, 50, 30_000)


def test_nothing_announced_gives_the_defaults() -> None:
    limits = WelcomeLimits.parse({})
    assert limits == WelcomeLimits()
    assert (limits.max_frame_bytes, limits.max_pack_bytes, limits.max_changes_per_pack) == (
        DEFAULT_MAX_FRAME_BYTES,
        DEFAULT_MAX_PACK_BYTES,
        DEFAULT_MAX_CHANGES_PER_PACK,
    )
    assert (limits.blob_max_bytes, limits.presence_max_bytes, limits.presence_ttl_ms) == (0, 0, 0)


@pytest.mark.parametrize("bad", [0, -5, True, False, "4096", 4096.0, None, [1]])
def test_invalid_values_count_as_not_announced(bad: Any) -> None:
    names = [
        "max_frame_bytes",
        "max_pack_bytes",
        "max_changes_per_pack",
        "blob_max_bytes",
        "presence_max_bytes",
        "presence_ttl_ms",
    ]
    assert WelcomeLimits.parse(dict.fromkeys(names, bad)) == WelcomeLimits()


def test_announced_is_what_the_client_reads() -> None:
    from roomsync.config import Policy
    from roomsync.core.limits import ANNOUNCED, WelcomeLimits, announced

    policy = Policy()
    limits = announced(policy, max_frame_bytes=2048)
    assert list(limits) == ["max_frame_bytes", *ANNOUNCED]
    read = WelcomeLimits.parse(limits)
    assert (read.max_frame_bytes, read.max_pack_bytes, read.presence_ttl_ms) == (
        2048,
        policy.max_pack_bytes,
        policy.presence_ttl_ms,
    )
