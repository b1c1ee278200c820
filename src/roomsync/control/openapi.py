"""Documents generated from the control registry (SPEC §6).

- :func:`document`: the OpenAPI 3.1 document, one ``POST`` path per command with its
  request and result schemas, the bearer scheme and every reject class as a documented
  response. Served at ``GET /v1/openapi.json``.
- :func:`markdown` and :func:`reference`: ``docs/control.md``'s command table and its
  per-command reference (cap, payload, result, preconditions, a curl and a CLI example).
  ``tests/control/test_docs.py`` fails when the file and the registry disagree; rewrite
  both blocks with ``python -m roomsync.control.openapi --write-docs docs/control.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from .. import __version__
from ..core.codes import RejectClass
from .registry import REGISTRY, Command, Registry

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


REFERENCE_BEGIN = "<!-- generated: command reference (python -m roomsync.control.openapi) -->"
REFERENCE_END = "<!-- end of the generated command reference -->"

#: Example values by shared payload field name (SPEC §6), for the generated examples.
EXAMPLES: dict[str, Any] = {
    "room": "doc-1",
    "source": "doc-1",
    "ref": "sha256:" + "3f" * 32,
    "checkpoint": "sha256:" + "3f" * 32,
    "proposal": "prop-" + "0a" * 8,
    "name": "open-todos",
    "spec": {"prefix": "/todos/", "filters": [{"pointer": "/done", "op": "eq", "value": False}]},
    "node": "node-1",
    "patch": {"rate_messages_per_s": 50},
    "interval_ms": 1000,
    "n": 1,
    "sub": "mallory",
    "jti": "token-id",
    "limit": 10,
}


def _example(command: Command) -> dict[str, Any]:
    """A payload of the command's required fields (and the shared ones it takes)."""
    out: dict[str, Any] = {}
    for f in msgspec.structs.fields(command.payload):
        if f.name in EXAMPLES and (f.required or f.name in ("limit",)):
            out[f.name] = EXAMPLES[f.name]
    if command.cap == "room:revoke":
        out = {"sub": EXAMPLES["sub"]}
    if command.cap == "tick:set":  # n and interval_ms are optional, but one is needed
        out["interval_ms"] = EXAMPLES["interval_ms"]
    return out


def _cli(command: Command, example: dict[str, Any]) -> str:
    base = f"roomsync control {command.family} {command.name}"
    if any(isinstance(v, dict | list) for v in example.values()):
        return f"{base} --json '{json.dumps(example, separators=(',', ':'))}'"
    pairs = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in example.items()]
    return " ".join([base, *pairs])


def _fields(model: type[msgspec.Struct] | None) -> str:
    if model is None:
        return "—"
    names = [f"`{f.name}`" + ("" if f.required else "?") for f in msgspec.structs.fields(model)]
    return ", ".join(names) or "—"


def reference(registry: Registry = REGISTRY) -> str:
    """``docs/control.md``'s per-command reference, between its markers."""
    lines = [REFERENCE_BEGIN, ""]
    for c in registry:
        example = _example(c)
        body = json.dumps(example, separators=(", ", ": "))
        lines += [
            f"### `{c.family} {c.name}`",
            "",
            c.summary,
            "",
            f"- cap: `{c.cap}` (or `{c.family}:*`, `*`)",
            f"- payload: {_fields(c.payload)}",
            f"- result: {_fields(c.result)}",
            "- preconditions: "
            + (", ".join(f"`{p}`" for p in c.preconditions) if c.preconditions else "none"),
            "",
            "```sh",
            f'curl -s -X POST "$ROOMSYNC_URL/v1/control/{c.family}/{c.name}" \\',
            '     -H "Authorization: Bearer $ROOMSYNC_OPERATOR_TOKEN" \\',
            f"     -d '{body}'",
            _cli(c, example),
            "```",
            "",
        ]
    lines.append(REFERENCE_END)
    return "\n".join(lines) + "\n"


_TABLE_HEAD = "| command | required cap | payload | summary |\n"


def write_docs(path: Path, registry: Registry = REGISTRY) -> None:
    """Rewrite the generated table and reference of ``path`` (docs/control.md)."""
    text = path.read_text()
    start = text.index(_TABLE_HEAD)
    end = text.find("\n\n", start)
    end = len(text) if end < 0 else end + 1
    text = text[:start] + markdown(registry) + text[end:]
    if REFERENCE_BEGIN in text:
        a = text.index(REFERENCE_BEGIN)
        b = text.index(REFERENCE_END) + len(REFERENCE_END) + 1
        text = text[:a] + reference(registry) + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n## Command reference\n\n" + reference(registry)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m roomsync.control.openapi",
        description="Print the control plane's OpenAPI document, or rewrite docs/control.md.",
    )
    parser.add_argument("--write-docs", type=Path, metavar="PATH", help="docs/control.md")
    args = parser.parse_args(argv)
    if args.write_docs is not None:
        write_docs(args.write_docs)
    else:
        json.dump(document(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
