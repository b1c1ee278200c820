"""The core stays sans-I/O (STYLE lesson 1): no asyncio, socket, threading, time, os, random."""

from __future__ import annotations

import ast
from pathlib import Path

import roomsync.core

FORBIDDEN = {"asyncio", "socket", "threading", "time", "os", "random", "subprocess", "select"}
CORE = Path(roomsync.core.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_no_io_modules() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 10
    offenders = {f.name: sorted(imported_modules(f) & FORBIDDEN) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_core_imports_only_stdlib_and_itself() -> None:
    import sys

    allowed = set(sys.stdlib_module_names) | {"roomsync"}
    for f in sorted(CORE.glob("*.py")):
        extra = imported_modules(f) - allowed
        assert not extra, f"{f.name} imports {extra}"
