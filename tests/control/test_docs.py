"""docs/control.md and /v1/openapi.json come from the registry and stay in step with it."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from openapi_spec_validator import validate

from roomsync.control import REGISTRY
from roomsync.control.openapi import document, markdown, reference
from roomsync.testing.server import ServerHandle

DOCS = Path(__file__).resolve().parents[2] / "docs" / "control.md"


REGENERATE = "regenerate: python -m roomsync.control.openapi --write-docs docs/control.md"


def test_the_command_table_in_the_docs_is_the_registry() -> None:
    assert markdown() in DOCS.read_text(), REGENERATE


def test_the_command_reference_in_the_docs_is_the_registry() -> None:
    text = DOCS.read_text()
    assert reference() in text, REGENERATE
    for command in REGISTRY:
        assert f"/v1/control/{command.family}/{command.name}" in text
        assert f"roomsync control {command.family} {command.name}" in text


def test_the_openapi_document_is_valid_and_has_one_path_per_command() -> None:
    doc = document()
    validate(doc)  # raises on an invalid OpenAPI 3.1 document
    assert set(doc["paths"]) == {f"/v1/control/{c.family}/{c.name}" for c in REGISTRY}
    post = doc["paths"]["/v1/control/room/revoke"]["post"]
    assert set(post["responses"]) >= {"200", "401", "403", "422", "429", "503"}
    assert post["security"] == [{"operatorToken": []}]


async def test_the_server_serves_it(srv: ServerHandle, http: aiohttp.ClientSession) -> None:
    async with http.get(srv.url + "/v1/openapi.json") as resp:
        assert resp.status == 200
        assert await resp.json() == document()
