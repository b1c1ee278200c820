"""The todo app of docs/hooks.md: roomsync hooks that keep a shared todo list sane.

Run it next to roomsync (from this directory)::

    PYTHONPATH=. roomsync serve --dev --config roomsync.toml   # [app] names todo_app:TodoApp

- ``authorize``: a hello must name its user (``{"type": "hello", "v": 1, "user": "ann"}``);
  the session is bound to that actor, and read-only unless the user is on the team.
- ``validate``: values under ``/todos`` must match the schema in ``roomsync.toml``
  (``app.options.schemas``), checked by roomsync's own ``JsonSchemaValidator``.
- ``on_commit``: logs what changed, off the delivery path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from roomsync.hooks import (
    Allow,
    ChangesContext,
    CommitEvent,
    HelloContext,
    JsonSchemaValidator,
    Refusal,
    Refuse,
)

log = logging.getLogger("todo")

TEAM = {"ann", "bob"}


class TodoApp:
    def __init__(self, schemas: Mapping[str, Any]) -> None:
        self.schemas = JsonSchemaValidator(schemas)

    async def authorize(self, hello: HelloContext) -> Allow | Refuse | None:
        user = hello.fields.get("user")
        if not isinstance(user, str) or not user:
            return Refuse("say who you are: hello.user")
        caps = ("read", "write", "presence") if user in TEAM else ("read", "presence")
        return Allow(caps, actor=user)

    async def validate(self, pack: ChangesContext) -> Iterable[Refusal]:
        return await self.schemas.validate(pack)

    async def on_commit(self, event: CommitEvent) -> None:
        log.info("room %s: seqs %d-%d changed %s", event.room, event.first_seq,
                 event.last_seq, ", ".join(event.paths))  # fmt: skip
