"""Pieces the CLI commands share: settings from flags, errors as one line on stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from ..config import ConfigError, Settings, load_settings


def add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML config file (default: ./roomsync.toml if present)",
    )
    p.add_argument("--data-dir", default=None, help="data directory (server.data_dir)")


def settings_from(
    args: argparse.Namespace, *, env: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Load settings with the command's flags applied (``env``: the environment to read,
    default the process's); exit 2 with the message on error."""
    values = {"server.data_dir": getattr(args, "data_dir", None), **overrides}
    try:
        return load_settings(
            args.config, env=env, overrides={k: v for k, v in values.items() if v is not None}
        )
    except ConfigError as exc:
        die(str(exc), code=2)


def die(message: str, *, code: int = 1) -> NoReturn:
    print(f"roomsync: {message}", file=sys.stderr)
    raise SystemExit(code)
