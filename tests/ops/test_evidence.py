"""``roomsync evidence`` (issue 12): a bundle from a test incident on a real server holds
every item of the runbook's evidence list and none of the secrets planted in the
incident (a token, the signing key, a blob payload); the redaction self-check refuses to
write a bundle that would carry one; a narrow operator token gives a partial bundle that
says what it could not collect. Nothing the bundle does changes the node."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import logging
import os
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import roomsync
from roomsync.cli.main import main
from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.ops.evidence import (
    EvidenceOptions,
    Leak,
    metrics_delta,
    parse_duration,
    scan,
    write_bundle,
)
from roomsync.server.logs import JsonFormatter
from roomsync.testing.server import TEST_KEYS, ServerHandle, running_server, wait_until
from roomsync.testing.wsclient import closed, hello, recv_type

SIGNING_SECRET = next(iter(TEST_KEYS.values()))
BLOB = os.urandom(48) + b"planted-blob-payload-bytes-" * 4  # > 64 bytes, random-ish
PLANTED_VALUE = b'{"diary": "planted-room-value-nobody-may-see"}'
PEM = "-----BEGIN PRIVATE KEY-----"

#: What the bundle needs to run every step.
EVIDENCE_CAPS = (
    "topology:get",
    "topology:events",
    "room:get",
    "room:capture",
    "archive:list",
    "archive:verify",
    "policy:get",
)

#: The runbook's evidence list, as files of the bundle (room files for room "incident").
EVERY_ITEM = {
    "SUMMARY.md",
    "manifest.json",
    "versions.json",
    "health.json",
    "metrics/before.prom",
    "metrics/after.prom",
    "metrics/delta.json",
    "logs/events.jsonl",
    "logs/server.log",
    "closes.json",
    "control-failures.json",
    "topology.json",
    "policy/global.json",
    "config.toml",
    "rooms/incident/room.json",
    "rooms/incident/capture.json",
    "rooms/incident/policy.json",
    "rooms/incident/archives.json",
    "rooms/incident/replay.json",
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def members(path: Path) -> dict[str, str]:
    """The bundle's files by name (without the top directory) -> text."""
    with tarfile.open(path) as tar:
        out = {}
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None and m.mode == 0o600
            out[m.name.split("/", 1)[1]] = f.read().decode()
    return out


@pytest.fixture
def server_log(tmp_path: Path) -> Iterator[Path]:
    """The server's JSON log, as ``roomsync serve`` writes it, in a file."""
    path = tmp_path / "server.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("roomsync")
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    async with running_server(tmp_path / "data", server__control_burst=1000) as handle:
        yield handle


def config_file(tmp_path: Path, srv: ServerHandle) -> Path:
    """The node's config as the operator has it: its data directory and signing key."""
    path = tmp_path / "roomsync.toml"
    keys = "\n".join(f'{kid} = "{secret}"' for kid, secret in TEST_KEYS.items())
    path.write_text(
        f'[server]\ndata_dir = "{srv.server.settings.server.data_dir}"\n\n[auth.keys]\n{keys}\n'
    )
    return path


