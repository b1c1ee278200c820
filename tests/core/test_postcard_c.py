"""The C codec of ``Pack`` (``roomsync.core._postcard_c``) against the Python one.

It must give exactly what the pure-Python path gives: the same changes for every valid
pack and the same bytes for every encodable list of changes; for anything else the same
error (it only says "irregular", and the Python code raises and explains). Under
``CI=true`` the accelerator must be built, so that CI tests it; elsewhere the comparisons
skip when it is not.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomsync.core import postcard
from roomsync.core.entries import Change
from roomsync.core.errors import CodecError
from roomsync.core.postcard import U32_MAX, U64_MAX, decode_pack, encode_pack

accelerated = pytest.mark.skipif(
    not postcard.ACCELERATED and os.environ.get("CI") != "true",
    reason="the C decoder is not built here (no compiler at install time)",
)

changes = st.builds(
    Change,
    path=st.text(max_size=40) | st.sampled_from(["/", "/k/é", "/日本/語", "/" + "x" * 300]),
    ts=st.integers(0, U64_MAX) | st.sampled_from([0, 127, 128, 2**42, U64_MAX]),
    counter=st.integers(0, U32_MAX) | st.sampled_from([0, 127, 128, U32_MAX]),
    actor=st.text(max_size=12) | st.just("populator"),
    value=st.none() | st.binary(max_size=300),
    seq=st.none() | st.integers(0, U64_MAX) | st.sampled_from([1, 127, 128, 16384, U64_MAX]),
)
packs = st.lists(changes, max_size=12)


def pure(data: bytes) -> list[Change] | str:
    """What the pure-Python path makes of ``data``: changes, or the CodecError message."""
    was = postcard.ACCELERATED
    postcard.use_accelerator(False)
    try:
        return decode_pack(data)
    except CodecError as exc:
        return exc.message
    finally:
        postcard.use_accelerator(was)


def pure_encode(changes: list[Change], seqs: bool) -> bytes | str:
    """What the pure-Python encoder makes of ``changes``: bytes, or the error it raises."""
    was = postcard.ACCELERATED
    postcard.use_accelerator(False)
    try:
        return encode_pack(changes, seqs=seqs)
    except Exception as exc:  # compared as text with the C path's
        return f"{type(exc).__name__}: {exc}"
    finally:
        postcard.use_accelerator(was)


def fast_encode(changes: list[Change], seqs: bool) -> bytes | str:
    try:
        return encode_pack(changes, seqs=seqs)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def fast(data: bytes) -> list[Change] | str:
    """The same through :func:`decode_pack` as it runs (the C decoder first)."""
    try:
        return decode_pack(data)
    except CodecError as exc:
        return exc.message


@pytest.fixture(autouse=True)
def _must_be_built() -> Iterator[None]:
    if os.environ.get("CI") == "true":
        assert postcard.ACCELERATED, "CI must build roomsync.core._postcard_c (setup.py)"
    yield


@accelerated
@given(packs)
def test_valid_packs_decode_to_the_same_changes(pack: list[Change]) -> None:
    data = encode_pack(pack)
    assert postcard._decode_pack_c is not None
    got = postcard._decode_pack_c(data)
    assert got == pack == postcard._decode_pack_fast(data)
    assert [type(c) for c in got or []] == [Change] * len(pack)


@accelerated
@settings(max_examples=400)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_give_the_same_outcome(data: bytes) -> None:
    assert fast(data) == pure(data)


@accelerated
@settings(max_examples=400)
@given(packs.filter(bool), st.data())
def test_mutated_packs_give_the_same_outcome(pack: list[Change], data: st.DataObject) -> None:
    encoded = bytearray(encode_pack(pack))
    action = data.draw(st.sampled_from(["flip", "cut", "append", "insert"]))
    if action == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    elif action == "cut":
        del encoded[data.draw(st.integers(0, len(encoded) - 1)) :]
    elif action == "append":
        encoded += data.draw(st.binary(min_size=1, max_size=4))
    else:
        at = data.draw(st.integers(0, len(encoded)))
        encoded[at:at] = data.draw(st.binary(min_size=1, max_size=3))
    assert fast(bytes(encoded)) == pure(bytes(encoded))


@accelerated
@pytest.mark.parametrize(
    "hex_input",
    [
        "01",  # one change, nothing else
        "0100",  # truncated path
        "01 00 8080808080808080808002 00 00 00 00",  # ts past u64
        "01 00 00 8000 00 00 00",  # overlong counter
        "01 00 00 8080808010 00 00 00",  # counter past u32
        "01 00 00 00 00 02 00",  # unknown Op tag
        "01 00 00 00 00 8000 00",  # Op tag as an overlong varint (strict reads u32)
        "01 00 00 00 00 01 02",  # bad option tag
        "01 00 00 00 00 01 01",  # seq missing
        "01 00 00 00 00 01 00 ff",  # trailing byte
        "01 03 eda080 00 00 00 01 00",  # a UTF-8 surrogate in the path
        "01 00 00 00 02 c328 01 00",  # invalid UTF-8 in the actor
        "05 00 00 00 00 01 00",  # more changes than bytes could hold
        "ffffffffffffffffff01",  # a count near u64 max
    ],
)
def test_irregular_inputs_raise_what_the_strict_reader_says(hex_input: str) -> None:
    data = bytes.fromhex(hex_input.replace(" ", ""))
    assert postcard._decode_pack_c is not None
    assert postcard._decode_pack_c(data) is None
    expected = pure(data)
    assert isinstance(expected, str) and expected.startswith("bad postcard: ")
    assert fast(data) == expected


@accelerated
def test_bytes_like_inputs_and_shared_actor_strings() -> None:
    pack = [Change(f"/k/{i}", 1_764_000_000_000 + i, 0, "a", b"v", i + 1) for i in range(50)]
    data = encode_pack(pack)
    assert postcard._decode_pack_c is not None
    for view in (data, bytearray(data), memoryview(data)):
        assert postcard._decode_pack_c(view) == pack  # type: ignore[arg-type]
    got = postcard._decode_pack_c(data) or []
    assert all(c.actor is got[0].actor for c in got)  # one str for a run of one actor
    # Only str, int, bytes and None inside: never in a cycle, so not tracked by the GC.
    assert not any(gc.is_tracked(c) for c in got)


@accelerated
def test_repeated_decoding_does_not_leak() -> None:
    pack = [Change(f"/k/{i}", 2**45 + i, i, "ann", b"x" * 40, 10_000 + i) for i in range(200)]
    bad = encode_pack(pack)[:-1]  # irregular at the very end: every object made is freed
    good = encode_pack(pack)
    assert postcard._decode_pack_c is not None
    decode = postcard._decode_pack_c
    for _ in range(50):  # warm up caches and free lists
        decode(good)
        decode(bad)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            decode(good)
            decode(bad)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes kept after 4,000 decodes"


def test_roomsync_pure_python_turns_the_accelerator_off() -> None:
    code = "import roomsync.core.postcard as p; print(p.ACCELERATED)"
    env = {**os.environ, "ROOMSYNC_PURE_PYTHON": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@accelerated
@given(packs, st.booleans())
def test_valid_changes_encode_to_the_same_bytes(pack: list[Change], seqs: bool) -> None:
    assert postcard._encode_pack_c is not None
    got = postcard._encode_pack_c(pack, seqs)
    assert got is not None and got == pure_encode(pack, seqs)
    assert postcard._encode_pack_c(tuple(pack), seqs) == got
    assert decode_pack(got) == (pack if seqs else [replace(c, seq=None) for c in pack])


class _Sub(Change):
    __slots__ = ()


@accelerated
@pytest.mark.parametrize(
    "odd",
    [
        Change("/a", -1, 0, "x", b"", None),
        Change("/a", U64_MAX + 1, 0, "x", b"", None),
        Change("/a", 1, U32_MAX + 1, "x", b"", None),
        Change("/a", 1, -2, "x", b"", None),
        Change("/a", 1, 0, "x", b"", -5),
        Change("/a", 1, 0, "x", b"", U64_MAX + 1),
        Change("/\ud800", 1, 0, "x", b"", None),  # a lone surrogate has no UTF-8
        Change("/a", 1, 0, "\udfff", b"", None),
        Change("/a", 1.5, 0, "x", b"", None),  # type: ignore[arg-type]
        Change(b"/a", 1, 0, "x", b"", None),  # type: ignore[arg-type]
        Change("/a", 1, 0, "x", "text", None),  # type: ignore[arg-type]
        Change("/a", 1, 0, "x", bytearray(b"ok"), None),  # type: ignore[arg-type]
        Change("/a", 1, 0, "x", memoryview(b"ok"), 3),  # type: ignore[arg-type]
        Change("/a", True, False, "x", b"", True),  # bools are ints to both
        _Sub("/a", 1, 0, "x", b"v", 1),
    ],
)
@pytest.mark.parametrize("seqs", [True, False])
def test_irregular_changes_get_what_the_python_encoder_does(odd: Change, seqs: bool) -> None:
    good = Change("/ok", 5, 0, "y", b"v", 9)
    for changes in ([odd], [good, odd], [odd, good]):
        assert fast_encode(changes, seqs) == pure_encode(changes, seqs)


@accelerated
def test_the_encoder_takes_only_lists_and_tuples_of_changes() -> None:
    change = Change("/a", 1, 0, "x", b"v", 1)
    assert postcard._encode_pack_c is not None
    assert postcard._encode_pack_c(iter([change]), True) is None  # type: ignore[arg-type]
    assert postcard._encode_pack_c([object()], True) is None  # type: ignore[list-item]
    with pytest.raises(TypeError):  # as the Python encoder, which needs a len()
        encode_pack(iter([change]))  # type: ignore[arg-type]
