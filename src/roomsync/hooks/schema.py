"""``JsonSchemaValidator``: a ``validate`` hook that checks values against a JSON Schema
per path prefix (``docs/hooks.md``).

Configured from a table, e.g. in ``roomsync.toml``::

    [app]
    object = "roomsync.hooks:JsonSchemaValidator"

    [app.options.schemas."/todos"]
    type = "object"
    required = ["title"]
    properties = { title = { type = "string" }, done = { type = "boolean" } }

A change is checked against the schema of the longest prefix that contains its path
(segment-wise: ``/todos`` holds ``/todos/1`` but not ``/todosx``); paths under no prefix
pass. Values are JSON in UTF-8 (a value that is not is refused); deletes pass unless
``allow_deletes`` is false. Schemas are checked when the validator is built, so a bad
one stops the server at start, not at the first write.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
from jsonschema.exceptions import SchemaError

from ..core.types import prefix_matches

if TYPE_CHECKING:
    from . import ChangesContext, Refusal

#: A refusal's message is cut to this many characters (it travels in the ack).
MAX_MESSAGE_CHARS = 200


class JsonSchemaValidator:
    """Refuse changes whose value does not match the schema of their path's prefix.

    ``schemas`` maps a path prefix to a schema (a mapping) or to the path of a JSON file
    holding one. Raises ValueError for a bad prefix, an unreadable file or an invalid
    schema.
    """

    def __init__(
        self, schemas: Mapping[str, Mapping[str, Any] | str], *, allow_deletes: bool = True
    ) -> None:
        self.allow_deletes = allow_deletes
        compiled: list[tuple[str, jsonschema.protocols.Validator]] = []
        for prefix, schema in schemas.items():
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                raise ValueError(f"schema prefix {prefix!r} must be a path starting with '/'")
            if isinstance(schema, str):
                try:
                    schema = json.loads(Path(schema).read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise ValueError(f"schema file for {prefix!r}: {exc}") from exc
            if not isinstance(schema, Mapping):
                raise ValueError(f"schema for {prefix!r} must be a table (a JSON object)")
            schema = dict(schema)
            cls = jsonschema.validators.validator_for(schema)
            try:
                cls.check_schema(schema)
            except SchemaError as exc:
                raise ValueError(f"schema for {prefix!r} is invalid: {exc.message}") from exc
            compiled.append((prefix.rstrip("/") or "/", cls(schema)))
        # Longest prefix first: the most specific schema wins.
        compiled.sort(key=lambda item: len(item[0]), reverse=True)
        self._schemas = compiled

    def schema_for(self, path: str) -> jsonschema.protocols.Validator | None:
        for prefix, validator in self._schemas:
            if prefix_matches(prefix, path):
                return validator
        return None

    def check(self, path: str, value: bytes | None) -> str | None:
        """Why ``value`` may not be written at ``path``, or None when it may."""
        validator = self.schema_for(path)
        if validator is None:
            return None
        if value is None:
            return None if self.allow_deletes else f"{path} may not be deleted"
        try:
            doc = json.loads(value.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return "value is not JSON (UTF-8)"
        error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        message = f"{where}: {error.message}" if where else error.message
        return message[:MAX_MESSAGE_CHARS]

    async def validate(self, pack: ChangesContext) -> Iterable[Refusal]:
        from . import Refusal

        refusals = []
        for index, change in enumerate(pack.changes):
            problem = self.check(change.path, change.value)
            if problem is not None:
                refusals.append(Refusal(index, problem))
        return refusals
