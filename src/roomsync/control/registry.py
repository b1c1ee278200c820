"""The control plane's commands as data (SPEC §6): one entry per ``(family, command)``.

An entry holds the payload model, the result model, the capability it needs
(``<family>:<command>``), its handler, a one-line summary and the preconditions it can
fail with. Handlers return plain dicts; the HTTP route checks each against the result
model (``msgspec.convert``) before answering, so the published schema cannot drift from
what is served. The HTTP route
(``server/control.py``) and the docs are generated from :data:`REGISTRY`, so a new command
is one entry plus its handler and tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .payloads import Payload, Result

if TYPE_CHECKING:
    from ..server.node import Node

P = TypeVar("P", bound=Payload)


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler may use: the node (rooms, store, revocations, drain) and the
    operator who asked."""

    node: Node
    operator: str | None
    now_ms: int


Handler = Callable[[Context, Any], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Command:
    family: str
    name: str
    payload: type[Payload]
    handler: Handler
    summary: str
    preconditions: tuple[str, ...] = field(default=())
    result: type[Result] | None = None

    @property
    def cap(self) -> str:
        """The capability that allows it (``*`` and ``<family>:*`` cover it too)."""
        return f"{self.family}:{self.name}"


class Registry:
    """Every control command, by ``(family, command)``."""

    def __init__(self) -> None:
        self._commands: dict[tuple[str, str], Command] = {}

    def command(
        self,
        family: str,
        name: str,
        payload: type[P],
        summary: str,
        *,
        result: type[Result] | None = None,
        preconditions: tuple[str, ...] = (),
    ) -> Callable[[Callable[[Context, P], Awaitable[dict[str, Any]]]], Handler]:
        """Register the decorated handler as ``family name``."""

        def register(fn: Callable[[Context, P], Awaitable[dict[str, Any]]]) -> Handler:
            key = (family, name)
            if key in self._commands:
                raise ValueError(f"control command {family} {name} registered twice")
            self._commands[key] = Command(family, name, payload, fn, summary, preconditions, result)
            return fn

        return register

    def get(self, family: str, name: str) -> Command | None:
        return self._commands.get((family, name))

    def __iter__(self) -> Iterator[Command]:
        return iter(sorted(self._commands.values(), key=lambda c: (c.family, c.name)))

    def families(self) -> list[str]:
        return sorted({c.family for c in self._commands.values()})


#: The registry the server serves. Handlers register themselves on import
#: (:mod:`.handlers`).
REGISTRY = Registry()
