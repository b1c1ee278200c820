"""The runbook's evidence bundle (SPEC §7, issue 12), collected from a live node.

"Evidence bundle to capture" in the runbook, item by item, and where each comes from:

================================================  ==========================================
runbook item                                      bundle file(s), source
================================================  ==========================================
relevant server logs and timestamps               ``logs/events.jsonl`` (``topology events``:
                                                  the node's ring), ``logs/server.log``
                                                  (``--log-file``, cut to the window)
metrics snapshots around the incident window      ``metrics/before.prom``, ``after.prom``
                                                  (``GET /metrics``, ``metrics_gap_s``
                                                  apart), ``metrics/delta.json``
representative command payloads (redacted)        ``rooms/<room>/capture.json``
                                                  (``room capture``: metadata only)
replay output (deterministic state)               ``rooms/<room>/room.json`` (``room get``:
                                                  head, canonical root), ``archives.json``
                                                  (``archive list`` + ``archive verify`` of
                                                  the newest), ``replay.json`` (the op log
                                                  replayed, when the store is local)
close codes and reconnect attempts                ``closes.json`` (``topology events``)
capability scope of failing control requests      ``control-failures.json``
(and) the effective config, versions, health      ``policy/*.json`` (``policy get``),
                                                  ``config.toml`` (``--config``, redacted),
                                                  ``versions.json``, ``health.json``
================================================  ==========================================

plus ``topology.json``, ``manifest.json`` (what was collected, each step's outcome) and
``SUMMARY.md``, which says what stands out: error spikes between the two metric
snapshots, close-code counts with their meaning, reconnect storms, reject classes and
the failing control requests with the caps they had and the one they needed.

Collecting changes nothing on the node: only read commands (``topology get|events``,
``room get|capture``, ``archive list|verify``, ``policy get``) and ``GET`` routes. The
rooms are the ones named, else the busiest loaded ones (peers, then head). A step the
operator token may not run is recorded (with the cap it needs) and skipped.

Everything is redacted twice: by the server (the capture keeps metadata only, the event
ring is redacted as it is fed) and again here with :func:`roomsync.redaction.redact`.
Then :func:`scan` checks every file for what must never leave the node: tokens
(JWT-shaped strings, the operator token itself), signing keys (PEM blocks, the key
secrets and TLS key this host can read) and blob payloads (long base64 runs that decode
to more than 64 bytes; hashes and roots are hex and never match). One hit and
:func:`write_bundle` refuses: it writes nothing and returns the findings (file, line,
kind).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import io
import json
import math
import platform
import re
import tarfile
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .. import __version__
from ..config import Settings, redacted, to_toml
from ..control.client import ControlClient, ControlRejected
from ..core.explain import explain
from ..redaction import REDACTED, redact, redact_dsn, redact_text

__all__ = [
    "EvidenceOptions",
    "Leak",
    "collect",
    "parse_duration",
    "scan",
    "secrets_of",
    "write_bundle",
]

#: A bundle's rooms when none is named: the busiest loaded ones, at most this many.
DEFAULT_BUSIEST = 3
#: ``room get`` calls spent finding the busiest rooms, at most.
MAX_ROOMS_PROBED = 200
#: Events fetched from the ring per page, and in all.
EVENTS_PAGE = 5000
MAX_EVENTS = 100_000
#: Lines of ``--log-file`` kept (the newest within the window).
MAX_LOG_LINES = 50_000
#: A base64 run at least this long decodes to more than 64 bytes: a payload, not an id.
MIN_BLOB_RUN = 88

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration(text: str) -> int:
    """``15m``, ``90s``, ``2h``, ``1d``, ``500ms`` (a bare number is seconds) in ms."""
    m = _DURATION_RE.match(text)
    if m is None:
        raise ValueError(f"not a duration: {text!r} (e.g. 15m, 90s, 2h)")
    return int(float(m.group(1)) * _UNITS_MS[m.group(2) or "s"])


@dataclass(frozen=True, slots=True)
class EvidenceOptions:
    """What to collect. ``settings`` (from ``--config``/``--data-dir``) adds the local
    config, the op-log replay of a local store and the key secrets the scan looks for."""

    url: str
    operator_token: str
    window_ms: int = 15 * 60_000
    rooms: tuple[str, ...] = ()
    busiest: int = DEFAULT_BUSIEST
    capture_limit: int = 200
    metrics_gap_s: float = 5.0
    log_file: Path | None = None
    settings: Settings | None = None
    config_file: Path | None = None


@dataclass(slots=True)
class _Bundle:
    files: dict[str, bytes] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def json(self, name: str, data: Any) -> None:
        self.files[name] = (json.dumps(redact(data), indent=2, default=str) + "\n").encode()

    def text(self, name: str, text: str) -> None:
        self.files[name] = redact_text(text).encode()

    def step(self, name: str, ok: bool, **detail: Any) -> None:
        self.steps.append({"step": name, "ok": ok, **detail})


# -- collecting ---------------------------------------------------------------------------


class _Node:
    """The HTTP and control calls of one collection, each recorded as a step."""

    def __init__(self, http: aiohttp.ClientSession, options: EvidenceOptions, bundle: _Bundle):
        self.http = http
        self.url = options.url.rstrip("/")
        self.control = ControlClient(self.url, options.operator_token, session=http)
        self.bundle = bundle

    async def get(self, path: str) -> tuple[int, str, Mapping[str, str]]:
        async with self.http.get(self.url + path) as resp:
            return resp.status, await resp.text(), resp.headers

    async def call(self, family: str, command: str, **payload: Any) -> Any:
        """The command's result, or None (the refusal recorded as a failed step)."""
        name = f"{family} {command}"
        try:
            result = await self.control.call(family, command, **payload)
        except ControlRejected as exc:
            self.bundle.step(
                name,
                False,
                payload=payload,
                reject=str(exc.reject_class),
                code=exc.reject_code,
                message=exc.message,
                required=exc.required,
            )
            return None
        self.bundle.step(name, True, payload=payload)
        return result


