"""The reliability suite's quick profile (issue 16), one test per scenario, against real
servers: crashes found and acked changes lost must be 0 and every invariant hold.
``python -m roomsync.testing.reliability`` runs the same scenarios and prints the
scorecard; ``--long`` runs the full counts."""

from __future__ import annotations

import os

import pytest

from roomsync.testing.reliability.harness import raise_fd_limit
from roomsync.testing.reliability.runner import missing, run_one, scenarios

pytestmark = pytest.mark.reliability

SCENARIOS = {s.name: s for s in scenarios() if s.quick}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_scenario(name: str) -> None:
    scenario = SCENARIOS[name]
    why = await missing(scenario.needs)  # root, PostgreSQL, Redis
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} {why} in CI")
        pytest.skip(why)
    raise_fd_limit(65536)
    out = await run_one(scenario, "quick")
    report = "\n".join(out.failures)
    assert out.crashes == 0, report
    assert out.lost == 0, report
    assert out.ok, report
