"""``roomsync explain`` and the one table behind it (``roomsync.core.explain``, issue 12).

Every code the server, the SDK and the control plane use has an explanation, found by
enumerating them (the enums, the registry's preconditions, and every ``Rejected(...)`` /
``not_found(...)`` in the source, read with ``ast``); the next actions are the ones of
``CLOSE_ACTIONS`` and ``RejectClass.next_action`` and agree with the SDK's reconnect
table; ``docs/codes.md`` is the table; the CLI answers 0 / 2 with text or JSON.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import roomsync
from roomsync.cli import explain_cmd
from roomsync.cli.main import main
from roomsync.client.errors import ConnectError, ConnectionClosed
from roomsync.control import REGISTRY
from roomsync.core.codes import CLOSE_ACTIONS, AuthReason, CloseCode, ErrorCode, RejectClass
from roomsync.core.explain import (
    RUNBOOK_DOC,
    TABLE,
    Explanation,
    Kind,
    close_next_action,
    explain,
    known_codes,
    markdown,
    related,
    suggest,
)
from roomsync.core.reconnect import ABNORMAL_CLOSURE, ACTION_ON_CLOSE, CloseAction, close_action

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(roomsync.__file__).resolve().parent
REGENERATE = "regenerate: roomsync explain --markdown > docs/codes.md"

#: RFC 6455 §7.4.1 and the IANA registry: every code a client may meet, sent or reported.
RFC_CLOSE_CODES = range(1000, 1016)

#: Reject codes SPEC §6 names that no handler raises yet (the query family is on its way).
SPEC_ONLY_REJECT_CODES = {"query-spec-missing"}

#: The codes the brief (issue 12) lists by name.
NAMED = {
    "archive-ref-unknown",
    "lineage-checkpoint-invalid",
    "proposal-not-validated",
    "proposal-stale",
    "query-spec-missing",
    "archive-is-checkpoint",
    "room-exists",
    "proposal-final",
    "archive-corrupt",
    "room-not-forked",
    "promotion-refused",
    "capability-missing",
    "control-rate",
    "store-unavailable",
}


def one(code: str | int, kind: Kind) -> Explanation:
    found = explain(code, kind)
    assert len(found) == 1, (code, kind, found)
    return found[0]


# -- every code has an explanation -----------------------------------------------------


def test_every_close_code_has_one() -> None:
    codes = {int(c) for c in CloseCode} | set(RFC_CLOSE_CODES) | set(ACTION_ON_CLOSE)
    assert codes == {int(c) for c in known_codes(Kind.CLOSE)}
    for code in codes:
        one(code, Kind.CLOSE)


@pytest.mark.parametrize(
    ("enum", "kind"),
    [
        (ErrorCode, Kind.ERROR),
        (RejectClass, Kind.REJECT_CLASS),
        (AuthReason, Kind.AUTH_REASON),
    ],
)
def test_every_member_of_each_enum_has_one(enum: type, kind: Kind) -> None:
    assert set(known_codes(kind)) == {str(member) for member in enum}
    for member in enum:
        assert one(str(member), kind).code == str(member)


def _class_of(node: ast.expr, where: str) -> RejectClass:
    assert isinstance(node, ast.Attribute), f"{where}: reject class {ast.unparse(node)}"
    return RejectClass[node.attr]


def _codes_of(node: ast.expr, where: str) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    # Rejected(UNAUTHENTICATED, str(exc.reason), ...): the token's AuthReason.
    text = ast.unparse(node)
    if re.fullmatch(r"(str\()?\w+\.reason\)?", text):
        return {str(reason) for reason in AuthReason}
    raise AssertionError(f"{where}: cannot tell the reject code of {text}; teach this test")


def reject_codes_in_source() -> dict[str, set[RejectClass]]:
    """Every reject code ``src/roomsync`` can answer, with the classes it is sent with."""
    found: dict[str, set[RejectClass]] = defaultdict(set)
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            where = f"{path.relative_to(SRC)}:{node.lineno}"
            if name == "not_found":
                what = node.args[0]
                assert isinstance(what, ast.Constant), f"{where}: not_found of {what}"
                found[f"{what.value}-unknown"].add(RejectClass.NOT_FOUND)
            elif name == "Rejected":
                if path.name == "rejects.py" and isinstance(node.args[1], ast.JoinedStr):
                    continue  # not_found's own body: its calls are counted above
                klass = _class_of(node.args[0], where)
                for code in _codes_of(node.args[1], where):
                    found[code].add(klass)
    return dict(found)


def test_the_source_scan_finds_the_codes_it_should() -> None:
    found = reject_codes_in_source()
    assert {"room-unknown", "capability-missing", "proposal-stale", "token-expired"} <= set(found)
    assert found["archive-ref-unknown"] == {RejectClass.PRECONDITION_FAILED}


def test_every_reject_code_in_the_source_has_one_with_its_class() -> None:
    missing = []
    for code, classes in sorted(reject_codes_in_source().items()):
        for klass in classes:
            if not any(e.reject_class is klass for e in explain(code)):
                missing.append(f"{code} ({klass})")
    assert not missing, "explain these in roomsync/core/explain.py: " + ", ".join(missing)


def test_every_precondition_of_the_registry_has_one() -> None:
    preconditions = {p for command in REGISTRY for p in command.preconditions}
    assert preconditions
    for code in preconditions:
        assert one(code, Kind.REJECT_CODE).reject_class is RejectClass.PRECONDITION_FAILED


def test_the_named_codes_have_one_and_no_reject_code_is_stale() -> None:
    assert NAMED <= set(known_codes())
    in_use = set(reject_codes_in_source()) | SPEC_ONLY_REJECT_CODES
    stale = set(known_codes(Kind.REJECT_CODE)) - in_use
    assert not stale, f"reject codes nothing raises: {sorted(stale)}"


# -- one source: derived next actions ---------------------------------------------------


def test_close_codes_take_their_next_action_from_close_actions() -> None:
    for code in CloseCode:
        assert one(int(code), Kind.CLOSE).next_action == CLOSE_ACTIONS[code]
        assert close_next_action(int(code)) == CLOSE_ACTIONS[code]


def test_reject_classes_take_their_next_action_and_status_from_reject_class() -> None:
    for klass in RejectClass:
        e = one(str(klass), Kind.REJECT_CLASS)
        assert e.next_action == klass.next_action
        assert e.http_status == klass.http_status
        # Its causes are its codes, from the same table.
        codes = [x.code for x in TABLE if x.reject_class is klass and x is not e]
        assert codes and [c.split("`")[1] for c in e.causes] == codes


def test_derived_actions_fill_in_the_close_or_class_they_come_with() -> None:
    assert (
        one("resync-required", Kind.ERROR).next_action == CLOSE_ACTIONS[CloseCode.RESYNC_REQUIRED]
    )
    overload = one("overload", Kind.ERROR).next_action
    assert overload.startswith(CLOSE_ACTIONS[CloseCode.INTERNAL]) and "retry_after_ms" in overload
    assert one("invalid", Kind.REJECT_CODE).next_action == RejectClass.INVALID_PAYLOAD.next_action
    assert (
        one("token-expired", Kind.AUTH_REASON).next_action == CLOSE_ACTIONS[CloseCode.TOKEN_EXPIRED]
    )
    for e in TABLE:
        assert "{next}" not in e.next_action, e.code


#: What the SDK's action must say in the next action, and what it must not.
SAYS: dict[CloseAction, tuple[tuple[str, ...], tuple[str, ...]]] = {
    CloseAction.RETRY: (("retry", "reconnect"), ("stop", "resync", "refresh")),
    CloseAction.RESYNC: (("resync",), ("stop", "refresh")),
    CloseAction.REFRESH_TOKEN: (("refresh",), ("stop", "resync")),
    CloseAction.STOP: (("stop",), ("retry", "reconnect")),
}


def test_the_next_action_of_every_close_code_says_what_the_reconnect_table_does() -> None:
    for e in explain_all(Kind.CLOSE):
        action = close_action(int(e.code))
        assert e.client_action is action
        must, must_not = SAYS[action]
        text = e.next_action.lower()
        assert any(word in text for word in must), (e.code, action, e.next_action)
        assert not any(word in text for word in must_not), (e.code, action, e.next_action)
    # ... and every code of the reconnect table is explained.
    assert set(ACTION_ON_CLOSE) <= {int(c) for c in known_codes(Kind.CLOSE)}


def test_error_codes_that_end_a_session_for_good_say_stop() -> None:
    for e in explain_all(Kind.ERROR):
        if e.close is not None and close_action(e.close) is CloseAction.STOP:
            assert "stop" in e.next_action, e.code


def explain_all(kind: Kind) -> list[Explanation]:
    return [e for e in TABLE if e.kind is kind]


def test_the_sdk_errors_read_the_table() -> None:
    dropped = ConnectionClosed(ABNORMAL_CLOSURE)
    assert dropped.next_action == one(ABNORMAL_CLOSURE, Kind.CLOSE).next_action
    assert ConnectionClosed(4001).next_action == CLOSE_ACTIONS[CloseCode.RESYNC_REQUIRED]
    assert ConnectionClosed(1001).next_action == one(1001, Kind.CLOSE).next_action
    refused = ConnectError("ws://x/ws/r", "closed", close_code=4003, error={"code": "auth"})
    assert refused.next_action == CLOSE_ACTIONS[CloseCode.FORBIDDEN]
    assert "3999" in close_next_action(3999)


# -- content ------------------------------------------------------------------------------


def test_every_explanation_is_complete() -> None:
    for e in TABLE:
        assert e.meaning and e.next_action and e.causes, e.code
        assert all(cause.strip() for cause in e.causes), e.code
        assert e.code == e.code.strip().lower(), e.code
        json.dumps(e.to_json())


def test_codes_are_unique_within_a_kind() -> None:
    pairs = [(e.kind, e.code) for e in TABLE]
    assert len(pairs) == len(set(pairs))


def test_runbook_sections_exist_in_the_operations_doc() -> None:
    headings = set(re.findall(r"^### (.+)$", (ROOT / RUNBOOK_DOC).read_text(), re.M))
    sections = {e.runbook for e in TABLE if e.runbook is not None}
    assert sections and sections <= headings, sections - headings


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (4001, "peer fell behind or stream budget issue"),
        (4008, "tune client send behavior and/or ingress limits"),
        (1011, "investigate capacity/backpressure and retry policy"),
        (4002, "token expired"),
    ],
)
def test_causes_use_the_runbooks_words(code: int, words: str) -> None:
    assert words in one(code, Kind.CLOSE).causes[0]


def test_a_code_of_several_kinds_answers_each_and_lookup_is_forgiving() -> None:
    kinds = {e.kind for e in explain("forbidden")}
    assert kinds == {Kind.ERROR, Kind.REJECT_CLASS}
    assert explain("RESYNC_REQUIRED") == explain("resync-required")
    assert explain(" 4001 ") == explain(4001)
    assert explain("forbidden", Kind.ERROR)[0].kind is Kind.ERROR
    assert explain("no-such-code") == ()


def test_related_codes_link_the_kinds() -> None:
    assert "resync-required" in related(one(4001, Kind.CLOSE))
    assert "4001" in related(one("resync-required", Kind.ERROR))
    assert "precondition-failed" in related(one("proposal-stale", Kind.REJECT_CODE))
    assert {"4002", "auth", "unauthenticated"} <= set(
        related(one("token-expired", Kind.AUTH_REASON))
    )
    for e in TABLE:
        assert all(explain(code) for code in related(e)), e.code


def test_suggestions_are_close_known_codes() -> None:
    assert suggest("archive-ref-unknwn")[0] == "archive-ref-unknown"
    assert "4008" in suggest(4009)
    assert set(suggest("proposal-stal")) <= set(known_codes())


# -- docs -----------------------------------------------------------------------------------


def test_docs_codes_md_is_the_table() -> None:
    text = (ROOT / "docs" / "codes.md").read_text()
    assert text == markdown(), REGENERATE


def test_the_docs_name_every_code_and_point_to_explain() -> None:
    text = (ROOT / "docs" / "codes.md").read_text()
    for e in TABLE:
        assert f"| {e.code} |" in text or f"| `{e.code}` |" in text, e.code
    assert "roomsync explain" in (ROOT / "README.md").read_text()
    close_codes = (ROOT / "docs" / "operations.md").read_text().split("### Close codes", 1)[1]
    assert "roomsync explain" in close_codes.split("\n### ", 1)[0]


# -- the CLI --------------------------------------------------------------------------------


def test_explain_a_close_code_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "4001"]) == 0
    out = capsys.readouterr().out
    e = one(4001, Kind.CLOSE)
    assert out.startswith("4001  close code\n")
    assert e.meaning in out and f"next action: {e.next_action}" in out
    assert all(f"    - {cause}" in out for cause in e.causes)
    assert f'runbook: {RUNBOOK_DOC}, "Close codes"' in out
    assert "\033[" not in out  # not a terminal: no colour


def test_explain_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "forbidden", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["query"] == "forbidden"
    assert [x["kind"] for x in body["explanations"]] == ["error", "reject-class"]
    first = body["explanations"][1]
    assert set(first) == {
        "code",
        "kind",
        "meaning",
        "causes",
        "next_action",
        "runbook",
        "close",
        "reject_class",
        "http_status",
        "client_action",
        "see_also",
    }
    assert first["http_status"] == 403 and first["next_action"] == RejectClass.FORBIDDEN.next_action


def test_explain_unknown_code_exits_2_with_suggestions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "proposal-stal"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "proposal-stale" in captured.err
    assert main(["explain", "proposal-stal", "--json"]) == 2
    body = json.loads(capsys.readouterr().out)
    assert body["explanations"] == [] and body["suggestions"][0] == "proposal-stale"
    assert main(["explain"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["explain", "4001", "--kind", "nonsense"])
    assert exc.value.code == 2


def test_explain_list_groups_every_code_by_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--list"]) == 0
    out = capsys.readouterr().out
    for kind in Kind:
        assert f"({kind})" in out
    for e in TABLE:
        assert re.search(rf"^  {re.escape(e.code)} ", out, re.M), e.code
    assert main(["explain", "--list", "--json"]) == 0
    grouped = json.loads(capsys.readouterr().out)
    assert list(grouped) == [str(k) for k in Kind]
    assert sum(len(v) for v in grouped.values()) == len(TABLE)
    assert main(["explain", "--list", "--kind", "reject-code"]) == 0
    assert "(reject-code)" in (out := capsys.readouterr().out) and "(close)" not in out


def test_colour_only_when_asked_for() -> None:
    e = one("proposal-stale", Kind.REJECT_CODE)
    plain, coloured = explain_cmd.render(e), explain_cmd.render(e, color=True)
    assert "\033[" not in plain and "\033[" in coloured
    assert re.sub(r"\033\[[0-9;]*m", "", coloured) == plain
    assert "reject class: precondition-failed (HTTP 412)" in plain


def test_the_real_entry_point_and_no_server_import() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "roomsync.cli.main", "explain", "archive-ref-unknown", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    body = json.loads(ok.stdout)
    assert body["explanations"][0]["reject_class"] == "precondition-failed"
    bad = subprocess.run(
        [sys.executable, "-m", "roomsync.cli.main", "explain", "4009"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "4008" in bad.stderr
    code = (
        "import sys, roomsync.cli.explain_cmd; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[:2] == ['roomsync', 'server']); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
