"""``roomsync doctor`` against live servers, each broken the way the runbook names
(issue 12 acceptance): the doctor must fail the right step, with the right cause, next
action and runbook line; on a healthy server (TLS and operator token too) every step
passes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from roomsync.cli.doctor_cmd import render
from roomsync.cli.main import main
from roomsync.ops.checks import RUNBOOK, Report, Status, StepResult
from roomsync.ops.probe import DEFAULT_ROOM, PROBE_PREFIX, ProbeOptions, run_probe
from roomsync.testing.faults import read_only
from roomsync.testing.server import ServerHandle, free_port, running_server

from .conftest import PrivateCa, Proxy, control, operator

ROOM = DEFAULT_ROOM
NO_BLOB_DIRECT = ("read", "write", "presence", "blob", "reconcile")


async def doctor(url: str, **kw: Any) -> Report:
    kw.setdefault("timeout_s", 3.0)
    kw.setdefault("settle_s", 0.3)
    return await run_probe(ProbeOptions(url, **kw))


def failed(report: Report, step_id: str) -> StepResult:
    """The result of ``step_id``, which must have failed."""
    r = report.result(step_id)
    assert r.status is Status.FAIL, render(report)
    assert not report.ok
    return r


def statuses(report: Report) -> dict[str, str]:
    return {r.step.id: str(r.status) for r in report.results}


# -- healthy ----------------------------------------------------------------------------------


async def test_healthy_server_passes_every_step_and_cleans_up(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv:
        await control(
            srv, "query", "define", name="probes", spec={"prefix": PROBE_PREFIX, "limit": 10}
        )
        report = await doctor(
            srv.url,
            operator_token=operator(srv),
            subscribe=(PROBE_PREFIX + "/",),
            query="probes",
        )
        skipped = [r.step.id for r in report.results if r.status is not Status.PASS]
        assert skipped == ["connect.tls"], render(report)  # plain http: no TLS
        assert report.ok
        info = await control(srv, "room", "get", room=ROOM)
        assert isinstance(info, dict) and info["count"] == 0  # the probe path was deleted
    observed = report.result("sync.roots").observed["roots"]
    assert len(observed) == 3 and len(set(observed.values())) == 1
    assert report.result("blobs.direct").observed["put_status"] == 201
    assert any("cannot delete a blob" in note for note in report.notes)
    assert report.to_json()["ok"] is True


async def test_healthy_tls_server_with_its_ca_passes_every_step(
    tmp_path: Path, private_ca: PrivateCa
) -> None:
    async with running_server(
        tmp_path, server__tls_cert=str(private_ca.cert), server__tls_key=str(private_ca.key)
    ) as srv:
        await control_tls(srv, private_ca)
        report = await doctor(
            srv.url.replace("https", "wss"),
            operator_token=operator(srv),
            subscribe=(PROBE_PREFIX,),
            query="probes",
            cafile=str(private_ca.ca),
        )
    assert all(r.status is Status.PASS for r in report.results), render(report)
    tls = report.result("connect.tls").observed
    assert tls["version"].startswith("TLS") and tls["issuer"]


async def control_tls(srv: ServerHandle, ca: PrivateCa) -> None:
    import ssl

    import aiohttp

    ctx = ssl.create_default_context(cafile=str(ca.ca))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
        async with http.post(
            f"{srv.url}/v1/control/query/define",
            json={"name": "probes", "spec": {"prefix": PROBE_PREFIX}},
            headers={"Authorization": f"Bearer {operator(srv)}"},
        ) as resp:
            assert (await resp.json())["ok"]


# -- 1./2. route, proxy, TLS ------------------------------------------------------------------


async def test_wrong_route(srv: ServerHandle) -> None:
    report = await doctor(srv.url + "/not-roomsync")
    r = failed(report, "connect.route")
    assert r.observed["status"] == 404
    assert "no `/ws/{room}` route at this URL" in (r.verdict.cause or "")
    assert "use the node's base URL" in (r.verdict.next_action or "")
    assert RUNBOOK.ROUTE in r.verdict.runbook
    assert failed(report, "connect.upgrade").observed["status"] == 404
    assert failed(report, "health.healthz").observed["status"] == 404


async def test_nothing_listening() -> None:
    report = await doctor(f"http://127.0.0.1:{free_port()}", timeout_s=1.0)
    r = failed(report, "health.healthz")
    assert "not reachable" in (r.verdict.cause or "") and RUNBOOK.LISTENER in r.verdict.runbook
    assert report.failures == (r,)  # the rest says "unreachable" instead of failing again


async def test_proxy_that_strips_upgrade(srv: ServerHandle) -> None:
    async with Proxy(srv.url) as proxy:
        report = await doctor(proxy.url)
    assert report.result("health.healthz").status is Status.PASS  # HTTP goes through
    assert report.result("connect.route").status is Status.PASS
    r = failed(report, "connect.upgrade")
    assert r.observed["status"] == 426
    assert "a proxy in front strips `Upgrade`/`Connection`" in (r.verdict.cause or "")
    assert "`Upgrade`" in (r.verdict.next_action or "")
    assert r.verdict.runbook == (RUNBOOK.ROUTE,)
    assert report.result("connect.hello").status is Status.SKIP


async def test_untrusted_certificate(tmp_path: Path, private_ca: PrivateCa) -> None:
    async with running_server(
        tmp_path, server__tls_cert=str(private_ca.cert), server__tls_key=str(private_ca.key)
    ) as srv:
        report = await doctor(srv.url)  # no --cafile: the system trust does not know the CA
    r = failed(report, "connect.tls")
    assert "certificate" in r.observed["verify_message"] or "issuer" in r.observed["verify_message"]
    assert (r.verdict.cause or "").startswith("the certificate is not trusted")
    assert "--cafile" in (r.verdict.next_action or "")
    assert RUNBOOK.TLS in r.verdict.runbook and "1015" in r.verdict.codes
    assert report.failures == (r,)  # everything else is skipped behind it
    assert report.result("health.healthz").status is Status.SKIP


# -- 2. tokens --------------------------------------------------------------------------------


async def test_expired_token(srv: ServerHandle) -> None:
    token = srv.mint(ROOM, ttl_s=60, now_s=int(time.time()) - 3600)
    report = await doctor(srv.url, token=token)
    assert report.result("connect.hello").status is Status.PASS  # the server answered it
    assert report.result("connect.welcome").status is Status.SKIP
    r = failed(report, "connect.token")
    assert r.observed["close"] == 4002 and r.observed["error_code"] == "auth"
    assert (r.verdict.cause or "").startswith("the token's `exp` has passed")
    assert "its `exp` passed 35" in (r.verdict.cause or "")  # 3540 s (and a few) ago
    assert r.verdict.next_action == "refresh the token and reconnect"
    assert RUNBOOK.TOKEN in r.verdict.runbook and RUNBOOK.CLOSES[4002] in r.verdict.runbook
    assert r.verdict.codes[:2] == ("token-expired", "auth")
    assert [f.step.id for f in report.failures] == ["connect.token"]


async def test_token_for_another_room(srv: ServerHandle) -> None:
    report = await doctor(srv.url, token=srv.mint("another-room"))
    r = failed(report, "connect.token")
    assert r.observed["close"] == 4003
    assert "token not valid for room" in (r.verdict.cause or "")
    assert "claim `room` is 'another-room'" in (r.verdict.cause or "")
    assert (r.verdict.next_action or "").startswith("mint a token whose `room` is this room")
    assert RUNBOOK.TOKEN in r.verdict.runbook


async def test_locked_room_without_token(srv: ServerHandle) -> None:
    await control(srv, "room", "create", room=ROOM, locked=True)
    report = await doctor(srv.url)
    r = failed(report, "connect.token")
    assert r.observed["close"] == 4003 and r.verdict.codes[0] == "locked"
    assert (r.verdict.cause or "").startswith("the room is locked")
    assert (
        r.verdict.next_action == "send a token for the room in `hello.token`, or `room unlock` it"
    )
    assert r.verdict.runbook[0] == RUNBOOK.LOCKED


async def test_revoked_token(srv: ServerHandle) -> None:
    token = srv.mint(ROOM, actor="mallory")
    await control(srv, "room", "revoke", sub="mallory")
    report = await doctor(srv.url, token=token)
    r = failed(report, "connect.token")
    assert r.verdict.codes[0] == "revoked"
    assert (r.verdict.cause or "").startswith("the token was revoked")
    assert "sub 'mallory'" in (r.verdict.cause or "")
    assert "get a new token" in (r.verdict.next_action or "")


# -- 3. sync ----------------------------------------------------------------------------------


async def test_rate_limit_4008(tmp_path: Path) -> None:
    async with running_server(
        tmp_path,
        policy__rate_messages_per_s=0.001,
        policy__rate_burst_messages=1,  # the hello takes it; the probe's pack is over
        policy__rate_grace_ms=0,
    ) as srv:
        report = await doctor(srv.url)
    r = failed(report, "sync.write")
    assert r.observed["close"] == 4008 and r.observed["error_code"] == "rate-limited"
    assert "rate limit exceeded: tune client send behavior and/or ingress limits" in (
        r.verdict.cause or ""
    )
    assert RUNBOOK.CLOSES[4008] in r.verdict.runbook
    assert "slow down" in (r.verdict.next_action or "")
    assert report.result("blobs.inline").status is Status.SKIP  # that connection is gone


async def test_malformed_pack_rewritten_on_the_way(srv: ServerHandle) -> None:
    """The doctor's packs are well formed (the core codec); a proxy that rewrites frames
    makes the server refuse them as ``malformed-pack``: the doctor says so."""
    async with Proxy(srv.url, mangle_packs=True) as proxy:
        report = await doctor(proxy.url)
    assert report.result("connect.welcome").status is Status.PASS
    r = failed(report, "sync.write")
    assert r.observed["refused"][0]["code"] == "malformed-pack"
    assert "bad base64" in r.verdict.summary
    assert "the bytes changed between the doctor and the server's decoder" in (
        r.verdict.cause or ""
    )
    assert "room capture" in (r.verdict.next_action or "")
    assert r.verdict.runbook[0] == RUNBOOK.MALFORMED


async def test_pack_refused_by_policy(tmp_path: Path) -> None:
    async with running_server(tmp_path, policy__max_value_bytes=8) as srv:
        report = await doctor(srv.url)
    r = failed(report, "sync.write")
    assert r.observed["refused"][0]["code"] == "too-large"
    assert "`policy.max_value_bytes`" in (r.verdict.cause or "")
    assert "store large values as blobs" in (r.verdict.next_action or "")


async def test_subscription_that_filters_the_probe_path(srv: ServerHandle) -> None:
    report = await doctor(srv.url, subscribe=("/other/",))
    r = failed(report, "sync.subscribe")
    assert r.observed["expected"] is False and r.observed["delivered"] is False
    assert r.observed["request_found"] is True
    assert "filters the probe path" in (r.verdict.cause or "")
    assert r.verdict.runbook == (RUNBOOK.SUBSCRIPTION, RUNBOOK.MINIMAL_SCOPE)
    assert [f.step.id for f in report.failures] == ["sync.subscribe"]


# -- 4. blobs ---------------------------------------------------------------------------------


async def test_blob_directory_read_only(tmp_path: Path, blob_mount: Path) -> None:
    async with running_server(tmp_path / "data", blobs__dir=str(blob_mount)) as srv:
        read_only(blob_mount)
        report = await doctor(srv.url)
    ready = failed(report, "health.readyz")
    assert "blobs (filesystem): permission-denied" in (ready.verdict.cause or "")
    r = failed(report, "blobs.inline")
    assert r.observed["reason"] == "permission-denied"
    assert (r.verdict.cause or "").startswith("the blob backend failed (permission-denied)")
    assert "`checks.blobs.reason`" in (r.verdict.next_action or "")
    assert r.verdict.runbook == (RUNBOOK.BACKEND, RUNBOOK.PERMISSIONS)
    direct = failed(report, "blobs.direct")
    assert "the PUT failed" in direct.verdict.summary
    assert "the inline fallback failed too (permission-denied)" in direct.verdict.summary
    assert report.result("blobs.fetch").status is Status.SKIP  # nothing was stored


async def test_direct_upload_denied(srv: ServerHandle) -> None:
    report = await doctor(srv.url, token=srv.mint(ROOM, NO_BLOB_DIRECT))
    r = failed(report, "blobs.direct")
    assert r.observed["grant"] == "upload-denied" and r.observed["negotiated"] is False
    assert r.observed["denied_reason"].startswith("capability-missing")
    assert "the inline fallback worked" in r.verdict.summary
    assert "no `blob-direct` cap" in (r.verdict.cause or "")
    assert r.verdict.runbook[:2] == (RUNBOOK.DIRECT, RUNBOOK.DENIED)
    for step in ("blobs.inline", "blobs.available", "blobs.fetch"):
        assert report.result(step).status is Status.PASS
    assert [f.step.id for f in report.failures] == ["blobs.direct"]


# -- 5. control -------------------------------------------------------------------------------


async def test_missing_query_spec(srv: ServerHandle) -> None:
    report = await doctor(srv.url, operator_token=operator(srv), query="no-such-spec")
    r = failed(report, "control.query_run")
    assert r.observed["reject"]["class"] == "precondition-failed"
    assert r.observed["reject"]["code"] == "query-spec-missing"
    assert r.verdict.cause == "`query run` of a spec name that is not defined"
    assert r.verdict.next_action == "`roomsync control query list`, then `query define`"
    assert r.verdict.runbook[0] == RUNBOOK.PRECONDITIONS
    assert report.result("control.query").status is Status.PASS


async def test_operator_token_without_the_cap(srv: ServerHandle) -> None:
    report = await doctor(srv.url, operator_token=operator(srv, ("room:get",)))
    assert report.result("control.room").status is Status.PASS
    r = failed(report, "control.archive")
    assert r.observed["reject"]["required"] == "archive:list"
    assert "it needs `archive:list`" in (r.verdict.cause or "")
    assert "roomsync token mint --room '*' --caps archive:list" in (r.verdict.next_action or "")
    assert RUNBOOK.RETRY_SCOPED in r.verdict.runbook
    needed = {f.observed["reject"]["required"] for f in report.failures}
    assert needed == {"archive:list", "query:list", "topology:get", "tick:get", "policy:get"}


async def test_no_operator_token_skips_the_control_plane(srv: ServerHandle) -> None:
    report = await doctor(srv.url)
    assert report.ok
    assert {statuses(report)[f"control.{f}"] for f in ("room", "tick", "policy")} == {"skipped"}
    assert "no --operator-token" in report.result("sync.roots").observed["why"]


# -- the command ------------------------------------------------------------------------------


async def test_cli_json_and_text(srv: ServerHandle, capsys: pytest.CaptureFixture[str]) -> None:
    code = await asyncio.to_thread(main, ["doctor", srv.url, "--json", "--timeout", "3"])
    out = capsys.readouterr().out
    body = json.loads(out)
    assert code == 0 and body["ok"] is True and body["room"] == ROOM
    assert [s["id"] for s in body["steps"]][:3] == [
        "health.healthz",
        "health.readyz",
        "health.metrics",
    ]
    expired = srv.mint(ROOM, ttl_s=60, now_s=int(time.time()) - 600)
    code = await asyncio.to_thread(main, ["doctor", srv.url, "--token", expired])
    text = capsys.readouterr().out
    assert code == 1
    assert "FAIL  connect.token" in text and "cause:" in text and "next:" in text
    assert f'runbook: "{RUNBOOK.TOKEN}"' in text
    assert "2. Verify WebSocket connectivity and auth outcomes" in text
    assert "\033[" not in text  # not a terminal: no colour


async def test_cli_cafile_and_bad_url(
    tmp_path: Path, private_ca: PrivateCa, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_server(
        tmp_path, server__tls_cert=str(private_ca.cert), server__tls_key=str(private_ca.key)
    ) as srv:
        code = await asyncio.to_thread(
            main, ["doctor", srv.url, "--cafile", str(private_ca.ca), "--json"]
        )
    assert code == 0, capsys.readouterr().out
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["doctor", "ftp://example.invalid"]) == 2
    assert "URL scheme" in capsys.readouterr().err


def test_render_in_colour() -> None:
    from roomsync.ops.checks import STEPS, judge

    results = tuple(
        judge(s.id, {"error": "refused"}) if s.id == "health.healthz" else judge(s.id, {})
        for s in STEPS
        if s.id.startswith("health.")
    )
    text = render(Report("http://x", ROOM, results), color=True)
    assert "\033[31m" in text and "FAIL" in text
