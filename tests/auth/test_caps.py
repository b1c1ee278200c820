"""Capabilities: negotiation of data caps, coverage of control caps, parsing (SPEC §3)."""

from __future__ import annotations

import pytest

from roomsync.auth.caps import (
    DATA_CAPS,
    SUPPORTED_DATA_CAPS,
    covers,
    is_control_cap,
    negotiate,
    parse_caps,
    validate_cap,
)
from roomsync.core import types

ALL = DATA_CAPS


def test_data_caps_are_the_core_ones() -> None:
    assert DATA_CAPS is types.DATA_CAPS
    assert DATA_CAPS == (
        "read", "write", "presence", "blob", "blob-direct", "reconcile", "binary"
    )  # fmt: skip
    assert frozenset(DATA_CAPS) == SUPPORTED_DATA_CAPS


@pytest.mark.parametrize(
    ("requested", "granted", "supported", "expected"),
    [
        # No caps in hello: everything granted (and supported).
        (None, ["write", "read"], ALL, ("read", "write")),
        (None, [], ALL, ()),
        (None, ["*"], ALL, ALL[:-1]),  # all but the opt-in "binary"
        (["binary"], ["*"], ALL, ("binary",)),
        # The intersection, always in DATA_CAPS order.
        (["write", "read"], ["read", "write", "blob"], ALL, ("read", "write")),
        (["reconcile", "read"], ["*"], ALL, ("read", "reconcile")),
        (["read", "blob"], ["read"], ALL, ("read",)),
        ([], ["*"], ALL, ()),
        # Requested "*" means "all that is granted".
        (["*"], ["read", "presence"], ALL, ("read", "presence")),
        # The server may not support everything (e.g. no direct blob I/O).
        (None, ["*"], ["read", "write", "blob"], ("read", "write", "blob")),
        (["blob-direct", "blob"], ["*"], set(ALL) - {"blob-direct"}, ("blob",)),
        # Control caps and unknown names never become session caps.
        (None, ["room:*", "read", "bogus"], ALL, ("read",)),
        (["room:create", "fly", "write"], ["*"], ALL, ("write",)),
        # Duplicates collapse.
        (["read", "read"], ["read", "read"], ALL, ("read",)),
    ],
)
def test_negotiate(
    requested: list[str] | None,
    granted: list[str],
    supported: list[str] | set[str] | tuple[str, ...],
    expected: tuple[str, ...],
) -> None:
    assert negotiate(requested, granted, supported) == expected


def test_negotiate_accepts_iterators() -> None:
    assert negotiate(iter(["read"]), iter(["read"]), iter(SUPPORTED_DATA_CAPS)) == ("read",)


@pytest.mark.parametrize(
    ("granted", "required", "expected"),
    [
        (["*"], "room:create", True),
        (["room:*"], "room:create", True),
        (["room:*"], "archive:create", False),
        (["room:create"], "room:create", True),
        (["room:create"], "room:delete", False),
        (["room:create", "archive:*"], "archive:restore", True),
        ([], "room:get", False),
        (["read", "write"], "room:get", False),
        (["roomx:*"], "room:get", False),
        (["room"], "room:get", False),
        # Data caps: exact or "*".
        (["read"], "read", True),
        (["*"], "blob", True),
        (["room:*"], "read", False),
    ],
)
def test_covers(granted: list[str], required: str, expected: bool) -> None:
    assert covers(granted, required) is expected


def test_covers_accepts_a_generator() -> None:
    assert covers((c for c in ["tick:*"]), "tick:advance")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("read,write", ("read", "write")),
        (" read , write ,", ("read", "write")),
        ("", ()),
        (" , ,", ()),
        ("*", ("*",)),
        ("room:*,archive:create", ("room:*", "archive:create")),
        ("read,read,write", ("read", "write")),
        ("blob-direct", ("blob-direct",)),
        ("my-family:do-it2", ("my-family:do-it2",)),
    ],
)
def test_parse_caps(text: str, expected: tuple[str, ...]) -> None:
    assert parse_caps(text) == expected


@pytest.mark.parametrize(
    "bad",
    ["fly", "READ", "room:", ":create", "room:*:x", "Room:create", "room:Create", "2room:x", "**"],
)
def test_parse_caps_names_the_bad_cap(bad: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_caps(f"read,{bad}")
    assert repr(bad) in str(excinfo.value)
    with pytest.raises(ValueError, match="invalid capability"):
        validate_cap(bad)


def test_is_control_cap() -> None:
    assert is_control_cap("room:create")
    assert is_control_cap("room:*")
    assert not is_control_cap("*")
    assert not is_control_cap("read")