def _server_now_ms(headers: Mapping[str, str]) -> int:
    """The server's clock from an answer's ``Date`` (1 s resolution), else ours."""
    date = headers.get("Date")
    if date:
        try:
            return int(email.utils.parsedate_to_datetime(date).timestamp() * 1000)
        except (TypeError, ValueError):
            pass
    return int(time.time() * 1000)


async def _events(node: _Node, since_ms: int) -> dict[str, Any] | None:
    """Every event of the window from the ring (paged), with the window's counts."""
    first = await node.call("topology", "events", since_ms=since_ms, limit=EVENTS_PAGE)
    if first is None:
        return None
    events: list[dict[str, Any]] = list(first["events"])
    cursor = first.get("cursor")
    while cursor is not None and len(events) < MAX_EVENTS:
        page = await node.call(
            "topology", "events", since_ms=since_ms, limit=EVENTS_PAGE, cursor=cursor
        )
        if page is None:
            break
        events = list(page["events"]) + events
        cursor = page.get("cursor")
    return {**first, "events": events, "cursor": None}


def _log_window(path: Path, since_ms: int) -> tuple[str, dict[str, Any]]:
    """``path`` cut to the window: JSON lines by their ``ts``, every line redacted again
    (a log from elsewhere, a proxy's, may not have been). Lines without a time (the
    ``text`` format) are all kept. The newest :data:`MAX_LOG_LINES` at most."""
    kept: deque[str] = deque(maxlen=MAX_LOG_LINES)
    total = outside = 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            total += 1
            try:
                obj = json.loads(line)
            except ValueError:
                kept.append(redact_text(line))
                continue
            if isinstance(obj, dict):
                at = _ts_ms(obj.get("ts"))
                if at is not None and at < since_ms:
                    outside += 1
                    continue
            kept.append(json.dumps(redact(obj), default=str))
    info = {"path": str(path), "lines": total, "before_window": outside, "kept": len(kept)}
    return "\n".join(kept) + ("\n" if kept else ""), info


def _ts_ms(ts: object) -> int | None:
    if not isinstance(ts, str):
        return None
    try:
        return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as ``{'name{label="v",...}': value}`` (counters, gauges, buckets)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return out


def metrics_delta(before: str, after: str, seconds: float) -> list[dict[str, Any]]:
    """Every counter series (``*_total``) that moved between the two snapshots."""
    a, b = parse_metrics(before), parse_metrics(after)
    out = []
    for series, value in sorted(b.items()):
        name = series.split("{", 1)[0]
        if not name.endswith("_total"):
            continue
        delta = value - a.get(series, 0.0)
        if delta:
            out.append(
                {
                    "series": series,
                    "before": a.get(series, 0.0),
                    "after": value,
                    "delta": delta,
                    "per_s": round(delta / seconds, 3) if seconds > 0 else None,
                }
            )
    return out


