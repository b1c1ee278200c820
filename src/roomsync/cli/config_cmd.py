"""``roomsync config show``: the effective configuration, secrets redacted."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import redacted, to_toml
from .common import add_config_flags, settings_from


def register(sub: Any) -> None:
    p = sub.add_parser("config", help="inspect configuration")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = csub.add_parser("show", help="print the effective config (defaults+file+env+flags)")
    add_config_flags(show)
    show.add_argument("--json", action="store_true", help="JSON instead of TOML")
    show.set_defaults(run=run_show)


def run_show(args: argparse.Namespace) -> int:
    data = redacted(settings_from(args))
    print(
        json.dumps(data, indent=2) if args.json else to_toml(data),
        end="" if not args.json else "\n",
    )
    return 0
