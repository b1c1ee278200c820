"""The OpenAPI 3.1 document of the control plane, generated from the registry (SPEC §6):
one ``POST`` path per command, with its request schema, the bearer scheme and every
reject class as a documented response. Served at ``GET /v1/openapi.json``."""

from __future__ import annotations

from typing import Any

import msgspec

from .. import __version__
from ..core.codes import RejectClass
from .registry import REGISTRY, Registry

_REF = "#/components/schemas/{name}"

_REJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ok", "reject"],
    "properties": {
        "ok": {"const": False},
        "reject": {
            "type": "object",
            "required": ["class", "code", "message", "next"],
            "properties": {
                "class": {"enum": [str(c) for c in RejectClass]},
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
                "required": {"type": "string"},
                "next": {"type": "string"},
            },
        },
    },
}


def document(registry: Registry = REGISTRY) -> dict[str, Any]:
    """The OpenAPI document for every command of ``registry``."""
    commands = list(registry)
    models: list[Any] = [c.payload for c in commands]
    models += [c.result for c in commands if c.result is not None]
    all_refs, schemas = msgspec.json.schema_components(models, ref_template=_REF)
    refs = all_refs[: len(commands)]
    result_refs = iter(all_refs[len(commands) :])
    schemas = {**schemas, "Reject": _REJECT_SCHEMA}
    reject_ref = {"$ref": _REF.format(name="Reject")}
    paths: dict[str, Any] = {}
    for command, ref in zip(commands, refs, strict=True):
        result = next(result_refs) if command.result is not None else {"type": "object"}
        responses: dict[str, Any] = {
            "200": {
                "description": "done",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["ok", "result"],
                            "properties": {"ok": {"const": True}, "result": result},
                        }
                    }
                },
            }
        }
        for reject in RejectClass:
            responses[str(reject.http_status)] = {
                "description": f"{reject}: {reject.next_action}",
                "content": {"application/json": {"schema": reject_ref}},
            }
        paths[f"/v1/control/{command.family}/{command.name}"] = {
            "post": {
                "operationId": f"{command.family}_{command.name}",
                "summary": command.summary,
                "description": f"Needs capability `{command.cap}` (or `{command.family}:*`, `*`).",
                "tags": [command.family],
                "security": [{"operatorToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref}},
                },
                "responses": responses,
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "roomsync control plane", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "operatorToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def markdown(registry: Registry = REGISTRY) -> str:
    """``docs/control.md``'s command table, from the registry (a test keeps them equal)."""
    lines = [
        "| command | required cap | payload | summary |",
        "|---|---|---|---|",
    ]
    for c in registry:
        fields = ", ".join(
            f"`{f.name}`" + ("" if f.required else "?") for f in msgspec.structs.fields(c.payload)
        )
        lines.append(f"| `{c.family} {c.name}` | `{c.cap}` | {fields or '—'} | {c.summary} |")
    return "\n".join(lines) + "\n"
