"""Docs are part of the contract (STYLE lesson 10): every metric, message type, close code
and error code is documented, and the README quick start is exactly what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from roomsync.core.codec import CLIENT_TYPES, SERVER_TYPES
from roomsync.core.codes import CloseCode, ErrorCode
from roomsync.server.metrics import METRIC_NAMES, Metrics

ROOT = Path(__file__).resolve().parents[1]


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    """The "Metrics" table of docs/operations.md lists exactly what ``/metrics`` exports."""
    registry = Metrics().registry
    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in registry.collect()
    }
    assert exported == set(METRIC_NAMES)
    ops = (ROOT / "docs" / "operations.md").read_text()
    section = ops.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(roomsync_[a-z_]+)` \|", section, re.M)
    assert len(documented) == len(set(documented))
    assert sorted(documented) == sorted(exported)


def test_every_message_type_and_close_code_is_documented() -> None:
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    for type_ in sorted(CLIENT_TYPES | SERVER_TYPES):
        assert f"`{type_}" in protocol, type_
    for code in CloseCode:
        assert f"| {int(code)} |" in protocol, code


def test_every_error_code_is_documented() -> None:
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    table = protocol.split("### Error codes", 1)[1].split("\n#", 1)[0]
    documented = re.findall(r"^\| `([a-z-]+)` \|", table, re.M)
    assert sorted(documented) == sorted(code.value for code in ErrorCode)


#: ``"code": "<literal>"`` in source: an error code written out instead of ErrorCode.X.
_CODE_LITERAL = re.compile(r"""["']code["']\s*:\s*["']([^"']*)["']""")


def test_every_error_code_used_in_the_source_is_an_error_code() -> None:
    codes = {code.value for code in ErrorCode}
    unknown = [
        f"{path.relative_to(ROOT)}: {literal!r}"
        for path in sorted((ROOT / "src" / "roomsync").rglob("*.py"))
        for literal in _CODE_LITERAL.findall(path.read_text(encoding="utf-8"))
        if literal not in codes
    ]
    assert not unknown


def test_readme_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", section, re.S)
    assert len(commands) == 2
    assert "roomsync serve" in commands[0] and "pip install" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1].strip() in ci


async def test_readme_first_client_session_runs(tmp_path: Path) -> None:
    from roomsync.testing.server import running_server

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A first client session", 1)[1]
    code = re.search(r"```python\n(.*?)\n```", section, re.S)
    assert code is not None
    async with running_server(tmp_path) as srv:
        source = code.group(1).replace("http://127.0.0.1:8787", srv.url)
        source = source.replace("asyncio.run(main())", "")
        namespace: dict[str, object] = {}
        exec(compile(source, "README.md", "exec"), namespace)
        await namespace["main"]()  # type: ignore[operator]
        loaded = await srv.server.store.load_room("my-room", now_ms=0)
        assert [c.path for c in loaded.entries] == ["/todos/1"]
        assert b"buy milk" in (loaded.entries[0].value or b"")