async def _busiest(node: _Node, topology: Any, n: int) -> list[str]:
    loaded: list[str] = []
    for view in (topology or {}).get("nodes", []):
        loaded += view.get("rooms", [])
    ranked = []
    refused: ControlRejected | None = None
    for room in loaded[:MAX_ROOMS_PROBED]:
        try:
            info = await node.control.call("room", "get", room=room)
        except ControlRejected as exc:
            refused = exc
            continue
        ranked.append((-int(info.get("peers", 0)), -int(info.get("head", 0)), room))
    chosen = [room for _, _, room in sorted(ranked)[:n]]
    if refused is not None and not ranked:
        node.bundle.step(
            "busiest rooms", False, reject=str(refused.reject_class), code=refused.reject_code,
            required=refused.required, loaded=len(loaded),
        )  # fmt: skip
    else:
        node.bundle.step("busiest rooms", True, loaded=len(loaded), chosen=chosen)
    return chosen


async def _replay(settings: Settings, room: str) -> dict[str, Any]:
    """The op log replayed from the local store (read only; never created here)."""
    from ..replay import replay
    from ..storage.factory import DATABASE_FILE, build_store

    if settings.storage.backend != "sqlite":
        return {"skipped": f"storage backend {settings.storage.backend} is not local"}
    if not (Path(settings.server.data_dir) / DATABASE_FILE).exists():
        return {"skipped": f"no database in {settings.server.data_dir}"}
    store = build_store(settings)
    await store.open()
    try:
        return (await replay(store, room)).to_json()
    except (LookupError, ValueError) as exc:
        return {"error": str(exc)}
    finally:
        await store.close()


async def _room(node: _Node, bundle: _Bundle, options: EvidenceOptions, room: str) -> Any:
    base = f"rooms/{room}/"
    info = await node.call("room", "get", room=room)
    if info is not None:
        bundle.json(base + "room.json", info)
    capture = await node.call("room", "capture", room=room, limit=options.capture_limit)
    if capture is not None:
        bundle.json(base + "capture.json", capture)
    policy = await node.call("policy", "get", room=room)
    if policy is not None:
        bundle.json(base + "policy.json", policy)
    archives: dict[str, Any] = {}
    listed = await node.call("archive", "list", room=room, limit=5)
    if listed is not None:
        archives["list"] = listed
        newest = listed.get("archives") or []
        if newest:
            archives["verify"] = await node.call("archive", "verify", ref=newest[0]["ref"])
        bundle.json(base + "archives.json", archives)
    replayed = None
    if options.settings is not None:
        replayed = await _replay(options.settings, room)
        bundle.json(base + "replay.json", replayed)
        bundle.step("replay", "error" not in replayed, room=room)
    return {"room": room, "info": info, "capture": capture, "archives": archives,
            "replay": replayed}  # fmt: skip


async def collect(
    options: EvidenceOptions, *, http: aiohttp.ClientSession | None = None
) -> dict[str, bytes]:
    """Collect every file of the bundle (name -> bytes), ``SUMMARY.md`` and
    ``manifest.json`` included; nothing is written. Raises :class:`aiohttp.ClientError`
    (or OSError) when the node does not answer ``/healthz``."""
    own = http is None
    session = http if http is not None else aiohttp.ClientSession()
    try:
        return await _collect(options, session)
    finally:
        if own:
            await session.close()


