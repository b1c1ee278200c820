"""``deploy/grafana/roomsync.json``: a well-formed Grafana dashboard whose every query
names only metrics a real server's ``/metrics`` exports (SPEC §7).

A server gets traffic of each kind (so every labelled family has samples), is scraped,
and each query's ``roomsync_*`` names must be sample names of that scrape: a counter is
queried as ``..._total``, a histogram as ``..._bucket``/``_sum``/``_count``, never by its
bare family name; the labels a query selects or groups by must exist on those samples.
The canary's gauges come from ``roomsync canary --prometheus-textfile``, not from the
server: they are the allow-list below, checked against a textfile the canary writes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from roomsync.cli.main import build_parser
from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.testing.server import ServerHandle, running_server
from roomsync.testing.wsclient import closed, connect, hello, recv_type

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "roomsync.json"

#: Written by ``roomsync canary --prometheus-textfile`` for node-exporter's textfile
#: collector, not by the server (the same list as in tests/ops/test_alerts.py).
CANARY_TEXTFILE_METRICS = frozenset(
    {
        "roomsync_canary_check_ok",
        "roomsync_canary_check_seconds",
        "roomsync_canary_last_run_timestamp_seconds",
    }
)
#: Labels Prometheus adds to every scraped series, and the one histograms have.
_TARGET_LABELS = {"job", "instance", "le"}

_NAME = re.compile(r"\broomsync_[a-z0-9_]+")
_SELECTOR = re.compile(r"\b(roomsync_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in d["panels"]:
        yield panel
        yield from panel.get("panels", ())  # a collapsed row holds its panels


def queries(d: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    found = [
        (panel["title"], target["expr"])
        for panel in panels(d)
        if panel["type"] != "row"
        for target in panel["targets"]
    ]
    for var in d["templating"]["list"]:
        if var["type"] == "query":
            found.append((f"${var['name']}", var["definition"]))
    return found


# -- the model on its own -------------------------------------------------------------


def test_dashboard_is_a_grafana_model_on_a_prometheus_datasource_variable() -> None:
    d = dashboard()
    assert d["uid"] == "roomsync" and d["title"] and d["schemaVersion"] >= 36
    variables = {var["name"]: var for var in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(d)]
    assert len(ids) == len(set(ids))
    for panel in panels(d):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert _NAME.search(target["expr"]), (panel["title"], target["expr"])


def test_panels_fit_the_grid_without_overlapping() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard()):
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


def test_the_panels_cover_the_runbook() -> None:
    """Each thing an operator looks at in an incident has a panel (issue 12)."""
    used = {name for _, expr in queries(dashboard()) for name in _NAME.findall(expr)}
    for needed in (
        "roomsync_connections",
        "roomsync_handshakes_total",
        "roomsync_auth_total",
        "roomsync_messages_total",
        "roomsync_deliveries_total",
        "roomsync_pack_apply_seconds_bucket",
        "roomsync_broadcast_seconds_bucket",
        "roomsync_resync_required_total",
        "roomsync_closes_total",
        "roomsync_errors_total",
        "roomsync_rate_limited_total",
        "roomsync_store_errors_total",
        "roomsync_persist_seconds_bucket",
        "roomsync_blob_ops_total",
        "roomsync_control_requests_total",
        "roomsync_event_loop_lag_seconds_bucket",
        "roomsync_rooms_loaded",
        "roomsync_ready",
        "roomsync_outbound_queue_bytes",
        "roomsync_canary_check_ok",
    ):
        assert needed in used, needed


# -- against a live server ------------------------------------------------------------


def _blob_upload(data: bytes) -> dict[str, object]:
    return {
        "type": "blob-upload",
        "hash": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "data": base64.b64encode(data).decode(),
    }


async def _traffic(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    """Traffic that gives every labelled family the dashboard reads a sample."""
    writer, _ = await hello(http, srv.ws_url("dash"), actor="writer")
    reader, _ = await hello(http, srv.ws_url("dash"), actor="reader")
    now = int(time.time() * 1000)
    changes = [
        Change("/doc", now, 0, "writer", b"v"),
        Change("/later", now + 10**9, 0, "writer", b"v"),  # refused: clock-skew
    ]
    await writer.send_json({"type": "pack", "data": pack_data(changes)})
    await recv_type(writer, "ack")
    await recv_type(reader, "pack")
    await writer.send_json({"type": "presence", "state": {"at": 1}})
    await recv_type(reader, "presence")
    await writer.send_json(_blob_upload(b"dashboard blob"))
    await recv_type(reader, "blob-available")
    await writer.send_json({"type": "no-such-type"})
    await recv_type(writer, "error")
    stale = await connect(http, srv.ws_url("dash"))
    await stale.send_json({"type": "hello", "v": 1, "cursor": 10**6})  # 4001, a resync
    assert (await closed(stale))[1] == 4001
    token = srv.mint("*", ("*",), actor="ops")
    async with http.post(
        f"{srv.url}/v1/control/room/get",
        json={"room": "dash"},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        assert resp.status == 200
    await writer.close()
    await reader.close()


async def _scrape(srv: ServerHandle, http: aiohttp.ClientSession) -> dict[str, set[str]]:
    """Sample name -> the label names its samples carry."""
    async with http.get(srv.url + "/metrics") as resp:
        text = await resp.text()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def _check_queries(model: dict[str, Any], exported: dict[str, set[str]]) -> None:
    for where, expr in queries(model):
        names = set(_NAME.findall(expr))
        unknown = names - set(exported) - CANARY_TEXTFILE_METRICS
        assert not unknown, f"{where}: {expr!r} names {sorted(unknown)}, not exported"
        server = names - CANARY_TEXTFILE_METRICS
        if len(server) != 1:
            continue  # labels are checked where a query reads one metric
        (name,) = server
        have = exported[name] | _TARGET_LABELS
        wanted = {m for _, body in _SELECTOR.findall(expr) for m in _MATCHER.findall(body)}
        for group in _GROUPING.findall(expr):
            wanted |= {label.strip() for label in group.split(",") if label.strip()}
        assert wanted <= have, f"{where}: {expr!r} uses labels {sorted(wanted - have)}"


async def test_every_query_names_metrics_a_live_server_exports(tmp_path: Path) -> None:
    async with running_server(tmp_path) as srv, aiohttp.ClientSession() as http:
        await _traffic(srv, http)
        exported = await _scrape(srv, http)
    assert "roomsync_closes_total" in exported and "code" in exported["roomsync_closes_total"]
    _check_queries(dashboard(), exported)


def test_the_check_refuses_bare_family_names_and_unknown_labels() -> None:
    """The check itself: a histogram queried without ``_bucket`` or a counter without
    ``_total`` is not an exported series; neither is a label the metric lacks."""
    exported = {"roomsync_x_total": {"code"}, "roomsync_h_bucket": {"le"}}
    for bad in (
        "rate(roomsync_x[1m])",
        "histogram_quantile(0.9, rate(roomsync_h[1m]))",
        "sum by (room) (rate(roomsync_x_total[1m]))",
        'rate(roomsync_x_total{peer="p"}[1m])',
    ):
        with pytest.raises(AssertionError):
            _check_queries(_model(bad), exported)
    _check_queries(_model('sum by (code) (rate(roomsync_x_total{code="1"}[1m]))'), exported)
    _check_queries(_model("histogram_quantile(0.9, rate(roomsync_h_bucket[1m]))"), exported)


def _model(expr: str) -> dict[str, Any]:
    panel = {"type": "timeseries", "title": "t", "targets": [{"expr": expr}]}
    return {"panels": [panel], "templating": {"list": []}}


async def test_the_canary_writes_the_allow_listed_textfile_metrics(tmp_path: Path) -> None:
    (commands,) = [
        action.choices
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    if "canary" not in commands:
        pytest.skip("roomsync canary is not a command (yet): the allow-list stays unchecked")
    textfile = tmp_path / "canary.prom"
    async with running_server(tmp_path / "data") as srv:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "roomsync.cli.main",
            "canary",
            srv.url,
            "--operator-token",
            srv.mint("*", ("*",), actor="ops"),
            "--prometheus-textfile",
            str(textfile),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    written = {
        sample.name
        for family in text_string_to_metric_families(textfile.read_text())
        for sample in family.samples
    }
    assert CANARY_TEXTFILE_METRICS <= written
