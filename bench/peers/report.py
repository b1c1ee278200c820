"""The side-by-side table (ratios to roomsync) and bench/RESULTS.md."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .scenarios import TITLES, Sizes

BASELINE = "roomsync"

# (scenario, metric key, label, format, better) -- better: "high", "low" or "" (no ratio)
ROWS: list[tuple[str, str, str, str, str]] = [
    ("fanout", "deliveries_per_s", "delivered msgs/s", ",.0f", "high"),
    ("fanout", "lat_p50_ms", "latency p50 ms", ".2f", "low"),
    ("fanout", "lat_p95_ms", "latency p95 ms", ".2f", "low"),
    ("fanout", "lat_p99_ms", "latency p99 ms", ".2f", "low"),
    ("fanout", "server_cpu_us_per_delivery", "server CPU µs/delivery", ".1f", "low"),
    ("fanout", "complete", "subscribers with every update", "s", ""),
    ("fanout", "gen_cpu_pct", "load generator CPU %", ".0f", ""),
    ("steady", "send_rate", "updates/s sent", ".0f", ""),
    ("steady", "lat_p50_ms", "latency p50 ms", ".2f", "low"),
    ("steady", "lat_p95_ms", "latency p95 ms", ".2f", "low"),
    ("steady", "lat_p99_ms", "latency p99 ms", ".2f", "low"),
    ("steady", "server_cpu_us_per_delivery", "server CPU µs/delivery", ".1f", "low"),
    ("steady", "server_cpu_pct", "server CPU % of a core", ".0f", "low"),
    ("steady", "complete", "subscribers with every update", "s", ""),
    ("rooms", "server_cpu_pct", "server CPU % of a core", ".1f", "low"),
    ("rooms", "server_cpu_us_per_delivery", "server CPU µs/delivery", ".1f", "low"),
    ("rooms", "rss_connected_mb", "RSS MB, all connected", ".1f", "low"),
    ("rooms", "rss_end_mb", "RSS MB, after traffic", ".1f", "low"),
    ("rooms", "lat_p50_ms", "latency p50 ms", ".2f", "low"),
    ("rooms", "lat_p99_ms", "latency p99 ms", ".2f", "low"),
    ("rooms", "delivered_pct", "delivered %", ".1f", ""),
    ("idle", "rss_per_conn_kb", "RSS KB per connection", ".1f", "low"),
    ("idle", "rss_after_mb", "RSS MB total", ".1f", "low"),
    ("idle", "connected_of", "connected", "s", ""),
    ("idle", "connects_per_s", "connections/s (handshake+sync)", ",.0f", "high"),
    ("idle", "idle_cpu_pct", "idle CPU % of a core", ".2f", "low"),
    ("late", "full_ms", "full state: ms to last byte", ".0f", "low"),
    ("late", "full_ms_applied", "full state: ms incl. client apply", ".0f", "low"),
    ("late", "full_kb_in", "full state: KB received", ",.0f", "low"),
    ("late", "diff_ms", "after 1% divergence: ms", ".1f", "low"),
    ("late", "diff_kb", "after 1% divergence: KB in+out", ",.1f", "low"),
    ("late", "diff_pct", "after 1% divergence: % of full state", ".2f", "low"),
    ("late", "mst_ms", "MST reconcile (no cursor): ms", ".1f", "low"),
    ("late", "mst_kb", "MST reconcile: KB in+out", ",.1f", "low"),
    ("late", "mst_rounds", "MST reconcile: round trips", ".0f", "low"),
    ("late", "ok", "joiner state correct", "s", ""),
    ("late", "method", "method", "s", ""),
]


def derive(scenario: str, m: dict[str, Any]) -> dict[str, Any]:
    """Add the display-only metrics computed from raw ones."""
    m = dict(m)
    if scenario in ("fanout", "steady") and "subscribers" in m:
        m["complete"] = f"{m['complete_subs']}/{m['subscribers']}"
    if scenario == "idle" and "target" in m:
        m["connected_of"] = f"{m['connected']}/{m['target']}"
    if scenario == "late" and "full_bytes_in" in m:
        m["full_kb_in"] = m["full_bytes_in"] / 1024
        m["diff_kb"] = (m["diff_bytes_in"] + m["diff_bytes_out"]) / 1024
        m["diff_pct"] = 100 * (m["diff_bytes_in"] + m["diff_bytes_out"]) / m["full_bytes_in"]
        if "mst_bytes" in m:
            m["mst_kb"] = m["mst_bytes"] / 1024
        oks = [m.get("full_ok"), m.get("diff_ok"), m.get("mst_ok", True)]
        m["ok"] = "yes" if all(oks) else \
            f"full {m.get('full_ok')}, diff {m.get('diff_ok')}, mst {m.get('mst_ok')}"
    return m


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return None if math.isnan(v) else float(v)


def _cell(v: Any, fmt: str, base: Any, ratio: bool) -> str:
    if v is None:
        return "—"
    if fmt == "s":
        return str(v)
    n = _num(v)
    if n is None:
        return "—"
    text = format(n, fmt)
    b = _num(base)
    if ratio and b:
        text += f" ({n / b:.2f}x)"
    return text


def table(results: dict[str, dict[str, dict[str, Any]]], systems: Sequence[str],
          scenarios: Sequence[str]) -> str:
    """Markdown table: one row per metric, one column per system, ratios to roomsync."""
    head = ["scenario", "metric", *systems]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: list[str] = []
    for sc in scenarios:
        per_sys = {s: derive(sc, results.get(s, {}).get(sc, {})) for s in systems}
        errors = {s: m["error"] for s, m in per_sys.items() if "error" in m}
        skipped = {s: m["skipped"] for s, m in per_sys.items() if "skipped" in m}
        for s, e in errors.items():
            notes.append(f"{TITLES[sc]} / {s}: error: {e}")
        for s, why in skipped.items():
            notes.append(f"{TITLES[sc]} / {s}: n/a: {why}")
        first = True
        for scen, key, label, fmt, better in ROWS:
            if scen != sc:
                continue
            base = per_sys.get(BASELINE, {}).get(key)
            cells = []
            for s in systems:
                m = per_sys[s]
                if "error" in m:
                    cells.append("error")
                elif "skipped" in m:
                    cells.append("n/a")
                else:
                    cells.append(_cell(m.get(key), fmt, base, bool(better) and s != BASELINE))
            lines.append(f"| {TITLES[sc] if first else ''} | {label} | " + " | ".join(cells)
                         + " |")
            first = False
    out = "\n".join(lines)
    if notes:
        out += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return out


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def results_md(record: dict[str, Any], *, rendered_from: str | None = None) -> str:
    """The results page for one run record (what ``run --json`` writes)."""
    results = record["results"]
    systems = record["systems"]
    scenarios = record["scenarios"]
    sz = Sizes(**record["sizes"])
    versions, commands, command = record["versions"], record["commands"], record["command"]
    quick = record.get("quick", False)
    parts = [
        "# Benchmarks against the peers",
        "",
        f"Generated by `{command}` on {record['started']} (took {record['duration_s']:.0f} s)"
        + (" — **quick mode: small sizes, not for comparison**" if quick else "") + "."
        + (f" Rendered again from its JSON by `{rendered_from}`." if rendered_from else ""),
        "",
        f"Machine: {machine()}. Every server is pinned to core 0 (`taskset -c 0`), the load "
        "generator (one Python process, aiohttp clients, uvloop) to core 1. The machine is "
        "shared, so expect noise of +-10-20%; ratios in parentheses are system / roomsync "
        "(lower is better for latency, CPU and memory; higher for throughput). "
        f"Machine {record['load']}.",
        "",
        "## Results",
        "",
        table(results, systems, scenarios),
        "",
        "Reading the table:",
        "",
        "- (a) is closed-loop (a window of in-flight updates), so its msgs/s is window x "
        "subscribers / latency, and the one-core Python generator receiving every frame is "
        "part of that loop (see its CPU row). The server-side figure is *server CPU "
        "µs/delivery*.",
        "- roomsync coalesces changes broadcast within `broadcast_window_ms` into one pack; "
        "each change counts as a delivery, so per-delivery costs drop under load for it "
        "(fewer frames for the server and the generator), while its latency includes that "
        "window and its store's group commit. The peers send one frame per update, and "
        "keep state in memory (roomsync: SQLite unless run as `roomsync-memory`).",
        "- (d) the room is idle for `SETTLE_S` (1 s) before each timed join, for every "
        "system. roomsync's 1% figure is catch-up from the joiner's cursor (as a Yjs state "
        "vector); *MST reconcile* is the resync of a joiner whose cursor is unusable "
        "(4001), batched `mst-probe`/`mst-sketch`, timed from connect with the joiner's "
        "tree already built and hashed (once: `mst_tree_hash_ms` in the JSON; "
        "`bench/peers/drivers/roomsync.py::roomsync_late_joiner`). "
        "\"incl. client apply\" is decoding in the generator's Python (roomsync: "
        "`decode_pack`, pure Python; Yjs: pycrdt's Rust `apply_update`).",
        "",
        "## Scenarios",
        "",
        f"- **(a) fan-out**: 1 writer, {sz.fanout_subs} subscribers in one room, "
        f"{sz.fanout_updates:,} updates of {sz.value_size} bytes, at most {sz.window} in flight "
        "(in flight = not yet at every subscriber). Latency = arrival at a subscriber - send. "
        "Every subscriber's frames are decoded afterwards with the real codec (pycrdt / "
        "roomsync postcard) and must hold every update with its value.",
        f"- **(a') steady**: same room shape, {sz.steady_updates:,} updates at "
        f"{sz.steady_rate:.0f}/s; latency from the *scheduled* send time; server CPU from "
        "`/proc/<pid>/stat` (utime+stime, with descendants) before/after.",
        f"- **(b) many rooms**: {sz.rooms} rooms x {sz.peers_per_room} peers; each room writes "
        f"one update every {sz.rooms_interval:g} s (peers in turn, rooms staggered) for "
        f"{sz.rooms_duration:g} s. RSS is VmRSS of the server (and descendants).",
        f"- **(c) idle**: {sz.idle_conns:,} connections, {sz.idle_per_room} per room, each past "
        "its handshake and initial sync; RSS per connection = (RSS after - RSS after a "
        "warm-up) / connections; idle CPU over the next 3 s.",
        f"- **(d) late joiner**: a room of {sz.late_entries:,} entries ({sz.value_size}-byte "
        f"values, written in updates of {sz.late_batch}); a fresh peer joins (full state), "
        f"leaves, {sz.late_divergence:.0%} of the entries are overwritten, it rejoins with its "
        "state. Time from before the WebSocket connect; bytes are WebSocket payload bytes. "
        "Yjs systems: SyncStep1/SyncStep2 with the state vector. The raw ceiling has no state.",
        "- Every peer joins a cold room alone before the others (pycrdt-websocket 0.16.5 hangs "
        "when several clients join a cold room at the same time); all systems alike.",
        "",
        "## Versions",
        "",
        *[f"- **{s}**: {v}" for s, v in versions.items()],
        "",
        "## Command lines",
        "",
        "```",
        *[f"{s}: {c}" for s, c in commands.items()],
        f"load generator: {command}  (pins itself to core 1)",
        "```",
        "",
        "Install the peers with `bench/peers/install.sh` (see bench/peers/README.md).",
        "",
    ]
    return "\n".join(parts)