async def _collect(options: EvidenceOptions, http: aiohttp.ClientSession) -> dict[str, bytes]:
    bundle = _Bundle()
    node = _Node(http, options, bundle)
    started = time.time()
    status, body, headers = await node.get("/healthz")
    healthz = json.loads(body) if status == 200 else {"status": status, "body": body[:2000]}
    now_ms = _server_now_ms(headers)
    status, body, _ = await node.get("/readyz")
    try:
        readyz: Any = json.loads(body)
    except ValueError:
        readyz = {"status": status, "body": body[:2000]}
    bundle.json("health.json", {"healthz": healthz, "readyz": readyz, "readyz_status": status})
    status, body, _ = await node.get("/v1/openapi.json")
    api_version = json.loads(body).get("info", {}).get("version") if status == 200 else None
    bundle.json(
        "versions.json",
        {
            "collector": {"roomsync": __version__, "python": platform.python_version(),
                          "platform": platform.platform()},
            "server": {"roomsync": healthz.get("version"), "openapi": api_version,
                       "node": healthz.get("node"), "uptime_ms": healthz.get("uptime_ms")},
        },
    )  # fmt: skip

    # Two metric snapshots, before this collection's own control requests.
    _, before, _ = await node.get("/metrics")
    t0 = time.monotonic()
    await asyncio.sleep(options.metrics_gap_s)
    _, after, _ = await node.get("/metrics")
    gap = time.monotonic() - t0
    bundle.text("metrics/before.prom", before)
    bundle.text("metrics/after.prom", after)
    try:
        delta = metrics_delta(before, after, gap)
    except ValueError as exc:  # not Prometheus text: keep the raw snapshots
        delta = []
        bundle.step("metrics delta", False, error=str(exc))
    bundle.json("metrics/delta.json", {"seconds": round(gap, 3), "moved": delta})

    # The window, on the server's clock; the events as the ring holds them.
    probe = await node.call("topology", "events", limit=1)
    if probe is not None:
        now_ms = int(probe["now_ms"])
    since_ms = max(0, now_ms - options.window_ms)
    events = await _events(node, since_ms) if probe is not None else None
    if events is not None:
        bundle.text(
            "logs/events.jsonl",
            "".join(json.dumps(redact(e), default=str) + "\n" for e in events["events"]),
        )
        bundle.json(
            "closes.json",
            {"since_ms": since_ms, "closes": events["closes"], "closed": events["closed"],
             "reconnects": events["reconnects"], "ring": events["ring"]},
        )  # fmt: skip
        bundle.json(
            "control-failures.json",
            {"since_ms": since_ms, "control_failures": events["control_failures"]},
        )
    log_info = None
    if options.log_file is not None:
        text, log_info = _log_window(options.log_file, since_ms)
        bundle.files["logs/server.log"] = text.encode()
        bundle.step("log file", True, **log_info)

    topology = await node.call("topology", "get")
    if topology is not None:
        bundle.json("topology.json", topology)
    policy = await node.call("policy", "get")
    if policy is not None:
        bundle.json("policy/global.json", policy)
    if options.settings is not None:
        bundle.text("config.toml", to_toml(redacted(options.settings)))

    rooms = list(dict.fromkeys(options.rooms))
    chosen = "named"
    if not rooms:
        rooms = await _busiest(node, topology, options.busiest)
        chosen = "busiest"
    collected = [await _room(node, bundle, options, room) for room in rooms]

    manifest = {
        "tool": f"roomsync evidence {__version__}",
        "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "url": redact_dsn(redact_text(options.url)),
        "window_ms": options.window_ms,
        "since_ms": since_ms,
        "server_now_ms": now_ms,
        "rooms": rooms,
        "rooms_chosen": chosen,
        "log_file": log_info,
        "steps": bundle.steps,
    }
    summary = summarize(
        manifest=manifest, healthz=healthz, readyz=readyz, delta=delta, gap_s=gap,
        events=events, rooms=collected, settings_given=options.settings is not None,
    )  # fmt: skip
    bundle.text("SUMMARY.md", summary)
    manifest["files"] = sorted([*bundle.files, "manifest.json"])
    bundle.json("manifest.json", manifest)
    return bundle.files


# -- the summary --------------------------------------------------------------------------

#: Counter series whose rise is worth a line in the summary, and what the rise means.
_ALARMING: tuple[tuple[str, str], ...] = (
    ("roomsync_errors_total", "error envelopes sent"),
    ("roomsync_closes_total", "sessions closed"),
    ("roomsync_auth_total", "handshake auth outcomes"),
    ("roomsync_control_requests_total", "control requests"),
    ("roomsync_store_errors_total", "store operations failed"),
    ("roomsync_blob_ops_total", "blob operations"),
    ("roomsync_rate_limited_total", "messages refused by rate limits"),
    ("roomsync_resync_required_total", "peers told to resync"),
    ("roomsync_changes_refused_total", "changes refused"),
    ("roomsync_connections_shed_total", "connections shed at the cap"),
)
_FINE = re.compile(
    r'outcome="(ok|anonymous|uploaded|granted|requested|served|stored)"|code="100[01]"'
)


def _meaning(code: str) -> str:
    found = explain(code)
    return found[0].meaning if found else ""


