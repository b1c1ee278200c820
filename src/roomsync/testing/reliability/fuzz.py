"""Fuzzing: hypothesis and atheris on every parser a peer's bytes reach
(:mod:`.fuzz_targets`), and fuzzed frames on the wire of a real server.

- hypothesis: random bytes, and seeds from the corpus with bytes flipped, inserted and
  cut, into each target; an exception outside the documented error tree is a crash.
- atheris: each target coverage-guided in a child process, from the corpus kept in the
  repository (``tests/reliability/corpus/<target>/``, or seeds built from the codecs when
  the suite runs from an installed package). The long profile runs at least 100,000
  inputs.
- wire: mutated client envelopes and binary frames sent after ``hello`` to a real server;
  it must answer with documented errors and close codes only, never ``internal``/1011,
  and stay up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ...core import binpack, sketch
from ...core.codec import pack_data
from ...core.entries import Change
from ...core.mst import MerkleSearchTree
from ...core.postcard import encode_node, encode_pack
from ..server import running_server
from .harness import DOCUMENTED_CLOSES, Context, counts_by
from .scorecard import Outcome

REPO_CORPUS = Path(__file__).resolve().parents[4] / "tests" / "reliability" / "corpus"


def seed_inputs() -> dict[str, list[bytes]]:
    """Valid inputs of every target, built with the codecs (the corpus's seeds)."""
    changes = [
        Change("/todos/1/title", 1_700_000_000_000, 0, "ann", b'"milk"'),
        Change("/todos/2", 1_700_000_000_001, 3, "bob", None),
        Change("/a/\u00e9", 2**40, 2**31, "x#tab", b"\x00\xff" * 8, 7),
    ]
    packed = encode_pack(changes)
    envelopes = [
        {"type": "hello", "v": 1, "actor": "a", "caps": ["read", "write"], "cursor": 3},
        {"type": "pack", "data": pack_data(changes)},
        {"type": "request", "since": 0},
        {"type": "request", "paths": ["/a", "/b"]},
        {"type": "subscribe", "paths": ["/todos"]},
        {"type": "mst-get", "hashes": ["00" * 32]},
        {"type": "presence", "state": {"cursor": [1, 2]}},
        {"type": "blob-upload", "hash": "sha256:" + "ab" * 32, "size": 3, "data": "YWJj"},
        {"type": "ping"},
    ]
    server = [
        {"type": "ack", "seqs": [1, None], "refused": [{"index": 1, "code": "too-large"}]},
        {"type": "mst-root", "root": "00" * 32, "count": 0},
        {"type": "error", "code": "overload", "message": "x", "retry_after_ms": 10},
        {"type": "pack", "data": pack_data(changes), "head": 9, "done": True},
    ]
    probe = sketch.ProbeRequest(16, 32, 256, (sketch.Probe(None, True, None, depth=2),))
    leaves = sketch.ProbeRequest(16, 32, 64, (sketch.Probe("/a", True, "/z", 1, (1, 2, 3)),))
    node = encode_node(
        b"\x01" * 32, [("/a", b"\x02" * 32, None), ("/b", b"\x03" * 32, b"\x04" * 32)]
    )
    answer = sketch.serve_probes(sketch_tree(), sketch.encode_request(probe))
    return {
        "envelope-client": [json.dumps(e).encode() for e in envelopes],
        "envelope-server": [json.dumps(e).encode() for e in server],
        "pack": [packed, encode_pack([]), encode_pack(changes[:1], seqs=False)],
        "pack-base64": [base64.b64encode(packed), b"AA=="],
        "binary-frame": [binpack.client_frame(changes), binpack.server_frame(packed, head=3)],
        "mst-node": [node, encode_node(None, [])],
        "mst-probe": [sketch.encode_request(probe), sketch.encode_request(leaves)],
        "mst-sketch": [answer],
    }


def sketch_tree() -> MerkleSearchTree:
    from .fuzz_targets import _tree

    return _tree()


def write_corpus(root: Path) -> None:
    """Write :func:`seed_inputs` under ``root/<target>/seed-<n>`` (how the repository's
    corpus was made)."""
    for target, inputs in seed_inputs().items():
        where = root / target
        where.mkdir(parents=True, exist_ok=True)
        for n, data in enumerate(inputs):
            (where / f"seed-{n}").write_bytes(data)


def corpus(target: str) -> list[bytes]:
    where = REPO_CORPUS / target
    if where.is_dir():
        found = [p.read_bytes() for p in sorted(where.iterdir()) if p.is_file()]
        if found:
            return found
    return seed_inputs()[target]


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf.insert(rng.randint(0, len(buf)), rng.randrange(256))
        elif op == 2 and buf:
            del buf[rng.randrange(len(buf)) :]
        elif buf:
            i = rng.randrange(len(buf))
            buf[i:i] = buf[i : i + rng.randint(1, 16)]
    return bytes(buf)


def hypothesis_target(target: str, examples: int) -> tuple[int, list[str]]:
    """Run ``examples`` hypothesis inputs into ``target``: (inputs tried, crashes)."""
    from .fuzz_targets import run_target

    seeds = corpus(target)
    tried = 0
    crashes: list[str] = []

    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(
        st.one_of(
            st.binary(max_size=512),
            st.tuples(st.sampled_from(seeds), st.randoms(use_true_random=False)).map(
                lambda sr: mutate(sr[0], sr[1])
            ),
        )
    )
    def one(data: bytes) -> None:
        nonlocal tried
        tried += 1
        exc = run_target(target, data)
        if exc is not None and len(crashes) < 5:
            crashes.append(f"{target}: {type(exc).__name__}: {exc} on {data[:80]!r}")

    one()
    return tried, crashes


def atheris_target(target: str, runs: int) -> tuple[int, str | None]:
    """``runs`` atheris inputs into ``target`` in a child process: (runs, crash report)."""
    new = Path(tempfile.mkdtemp(prefix=f"roomsync-atheris-{target}-"))
    seeds = Path(tempfile.mkdtemp(prefix="roomsync-seeds-"))
    try:
        for n, data in enumerate(corpus(target)):
            (seeds / f"seed-{n}").write_bytes(data)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "roomsync.testing.reliability.atheris_main",
                target,
                str(runs),
                str(new),
                str(seeds),
            ],
            capture_output=True,
            text=True,
            timeout=1800,
            cwd=new,
        )
        if proc.returncode != 0:
            return runs, f"{target}: atheris exit {proc.returncode}: {proc.stderr[-1500:]}"
        return runs, None
    finally:
        shutil.rmtree(new, ignore_errors=True)
        shutil.rmtree(seeds, ignore_errors=True)


