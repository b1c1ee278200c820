"""Envelope parsing: every failure is a documented error (SPEC §2).

The fuzzing ("parses or raises a documented error") is in
``tests/properties/test_envelope_fuzz.py``; the golden cases shared with other languages
in ``tests/test_envelope_vectors.py``."""

from __future__ import annotations

import pytest

from roomsync.core import messages as m
from roomsync.core.codec import (
    b64decode,
    decode_json,
    pack_data,
    parse_client,
    parse_server,
    unpack_data,
)
from roomsync.core.entries import Change
from roomsync.core.errors import CodecError, MalformedEnvelope, UnknownType


def test_hello_defaults_and_fields() -> None:
    msg = parse_client({"type": "hello", "v": 1})
    assert msg == m.Hello(v=1)
    msg = parse_client(
        {
            "type": "hello",
            "v": 1,
            "token": "t",
            "actor": "a",
            "caps": ["read"],
            "subscribe": ["/a"],
            "cursor": 5,
            "catchup": False,
        }
    )
    assert msg == m.Hello(
        v=1, token="t", actor="a", caps=("read",), subscribe=("/a",), cursor=5, catchup=False
    )
    assert msg.to_wire()["caps"] == ["read"]


@pytest.mark.parametrize(
    ("obj", "error", "text"),
    [
        ([], MalformedEnvelope, "JSON object"),
        ({"v": 1}, MalformedEnvelope, "no string `type`"),
        ({"type": 3}, MalformedEnvelope, "no string `type`"),
        ({"type": "hello"}, MalformedEnvelope, "hello.v"),
        ({"type": "hello", "v": True}, MalformedEnvelope, "hello.v"),
        ({"type": "hello", "v": 1, "caps": "read"}, MalformedEnvelope, "hello.caps"),
        ({"type": "hello", "v": 1, "cursor": -1}, MalformedEnvelope, "hello.cursor"),
        ({"type": "request"}, MalformedEnvelope, "exactly one"),
        ({"type": "request", "since": 1, "paths": ["/a"]}, MalformedEnvelope, "exactly one"),
        ({"type": "mst-get", "hashes": ["zz"]}, MalformedEnvelope, "64-hex"),
        ({"type": "warp"}, UnknownType, "warp"),
    ],
)
def test_bad_envelopes(obj: object, error: type[Exception], text: str) -> None:
    with pytest.raises(error) as info:
        parse_client(obj)
    assert text in str(info.value)


def test_unknown_type_does_not_close_but_malformed_does() -> None:
    assert UnknownType("x").close is None
    assert MalformedEnvelope("x").close == 1002


def test_pack_data_round_trip_and_errors() -> None:
    changes = [Change("/a", 5, 1, "x", b"\x00\x01"), Change("/b", 6, 0, "y", None)]
    assert unpack_data(pack_data(changes)) == changes
    with pytest.raises(CodecError, match=r"^bad base64"):
        unpack_data("not base64!")
    with pytest.raises(CodecError, match=r"^bad base64"):
        b64decode(7)
    with pytest.raises(CodecError, match=r"^bad postcard: "):
        unpack_data("AQ==")


def test_decode_json() -> None:
    assert decode_json('{"type":"ping"}') == {"type": "ping"}
    with pytest.raises(MalformedEnvelope, match="not valid JSON"):
        decode_json("{nope")


def test_server_messages_parse_for_the_sdk() -> None:
    welcome = m.Welcome(
        v=1,
        session="s",
        peer="p",
        room="r",
        caps=["read"],
        head=3,
        root="0" * 64,
        heartbeat_ms=1000,
        limits={},
        presence=[],
    )
    assert parse_server(welcome.to_wire()) == welcome
    err = parse_server({"type": "error", "code": "overload", "message": "m", "retry_after_ms": 700})
    assert isinstance(err, m.Error) and err.retry_after_ms == 700


def test_ack_keeps_its_superseded_list() -> None:
    wire = {"type": "ack", "seqs": [4, 9], "superseded": [{"index": 0, "seq": 4}]}
    ack = parse_server(wire)
    assert ack == m.Ack(seqs=[4, 9], superseded=[{"index": 0, "seq": 4}])
    assert ack.to_wire() == wire
    assert parse_server({"type": "ack", "seqs": [1]}) == m.Ack(seqs=[1])  # absent: None
