"""Signed event webhooks against a real receiver on a free port (``docs/hooks.md``):
every event type, signatures, retries while the receiver is down, the outbox across a
``kill -9``, room endpoints, masking and ``room get``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.hooks.webhooks import (
    EVENT_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    WEBHOOK_EVENTS,
    sign,
    verify,
)
from roomsync.testing.control import ok
from roomsync.testing.server import free_port, running_server, server_process, wait_until
from roomsync.testing.wsclient import hello, recv_type

SECRET = "whsec-test-0123456789abcdef"
FAST = {"webhooks__debounce_ms": 100, "webhooks__max_backoff_ms": 1000}


@dataclass
class Receiver:
    """A webhook receiver that verifies every signature, as the docs tell one to."""

    port: int
    status: int = 200
    seen: list[dict[str, Any]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    hits: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        body = await request.read()
        if not verify(SECRET, request.headers.get(SIGNATURE_HEADER, ""), body):
            self.bad.append(body.decode())
            return web.Response(status=401)
        if self.status != 200:
            return web.Response(status=self.status)
        event = json.loads(body)
        assert request.headers[EVENT_ID_HEADER] == event["id"]
        assert request.headers[EVENT_HEADER] == event["type"]
        self.seen.append(event)
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e["type"] == type_]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(free_port())
    await r.start()
    yield r
    await r.stop()


def endpoint(r: Receiver, **extra: Any) -> dict[str, Any]:
    return {"url": r.url, "secret": SECRET, **extra}


def ch(path: str, ts: int, value: bytes | None = b"v") -> Change:
    return Change(path, ts, 0, "a", value)


async def write(ws: aiohttp.ClientWebSocketResponse, changes: list[Change]) -> dict[str, Any]:
    await ws.send_json({"type": "pack", "data": pack_data(changes)})
    return await recv_type(ws, "ack")


def test_signatures_verify_and_refuse_tampering() -> None:
    body = b'{"id":"evt_1"}'
    header = sign(SECRET, body, timestamp=1_700_000_000)
    assert verify(SECRET, header, body, now_s=1_700_000_100)
    assert not verify(SECRET, header, body + b" ", now_s=1_700_000_100)  # body changed
    assert not verify("another-secret-123456", header, body, now_s=1_700_000_100)
    assert not verify(SECRET, header, body, now_s=1_700_000_000 + 301)  # a replay, later
    assert not verify(SECRET, "v1=abc", body) and not verify(SECRET, "", body)
    # The documented scheme, computed by hand: HMAC-SHA256(secret, "<t>." + body).
    import hmac

    mac = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"


async def test_every_event_type_arrives_signed(
    tmp_path: Path, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with running_server(tmp_path, policy__webhooks=[endpoint(receiver)], **FAST) as srv:
        ws, _ = await hello(http, srv.ws_url("parent"), caps=["read", "write", "blob"])
        assert (await write(ws, [ch("/a", 1), ch("/b", 2)]))["seqs"] == [1, 2]
        data = b"a blob"
        await ws.send_json(
            {"type": "blob-upload", "hash": "sha256:" + hashlib.sha256(data).hexdigest(),
             "size": len(data), "data": base64.b64encode(data).decode()}
        )  # fmt: skip
        await recv_type(ws, "blob-uploaded")
        checkpoint = await ok(http, srv, "archive create", {"room": "parent"})
        fork = {"source": "parent", "checkpoint": checkpoint["ref"], "room": "child"}
        await ok(http, srv, "room fork", fork)
        child, _ = await hello(http, srv.ws_url("child"))
        await write(child, [ch("/k", 5)])
        await child.close()
        pid = (await ok(http, srv, "room propose", {"room": "child"}))["proposal"]
        await ok(http, srv, "room validate", {"proposal": pid})
        await ok(http, srv, "room promote", {"proposal": pid})
        await ws.close()
        await wait_until(lambda: len(receiver.of("peer.left")) == 2, timeout=10)
        await ok(http, srv, "room delete", {"room": "child", "hard": True})
        await wait_until(
            lambda: {e["type"] for e in receiver.seen} == set(WEBHOOK_EVENTS), timeout=15
        )
        assert not receiver.bad
        ids = [e["id"] for e in receiver.seen]
        assert len(ids) == len(set(ids))  # each event once
        parent = [e for e in receiver.seen if e["room"] == "parent"]
        committed = [e["data"] for e in parent if e["type"] == "changes.committed"]
        assert committed[0]["first_seq"] == 1 and committed[0]["paths"][:2] == ["/a", "/b"]
        assert receiver.of("room.created")[0]["room"] == "parent"
        assert receiver.of("blob.stored")[0]["data"]["size"] == len(data)
        assert receiver.of("archive.created")[0]["data"]["ref"] == checkpoint["ref"]
        assert receiver.of("proposal.promoted")[0]["data"]["proposal"] == pid
        assert receiver.of("room.deleted")[0]["room"] == "child"
        joined = receiver.of("peer.joined")
        assert {e["room"] for e in joined} == {"parent", "child"}
        assert all(e["node"] == srv.server.node_name for e in receiver.seen)
        # room get shows the last outcomes; policy get never shows the secret.
        view = await ok(http, srv, "room get", {"room": "parent"})
        assert view["webhooks"] and {w["outcome"] for w in view["webhooks"]} == {"delivered"}
        shown = await ok(http, srv, "policy get", {})
        assert shown["policy"]["webhooks"][0]["secret"] == "***"
        assert SECRET not in json.dumps(shown) and SECRET not in json.dumps(view)
        sample = srv.server.metrics.registry.get_sample_value
        assert sample("roomsync_webhook_deliveries_total", {"outcome": "delivered"}) == len(ids)


async def test_a_receiver_down_for_30_s_gets_every_event_once(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    receiver = Receiver(free_port())  # not listening yet: connection refused
    async with running_server(
        tmp_path, policy__webhooks=[endpoint(receiver, events=["peer.joined", "peer.left"])],
        **FAST,
    ) as srv:  # fmt: skip
        peers = [(await hello(http, srv.ws_url(f"r{i}")))[0] for i in range(5)]
        for ws in peers:
            await ws.close()
        await asyncio.sleep(30)
        sample = srv.server.metrics.registry.get_sample_value
        assert (sample("roomsync_webhook_deliveries_total", {"outcome": "retry"}) or 0) >= 10
        await receiver.start()
        try:
            await wait_until(lambda: len(receiver.seen) == 10, timeout=15)
            await asyncio.sleep(1.5)  # nothing more comes: every event once
            assert len(receiver.seen) == 10 and not receiver.bad
            assert len({e["id"] for e in receiver.seen}) == 10
            assert sorted(e["room"] for e in receiver.of("peer.left")) == [
                f"r{i}" for i in range(5)
            ]
            outbox: Any = srv.server.store  # r0 was never written: no room get, but a log
            outcomes = await outbox.webhook_log("r0")
            assert len(outcomes) == 2
            assert all(o.outcome == "delivered" and o.attempts > 1 for o in outcomes)
        finally:
            await receiver.stop()


async def test_room_endpoints_add_to_the_global_ones_and_removal_cancels(
    tmp_path: Path, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    other = Receiver(free_port(), status=503)  # refuses for now: deliveries wait
    await other.start()
    try:
        async with running_server(tmp_path, **FAST) as srv:
            await ok(http, srv, "room create", {"room": "mine"})
            both = {"webhooks": [endpoint(receiver), endpoint(other)]}
            await ok(http, srv, "policy set", {"room": "mine", "patch": both})
            shown = await ok(http, srv, "policy get", {"room": "mine"})
            assert [w["secret"] for w in shown["patch"]["webhooks"]] == ["***", "***"]
            for room in ("mine", "elsewhere"):
                ws, _ = await hello(http, srv.ws_url(room))
                await ws.close()
            await wait_until(lambda: len(receiver.seen) == 2, timeout=10)
            assert {e["room"] for e in receiver.seen} == {"mine"}  # only the room's own
            await wait_until(lambda: other.hits >= 2, timeout=10)
            # Drop the refusing endpoint: its pending deliveries are cancelled, not retried.
            one = {"webhooks": [endpoint(receiver)]}
            await ok(http, srv, "policy set", {"room": "mine", "patch": one})
            sample = srv.server.metrics.registry.get_sample_value
            await wait_until(
                lambda: sample("roomsync_webhook_deliveries_total", {"outcome": "cancelled"}) == 2,
                timeout=10,
            )
            view = await ok(http, srv, "room get", {"room": "mine"})
            assert {w["outcome"] for w in view["webhooks"]} == {"delivered", "cancelled"}
            # The room's own endpoint hears of its deletion, after its policy is gone.
            await ok(http, srv, "room delete", {"room": "mine", "hard": True})
            await wait_until(lambda: len(receiver.of("room.deleted")) == 1, timeout=10)
    finally:
        await other.stop()


async def test_undelivered_events_survive_kill_9(tmp_path: Path) -> None:
    receiver = Receiver(free_port(), status=503)
    await receiver.start()
    config = tmp_path / "roomsync.toml"
    config.write_text(
        "[webhooks]\ndebounce_ms = 100\nmax_backoff_ms = 500\nlease_ms = 1000\n\n[policy]\n"
        f'webhooks = [{{ url = "{receiver.url}", secret = "{SECRET}" }}]\n',
        encoding="utf-8",
    )
    data = tmp_path / "data"
    try:
        with server_process(data, args=["--config", str(config)]) as proc:
            async with aiohttp.ClientSession() as http:
                ws, _ = await hello(http, proc.ws_url("k"))
                await write(ws, [ch("/x", 1)])
                await ws.close()
            await wait_until(lambda: receiver.hits >= 4, timeout=15)  # all refused so far
            proc.proc.send_signal(signal.SIGKILL)
            proc.proc.wait(10)
        assert not receiver.seen
        receiver.status = 200
        port = free_port()
        with server_process(data, port=port, args=["--config", str(config)]):
            # room.created, peer.joined, changes.committed, peer.left, from the outbox.
            await wait_until(
                lambda: (
                    {e["type"] for e in receiver.seen}
                    == {"room.created", "peer.joined", "changes.committed", "peer.left"}
                ),
                timeout=20,
            )
            await asyncio.sleep(1.0)
            assert len(receiver.seen) == 4 and not receiver.bad
    finally:
        await receiver.stop()


def test_an_invalid_endpoint_is_refused_by_policy_set_rules() -> None:
    from roomsync.config import ConfigError, Policy

    with pytest.raises(ConfigError, match=r"policy.webhooks\[0\].secret"):
        Policy().patched({"webhooks": [{"url": "http://x.example/h", "secret": "short"}]})
    with pytest.raises(ConfigError, match=r"policy.webhooks\[0\].events"):
        Policy().patched(
            {"webhooks": [{"url": "http://x.example/h", "secret": SECRET, "events": ["nope"]}]}
        )
    with pytest.raises(ConfigError, match=r"policy.webhooks\[0\].url"):
        Policy().patched({"webhooks": [{"url": "file:///etc/passwd", "secret": SECRET}]})


def test_webhook_event_names_agree() -> None:
    from roomsync.config.policy import WebhookEvent

    assert tuple(WebhookEvent.__args__) == WEBHOOK_EVENTS  # type: ignore[attr-defined]
