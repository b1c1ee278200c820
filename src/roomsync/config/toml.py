"""A small TOML writer: what ``roomsync config show`` prints (``tomllib`` only reads)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["to_toml"]


_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"cannot write a lone surrogate (U+{code:04X}) as TOML")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"TOML keys must be strings, got {type(key).__name__}")
    return key if _BARE_KEY_RE.fullmatch(key) else _toml_string(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_table(lines: list[str], prefix: tuple[str, ...], table: Mapping[str, Any]) -> None:
    # Empty mappings are written inline (``keys = {}``), which reads better than a header.
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, Mapping) or not v]
    tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping) and v]
    # A header is needed for keys of its own; a table that holds only sub-tables is
    # created implicitly by their dotted headers.
    if prefix and scalars:
        if lines:
            lines.append("")
        lines.append("[" + ".".join(_toml_key(part) for part in prefix) + "]")
    for key, value in scalars:
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in tables:
        _toml_table(lines, (*prefix, key), value)


def to_toml(data: Mapping[str, Any]) -> str:
    """Write ``data`` as TOML: nested mappings become tables, the rest ``key = value``.

    Supports str, int, float, bool, lists/tuples and mappings (inline inside lists);
    ``tomllib.loads(to_toml(d)) == d`` for such data. TypeError on anything else (TOML
    has no null).
    """
    lines: list[str] = []
    _toml_table(lines, (), data)
    return "\n".join(lines) + "\n" if lines else ""
