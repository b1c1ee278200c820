"""The scenario registry and the run loop behind ``python -m roomsync.testing.reliability``
and ``tests/reliability``.

A new scenario is one more :class:`~.harness.Scenario` in :func:`scenarios`; one this
build cannot run is listed in :data:`~.harness.NOT_COVERED` and printed as such. A
scenario that needs PostgreSQL, Redis or root is skipped when they are missing (the
pytest wrapper fails instead under CI).
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from ..postgres import find_server_async
from ..redis import ping as redis_ping
from .cluster import redis_server
from .harness import NOT_COVERED, Context, Scenario, private_dir, raise_fd_limit
from .scorecard import Outcome, Scorecard

__all__ = ["missing", "run_one", "run_scenarios", "scenarios"]


def scenarios() -> list[Scenario]:
    """Every scenario, in run order."""
    from . import backends, cluster, disk, durability, floods, fuzz, overload

    shared = ("postgres", "redis")

    return [
        Scenario("durability", "kill -9 under SDK write load (SQLite)", durability.run),
        Scenario("disk-full", "data dir on a tmpfs filled to ENOSPC mid-load", disk.run, ("root",)),
        Scenario("blobs-s3-down", "S3 endpoint (moto) stopped and restarted", backends.run_s3),
        Scenario(
            "blobs-read-only",
            "blob directory remounted read-only, then writable",
            backends.run_read_only,
            ("root",),
        ),
        Scenario(
            "overload", "reconnect storm, rate burst, slow consumers, many rooms", overload.run
        ),
        Scenario("floods", "the hostile floods of tests/security, with figures", floods.run),
        Scenario("fuzz", "hypothesis and atheris on the parsers, a fuzzed wire", fuzz.run),
        Scenario(
            "cluster-kill",
            "kill -9 of one node of three under SDK load (PostgreSQL + Redis)",
            cluster.run_kill,
            shared,
        ),
        Scenario(
            "postgres-down",
            "PostgreSQL connections reset, then black-holed, under SDK load",
            cluster.run_postgres,
            shared,
        ),
        Scenario(
            "redis-down",
            "one node's Redis reset, then black-holed, under a two-node load",
            cluster.run_redis,
            shared,
        ),
        Scenario(
            "partitions",
            "a node in its own network namespace: backends black-holed, then its link down",
            cluster.run_partition,
            (*shared, "root"),
        ),
    ]


async def missing(needs: Sequence[str]) -> str | None:
    """Why a scenario with ``needs`` cannot run here, or None."""
    for need in needs:
        if need == "root" and os.geteuid() != 0:
            return "needs root (mount -t tmpfs, ip netns)"
        if need == "postgres":
            server, why = await find_server_async()
            if server is None:
                return f"needs PostgreSQL ({why})"
        if need == "redis":
            why = await redis_ping(redis_server())
            if why:
                return f"needs Redis ({why})"
    return None


async def run_one(scenario: Scenario, profile: str, workdir: Path | None = None) -> Outcome:
    """Run ``scenario`` in a private directory (removed after); its outcome. An
    exception out of the scenario is a failure of the scenario, with its traceback."""
    out = Outcome(scenario.name, scenario.title)
    skip = await missing(scenario.needs)
    if skip is not None:
        out.skipped = skip
        return out
    own = workdir is None
    work = private_dir(f"roomsync-rel-{scenario.name}-") if workdir is None else workdir
    t0 = time.monotonic()
    try:
        await scenario.run(Context(profile, work), out)
    except Exception as exc:
        out.failures.append(
            f"scenario raised {type(exc).__name__}: {exc}\n" + traceback.format_exc(limit=8)
        )
    finally:
        out.seconds = time.monotonic() - t0
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return out


async def run_scenarios(profile: str, only: Sequence[str] = ()) -> Scorecard:
    """Run the scenarios (all, or those named in ``only``) of ``profile``."""
    raise_fd_limit(65536)
    card = Scorecard(profile, not_covered=list(NOT_COVERED))
    known = scenarios()
    names = {s.name for s in known}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {sorted(names)}")
    for scenario in known:
        if only and scenario.name not in only:
            continue
        card.outcomes.append(await run_one(scenario, profile))
    return card
