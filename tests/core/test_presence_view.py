"""Unit tests of roomsync.core.presence_view: the client's view of the other peers."""

from __future__ import annotations

from roomsync.core.presence_view import PresenceEvent, PresenceInfo, PresenceView


def peer(name: str, state: object = None, actor: str | None = None) -> dict[str, object]:
    return {"peer": name, "actor": actor or f"actor-{name}", "state": state}


def info(name: str, state: object) -> PresenceInfo:
    return PresenceInfo(name, f"actor-{name}", state)


def test_welcome_snapshot_skips_our_own_peer_and_null_states() -> None:
    view = PresenceView()
    event = view.reset("me", [peer("a", {"x": 1}), peer("me", {"x": 2}), peer("b", None)])
    assert event == PresenceEvent(changed=(info("a", {"x": 1}),))
    assert view.peers == {"a": info("a", {"x": 1})} and view.self_peer == "me"


def test_a_new_snapshot_reports_who_left_and_who_changed() -> None:
    view = PresenceView()
    view.reset("me", [peer("a", 1), peer("b", 2)])
    event = view.reset("me2", [peer("b", 2), peer("c", 3)])
    assert event == PresenceEvent(changed=(info("c", 3),), left=("a",))  # b is unchanged


def test_update_batch() -> None:
    view = PresenceView()
    view.reset("me", [peer("a", 1)])
    event = view.update([peer("a", 2), peer("b", 1), peer("me", 9)])
    assert event == PresenceEvent(changed=(info("a", 2), info("b", 1)))
    assert view.update([peer("a", 2)]) == PresenceEvent()  # nothing new
    assert not view.update([])


def test_a_null_state_is_a_leave() -> None:
    view = PresenceView()
    view.reset("me", [peer("a", 1)])
    assert view.update([peer("a", None)]) == PresenceEvent(left=("a",))
    assert "a" not in view.peers
    # A peer unknown to the view that clears its state: nothing to report.
    assert view.update([peer("z", None)]) == PresenceEvent()


def test_presence_leave() -> None:
    view = PresenceView()
    view.reset("me", [peer("a", 1)])
    assert view.leave("a") == PresenceEvent(left=("a",))
    assert view.leave("a") == PresenceEvent()


def test_clear_on_disconnect_reports_everyone_as_left() -> None:
    view = PresenceView()
    view.reset("me", [peer("a", 1), peer("b", 2)])
    assert view.clear() == PresenceEvent(left=("a", "b"))
    assert view.peers == {} and view.self_peer is None
    assert not view.clear()


def test_malformed_items_are_ignored() -> None:
    view = PresenceView()
    event = view.reset("me", ["nope", {"peer": 3, "state": 1}, {"state": 1}, None])
    assert not event
    view.update([{"peer": "a", "state": 1}, 7])  # no actor: empty string
    assert view.peers == {"a": PresenceInfo("a", "", 1)}
    view.update([{"peer": "b", "actor": 5, "state": 1}])
    assert view.peers["b"].actor == ""


def test_event_truthiness() -> None:
    assert not PresenceEvent()
    assert PresenceEvent(left=("a",))
    assert PresenceEvent(changed=(info("a", 1),))
