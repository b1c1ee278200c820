"""schemathesis against a live server and the OpenAPI document it serves (SPEC §6, issue 11).

For every ``POST /v1/control/{family}/{command}`` in ``GET /v1/openapi.json``, schemathesis
generates bounded payloads (its examples, coverage and fuzzing phases; ``MAX_EXAMPLES``
for fuzzing), sends them with an operator token holding every cap and checks each answer:
no 5xx, a documented status code and content type, and a body that fits the schema of
that status (the 200 ``result`` schema comes from the command's result model).

How it is set up, and why:

* The server is ``roomsync serve`` in a child process (:func:`server_process`):
  schemathesis' ``case.call()`` is synchronous (``requests``), so an in-process server on
  pytest's event loop could not answer it. The child also has its own core here.
* Generated ids almost never name something that exists, so on their own most commands
  would only ever answer 404 or 412 and their 200 result schema would go unchecked.
  Each operation therefore starts with a fresh *world* seeded over the real protocol (a
  parent room with entries, an archive of it, a child room forked from that archive with
  a change of its own, a validated proposal of the child, a query spec once the server has
  that family), and about half the generated payloads (chosen by a hash of the payload)
  have their id fields replaced by the world's (:func:`steer`).
  Operations that destroy state (``room delete``, ``archive restore``, ...) then destroy
  only their own world.
* ``topology drain`` and ``policy set`` each run on a server of their own (``ISOLATED``):
  their valid payloads change the whole node (a drained node admits no new peers; a
  global policy can throttle every peer), so every world seeded after them would fail
  and every later operation would only see a drained or throttled node.
* Deterministic: hypothesis is derandomized with no example database and the steering is
  a function of the payload, so every run sends the same requests in the same order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from roomsync.core.codec import pack_data
from roomsync.core.entries import Change
from roomsync.testing.server import ALL_DATA_CAPS, ServerProcess, server_process
from roomsync.testing.wsclient import hello, recv_type

MAX_EXAMPLES = 20
LOG_LINES = 60
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Subjects of the tokens the test uses: nothing a generated ``room revoke {sub}`` hits.
OPERATOR = "schemathesis-operator"
SEEDER = "schemathesis-seeder"
ENV = {
    # About 1,500 requests in a few seconds: far more than the default control bucket.
    "ROOMSYNC_SERVER_CONTROL_BURST": "100000",
    "ROOMSYNC_LOG_LEVEL": "warning",
}
HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass
class World:
    """Ids that exist on the server when an operation's first case is sent."""

    parent: str  # a room with three entries
    child: str  # forked from `ref`, with one change of its own
    ref: str  # the parent's archive, the child's lineage checkpoint
    spare: str  # an archive of the child that nobody forked (so it can be deleted)
    proposal: str  # the child's proposal, validated
    node: str
    query: str | None  # a defined query spec, once the server has the query family