def summarize(
    *,
    manifest: Mapping[str, Any],
    healthz: Mapping[str, Any],
    readyz: Any,
    delta: Sequence[Mapping[str, Any]],
    gap_s: float,
    events: Mapping[str, Any] | None,
    rooms: Sequence[Mapping[str, Any]],
    settings_given: bool,
) -> str:
    """``SUMMARY.md``: what stands out first, then each item of the bundle in a line."""
    minutes = manifest["window_ms"] / 60_000
    lines = [
        "# roomsync evidence bundle",
        "",
        f"- node `{healthz.get('node')}` at {manifest['url']}, roomsync "
        f"{healthz.get('version')}, collected {manifest['collected_at']}",
        f"- window: the last {minutes:g} min (since_ms {manifest['since_ms']}, server clock)",
        f"- rooms ({manifest['rooms_chosen']}): "
        + (", ".join(f"`{r}`" for r in manifest["rooms"]) or "none"),
        "",
        "## What stands out",
        "",
    ]
    notable: list[str] = []
    if isinstance(readyz, dict) and readyz.get("ok") is False:
        failing = [
            k
            for k, v in (readyz.get("checks") or {}).items()
            if (isinstance(v, dict) and v.get("ok") is False) or (k == "draining" and v is True)
        ]
        notable.append(f"**not ready**: failing checks {', '.join(failing) or '?'} (health.json)")
    spikes = [
        d for d in delta
        if any(str(d["series"]).startswith(name) for name, _ in _ALARMING)
        and not _FINE.search(str(d["series"]))
    ]  # fmt: skip
    for d in spikes:
        notable.append(
            f"rising during the {gap_s:.1f} s between the metric snapshots: "
            f"`{d['series']}` +{d['delta']:g} ({d['per_s']}/s)"
        )
    closes: Mapping[str, int] = (events or {}).get("closes", {})
    bad_closes = {c: n for c, n in closes.items() if c not in ("1000", "1001")}
    for code, n in sorted(bad_closes.items(), key=lambda kv: -kv[1]):
        notable.append(f"{n} session(s) closed with **{code}**: {_meaning(code)}")
    for r in (events or {}).get("reconnects", [])[:5]:
        if r["reconnects"] >= 2:
            notable.append(
                f"actor `{r['actor']}` reconnected {r['reconnects']} time(s) to `{r['room']}` "
                "(close codes " + ", ".join(f"{c} x{n}" for c, n in r["codes"].items()) + ")"
            )
    failures = (events or {}).get("control_failures", [])
    for f in failures[:10]:
        caps = ", ".join(f"`{c}`" for c in f["caps"]) or "none"
        who = f"operator `{f['operator']}`" if f["operator"] else "no verified operator token"
        notable.append(
            f"control `{f['family']} {f['command']}` refused **{f['outcome']}** x{f['count']} "
            f"for {who} with caps {caps}; it needs `{f['required']}`"
        )
    warnings = Counter(
        e["event"]
        for e in (events or {}).get("events", [])
        if e.get("level") in ("warning", "error")
    )
    for name, n in warnings.most_common(10):
        notable.append(f"{n} `{name}` log record(s) at warning or error")
    for r in rooms:
        verify = (r.get("archives") or {}).get("verify")
        if isinstance(verify, dict) and verify.get("ok") is False:
            notable.append(f"room `{r['room']}`: newest archive does **not** verify ({verify})")
        replayed = r.get("replay")
        if isinstance(replayed, dict) and replayed.get("match") is False:
            notable.append(f"room `{r['room']}`: op-log replay does **not** match the live root")
    skipped = [s for s in manifest["steps"] if not s["ok"]]
    lines += [f"- {n}" for n in notable] or ["- nothing: no error spike, no abnormal close, "
                                            "no refused control request in the window"]  # fmt: skip
    lines += ["", "## Items", ""]
    ring = (events or {}).get("ring") or {}
    if events is not None:
        state = "complete" if ring.get("complete") else "INCOMPLETE: older records dropped"
        lines.append(
            f"- logs: `logs/events.jsonl`, {len(events.get('events', []))} record(s) from the "
            f"node's ring ({state} for this window)"
        )
    if manifest.get("log_file"):
        info = manifest["log_file"]
        lines.append(f"- logs: `logs/server.log`, {info['kept']} line(s) of {info['path']}")
    lines.append(
        f"- metrics: `metrics/before.prom` and `after.prom`, {gap_s:.1f} s apart; "
        f"{len(delta)} counter series moved (`metrics/delta.json`)"
    )
    if events is not None:
        codes = ", ".join(f"{c}: {n}" for c, n in closes.items()) or "none"
        lines.append(
            f"- closes by code: {codes}; {len(events.get('reconnects', []))} actor(s) "
            "reconnected (`closes.json`)"
        )
        classes = Counter(f["outcome"] for f in failures for _ in range(f["count"]))
        lines.append(
            "- refused control requests by class: "
            + (", ".join(f"{c}: {n}" for c, n in classes.most_common()) or "none")
            + " (`control-failures.json`)"
        )
    for r in rooms:
        info = r.get("info") or {}
        verify = (r.get("archives") or {}).get("verify")
        parts = [f"head {info.get('head')}", f"root `{info.get('root')}`",
                 f"{info.get('peers')} peer(s)"]  # fmt: skip
        captured = r.get("capture") or {}
        parts.append(f"{len(captured.get('envelopes', []))} captured envelope(s)")
        if isinstance(verify, dict):
            parts.append(f"newest archive verify ok={verify.get('ok')}")
        replayed = r.get("replay")
        if isinstance(replayed, dict) and "match" in replayed:
            parts.append(f"replay match={replayed.get('match')}")
        lines.append(f"- room `{r['room']}`: " + ", ".join(parts) + f" (`rooms/{r['room']}/`)")
    lines.append(
        "- effective policy: `policy/global.json`"
        + (", local config (redacted): `config.toml`" if settings_given else "")
        + "; versions: `versions.json`; health: `health.json`"
    )
    if skipped:
        lines += ["", "## Not collected", ""]
        for s in skipped:
            needs = f", needs `{s['required']}`" if s.get("required") else ""
            lines.append(f"- {s['step']}: {s.get('reject', s.get('error', 'failed'))}"
                         f" {s.get('code', '')}{needs}")  # fmt: skip
    lines += [
        "",
        "Secrets: tokens, signatures and blob data are redacted, and every file was checked "
        "for tokens, signing keys and blob payloads before this bundle was written.",
        "",
    ]
    return "\n".join(lines)


