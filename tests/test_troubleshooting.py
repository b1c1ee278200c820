"""docs/troubleshooting.md answers the operator runbook (docs/runbook.txt, the project's
seed) line by line, and every roomsync command it shows is a real command line."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from roomsync.cli.main import build_parser
from roomsync.control import REGISTRY
from roomsync.core.explain import explain

DOCS = Path(__file__).resolve().parents[1] / "docs"
GUIDE = (DOCS / "troubleshooting.md").read_text()
RUNBOOK = (DOCS / "runbook.txt").read_text()
# Lines of the runbook page that are not guidance (the web page's chrome).
CHROME = {"Skip to main content", "Troubleshooting"}


def _runbook_lines() -> list[str]:
    lines = []
    for raw in RUNBOOK.splitlines():
        line = raw.strip().lstrip("•").strip()
        if line and line not in CHROME:
            lines.append(line)
    return lines


def _quoted(line: str) -> str:
    """How a runbook line appears in the guide: headings without a trailing colon,
    numbered steps with their number."""
    return line.rstrip(":")


@pytest.mark.parametrize("line", _runbook_lines())
def test_every_runbook_line_is_answered(line: str) -> None:
    assert _quoted(line) in GUIDE, f"docs/troubleshooting.md does not quote: {line!r}"


def _commands() -> list[str]:
    found = []
    prose = re.sub(r"```.*?```", "", GUIDE, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        if span.startswith("roomsync "):
            found.append(span)
    for block in re.findall(r"```sh\n(.*?)```", GUIDE, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            found += re.findall(r"(roomsync [^)|;]+?)(?:\)|$)", line)
    return found


def _argv(command: str) -> list[str]:
    text = command.replace("$ROOMSYNC_URL", "http://127.0.0.1:8787")
    text = text.replace('"$ROOMSYNC_OPERATOR_TOKEN"', "tok").replace("$TOKEN", "tok")
    text = re.sub(r"<[^>]+>", "x", text).replace("…", "x")
    return shlex.split(text)[1:]


def test_every_command_shown_parses() -> None:
    parser = build_parser()
    (subcommands,) = [
        a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ]
    commands = _commands()
    assert len(commands) >= 30
    for command in commands:
        argv = _argv(command)
        assert argv[0] in subcommands, command
        if len(argv) == 1:  # the command named, not a command line
            continue
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"not a valid roomsync command line: {command}")
        if argv[0] == "control" and len(argv) > 2 and not argv[1].startswith("-"):
            assert REGISTRY.get(argv[1], argv[2]) is not None, command
        if argv[0] == "explain" and argv[1] != "CODE":  # CODE: the placeholder
            assert explain(argv[1]), command
