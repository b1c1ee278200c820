"""The doctor's pure rules (``roomsync.ops.checks``): observation -> verdict, without a
server. The runbook lines they quote are the runbook's; the auth reasons they read from
error messages are the ones the server's own code writes; the meanings and next actions
of codes are the one table's (``roomsync.core.explain``)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from roomsync.auth.tokens import TokenService, check_room
from roomsync.core import handshake
from roomsync.core import messages as m
from roomsync.core.codes import CLOSE_ACTIONS, AuthReason, CloseCode
from roomsync.core.errors import AuthError
from roomsync.core.explain import Kind, explain
from roomsync.ops import checks
from roomsync.ops.checks import (
    CANARY_CHECKS,
    RUNBOOK,
    STEPS,
    Group,
    Report,
    Status,
    auth_reason,
    canary_checks,
    judge,
    skip,
)

_ROOT = Path(__file__).resolve().parents[2]
#: The runbook: a copy in the repository if there is one, else the seed beside it.
RUNBOOKS = (
    _ROOT / "docs" / "runbook.txt",
    _ROOT.parent / "shared" / "seed" / "troubleshooting-runbook.txt",
)


def verdict(step_id: str, **obs: Any) -> checks.Verdict:
    return judge(step_id, obs).verdict


# -- the catalogue ------------------------------------------------------------------------------


def test_every_quoted_runbook_line_is_in_the_runbook() -> None:
    found = [p for p in RUNBOOKS if p.exists()]
    if not found:
        pytest.skip(f"no runbook at {', '.join(map(str, RUNBOOKS))}")
    text = re.sub(r"\s+", " ", found[0].read_text(encoding="utf-8"))
    missing = [line for line in RUNBOOK.lines() if line not in text]
    assert not missing
    # the five triage lines are the groups' headings, in the runbook's order
    assert [g.heading for g in Group][:5] == [
        RUNBOOK.TRIAGE_HEALTH,
        RUNBOOK.TRIAGE_CONNECT,
        RUNBOOK.TRIAGE_SYNC,
        RUNBOOK.TRIAGE_BLOBS,
        RUNBOOK.TRIAGE_CONTROL,
    ]


def test_steps_are_unique_grouped_in_triage_order_and_counted_by_the_canary() -> None:
    ids = [s.id for s in STEPS]
    assert len(ids) == len(set(ids))
    order = list(Group)
    assert [order.index(s.group) for s in STEPS] == sorted(order.index(s.group) for s in STEPS)
    assert {s.canary for s in STEPS} == set(CANARY_CHECKS)
    families = [s.id.split(".")[1] for s in STEPS if s.group is Group.CONTROL]
    assert {"room", "archive", "query", "topology", "tick", "policy"} <= set(families)


def test_results_are_redacted() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    r = judge("connect.hello", {"error_code": "auth", "error_message": f"auth: bad {jwt}",
                                "close": 4003, "token": jwt})  # fmt: skip
    assert jwt not in json.dumps(r.to_json())
    r = judge("blobs.direct", {"grant": "upload-url", "put_error": "http://h/u?sig=abc123"})
    assert "abc123" not in json.dumps(r.to_json())


def test_report_json_and_ordering() -> None:
    results = checks.ordered({"sync.write": judge("sync.write", {"seq": 4, "path": "/p"})})
    report = Report("http://x", "r", results, ("a note",), 1.0, 2.0)
    assert [r.step.id for r in report.results] == [s.id for s in STEPS]
    assert report.result("health.healthz").verdict.summary == "not run"
    body = json.loads(json.dumps(report.to_json()))
    assert body["ok"] is True and body["counts"]["pass"] == 1 and body["notes"] == ["a note"]
    with pytest.raises(KeyError):
        report.result("nope")


# -- auth reasons, read from the server's own wording --------------------------------------------


def _auth_errors() -> list[AuthError]:
    svc = TokenService({"k1": "s" * 32})
    other = TokenService({"k1": "t" * 32})
    unknown = TokenService({"k9": "s" * 32})
    now = int(time.time())
    errors: list[AuthError] = []

    def catch(fn: Any) -> None:
        try:
            fn()
        except AuthError as exc:
            errors.append(exc)
        else:  # pragma: no cover - the call must raise
            raise AssertionError(fn)

    expired = svc.mint(room="r", caps=["read"], ttl_s=1, now_s=now - 100)
    catch(lambda: svc.verify(expired, now_s=now))
    claims = svc.verify(svc.mint(room="r", caps=["read"], ttl_s=60, now_s=now), now_s=now)
    catch(lambda: check_room(claims, "elsewhere"))
    catch(lambda: svc.verify(other.mint(room="r", caps=[], ttl_s=60, now_s=now), now_s=now))
    catch(lambda: svc.verify(unknown.mint(room="r", caps=[], ttl_s=60, now_s=now), now_s=now))
    catch(lambda: svc.verify("not-a-token", now_s=now))
    catch(lambda: svc.verify(svc.mint(room="r", caps=[], ttl_s=60, now_s=now + 3600), now_s=now))
    for locked, anonymous in ((True, ("read",)), (False, ())):
        view = handshake.RoomView("r", locked, False, False, 0, 10, 0, 0, anonymous)
        catch(
            lambda view=view: handshake.admit(
                m.Hello(v=1), view, None, fallback_actor="p", retry_after_ms=0
            )
        )
    # server/ws.py's wording for a revoked token
    errors.append(AuthError("token revoked", reason=AuthReason.REVOKED))
    return errors


def test_auth_reason_reads_every_server_message() -> None:
    errors = _auth_errors()
    reasons = {e.reason for e in errors}
    assert {
        AuthReason.EXPIRED,
        AuthReason.WRONG_ROOM,
        AuthReason.BAD_SIGNATURE,
        AuthReason.UNKNOWN_KID,
        AuthReason.MALFORMED,
        AuthReason.NOT_YET_VALID,
        AuthReason.LOCKED,
        AuthReason.ANONYMOUS_DISABLED,
        AuthReason.REVOKED,
    } <= reasons
    for exc in errors:
        close = int(exc.close) if exc.close is not None else None
        assert auth_reason(exc.message, close) is exc.reason, exc.message


def test_auth_reason_prefers_a_reason_field_and_4002() -> None:
    assert auth_reason("auth: whatever", None, "revoked") is AuthReason.REVOKED
    assert auth_reason("auth: whatever", 4002) is AuthReason.EXPIRED
    assert auth_reason("auth: something new", 4003, "no-such-reason") is AuthReason.OTHER
    assert auth_reason(None) is AuthReason.OTHER


# -- codes: from the one table -----------------------------------------------------------------


@pytest.mark.parametrize("close", [1002, 1011, 1012, 4001, 4004, 4008])
def test_close_codes_take_the_tables_meaning_and_action(close: int) -> None:
    v = verdict("sync.write", close=close)
    (e,) = explain(close, Kind.CLOSE)
    assert v.status is Status.FAIL
    assert v.cause is not None and v.cause.startswith(e.meaning)
    assert v.next_action == CLOSE_ACTIONS[CloseCode(close)]
    assert RUNBOOK.CLOSE_CODES in v.runbook
    if close in RUNBOOK.CLOSES:
        assert RUNBOOK.CLOSES[close] in v.runbook


def test_an_error_code_is_more_precise_than_its_close() -> None:
    v = verdict("sync.write", close=4001, error_code="resync-required", error_message="m")
    assert "peer fell behind or stream budget issue" in (v.cause or "")
    assert v.codes == ("resync-required", "4001")
    v = verdict("connect.hello", close=1011, error_code="overload", error_message="full")
    assert "server overload: investigate capacity/backpressure and retry policy" in (v.cause or "")
    assert "retry_after_ms" in (v.next_action or "")


def test_timeouts_and_transport_errors() -> None:
    v = verdict("connect.hello", timeout_s=2.0)
    assert v.status is Status.FAIL and "no answer within 2 s" in (v.cause or "")
    v = verdict("sync.write", error="connection reset")
    assert "connection reset" in (v.cause or "")
    v = verdict("health.healthz", error="Cannot connect to host")
    assert RUNBOOK.LISTENER in v.runbook and "`roomsync serve`" in (v.next_action or "")


# -- one rule at a time --------------------------------------------------------------------------


def test_health_rules() -> None:
    ok = {"status": 200, "roomsync": True, "version": "1", "node": "n"}
    assert verdict("health.healthz", **ok).status is Status.PASS
    draining = verdict("health.healthz", **ok, draining=True)
    assert draining.status is Status.FAIL and "1012" in draining.codes
    assert "proxy in front cannot reach" in (verdict("health.healthz", status=502).cause or "")
    checks_ = {
        "store": {"ok": False, "backend": "sqlite", "error": "database or disk is full"},
        "blobs": {"ok": True, "backend": "filesystem"},
        "bus": {"ok": False, "backend": "redis", "error": "connection refused"},
        "draining": True,
    }
    v = verdict("health.readyz", status=503, checks=checks_)
    assert v.summary == "GET /readyz 503: failing store, bus, draining"
    assert "store (sqlite): database or disk is full" in (v.cause or "")
    assert "`checks.bus.error`" in (v.next_action or "")
    assert verdict("health.readyz", status=200, checks={}).status is Status.PASS
    assert verdict("health.metrics", status=200, roomsync_families=0).status is Status.FAIL
    assert verdict("health.metrics", status=200, roomsync_families=9).status is Status.PASS


def test_connect_rules() -> None:
    v = verdict("connect.tls", ssl_error="WRONG_VERSION_NUMBER")
    assert "`wss://` to a plain port" in (v.cause or "")
    assert verdict("connect.tls", error="refused").status is Status.SKIP
    assert verdict("connect.route", status=200).status is Status.FAIL
    assert verdict("connect.upgrade", status=403).status is Status.FAIL
    assert "curl -i" in (verdict("connect.upgrade", status=400).next_action or "")
    v = verdict("connect.welcome", caps=["read"], catchup_done=True)
    assert v.status is Status.FAIL and "lacks write" in (v.cause or "")
    assert verdict("connect.welcome", malformed="welcome.caps: expected a list").status is (
        Status.FAIL
    )
    v = verdict("connect.welcome", caps=["read", "write"], catchup_done=False, timeout_s=1)
    assert "did not end" in (v.cause or "")
    assert verdict("connect.token", error_code="overload").status is Status.SKIP
    assert verdict("connect.token", welcome=True, token_given=False, caps=["read"]).status is (
        Status.PASS
    )


def test_sync_rules() -> None:
    v = verdict("sync.broadcast", seq=5, expected_seq=4)
    assert v.status is Status.FAIL and "disagree" in (v.cause or "")
    v = verdict("sync.broadcast", timeout_s=2.0, expected_seq=4)
    assert "not broadcast to another peer" in (v.cause or "")
    assert RUNBOOK.PACKS in v.runbook
    v = verdict("sync.broadcast", peer_failed=True, close=4003, error_code="auth")
    assert v.status is Status.FAIL and "second connection" in v.summary
    assert verdict("sync.request", found=True, value_matches=False).status is Status.FAIL
    assert verdict("sync.request", answered=True, found=False).status is Status.FAIL
    v = verdict("sync.roots", roots={"peer A": "a" * 64, "server (room get)": "b" * 64})
    assert v.status is Status.FAIL and v.runbook == (RUNBOOK.HASH, RUNBOOK.REPLAY)
    assert verdict("sync.roots", roots={}).status is Status.SKIP
    v = verdict("sync.subscribe", prefixes=["/a"], path="/a/x", expected=True, delivered=False)
    assert "filtered or dropped a broadcast the subscription covers" in (v.cause or "")
    v = verdict("sync.subscribe", prefixes=["/a"], path="/b", expected=False, delivered=True)
    assert "outside the peer's subscription" in (v.cause or "")
    assert verdict("cleanup.probe", seq=9, path="/p").status is Status.PASS


def test_blob_rules() -> None:
    v = verdict("blobs.inline", result="upload-rejected", reason="hash-mismatch")
    assert v.runbook[0] == RUNBOOK.BLOB_INTEGRITY
    v = verdict("blobs.direct", grant="upload-denied", denied_reason="backend-cannot-grant: x")
    assert "cannot grant upload URLs" in (v.cause or "")
    v = verdict("blobs.direct", grant="upload-url", put_status=403, fallback_result="blob-uploaded")
    assert "the PUT failed: HTTP 403; the inline fallback worked" in v.summary
    assert "`blobs.public_url`" in (v.next_action or "")
    v = verdict(
        "blobs.direct", grant="upload-url", put_status=201, confirm="upload-rejected",
        confirm_reason="verify-failed",
    )  # fmt: skip
    assert "did not verify" in (v.cause or "") and RUNBOOK.DENIED in v.runbook
    v = verdict("blobs.available", expected=["sha256:" + "a" * 64], seen={}, timeout_s=1.0)
    assert v.runbook == (RUNBOOK.AVAILABLE, RUNBOOK.RELAY)
    v = verdict("blobs.fetch", fetched=[{"hash": "h", "ok": False, "reason": "not-found: gone"}])
    (e,) = explain("not-found", Kind.ERROR)
    assert v.cause == e.meaning and v.next_action == e.next_action
    v = verdict("blobs.fetch", fetched=[{"hash": "h", "ok": False, "reason": "hash-mismatch: x"}])
    assert "do not hash to its address" in (v.cause or "")
    assert verdict("blobs.fetch", fetched=[{"ok": True, "direct": True}]).status is Status.PASS


def test_control_rules() -> None:
    v = verdict(
        "control.room",
        command="room get",
        reject={"class": "unauthenticated", "code": "token-expired", "message": "auth: x"},
    )
    (e,) = explain("token-expired", Kind.AUTH_REASON)
    assert v.cause == e.meaning and v.runbook[0] == RUNBOOK.CAPS
    v = verdict(
        "control.tick",
        command="tick get",
        reject={"class": "invalid-payload", "code": "invalid", "message": "m", "next": "n"},
    )
    assert v.runbook[0] == RUNBOOK.PAYLOAD
    v = verdict("control.policy", command="policy get", error="404: Not Found")
    assert "no roomsync JSON answer" in (v.cause or "")
    assert verdict("control.query", command="query list", ok=True).status is Status.PASS


# -- the canary's fold ---------------------------------------------------------------------------


def test_canary_checks_fold_steps() -> None:
    results = {
        "connect.upgrade": judge("connect.upgrade", {"status": 101}, 2.0),
        "connect.token": judge("connect.token", {"error_code": "auth", "close": 4002}, 3.0),
        "sync.write": judge("sync.write", {"seq": 1}, 5.0),
    }
    report = Report("u", "r", checks.ordered(results))
    folded = {c.name: c for c in canary_checks(report)}
    assert list(folded) == list(CANARY_CHECKS)
    assert folded["handshake"].status is Status.FAIL
    assert [r.step.id for r in folded["handshake"].failures] == ["connect.token"]
    assert folded["handshake"].seconds == pytest.approx(0.005)
    assert folded["sync"].status is Status.PASS
    assert folded["control.room"].status is Status.SKIP
    assert folded["handshake"].to_json()["failed_steps"][0]["id"] == "connect.token"
    assert skip("blobs.fetch", "why").verdict.summary == "why"
