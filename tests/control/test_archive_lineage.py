"""Archives and lineage against a real server and real sockets (SPEC §6): ``archive
create list get restore delete verify``, ``room fork propose validate promote reject``,
``room delete`` and ``topology place``, with every named precondition."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from roomsync.client import Backoff, RoomClient, connect
from roomsync.testing.control import call, ok, refused
from roomsync.testing.server import ServerHandle, wait_until
from roomsync.testing.wsclient import closed, hello

FAST = Backoff(base=0.01, factor=2, max=0.05)
UNKNOWN = "sha256:" + "0" * 64


async def client(srv: ServerHandle, room: str, actor: str) -> RoomClient:
    return await connect(srv.url, room, actor=actor, backoff=FAST)


async def test_archive_create_list_get_verify(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    async with await client(srv, "doc", "alice") as alice:
        alice.set_json("/a", {"n": 1})
        alice.set_json("/b", [1, 2])
        alice.delete("/b")
        alice.set_json("/c", "x")
        await alice.flush()
        first = await ok(http, srv, "archive create", {"room": "doc"})
        assert first["room"] == "doc" and first["parent"] is None
        assert first["root"] == alice.root and first["count"] == 2
        live = await ok(http, srv, "room get", {"room": "doc"})
        assert first["ref"].startswith("sha256:") and first["head"] == live["head"]
        # Unchanged: the same bytes, the same ref, still the lineage head.
        again = await ok(http, srv, "archive create", {"room": "doc"})
        assert again == first
        alice.set_json("/d", True)
        await alice.flush()
        second = await ok(http, srv, "archive create", {"room": "doc"})
        assert second["parent"] == first["ref"] and second["ref"] != first["ref"]
    listed = await ok(http, srv, "archive list", {"room": "doc", "limit": 1})
    assert [a["ref"] for a in listed["archives"]] == [second["ref"]]
    assert listed["lineage"] == [second["ref"], first["ref"]]
    rest = await ok(http, srv, "archive list", {"room": "doc", "cursor": listed["cursor"]})
    assert [a["ref"] for a in rest["archives"]] == [first["ref"]] and rest["cursor"] is None
    assert await ok(http, srv, "archive get", {"ref": first["ref"]}) == first
    verified = await ok(http, srv, "archive verify", {"ref": second["ref"]})
    assert verified["ok"] is True and verified["hash_ok"] is True
    assert verified["replayed_root"] == verified["root"] == second["root"]
    view = await ok(http, srv, "room get", {"room": "doc"})
    assert view["lineage"] == {"archives": [second["ref"], first["ref"]]}
    for command in ("get", "verify", "delete"):
        await refused(
            http, srv, f"archive {command}", {"ref": UNKNOWN}, status=412,
            code="archive-ref-unknown",
        )  # fmt: skip
    await refused(http, srv, "archive create", {"room": "nowhere"}, status=404, code="room-unknown")


async def test_verify_detects_a_tampered_snapshot(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    async with await client(srv, "doc", "alice") as alice:
        alice.set_json("/a", 1)
        await alice.flush()
    made = await ok(http, srv, "archive create", {"room": "doc"})
    store = srv.server.store
    real = await store.get_archive(made["ref"])
    assert real is not None
    # A forged archive record whose bytes are another room's: hash and root disagree.
    from dataclasses import replace

    body = [await store.archive_chunk(real.ref, i) for i in range(real.chunks)]
    forged = replace(real, ref="sha256:" + "ab" * 32, root="11" * 32)
    await store.put_archive(forged, body)
    verified = await ok(http, srv, "archive verify", {"ref": forged.ref})
    assert verified["ok"] is False and verified["hash_ok"] is False
    assert verified["replayed_root"] == real.root != verified["root"]
    await refused(
        http,
        srv,
        "archive restore",
        {"room": "doc", "ref": forged.ref},
        status=412,
        code="archive-corrupt",
    )


async def test_restore_resyncs_peers_and_previous_undoes_it(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    async with (
        await client(srv, "doc", "alice") as alice,
        await client(srv, "doc", "bob") as bob,
    ):
        alice.set_json("/keep", 1)
        alice.set_json("/gone", 2)
        await alice.flush()
        snap = await ok(http, srv, "archive create", {"room": "doc"})
        bob.set_json("/keep", 10)
        bob.delete("/gone")
        bob.set_json("/new", 3)
        await bob.flush()
        await wait_until(lambda: alice.root == bob.root)
        later_root = bob.root
        raw, _ = await hello(http, srv.ws_url("doc"))
        restored = await ok(http, srv, "archive restore", {"room": "doc", "ref": snap["ref"]})
        assert restored["root"] == snap["root"] and restored["previous"] is not None
        seen, code = await closed(raw)
        assert code == 4001
        errors = [m for m in seen if m["type"] == "error"]
        assert [(m["code"], m.get("reason")) for m in errors] == [("resync-required", "restored")]
        metric = srv.server.metrics.resyncs.labels("restored")._value.get()
        assert metric >= 3  # alice, bob and the raw peer
        await wait_until(lambda: alice.root == bob.root == snap["root"])
        assert alice.get_json("/keep") == 1 and bob.get_json("/gone") == 2
        assert bob.get("/new") is None
        assert alice.stats.resyncs >= 1 and bob.stats.resyncs >= 1
        view = await ok(http, srv, "room get", {"room": "doc"})
        assert view["root"] == snap["root"] and view["head"] == restored["head"]
        assert view["lineage"]["archives"][0] == snap["ref"]
        # Writes after a restore continue from its head.
        alice.set_json("/after", 1)
        await alice.flush()
        await wait_until(lambda: bob.get_json("/after") == 1)
        undo = await ok(http, srv, "archive restore", {"room": "doc", "ref": restored["previous"]})
        assert undo["root"] == later_root
        await wait_until(lambda: alice.root == bob.root == later_root)
    await refused(
        http,
        srv,
        "archive restore",
        {"room": "other", "ref": snap["ref"]},
        status=412,
        code="archive-ref-unknown",
    )


async def test_room_delete_archives_first_and_restore_brings_it_back(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    async with await client(srv, "doc", "alice") as alice:
        alice.set_json("/a", "kept")
        await alice.flush()
        root = alice.root
    raw, _ = await hello(http, srv.ws_url("doc"))
    deleted = await ok(http, srv, "room delete", {"room": "doc"})
    assert deleted["deleted"] is True and deleted["archive"] is not None
    assert deleted["closed"] == 1
    _, code = await closed(raw)
    assert code == 4004
    await refused(http, srv, "room get", {"room": "doc"}, status=404, code="room-unknown")
    back = await ok(http, srv, "archive restore", {"room": "doc", "ref": deleted["archive"]})
    assert back["root"] == root and back["previous"] is None
    async with await client(srv, "doc", "bob") as bob:
        await wait_until(lambda: bob.get_json("/a") == "kept")
    hard = await ok(http, srv, "room delete", {"room": "doc", "hard": True})
    assert hard["archive"] is None and hard["deleted"] is True
    await refused(http, srv, "room delete", {"room": "doc"}, status=404, code="room-unknown")


async def test_full_lineage_scenario_over_real_sockets(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    """SPEC §6 lineage, the acceptance scenario of issue 11 step by step."""
    async with (
        await client(srv, "parent", "alice") as alice,
        await client(srv, "parent", "watcher") as watcher,
    ):
        alice.set_json("/a", "base")
        alice.set_json("/b", "base")
        alice.set_json("/c", "base")
        await alice.flush()
        checkpoint = await ok(http, srv, "archive create", {"room": "parent"})
        forked = await ok(
            http,
            srv,
            "room fork",
            {"source": "parent", "checkpoint": checkpoint["ref"], "room": "child"},
        )
        assert forked["root"] == checkpoint["root"] and forked["source"] == "parent"
        view = await ok(http, srv, "room get", {"room": "child"})
        assert view["lineage"]["source"] == "parent"
        assert view["lineage"]["checkpoint"] == checkpoint["ref"]
        async with await client(srv, "child", "carol") as carol:
            await wait_until(lambda: carol.get_json("/a") == "base")
            alice.set_json("/a", "parent")  # the conflict: both sides change /a
            alice.set_json("/p", "parent only")
            carol.set_json("/a", "child")
            carol.set_json("/k", "child only")
            carol.delete("/c")
            await alice.flush()
            await carol.flush()
        proposal = await ok(http, srv, "room propose", {"room": "child"})
        assert proposal["state"] == "draft" and proposal["changes"] == 3
        pid = proposal["proposal"]
        invalid = await ok(http, srv, "room validate", {"proposal": pid})
        assert invalid["state"] == "invalid" and invalid["conflicts"] == [{"path": "/a"}]
        await refused(
            http, srv, "room promote", {"proposal": pid}, status=412,
            code="proposal-not-validated",
        )  # fmt: skip
        valid = await ok(http, srv, "room validate", {"proposal": pid, "resolve": "child"})
        assert valid["state"] == "validated" and valid["conflicts"] == [{"path": "/a"}]
        alice.set_json("/moved", 1)  # the parent moves after validation
        await alice.flush()
        await refused(
            http, srv, "room promote", {"proposal": pid}, status=412, code="proposal-stale"
        )
        await ok(http, srv, "room validate", {"proposal": pid, "resolve": "child"})
        promoted = await ok(http, srv, "room promote", {"proposal": pid})
        assert promoted["state"] == "promoted" and promoted["applied"] == 3
        # The parent's connected peers receive the promoted changes live.
        await wait_until(
            lambda: (
                watcher.get_json("/a") == "child"
                and watcher.get_json("/k") == "child only"
                and watcher.get("/c") is None
            )
        )
        assert watcher.get_json("/p") == "parent only" and watcher.get_json("/b") == "base"
        await wait_until(lambda: alice.root == watcher.root)
        final = await ok(http, srv, "archive create", {"room": "parent"})
        verified = await ok(http, srv, "archive verify", {"ref": final["ref"]})
        live = await ok(http, srv, "room get", {"room": "parent"})
        assert verified["ok"] is True and verified["replayed_root"] == live["root"]
        assert live["root"] == watcher.root and live["head"] == promoted["head"]
        await refused(
            http, srv, "room reject", {"proposal": pid}, status=409, code="proposal-final"
        )


async def test_lineage_preconditions(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    async with await client(srv, "parent", "alice") as alice:
        alice.set_json("/a", 1)
        await alice.flush()
        old = await ok(http, srv, "archive create", {"room": "parent"})
        alice.set_json("/a", 2)
        await alice.flush()
        newer = await ok(http, srv, "archive create", {"room": "parent"})
    await ok(http, srv, "room fork", {"source": "parent", "checkpoint": newer["ref"],
                                         "room": "kid"})  # fmt: skip
    await refused(
        http, srv, "room fork",
        {"source": "parent", "checkpoint": newer["ref"], "room": "kid"},
        status=409, code="room-exists",
    )  # fmt: skip
    await refused(
        http, srv, "room fork", {"source": "parent", "checkpoint": UNKNOWN, "room": "k2"},
        status=412, code="archive-ref-unknown",
    )  # fmt: skip
    await refused(http, srv, "room propose", {"room": "parent"}, status=412, code="room-not-forked")
    # A checkpoint in use cannot be deleted; an archive nobody forked can.
    await refused(
        http, srv, "archive delete", {"ref": newer["ref"]}, status=409,
        code="archive-is-checkpoint",
    )  # fmt: skip
    proposal = await ok(http, srv, "room propose", {"room": "kid"})
    assert proposal["changes"] == 0
    # Restoring the parent to an older archive moves its lineage past the checkpoint.
    await ok(http, srv, "archive restore", {"room": "parent", "ref": old["ref"]})
    lineage = (await ok(http, srv, "archive list", {"room": "parent"}))["lineage"]
    assert lineage[0] == old["ref"] and newer["ref"] not in lineage
    await refused(
        http, srv, "room validate", {"proposal": proposal["proposal"]}, status=412,
        code="lineage-checkpoint-invalid",
    )  # fmt: skip
    await refused(
        http, srv, "room fork", {"source": "parent", "checkpoint": newer["ref"], "room": "k3"},
        status=412, code="lineage-checkpoint-invalid",
    )  # fmt: skip
    rejected = await ok(http, srv, "room reject", {"proposal": proposal["proposal"]})
    assert rejected == {"proposal": proposal["proposal"], "state": "rejected"}
    await refused(
        http, srv, "room validate", {"proposal": "prop-" + "0" * 16}, status=404,
        code="proposal-unknown",
    )  # fmt: skip
    await ok(http, srv, "room delete", {"room": "kid", "hard": True})
    deleted = await ok(http, srv, "archive delete", {"ref": newer["ref"]})
    assert deleted == {"ref": newer["ref"], "deleted": True}


async def test_topology_place(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    await ok(http, srv, "room create", {"room": "doc"})
    node = srv.server.node.name
    assert await ok(http, srv, "topology place", {"room": "doc", "node": node}) == {
        "room": "doc",
        "node": node,
    }
    assert (await ok(http, srv, "room get", {"room": "doc"}))["node"] == node
    await refused(
        http, srv, "topology place", {"room": "doc", "node": "elsewhere"}, status=404,
        code="node-unknown",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("family", "command", "payload", "neighbour", "field"),
    [
        ("archive", "create", {"room": "bad room"}, "archive:get", "room"),
        ("archive", "restore", {"room": "r", "ref": "sha256:xyz"}, "archive:verify", "ref"),
        ("room", "fork", {"source": "p", "checkpoint": UNKNOWN}, "room:get", "room"),
        ("room", "validate", {"proposal": "p1", "resolve": "both"}, "room:propose", "proposal"),
        ("topology", "place", {"room": "r"}, "topology:get", "node"),
    ],
)
async def test_forbidden_and_invalid_payloads(
    srv: ServerHandle,
    http: aiohttp.ClientSession,
    family: str,
    command: str,
    payload: dict[str, Any],
    neighbour: str,
    field: str,
) -> None:
    status, body = await call(http, srv, f"{family} {command}", payload, caps=(neighbour,))
    assert status == 403 and body["reject"]["required"] == f"{family}:{command}"
    status, body = await call(http, srv, f"{family} {command}", payload)
    assert status == 422 and body["reject"]["field"] == field, body


async def test_deleting_the_lineage_head_relinks_a_loaded_room(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    async with await client(srv, "doc", "alice") as alice:
        alice.set_json("/a", 1)
        await alice.flush()
        first = await ok(http, srv, "archive create", {"room": "doc"})
        alice.set_json("/a", 2)
        await alice.flush()
        second = await ok(http, srv, "archive create", {"room": "doc"})
        assert await ok(http, srv, "archive delete", {"ref": second["ref"]}) == {
            "ref": second["ref"],
            "deleted": True,
        }
        view = await ok(http, srv, "room get", {"room": "doc"})
        assert view["lineage"]["archives"] == [first["ref"]]
        alice.set_json("/a", 3)
        await alice.flush()
        third = await ok(http, srv, "archive create", {"room": "doc"})
        assert third["parent"] == first["ref"]
