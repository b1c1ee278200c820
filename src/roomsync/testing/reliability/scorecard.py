"""What a reliability run measured: one :class:`Outcome` per scenario, folded into the
:class:`Scorecard` printed at the end of every run (and written by ``--json``).

A scenario never raises for what it finds: each broken invariant is a line in
``Outcome.failures`` (a product bug to fix), so one run reports every problem at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Outcome", "Scorecard", "percentile"]


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``samples`` by the nearest-rank rule; None when empty."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Outcome:
    """One scenario's figures. ``load`` and ``figures`` are what it held and observed
    (counts, rates, close codes); ``notes`` say where a profile scaled a count down."""

    name: str
    title: str
    seconds: float = 0.0
    skipped: str | None = None
    load: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    faults: int = 0
    bad_inputs: int = 0
    crashes: int = 0
    lost: int = 0
    peak_rss_bytes: int | None = None
    healthz_ms: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, failure: str) -> bool:
        """Record ``failure`` unless ``ok``; returns ``ok``."""
        if not ok:
            self.failures.append(failure)
        return ok

    @property
    def ok(self) -> bool:
        return self.skipped is None and not self.failures and not self.crashes and not self.lost

    def healthz_p99_ms(self) -> float | None:
        return percentile(self.healthz_ms, 0.99)

    def to_json(self) -> dict[str, Any]:
        p99 = self.healthz_p99_ms()
        return {
            "name": self.name,
            "title": self.title,
            "ok": self.ok,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 2),
            "load": self.load,
            "figures": self.figures,
            "faults_survived": self.faults,
            "bad_inputs": self.bad_inputs,
            "crashes": self.crashes,
            "acked_lost": self.lost,
            "peak_rss_bytes": self.peak_rss_bytes,
            "healthz_probes": len(self.healthz_ms),
            "healthz_p99_ms": None if p99 is None else round(p99, 2),
            "notes": self.notes,
            "failures": self.failures,
        }


@dataclass
class Scorecard:
    """Every scenario of one run, and the scenarios this build cannot run yet."""

    profile: str
    outcomes: list[Outcome] = field(default_factory=list)
    not_covered: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes if o.skipped is None)

    def totals(self) -> dict[str, Any]:
        ran = [o for o in self.outcomes if o.skipped is None]
        rss = [o.peak_rss_bytes for o in ran if o.peak_rss_bytes is not None]
        probes = [ms for o in ran for ms in o.healthz_ms]
        p99 = percentile(probes, 0.99)
        return {
            "scenarios_run": len(ran),
            "scenarios_passed": sum(o.ok for o in ran),
            "scenarios_skipped": len(self.outcomes) - len(ran),
            "faults_survived": sum(o.faults for o in ran),
            "bad_inputs": sum(o.bad_inputs for o in ran),
            "crashes": sum(o.crashes for o in ran),
            "acked_lost": sum(o.lost for o in ran),
            "peak_rss_bytes": max(rss) if rss else None,
            "healthz_probes": len(probes),
            "healthz_p99_ms": None if p99 is None else round(p99, 2),
            "failures": sum(len(o.failures) for o in ran),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "ok": self.ok,
            "totals": self.totals(),
            "scenarios": [o.to_json() for o in self.outcomes],
            "not_covered": [{"scenario": n, "why": w} for n, w in self.not_covered],
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")

    def render(self) -> str:
        """The printed scorecard: one block per scenario, then the totals."""
        lines = [f"roomsync reliability scorecard: profile {self.profile}", ""]
        for o in self.outcomes:
            lines += _render_outcome(o)
        t = self.totals()
        lines += [
            "TOTAL",
            f"  scenarios        {t['scenarios_passed']}/{t['scenarios_run']} passed"
            + (f", {t['scenarios_skipped']} skipped" if t["scenarios_skipped"] else ""),
            f"  faults survived  {t['faults_survived']}",
            f"  bad inputs tried {t['bad_inputs']}",
            f"  crashes found    {t['crashes']} (must be 0)",
            f"  acked lost       {t['acked_lost']} (must be 0)",
            f"  peak RSS         {_mib(t['peak_rss_bytes'])}",
            f"  healthz p99      {_ms(t['healthz_p99_ms'])} over {t['healthz_probes']} probes",
            f"  failures         {t['failures']}",
        ]
        if self.not_covered:
            lines += ["", "NOT COVERED YET"]
            lines += [f"  {name}: {why}" for name, why in self.not_covered]
        lines += ["", "RESULT: " + ("PASS" if self.ok else "FAIL")]
        return "\n".join(lines)


def _render_outcome(o: Outcome) -> list[str]:
    status = "SKIP" if o.skipped is not None else ("PASS" if o.ok else "FAIL")
    lines = [f"[{status}] {o.name}: {o.title} ({o.seconds:.1f} s)"]
    if o.skipped is not None:
        return [*lines, f"    skipped: {o.skipped}", ""]
    lines.append("    load     " + _pairs(o.load.items()))
    if o.figures:
        lines.append("    figures  " + _pairs(o.figures.items()))
    lines.append(
        f"    faults {o.faults} · bad inputs {o.bad_inputs} · crashes {o.crashes} · "
        f"acked lost {o.lost} · peak RSS {_mib(o.peak_rss_bytes)} · "
        f"healthz p99 {_ms(o.healthz_p99_ms())}"
    )
    lines += [f"    note: {n}" for n in o.notes]
    lines += [f"    FAILURE: {f}" for f in o.failures]
    lines.append("")
    return lines


def _pairs(items: Iterable[tuple[str, Any]]) -> str:
    return ", ".join(f"{k}={v}" for k, v in items) or "-"


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / (1 << 20):.1f} MiB"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} ms"
