"""``roomsync`` command line: thin commands over the library (SPEC §3, §7).

Commands: ``serve``, ``token mint|inspect``, ``config show``, ``replay``, ``control``,
``explain``, ``capture diff``, ``evidence``. Each command prints machine-readable output
on stdout (tokens, JSON) and diagnostics on stderr, and exits non-zero on failure with a
one-line reason.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import (
    canary_cmd,
    capture_cmd,
    config_cmd,
    control_cmd,
    doctor_cmd,
    evidence_cmd,
    explain_cmd,
    replay_cmd,
    serve_cmd,
    token_cmd,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomsync", description="Self-hostable realtime sync server for collaborative apps."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_cmd.register(sub)
    token_cmd.register(sub)
    config_cmd.register(sub)
    replay_cmd.register(sub)
    control_cmd.register(sub)
    explain_cmd.register(sub)
    doctor_cmd.register(sub)
    canary_cmd.register(sub)
    capture_cmd.register(sub)
    evidence_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