async def control(
    http: aiohttp.ClientSession, srv: ServerHandle, token: str, cmd: str, **payload: Any
) -> tuple[int, Any]:
    family, command = cmd.split()
    async with http.post(
        f"{srv.url}/v1/control/{family}/{command}",
        json=payload,
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        return resp.status, await resp.json()


async def incident(http: aiohttp.ClientSession, srv: ServerHandle) -> dict[str, Any]:
    """Break a room in the ways the runbook names; plant the secrets on the way."""
    alice_token = srv.mint("incident", ("read", "write", "blob"), actor="alice")
    alice, _ = await hello(http, srv.ws_url("incident"), token=alice_token, actor="alice")
    await alice.send_json(
        {"type": "pack", "data": pack_data([Change("/diary", 1, 0, "alice", PLANTED_VALUE)])}
    )
    await recv_type(alice, "ack")
    digest = "sha256:" + hashlib.sha256(BLOB).hexdigest()
    await alice.send_json(
        {"type": "blob-upload", "hash": digest, "size": len(BLOB), "data": b64(BLOB)}
    )
    await recv_type(alice, "blob-uploaded")
    # bob keeps reconnecting
    for _ in range(3):
        bob, _ = await hello(http, srv.ws_url("incident"), actor="bob")
        await bob.close()
    # carol breaks the protocol (1002); mallory's token does not verify (4003)
    carol, _ = await hello(http, srv.ws_url("incident"), actor="carol")
    await carol.send_json({"type": "hello", "v": 1})
    assert (await closed(carol))[1] == 1002
    mallory = await http.ws_connect(srv.ws_url("incident"))
    await mallory.send_json({"type": "hello", "v": 1, "token": alice_token[:-3] + "xyz"})
    assert (await closed(mallory))[1] == 4003
    # a client error path that logs what it was sent: a token pasted as the room id
    pasted = await http.ws_connect(f"{srv.url}/ws/{alice_token}")
    await closed(pasted)
    # control requests: refused for their scope, unauthenticated, a precondition
    narrow = srv.mint("*", ("room:get",), actor="ops-narrow")
    assert (await control(http, srv, narrow, "room lock", room="incident"))[0] == 403
    assert (await control(http, srv, "not-a-token", "room get", room="incident"))[0] == 401
    admin = srv.mint("*", ("*",), actor="admin")
    status, body = await control(http, srv, admin, "archive create", room="incident")
    assert status == 200, body
    status, _ = await control(
        http, srv, admin, "archive restore", room="incident", ref="sha256:" + "0" * 64
    )
    assert status == 412
    return {"alice": alice, "alice_token": alice_token, "narrow": narrow, "admin": admin}


async def test_a_bundle_from_an_incident_holds_every_item_and_no_secret(
    tmp_path: Path, srv: ServerHandle, http: aiohttp.ClientSession, server_log: Path
) -> None:
    planted = await incident(http, srv)
    alice = planted["alice"]
    _, before = await control(http, srv, planted["admin"], "room get", room="incident")
    _, archives_before = await control(http, srv, planted["admin"], "archive list", room="incident")

    async def malformed_packs() -> None:  # an error spike while the snapshots are taken
        while True:
            await alice.send_json({"type": "pack", "data": "%%%"})
            await asyncio.sleep(0.02)

    spike = asyncio.create_task(malformed_packs())
    ops = srv.mint("*", EVIDENCE_CAPS, actor="ops")
    out = tmp_path / "bundle.tar.gz"
    try:
        code, stdout, stderr = await asyncio.to_thread(
            run_cli, "evidence", srv.url, "--operator-token", ops, "--room", "incident",
            "--out", str(out), "--metrics-gap", "0.5", "--config",
            str(config_file(tmp_path, srv)), "--log-file", str(server_log),
        )  # fmt: skip
    finally:
        spike.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await spike
    assert code == 0, stderr
    assert stdout.strip() == str(out)
    files = members(out)
    assert set(files) >= EVERY_ITEM, sorted(EVERY_ITEM - set(files))

    # no secret, in any file, in any encoding a leak would take
    secrets = {
        "the planted token": planted["alice_token"],
        "its signature": planted["alice_token"].split(".")[2],
        "the operator token": ops,
        "the narrow operator token": planted["narrow"],
        "the signing key": SIGNING_SECRET,
        "the blob payload (base64)": b64(BLOB),
        "the blob payload (hex)": BLOB.hex(),
        "the blob payload (bytes)": "planted-blob-payload-bytes",
        "the room value": "planted-room-value-nobody-may-see",
        "the room value (base64)": b64(PLANTED_VALUE)[:24],
    }
    for name, text in files.items():
        for what, secret in secrets.items():
            assert secret not in text, f"{what} leaked into {name}"
        assert PEM not in text
    assert scan({k: v.encode() for k, v in files.items()}) == []

    # versions, health, config (redacted)
    versions = json.loads(files["versions.json"])
    assert versions["server"]["roomsync"] == roomsync.__version__
    assert versions["server"]["openapi"] == roomsync.__version__
    assert versions["collector"]["python"].count(".") == 2
    assert json.loads(files["health.json"])["readyz"]["ok"] is True
    assert "keys" in files["config.toml"] and "***" in files["config.toml"]
    assert json.loads(files["policy/global.json"])["scope"] == "global"

    # logs: the ring's window and the log file, both redacted
    events = [json.loads(line) for line in files["logs/events.jsonl"].splitlines()]
    names = {e["event"] for e in events}
    assert {"session.welcome", "session.close", "control.request"} <= names
    assert any("invalid room id" in str(e["fields"].get("message")) for e in events)
    log_lines = [json.loads(line) for line in files["logs/server.log"].splitlines()]
    assert any(e["event"] == "session.close" for e in log_lines)

    # metrics: two snapshots, and the spike between them
    delta = json.loads(files["metrics/delta.json"])
    assert 0.5 <= delta["seconds"] < 5
    moved = {d["series"]: d["delta"] for d in delta["moved"]}
    assert moved['roomsync_errors_total{code="malformed-pack"}'] >= 5
    assert files["metrics/before.prom"].startswith("# HELP")

    # closes and reconnects, failing control requests and their scopes
    closes = json.loads(files["closes.json"])
    # 1002: carol's second hello and the token pasted as a room id; 4003: mallory
    assert closes["closes"]["1002"] == 2 and closes["closes"]["4003"] == 1
    assert closes["closes"]["1000"] == 3
    (bob,) = [r for r in closes["reconnects"] if r["actor"] == "bob"]
    assert bob["reconnects"] == 2
    failures = json.loads(files["control-failures.json"])["control_failures"]
    by_outcome = {f["outcome"]: f for f in failures}
    assert by_outcome["forbidden"] == {
        **by_outcome["forbidden"], "operator": "ops-narrow", "caps": ["room:get"],
        "required": "room:lock", "command": "lock",
    }  # fmt: skip
    assert by_outcome["unauthenticated"]["operator"] is None
    assert by_outcome["precondition-failed"]["required"] == "archive:restore"
    assert by_outcome["precondition-failed"]["code"] == "archive-ref-unknown"

    # the room: its head and root, the redacted capture, archive verify, the replay
    room = json.loads(files["rooms/incident/room.json"])
    assert room["head"] == before["result"]["head"] == 1
    capture = json.loads(files["rooms/incident/capture.json"])["envelopes"]
    assert {"hello", "welcome", "pack", "ack", "blob-upload", "error", "close"} <= {
        e["type"] for e in capture
    }
    archives = json.loads(files["rooms/incident/archives.json"])
    assert archives["verify"]["ok"] is True and archives["verify"]["root"] == room["root"]
    replay = json.loads(files["rooms/incident/replay.json"])
    assert replay["match"] is True and replay["live_root"] == room["root"]

    # the summary says what stands out
    summary = files["SUMMARY.md"]
    assert 'roomsync_errors_total{code="malformed-pack"}' in summary
    assert "closed with **1002**" in summary and "closed with **4003**" in summary
    assert "`room lock` refused **forbidden**" in summary and "needs `room:lock`" in summary
    assert "`room:get`" in summary
    assert "refused control requests by class:" in summary and "forbidden: 1" in summary
    assert "1002" in stderr and "malformed-pack" in stderr  # what stands out, on stderr
    manifest = json.loads(files["manifest.json"])
    assert all(s["ok"] for s in manifest["steps"]), manifest["steps"]
    assert sorted(manifest["files"]) == sorted(files)

    # collecting changed nothing
    _, after = await control(http, srv, planted["admin"], "room get", room="incident")
    _, archives_after = await control(http, srv, planted["admin"], "archive list", room="incident")
    assert after["result"]["head"] == before["result"]["head"]
    assert after["result"]["root"] == before["result"]["root"]
    assert archives_after == archives_before
    await alice.close()


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (f"tls: loaded {PEM} from /etc/roomsync/key.pem", "signing-key"),
        (f"debug: signing with {SIGNING_SECRET}", "signing-key"),
        (f"proxy: request body {b64(BLOB)}", "blob-payload"),
    ],
    ids=["pem", "key-secret", "blob"],
)
async def test_the_self_check_refuses_a_bundle_with_a_secret(
    tmp_path: Path, srv: ServerHandle, line: str, kind: str
) -> None:
    """A log from elsewhere (a proxy, a debug build) that carries a secret the masking
    does not know the shape of: the bundle is refused, naming the file and the kind."""
    log_file = tmp_path / "proxy.log"
    log_file.write_text(f'{{"ts": "2999-01-01T00:00:00Z", "event": "fine"}}\n{line}\n')
    out = tmp_path / "out" / "bundle.tar.gz"
    code, stdout, stderr = await asyncio.to_thread(
        run_cli, "evidence", srv.url, "--operator-token", srv.mint("*", EVIDENCE_CAPS),
        "--out", str(out), "--metrics-gap", "0", "--log-file", str(log_file),
        "--config", str(config_file(tmp_path, srv)),
    )  # fmt: skip
    assert code == 3, stderr
    assert f"{kind} in logs/server.log line 2" in stderr and "nothing written" in stderr
    assert stdout == ""
    assert not out.parent.exists()  # not even its directory


