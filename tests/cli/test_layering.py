"""The CLI's offline commands stand on the library, not on the server (issue 10)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["roomsync.cli.replay_cmd", "roomsync.cli.token_cmd"])
def test_offline_commands_do_not_import_the_server(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[:2] == ['roomsync', 'server']); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