async def wire(ctx: Context, out: Outcome, frames: int) -> int:
    """Mutated frames to a real server after ``hello``; the frames sent."""
    rng = random.Random(16)
    texts = corpus("envelope-client")[1:]
    packs = corpus("pack")
    binaries = corpus("binary-frame")
    sent = 0
    codes: dict[int | None, int] = {}
    async with (
        running_server(ctx.workdir / "wire", policy__rate_burst_messages=100_000) as srv,
        aiohttp.ClientSession() as http,
    ):
        while sent < frames:
            ws = await http.ws_connect(srv.ws_url("fuzz"), autoping=True)
            await ws.send_json({"type": "hello", "v": 1, "actor": "fz", "caps": ["*", "binary"]})
            code: int | None = None
            for _ in range(50):
                roll = rng.random()
                if roll < 0.6:  # a well-formed envelope around mutated postcard
                    b64 = base64.b64encode(mutate(rng.choice(packs), rng)).decode()
                    await ws.send_json({"type": "pack", "data": b64})
                elif roll < 0.65:  # a mutated envelope (most end the session: 1002)
                    data = mutate(rng.choice(texts), rng)
                    await ws.send_str(data.decode("utf-8", "replace"))
                else:
                    await ws.send_bytes(mutate(rng.choice(binaries), rng))
                sent += 1
                if ws.closed:
                    break
            await ws.send_json({"type": "ping"})
            with contextlib.suppress(TimeoutError):
                while True:
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        code = ws.close_code
                        break
                    if msg.type is aiohttp.WSMsgType.TEXT and msg.json().get("type") == "pong":
                        break
            codes[code] = codes.get(code, 0) + 1
            await ws.close()
        errors = await counts_by(http, srv.url, "roomsync_errors_total", "code")
        out.figures["wire_closes"] = {str(k): v for k, v in sorted(codes.items(), key=str)}
        out.figures["wire_errors"] = errors
        internal = errors.get("internal", 0)
        out.crashes += internal
        out.check(not internal, f"the server answered {internal} fuzzed frames with internal")
        bad = [c for c in codes if c is not None and c not in DOCUMENTED_CLOSES]
        out.check(not bad or bad == [1000], f"undocumented close codes {bad}")
        out.check(1011 not in codes, "a fuzzed frame closed a session with 1011")
        async with http.get(srv.url + "/healthz") as resp:
            out.check(resp.status == 200, "the server is down after the wire fuzz")
    return sent


async def run(ctx: Context, out: Outcome) -> None:
    from .fuzz_targets import TARGETS

    examples = int(ctx.pick(300, 3000))
    runs = int(ctx.pick(2_000, 15_000))
    frames = int(ctx.pick(2_000, 20_000))
    per_target: dict[str, int] = {}
    for target in TARGETS:
        tried, crashes = await asyncio.to_thread(hypothesis_target, target, examples)
        per_target[target] = tried
        out.bad_inputs += tried
        out.crashes += len(crashes)
        out.failures += crashes
    out.figures["hypothesis_inputs"] = sum(per_target.values())
    if importlib.util.find_spec("atheris") is None:
        out.notes.append("atheris is not installed: only hypothesis and the wire ran")
    else:
        total = 0
        for target in TARGETS:
            ran, crash = await asyncio.to_thread(atheris_target, target, runs)
            total += ran
            if crash is not None:
                out.crashes += 1
                out.failures.append(crash)
        out.bad_inputs += total
        out.figures["atheris_inputs"] = total
    sent = await wire(ctx, out, frames)
    out.bad_inputs += sent
    out.figures["wire_frames"] = sent
    out.load.update({"targets": len(TARGETS), "hypothesis_per_target": examples})
