"""Two demo boards and the inspector in headless Chromium against a real server: edits,
drags, cursors and a dropped image converge; both boards recover from a server restart
without losing the edit made while it was down; the inspector shows both peers and the
room's canonical root. Screenshots of each step go to tests/e2e/artifacts/ (git-ignored);
the assertions are on page content."""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any

import pytest

from .conftest import ARTIFACTS, Served

ROOM = "e2e-board"
# An 8x8 red PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEklEQVR4nGP4z8CAFWEXHbQSACj/P8Fu7N9hAAAAAElFTkSuQmCC"
)
INSPECTOR_CAPS = "room:get,room:list,room:capture,room:entries,room:presence,archive:list"
WAIT_MS = 20_000


def control(served: Served, token: str, family: str, command: str, **payload: Any) -> Any:
    req = urllib.request.Request(
        f"{served.url}/v1/control/{family}/{command}",
        data=json.dumps(payload).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = json.load(resp)
    assert body["ok"], body
    return body["result"]


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.mark.timeout(600)
def test_two_boards_converge_recover_and_show_in_the_inspector(
    served: Served, chromium: Any
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    ctx_a = chromium.new_context(viewport={"width": 1100, "height": 700})
    ctx_b = chromium.new_context(viewport={"width": 1100, "height": 700})
    errors: list[str] = []
    a, b = ctx_a.new_page(), ctx_b.new_page()
    for page in (a, b):
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
        )
    try:
        a.goto(f"{served.url}/demo/#room={ROOM}&name=alice")
        b.goto(f"{served.url}/demo/#room={ROOM}&name=bob")
        for page in (a, b):
            expect(page.get_by_test_id("status")).to_have_text("synced")
        shot(a, "01-a-synced")

        # 1. A note added and edited on A shows on B; dragged on B, it moves on A.
        a.get_by_test_id("add-note").click()
        a.get_by_test_id("note-text").fill("hello from alice")
        expect(b.get_by_test_id("note-text")).to_have_value("hello from alice")
        grip = b.get_by_test_id("grip").bounding_box()
        assert grip is not None
        b.mouse.move(grip["x"] + 20, grip["y"] + 10)
        b.mouse.down()
        b.mouse.move(grip["x"] + 220, grip["y"] + 160, steps=8)
        b.mouse.up()
        left_b = b.get_by_test_id("note").evaluate("n => n.style.left + ',' + n.style.top")
        assert left_b != "40px,40px"
        a.wait_for_function(
            "want => { const n = document.querySelector('[data-testid=note]');"
            " return n && n.style.left + ',' + n.style.top === want; }",
            arg=left_b,
            timeout=WAIT_MS,
        )
        b.get_by_test_id("note-text").fill("hello from alice, moved by bob")
        expect(a.get_by_test_id("note-text")).to_have_value("hello from alice, moved by bob")
        shot(a, "02-a-note-converged")
        shot(b, "02-b-note-converged")

        # 2. Each sees the other's cursor with its name.
        board_a = a.get_by_test_id("board").bounding_box()
        board_b = b.get_by_test_id("board").bounding_box()
        assert board_a is not None and board_b is not None
        a.mouse.move(board_a["x"] + 500, board_a["y"] + 300, steps=4)
        b.mouse.move(board_b["x"] + 600, board_b["y"] + 200, steps=4)
        expect(b.get_by_test_id("cursor")).to_contain_text("alice")
        expect(a.get_by_test_id("cursor")).to_contain_text("bob")
        expect(a.get_by_test_id("peers")).to_contain_text("2 online")
        shot(a, "03-a-sees-bob-cursor")
        shot(b, "03-b-sees-alice-cursor")

        # 3. An image dropped on A is uploaded as a blob and shows on B.
        transfer = a.evaluate_handle(
            "b64 => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));"
            " const dt = new DataTransfer();"
            " dt.items.add(new File([bytes], 'red.png', {type: 'image/png'})); return dt; }",
            base64.b64encode(PNG).decode(),
        )
        a.get_by_test_id("board").dispatch_event(
            "drop", {"dataTransfer": transfer, "clientX": 300, "clientY": 400}
        )
        for page in (a, b):
            expect(page.get_by_test_id("image-loaded")).to_have_count(1)
            page.wait_for_function(
                "() => { const i = document.querySelector('[data-testid=image-loaded]');"
                " return i && i.complete && i.naturalWidth === 8 && i.src.startsWith('blob:'); }",
                timeout=WAIT_MS,
            )
        hash_a = a.get_by_test_id("image").get_attribute("data-hash")
        assert hash_a is not None and hash_a.startswith("sha256:")
        assert b.get_by_test_id("image").get_attribute("data-hash") == hash_a
        shot(b, "04-b-sees-image")

        # 4. The server restarts: both go offline, A edits meanwhile, both come back synced.
        served.stop()
        for page in (a, b):
            expect(page.get_by_test_id("status")).to_have_text("offline")
        a.get_by_test_id("note-text").fill("written while the server was down")
        shot(a, "05-a-offline-edit")
        served.start()
        for page in (a, b):
            expect(page.get_by_test_id("status")).to_have_text("synced", timeout=40_000)
        expect(b.get_by_test_id("note-text")).to_have_value("written while the server was down")
        expect(a.get_by_test_id("note-text")).to_have_value("written while the server was down")
        for page in (a, b):
            expect(page.get_by_test_id("image-loaded")).to_have_count(1)
            expect(page.get_by_test_id("note")).to_have_count(1)
        shot(a, "06-a-recovered")
        shot(b, "06-b-recovered")

        # 5. The inspector (operator token in the fragment) shows both peers, the root, the
        # entries (room entries: no query spec defined) and each peer's presence state.
        token = served.mint(INSPECTOR_CAPS)
        view = control(served, token, "room", "get", room=ROOM)
        inspector = ctx_a.new_page()
        inspector.on("pageerror", lambda exc: errors.append(str(exc)))
        inspector.goto(f"{served.url}/inspect/#room={ROOM}&token={token}")
        expect(inspector.get_by_test_id("room-peers")).to_have_text("2")
        assert "token=" not in inspector.url, "the token stayed in the address bar"
        expect(inspector.get_by_test_id("room-root")).to_have_text(view["root"])
        row = inspector.locator(f"[data-testid=room-row][data-room={ROOM}]")
        expect(row).to_contain_text("2")
        expect(inspector.get_by_test_id("entries")).to_contain_text("/notes/")
        expect(inspector.get_by_test_id("entries")).to_contain_text(
            '"written while the server was down"'
        )
        expect(inspector.get_by_test_id("capture")).to_contain_text("presence")
        presence = inspector.get_by_test_id("presence")
        expect(presence.get_by_test_id("presence-state")).to_have_count(2)
        expect(presence).to_contain_text('"name": "alice"')
        expect(presence).to_contain_text('"name": "bob"')
        expect(presence).to_contain_text('"color"')
        # Metrics charts from /metrics (this process started after the restart).
        expect(inspector.get_by_role("img", name="connections chart")).to_be_visible()
        expect(inspector.get_by_role("img", name="messages in /s chart")).to_be_visible()
        shot(inspector, "07-inspector")
        assert control(served, token, "room", "get", room=ROOM)["peers"] == 2
        # Both replicas hold the server's canonical root (the board re-renders on changes).
        for page in (a, b):
            expect(page.get_by_test_id("root")).to_have_attribute("data-root", view["root"])
        assert errors == [], errors
    finally:
        ctx_a.close()
        ctx_b.close()
