"""The control plane (SPEC §6): commands as data in one registry, their payloads and
refusals. The HTTP route is ``server/control.py``."""

from __future__ import annotations

from . import handlers
from .payloads import Payload
from .registry import REGISTRY, Command, Context, Registry
from .rejects import Rejected

__all__ = ["REGISTRY", "Command", "Context", "Payload", "Registry", "Rejected", "handlers"]
