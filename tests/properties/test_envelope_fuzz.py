"""The envelope codec parses or raises a documented error, in both directions (SPEC §2).

Whatever a peer sends, :func:`~roomsync.core.codec.parse_client` (server side) and
:func:`~roomsync.core.codec.parse_server` (SDK side) return a message of their direction
or raise :class:`MalformedEnvelope` / :class:`UnknownType`; decoding a ``pack``'s data
raises only :class:`CodecError` with ``bad base64`` / ``bad postcard: ...``. Nothing else
escapes (STYLE lesson 4), so a shell never answers a hostile frame with a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from roomsync.core import messages as m
from roomsync.core.codec import (
    CLIENT_TYPES,
    SERVER_TYPES,
    decode_json,
    parse_client,
    parse_server,
    unpack_data,
)
from roomsync.core.errors import CodecError, MalformedEnvelope, RoomsyncError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

#: Field names of the envelopes of either direction, so fuzzed objects reach the field
#: readers and not only the "unknown type" branch.
FIELDS = sorted(
    {
        "v",
        "token",
        "actor",
        "caps",
        "subscribe",
        "cursor",
        "catchup",
        "data",
        "head",
        "done",
        "since",
        "paths",
        "hashes",
        "hash",
        "size",
        "state",
        "root",
        "count",
        "session",
        "peer",
        "room",
        "heartbeat_ms",
        "limits",
        "presence",
        "node",
        "seqs",
        "refused",
        "superseded",
        "nodes",
        "peers",
        "url",
        "expires",
        "headers",
        "method",
        "reason",
        "n",
        "at",
        "code",
        "message",
        "retry_after_ms",
    }
)


def envelopes(types: frozenset[str]) -> st.SearchStrategy[object]:
    """Any JSON value, or an object with a known ``type`` and up to 8 known fields."""
    fields = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)
    typed = st.builds(lambda t, f: {**f, "type": t}, st.sampled_from(sorted(types)), fields)
    return st.one_of(json_values, typed)


def check(parse: Callable[[Any], m.Message], types: frozenset[str], obj: object) -> None:
    try:
        msg = parse(obj)
    except RoomsyncError as exc:
        assert exc.code in {"malformed-envelope", "unknown-type"}, exc
    else:
        assert msg.type in types
        if isinstance(msg, m.PackMsg):
            try:
                unpack_data(msg.data)
            except CodecError as exc:
                assert exc.message.startswith(("bad base64", "bad postcard: "))


@settings(max_examples=300)
@given(envelopes(CLIENT_TYPES))
def test_random_json_never_crashes_the_server_side_parser(obj: object) -> None:
    check(parse_client, CLIENT_TYPES, obj)


@settings(max_examples=300)
@given(envelopes(SERVER_TYPES))
def test_random_json_never_crashes_the_sdk_side_parser(obj: object) -> None:
    check(parse_server, SERVER_TYPES, obj)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_json_decode(data: bytes) -> None:
    try:
        obj = decode_json(data)
    except MalformedEnvelope:
        return
    check(parse_client, CLIENT_TYPES, obj)
    check(parse_server, SERVER_TYPES, obj)
