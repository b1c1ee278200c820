"""Operator tools as a library (SPEC §7, issue 12): what the operator commands of the CLI
run (``roomsync evidence``, ``roomsync capture diff``, ...), one module per tool,
importable without the CLI.

- :mod:`.capture_diff`: align two peers' captured streams (``room capture``) and find
  where they diverge; pure, no I/O.
- :mod:`.evidence`: collect the runbook's evidence bundle from a live node, check it for
  secrets, write it as one ``.tar.gz``.
- :mod:`.checks`: the steps of the runbook's triage order as data, and the pure rules that
  turn an observation into a verdict (cause, next action, the runbook's words); no I/O.
- :mod:`.probe`: observe a live node step by step (HTTP, TLS, raw WebSocket, the control
  plane) and judge each step with :mod:`.checks`: ``roomsync doctor`` and ``roomsync
  canary`` render its report.

Its API is its modules; importing the package imports none of them.
"""

__all__ = ["capture_diff", "checks", "evidence", "probe"]
