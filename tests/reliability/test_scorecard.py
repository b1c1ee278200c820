"""The scorecard's arithmetic and rendering (no server)."""

from __future__ import annotations

import json
from pathlib import Path

from roomsync.testing.reliability.scorecard import Outcome, Scorecard, percentile


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.99) is None
    assert percentile([5.0], 0.99) == 5.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0


def test_totals_and_json(tmp_path: Path) -> None:
    a = Outcome("a", "A", faults=2, bad_inputs=10, peak_rss_bytes=3 << 20, healthz_ms=[1.0, 2.0])
    b = Outcome("b", "B", lost=1)
    b.check(False, "lost one")
    c = Outcome("c", "C", skipped="needs root")
    not_covered = [("d", "needs a kernel module this machine lacks")]
    card = Scorecard("quick", [a, b, c], not_covered)
    t = card.totals()
    assert (t["scenarios_run"], t["scenarios_passed"], t["scenarios_skipped"]) == (2, 1, 1)
    assert (t["faults_survived"], t["bad_inputs"], t["acked_lost"]) == (2, 10, 1)
    assert t["peak_rss_bytes"] == 3 << 20 and t["healthz_p99_ms"] == 2.0
    assert not card.ok
    text = card.render()
    assert "[FAIL] b" in text and "[SKIP] c" in text and "NOT COVERED YET" in text
    assert "d: needs a kernel module" in text
    assert "RESULT: FAIL" in text
    card.write_json(tmp_path / "s.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["totals"]["acked_lost"] == 1 and doc["not_covered"] == [
        {"scenario": "d", "why": "needs a kernel module this machine lacks"}
    ]


def test_the_repository_corpus_holds_every_target() -> None:
    from roomsync.testing.reliability.fuzz import REPO_CORPUS
    from roomsync.testing.reliability.fuzz_targets import TARGETS, run_target

    for target in TARGETS:
        seeds = sorted((REPO_CORPUS / target).iterdir())
        assert seeds, target
        for seed in seeds:  # every seed parses or fails with a documented error
            assert run_target(target, seed.read_bytes()) is None, (target, seed.name)