async def test_a_narrow_token_gives_a_partial_bundle_that_says_what_is_missing(
    tmp_path: Path, srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ws, _ = await hello(http, srv.ws_url("quiet"), actor="alice")
    out = tmp_path / "partial.tar.gz"
    token = srv.mint("*", ("topology:get", "room:get"), actor="ops")
    code, _, stderr = await asyncio.to_thread(
        run_cli, "evidence", srv.url, "--operator-token", token, "--out", str(out),
        "--metrics-gap", "0",
    )  # fmt: skip
    assert code == 0, stderr
    files = members(out)
    assert "rooms/quiet/room.json" in files  # the busiest room, found with topology get
    assert "logs/events.jsonl" not in files and "rooms/quiet/capture.json" not in files
    summary = files["SUMMARY.md"]
    assert "## Not collected" in summary
    assert "topology events: forbidden capability-missing, needs `topology:events`" in summary
    assert "needs `room:capture`" in summary
    await ws.close()
    await wait_until(lambda: not srv.server.connections)


async def test_an_unreachable_node_and_bad_usage(tmp_path: Path) -> None:
    from roomsync.testing.server import free_port

    out = tmp_path / "b.tar.gz"
    url = f"http://127.0.0.1:{free_port()}"
    code, _, stderr = await asyncio.to_thread(
        run_cli, "evidence", url, "--operator-token", "t", "--out", str(out)
    )
    assert code == 1 and "no answer" in stderr and not out.exists()
    code, _, stderr = await asyncio.to_thread(
        run_cli, "evidence", url, "--since", "soon", "--out", str(out)
    )
    assert code == 2 and "--since" in stderr


# -- the pure parts -----------------------------------------------------------------------


def test_parse_duration() -> None:
    assert parse_duration("15m") == 900_000
    assert parse_duration("90s") == parse_duration("90") == 90_000
    assert parse_duration("2h") == 7_200_000 and parse_duration("1d") == 86_400_000
    assert parse_duration("500ms") == 500
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("a while")


def test_scan_finds_each_kind_and_spares_hashes_and_ids() -> None:
    jwt_spaced = ".".join(
        base64.urlsafe_b64encode(part).decode().rstrip("=")
        for part in (b'{ "alg": "HS256" }', b'{"sub": "x"}', b"signature-bytes!")
    )  # a JWT whose header is not the usual eyJ: masking misses it, the scan does not
    long_room = "Tenant-42_project-Alpha_document-2024-Q3-roadmap-v2_with-notes-" * 2
    assert len(long_room) <= 128
    files = {
        "ok.json": json.dumps(
            {"root": "ab" * 32, "ref": "sha256:" + "cd" * 32, "room": long_room,
             "path": f"rooms/{long_room}/capture.json", "note": "A" * 200}
        ).encode(),
        "a.log": f"one\nheader {jwt_spaced} here\n".encode(),
        "b.log": f"key {PEM}\n".encode(),
        "c.log": f"data {b64(BLOB)}\n".encode(),
        "d.log": b"the operator token is op-token-123456\n",
    }  # fmt: skip
    leaks = scan(files, [("token", "op-token-123456")], safe=[long_room])
    assert [(x.file, x.kind, x.line) for x in leaks] == [
        ("a.log", "token", 2),
        ("b.log", "signing-key", 1),
        ("c.log", "blob-payload", 1),
        ("d.log", "token", 1),
    ]
    assert str(leaks[0]).startswith("a.log:2: token (") and jwt_spaced not in str(leaks[0])
    # without the safe list, a long room id that decodes like base64 is flagged
    assert [x.kind for x in scan({"ok.json": files["ok.json"]})] == ["blob-payload"] * 2


def test_write_bundle_refuses_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    leaks = write_bundle({"x.txt": f"{PEM}\n".encode()}, out)
    assert leaks == [Leak("x.txt", "signing-key", 1, "-----BEGIN")]
    assert str(leaks[0]) == "x.txt:1: signing-key (-----BEGIN...)"
    assert list(tmp_path.iterdir()) == []
    assert write_bundle({"SUMMARY.md": b"# ok\n"}, out) == []
    assert members(out) == {"SUMMARY.md": "# ok\n"}


def test_metrics_delta_lists_the_counters_that_moved() -> None:
    before = '# TYPE roomsync_errors_total counter\nroomsync_errors_total{code="auth"} 1.0\n'
    after = (
        '# TYPE roomsync_errors_total counter\nroomsync_errors_total{code="auth"} 5.0\n'
        'roomsync_errors_total{code="overload"} 2.0\n'
        "# TYPE roomsync_connections gauge\nroomsync_connections 9.0\n"
    )
    assert metrics_delta(before, after, 2.0) == [
        {"series": 'roomsync_errors_total{code="auth"}', "before": 1.0, "after": 5.0,
         "delta": 4.0, "per_s": 2.0},
        {"series": 'roomsync_errors_total{code="overload"}', "before": 0.0, "after": 2.0,
         "delta": 2.0, "per_s": 1.0},
    ]  # fmt: skip


def test_options_defaults() -> None:
    options = EvidenceOptions(url="http://x", operator_token="t")
    assert options.window_ms == 900_000 and options.metrics_gap_s == 5.0
