"""The one error of the settings, and how msgspec's validation errors become it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from typing import Any

import msgspec

from ..core.errors import InternalError

__all__ = ["ConfigError", "validation_error"]


class ConfigError(InternalError):
    """A setting is unknown or has a bad value. ``str()`` starts with ``config error: ``.

    ``key`` is the dotted key at fault (``policy.max_peers``) when there is one; the
    control plane reports it as the rejected ``field``. ``message`` is the text after the
    prefix. An operator's error, never a peer's: a peer that met one would only see
    ``internal`` (:class:`~roomsync.core.errors.InternalError`).
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"config error: {message}")
        self.message = message
        self.key = key

    @property
    def next_action(self) -> str:
        where = f"{self.key!r}" if self.key else "the configuration"
        return f"fix {where} in the config file, the environment or the flags"


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


_PATH_TOKEN_RE = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def _lookup(data: object, path: str) -> tuple[bool, object]:
    """The value at a msgspec error path like ``policy.anonymous_caps[1]``, if reachable."""
    node = data
    for match in _PATH_TOKEN_RE.finditer(path):
        name, index = match.groups()
        if name is not None and isinstance(node, dict) and name in node:
            node = node[name]
        elif index is not None and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return False, None
    return True, node


def validation_error(
    exc: msgspec.ValidationError,
    data: Mapping[str, Any],
    *,
    prefix: str = "",
    secret_keys: Set[str] = frozenset(),
) -> ConfigError:
    """Rewrite msgspec's ``<detail> - at `$.a.b``` as ``a.b: <detail>, got <value>``.

    ``data`` is what was validated (the offending value is looked up in it), ``prefix``
    the dotted key it sits under, and the values of ``secret_keys`` (dotted
    ``section.key``) are never echoed.
    """
    text = str(exc)
    detail, sep, where = text.rpartition(" - at `")
    if not sep:
        return ConfigError(f"{prefix}: {text}" if prefix else text, key=prefix or None)
    path = where.rstrip("`").removeprefix("$").removeprefix(".")
    key = ".".join(part for part in (prefix, path) if part)
    unknown = re.fullmatch(r"Object contains unknown field `(.*)`", detail)
    if unknown is not None:
        dotted = ".".join(part for part in (key, unknown.group(1)) if part)
        return ConfigError(f"unknown key '{dotted}'", key=dotted)
    top = ".".join(key.split(".")[:2]).split("[")[0]
    if ", got" not in detail and not detail.startswith("Invalid enum") and top not in secret_keys:
        found, value = _lookup(data, path)
        if found:
            detail = f"{detail}, got {_show(value)}"
    return ConfigError(f"{key}: {detail}", key=key)