# -- the redaction self-check -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leak:
    """A secret found in a file of the bundle: ``kind`` is ``token``, ``signing-key`` or
    ``blob-payload``; ``line`` where; ``hint`` its first characters, never more."""

    file: str
    kind: str
    line: int
    hint: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind} ({self.hint}...)"


#: Three dot-separated base64url segments; a JWT's first one decodes to a JSON object.
_THREE_SEGMENTS = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*-----")
_B64_RUN = re.compile(
    rf"[A-Za-z0-9+/]{{{MIN_BLOB_RUN},}}={{0,2}}|[A-Za-z0-9_-]{{{MIN_BLOB_RUN},}}={{0,2}}"
)
_HEX = re.compile(r"^[0-9a-fA-F]+$")


def _b64decode(text: str) -> bytes | None:
    s = text.rstrip("=")
    pad = "=" * (-len(s) % 4)
    try:
        if "-" in s or "_" in s:
            return base64.urlsafe_b64decode(s + pad)
        return base64.b64decode(s + pad, validate=True)
    except (binascii.Error, ValueError):
        return None


def _is_jwt(candidate: str) -> bool:
    header = _b64decode(candidate.split(".", 1)[0])
    return header is not None and header.lstrip()[:1] == b"{"


def _entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _is_payload(run: str, safe: Iterable[str]) -> bool:
    """A base64 run that is data: long, not hex (hashes, roots), not made of identifiers
    the bundle names anyway (a long room id, a path of them), decoding to more than 64
    bytes, and not degenerate (a run of one repeated character is no payload)."""
    pieces = [run]
    for ident in safe:
        pieces = [p for piece in pieces for p in piece.split(ident)]
    for piece in pieces:
        piece = piece.strip("/")
        if len(piece) < MIN_BLOB_RUN or _HEX.match(piece):
            continue
        decoded = _b64decode(piece)
        if decoded is not None and len(decoded) > 64 and _entropy(piece) > 3.5:
            return True
    return False


