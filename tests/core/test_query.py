"""The query spec and its reference evaluator (:mod:`roomsync.core.query`, SPEC §6)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from roomsync.core.entries import Change
from roomsync.core.query import (
    MAX_DEPTH,
    NOT_JSON,
    QueryCursorError,
    QuerySpecError,
    decode,
    encode_cursor,
    evaluate,
    json_equal,
    parse_pointer,
    parse_spec,
    resolve,
)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ([], "spec"),
        ({"where": []}, "spec.where"),
        ({"prefix": "todos"}, "spec.prefix"),
        ({"prefix": "/a//b"}, "spec.prefix"),
        ({"filters": {}}, "spec.filters"),
        ({"filters": [{"pointer": "/a", "op": "eq", "value": 1}] * 33}, "spec.filters"),
        ({"filters": [{"op": "exists"}]}, "spec.filters[0].pointer"),
        ({"filters": [{"pointer": "a", "op": "exists"}]}, "spec.filters[0].pointer"),
        ({"filters": [{"pointer": "/~2", "op": "exists"}]}, "spec.filters[0].pointer"),
        ({"filters": [{"pointer": "/" + "a" * 256, "op": "exists"}]}, "spec.filters[0].pointer"),
        ({"filters": [{"pointer": "/a", "op": "like", "value": 1}]}, "spec.filters[0].op"),
        ({"filters": [{"pointer": "/a", "op": "exists", "value": 1}]}, "spec.filters[0].value"),
        ({"filters": [{"pointer": "/a", "op": "eq"}]}, "spec.filters[0].value"),
        ({"filters": [{"pointer": "/a", "op": "lt", "value": True}]}, "spec.filters[0].value"),
        ({"filters": [{"pointer": "/a", "op": "lt", "value": [1]}]}, "spec.filters[0].value"),
        ({"filters": [{"pointer": "/a", "op": "prefix", "value": 1}]}, "spec.filters[0].value"),
        ({"filters": [{"pointer": "/a", "op": "eq", "value": 2**65}]}, "spec.filters[0].value"),
        (
            {"filters": [{"pointer": "/a", "op": "eq", "value": float("inf")}]},
            "spec.filters[0].value",
        ),
        ({"filters": [{"pointer": "/a", "op": "eq", "value": 1, "x": 1}]}, "spec.filters[0].x"),
        ({"project": "/a"}, "spec.project"),
        ({"project": ["/a", "b"]}, "spec.project[1]"),
        ({"order": {"pointer": "/a", "dir": "up"}}, "spec.order.dir"),
        ({"order": {"dir": "asc"}}, "spec.order.pointer"),
        ({"limit": 0}, "spec.limit"),
        ({"limit": 1001}, "spec.limit"),
        ({"limit": True}, "spec.limit"),
    ],
)
def test_a_bad_spec_names_the_field(spec: Any, field: str) -> None:
    with pytest.raises(QuerySpecError) as caught:
        parse_spec(spec)
    assert caught.value.field == field


def test_the_canonical_form_round_trips() -> None:
    raw = {
        "prefix": "/todos/",
        "filters": [
            {"pointer": "/done", "op": "eq", "value": False},
            {"pointer": "", "op": "exists"},
        ],
        "project": ["/title"],
        "order": {"pointer": "/due"},
    }
    spec = parse_spec(raw)
    canonical = spec.to_json()
    assert canonical == {
        "prefix": "/todos",
        "filters": [
            {"pointer": "/done", "op": "eq", "value": False},
            {"pointer": "", "op": "exists"},
        ],
        "project": ["/title"],
        "order": {"pointer": "/due", "dir": "asc"},
        "limit": 100,
    }
    assert parse_spec(json.loads(json.dumps(canonical))) == spec


def test_pointers_follow_rfc_6901() -> None:
    doc = {"a/b": 1, "m~n": 2, "": 3, "arr": [10, 20], "obj": {"0": "zero", "01": "one"}}
    for text, want in [
        ("", doc), ("/a~1b", 1), ("/m~0n", 2), ("/", 3), ("/arr/1", 20), ("/obj/0", "zero"),
        ("/obj/01", "one"),
    ]:  # fmt: skip
        assert resolve(doc, parse_pointer(text)) == (True, want)
    for text in ["/arr/2", "/arr/01", "/arr/-", "/arr/+1", "/missing", "/arr/0/x"]:
        assert resolve(doc, parse_pointer(text)) == (False, None)


def test_what_counts_as_json() -> None:
    assert decode(b' {"a": [1, 2.5, "x", true, null]} ') == {"a": [1, 2.5, "x", True, None]}
    assert decode(b'{"a": 1, "a": 2}') == {"a": 1}  # the first occurrence counts
    assert decode(b'"\\ud800"') == "\ud800"
    for raw in [
        b"",
        b"\xff",
        b"NaN",
        b"Infinity",
        b"[1,]",
        b"1 2",
        b'{"a":1}\x00',
        b"\xef\xbb\xbf1",
    ]:
        assert decode(raw) is NOT_JSON
    assert decode(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) != NOT_JSON
    assert decode(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)) is NOT_JSON
    assert decode(b"1" * 5000) == float("inf")  # past Python's int-from-text limit


def test_json_equality_keeps_types_apart_and_numbers_as_doubles() -> None:
    assert json_equal(1, 1.0) and json_equal(2**53 + 1, 2**53) and json_equal(-0.0, 0)
    assert not json_equal(1, True) and not json_equal(0, False) and not json_equal("1", 1)
    assert not json_equal(None, False) and json_equal(None, None)
    assert json_equal({"a": [1, {"b": 2.0}]}, {"a": [1.0, {"b": 2}]})
    assert not json_equal({"a": 1}, {"a": 1, "b": 2}) and not json_equal([1], [1, 1])
    assert json_equal(10**400, float("inf"))


def _entries(values: dict[str, bytes | None]) -> list[Change]:
    return [Change(p, 1, 0, "a", v, i) for i, (p, v) in enumerate(sorted(values.items()), 1)]


def test_evaluate_pages_through_the_order() -> None:
    entries = _entries({f"/r/{i}": json.dumps({"k": i % 3}).encode() for i in range(5)})
    spec = parse_spec({"order": {"pointer": "/k", "dir": "desc"}, "limit": 2})
    rows, cursor = evaluate(spec, entries)
    assert [r["path"] for r in rows] == ["/r/2", "/r/1"] and cursor is not None
    rows, cursor = evaluate(spec, entries, cursor=cursor)
    assert [r["path"] for r in rows] == ["/r/4", "/r/0"] and cursor is not None
    rows, cursor = evaluate(spec, entries, cursor=cursor)
    assert [r["path"] for r in rows] == ["/r/3"] and cursor is None


def test_cursors_are_checked() -> None:
    spec = parse_spec({"order": {"pointer": "/k"}})
    good = encode_cursor(spec, (0, 1.0, "/x"))
    assert evaluate(spec, [], cursor=good) == ([], None)
    nested = base64.urlsafe_b64encode(b"[" * 3000).decode()
    for bad in ["", "not a cursor", nested, encode_cursor(parse_spec({}), (0, None, "/x"))]:
        with pytest.raises(QueryCursorError):
            evaluate(spec, [], cursor=bad)
    with pytest.raises(ValueError):
        evaluate(spec, [], limit=1001)