@dataclass
class Live:
    """A server process, its operator token, and the world of the operation under test."""

    proc: ServerProcess
    operator: str
    log: deque[str]
    paths: frozenset[str] = frozenset()
    node: str = ""
    worlds: Iterator[int] = field(default_factory=itertools.count)
    label: str | None = None
    world: World | None = None

    def world_for(self, label: str) -> World:
        """The world of operation ``label``: a fresh one on its first case."""
        if label != self.label or self.world is None:
            self.world = asyncio.run(self._seed(f"st{next(self.worlds)}"))
            self.label = label
        return self.world

    async def control(
        self, http: aiohttp.ClientSession, command: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        family, name = command.split()
        async with http.post(
            f"{self.proc.url}/v1/control/{family}/{name}",
            json=payload,
            headers={"Authorization": f"Bearer {self.operator}"},
        ) as resp:
            body: dict[str, Any] = await resp.json()
        assert resp.status == 200, (command, payload, body)
        result: dict[str, Any] = body["result"]
        return result

    async def _seed(self, tag: str) -> World:
        parent, child = f"{tag}-parent", f"{tag}-child"
        data_token = self.proc.mint("*", ALL_DATA_CAPS, actor=SEEDER)
        now = int(time.time() * 1000)
        async with aiohttp.ClientSession() as http:

            async def write(room: str, changes: list[Change]) -> None:
                ws, _ = await hello(http, self.proc.ws_url(room), token=data_token)
                await ws.send_json({"type": "pack", "data": pack_data(changes)})
                await recv_type(ws, "ack")
                await ws.close()

            if not self.node:
                self.node = (await self.control(http, "topology get", {}))["nodes"][0]["node"]
            await self.control(http, "room create", {"room": parent})
            values = [b'{"n": 1, "tag": "a"}', b'{"n": 2, "tag": "b"}', b'"text"']
            await write(parent, [Change(f"/{i}", now, 0, SEEDER, v) for i, v in enumerate(values)])
            ref = (await self.control(http, "archive create", {"room": parent}))["ref"]
            fork = {"source": parent, "checkpoint": ref, "room": child}
            await self.control(http, "room fork", fork)
            await write(child, [Change("/k", now + 1, 0, SEEDER, b'"child"')])
            proposal = (await self.control(http, "room propose", {"room": child}))["proposal"]
            await self.control(http, "room validate", {"proposal": proposal})
            spare = (await self.control(http, "archive create", {"room": child}))["ref"]
            query = None
            if self.has("query", "define"):
                query = f"{tag}-query"
                spec = {"filters": [{"pointer": "/n", "op": "ge", "value": 1}]}
                await self.control(http, "query define", {"name": query, "spec": spec})
        return World(parent, child, ref, spare, proposal, self.node, query)

    def has(self, family: str, command: str) -> bool:
        """Whether the served OpenAPI document has the command."""
        return f"/v1/control/{family}/{command}" in self.paths


@contextlib.contextmanager
def live_server(tmp: Path) -> Iterator[Live]:
    """A server process whose output is read as it comes (a pipe nobody reads would block
    the server once a run of 500s fills it with tracebacks); its tail goes with failures."""
    with server_process(tmp, extra_env=ENV) as proc:
        log: deque[str] = deque(maxlen=LOG_LINES)
        assert proc.proc.stdout is not None
        reader = threading.Thread(target=log.extend, args=(proc.proc.stdout,), daemon=True)
        reader.start()
        try:
            yield Live(proc, proc.mint("*", ("*",), actor=OPERATOR), log)
        finally:
            proc.terminate()
            reader.join(10)


def steer(body: dict[str, Any], world: World) -> dict[str, Any]:
    """``body`` as generated, or (for about half the bodies, chosen by a hash of the body so
    that every run chooses alike) with each id field that is a string naming the world's."""
    digest = zlib.crc32(json.dumps(body, sort_keys=True, default=repr).encode())
    if digest % 2:
        return body
    ids: dict[str, str] = {
        "room": world.child if digest % 3 == 0 else world.parent,
        "source": world.parent,
        "ref": world.spare if digest % 5 == 0 else world.ref,
        "checkpoint": world.ref,
        "proposal": world.proposal,
        "node": world.node,
    }
    if world.query is not None:
        ids["name"] = world.query
    if "source" in body:  # room fork: `room` names the room to create
        ids["room"] = f"{world.parent}-fork-{digest % 7}"
    return {k: ids[k] if k in ids and isinstance(v, str) else v for k, v in body.items()}


def exchange(case: schemathesis.Case, live: Live) -> None:
    """Send one generated case (its ids steered to the world or not) and check the answer."""
    world = live.world_for(case.operation.label)
    if isinstance(case.body, dict):
        case.body = steer(case.body, world)
    try:
        case.call_and_validate(headers={"Authorization": f"Bearer {live.operator}"}, checks=CHECKS)
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports a FailureGroup
        exc.add_note("server log, last lines:\n" + "".join(live.log))
        raise


def load(live: Live) -> BaseSchema:
    """The OpenAPI document the server serves, as schemathesis' schema."""
    schema = schemathesis.openapi.from_url(f"{live.proc.url}/v1/openapi.json")
    live.paths = frozenset(schema.raw_schema["paths"])
    return schema


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_server(tmp_path_factory.mktemp("schemathesis")) as handle:
        yield handle


@pytest.fixture(scope="module")
def api(live: Live) -> BaseSchema:
    return load(live)


# Operations whose valid payloads change the whole node, each on a server of its own:
# `topology drain` (a drained node admits no new peers, so no world could be seeded after
# it) and `policy set` without `room` (a global policy such as a tiny rate limit or max
# pack size would throttle every world seeded after it).
ISOLATED = ("topology_drain", "policy_set")


@pytest.fixture(scope="module")
def drain_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_server(tmp_path_factory.mktemp("schemathesis-drain")) as handle:
        yield handle


@pytest.fixture(scope="module")
def drain_api(drain_live: Live) -> BaseSchema:
    return load(drain_live)


@pytest.fixture(scope="module")
def policy_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_server(tmp_path_factory.mktemp("schemathesis-policy")) as handle:
        yield handle


@pytest.fixture(scope="module")
def policy_api(policy_live: Live) -> BaseSchema:
    return load(policy_live)


shared = schemathesis.pytest.from_fixture("api").exclude(operation_id=list(ISOLATED))
drain = schemathesis.pytest.from_fixture("drain_api").include(operation_id="topology_drain")
policy = schemathesis.pytest.from_fixture("policy_api").include(operation_id="policy_set")


@shared.parametrize()
@HYPOTHESIS
def test_every_command_answers_per_its_schema(case: schemathesis.Case, live: Live) -> None:
    exchange(case, live)


@drain.parametrize()
@HYPOTHESIS
def test_topology_drain_answers_per_its_schema(case: schemathesis.Case, drain_live: Live) -> None:
    exchange(case, drain_live)


@policy.parametrize()
@HYPOTHESIS
def test_policy_set_answers_per_its_schema(case: schemathesis.Case, policy_live: Live) -> None:
    exchange(case, policy_live)
