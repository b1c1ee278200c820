"""The reliability and security suite (issue 16): real servers under crashes, a full
disk, backend faults, overload, fuzzed input and hostile floods, with a scorecard.

Run it as ``python -m roomsync.testing.reliability [--long] [--only NAME ...] [--json
FILE]``, or through ``tests/reliability`` (pytest marker ``reliability``), which runs the
quick profile's scenarios. ``docs/operations.md`` ("Reliability suite") explains the
scorecard.

- :mod:`.runner`: the scenario registry, ``run_scenarios``, ``run_one``.
- :mod:`.scorecard`: :class:`~.scorecard.Outcome` and :class:`~.scorecard.Scorecard`.
- :mod:`.harness`: a killable ``roomsync serve`` node, ``/healthz`` and RSS probes,
  ``/metrics`` readers, the profile context.
- scenarios: :mod:`.durability`, :mod:`.disk`, :mod:`.backends`, :mod:`.overload`,
  :mod:`.floods`, :mod:`.fuzz` (targets in :mod:`.fuzz_targets`).
"""

__all__ = [
    "backends",
    "disk",
    "durability",
    "floods",
    "fuzz",
    "fuzz_targets",
    "harness",
    "overload",
    "runner",
    "scorecard",
]