def secrets_of(options: EvidenceOptions) -> list[tuple[str, str]]:
    """The exact strings the scan looks for: ``(kind, secret)``. The operator token (and
    its signature), and with settings the signing-key secrets (``auth.keys`` or the data
    directory's key file, read only) and the TLS key file's lines."""
    from ..auth.keyfile import load_keys

    out: list[tuple[str, str]] = []
    token = options.operator_token.strip()
    if token:
        out.append(("token", token))
        parts = token.split(".")
        if len(parts) == 3 and len(parts[2]) >= 16:
            out.append(("token", parts[2]))
    settings = options.settings
    if settings is not None:
        keys = dict(settings.auth.keys)
        try:
            found = load_keys(Path(settings.server.data_dir))
        except (OSError, ValueError):
            found = None
        if found is not None:
            keys.update(found[0])
        out += [("signing-key", secret) for secret in keys.values() if len(secret) >= 8]
        if settings.server.tls_key:
            try:
                pem = Path(settings.server.tls_key).read_text(encoding="utf-8", errors="replace")
            except OSError:
                pem = ""
            out += [("signing-key", line.strip()) for line in pem.splitlines()
                    if len(line.strip()) >= 16 and not line.startswith("-----")]  # fmt: skip
    return out


def scan(
    files: Mapping[str, bytes],
    secrets: Iterable[tuple[str, str]] = (),
    *,
    safe: Iterable[str] = (),
) -> list[Leak]:
    """Every secret in ``files``: the exact ``secrets`` (``(kind, text)``), JWT-shaped
    strings, PEM blocks, and blob payloads (long base64 runs that decode to more than
    64 bytes, unless they are in ``safe``: identifiers the bundle names). Empty: clean."""
    exact = [(kind, s) for kind, s in secrets if s]
    # Longest first, so a long id is cut out before a shorter one inside it.
    safe_ids = sorted({s for s in safe if len(s) >= 16}, key=len, reverse=True)
    leaks: list[Leak] = []
    for name, data in sorted(files.items()):
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            for kind, secret in exact:
                if secret in line:
                    leaks.append(Leak(name, kind, number, secret[:6]))
            for m in _THREE_SEGMENTS.finditer(line):
                if _is_jwt(m.group(0)):
                    leaks.append(Leak(name, "token", number, m.group(0)[:6]))
            if _PEM.search(line):
                leaks.append(Leak(name, "signing-key", number, "-----BEGIN"))
            for m in _B64_RUN.finditer(line):
                if _is_payload(m.group(0), safe_ids):
                    leaks.append(Leak(name, "blob-payload", number, m.group(0)[:6]))
    return leaks


#: Keys whose values are identifiers (never payloads), wherever they are in the bundle.
_ID_KEYS = frozenset({"room", "rooms", "peer", "peers", "actor", "session", "node", "operator"})


def _identifiers(files: Mapping[str, bytes]) -> set[str]:
    """Room ids, peers, actors, sessions and nodes the bundle's JSON files name."""
    ids: set[str] = set()

    def walk(value: Any, key: str | None = None) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and key in _ID_KEYS:
            ids.add(value)

    for name, data in files.items():
        if name.endswith(".json"):
            try:
                walk(json.loads(data))
            except ValueError:
                continue
        elif name.endswith(".jsonl"):
            for line in data.splitlines():
                try:
                    walk(json.loads(line))
                except ValueError:
                    continue
    ids.discard(REDACTED)
    return ids


def write_bundle(
    files: Mapping[str, bytes], out: Path, secrets: Iterable[tuple[str, str]] = ()
) -> list[Leak]:
    """Check every file (:func:`scan`); when clean, write them as ``out`` (a ``.tar.gz``
    under one directory named after it), atomically, and return ``[]``. When the check
    finds a secret, write nothing (not even ``out``'s directory) and return what it
    found: the caller must treat a non-empty answer as a refusal."""
    leaks = scan(files, secrets, safe=_identifiers(files))
    if leaks:
        return leaks
    top = out.name.removesuffix(".gz").removesuffix(".tgz").removesuffix(".tar") or "evidence"
    out.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", delete=False) as tmp:
        try:
            with tarfile.open(fileobj=tmp, mode="w:gz") as tar:
                for name in sorted(files):
                    data = files[name]
                    member = tarfile.TarInfo(f"{top}/{name}")
                    member.size = len(data)
                    member.mtime = int(now)
                    member.mode = 0o600
                    tar.addfile(member, io.BytesIO(data))
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    Path(tmp.name).replace(out)
    return []
