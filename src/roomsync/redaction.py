"""What must never be shown, and how it is masked (SPEC §7: "tokens, signatures and blob
data always redacted").

One module for every place that shows data to a human or a file: the structured logs
(``server/logs.py``) and the effective settings (:func:`roomsync.config.redacted`, what
``roomsync config show`` prints).

- :func:`redact` copies a value for logs: values under :data:`SENSITIVE_KEYS` become
  :data:`REDACTED`, and every string goes through :func:`redact_text`;
- :func:`redact_text` masks anything shaped like a JWT or a URL signature, wherever it
  appears in free text (a token pasted into a message cannot leak);
- :func:`redact_dsn` keeps a connection string readable but drops its password;
- :func:`mask_secret` masks a secret setting and keeps its shape (key ids stay visible).

Only stdlib: any layer may use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "REDACTED",
    "SENSITIVE_KEYS",
    "mask_secret",
    "redact",
    "redact_dsn",
    "redact_text",
]

#: What every redacted value is replaced by.
REDACTED = "***"

#: Keys (any case) whose values :func:`redact` never shows: credentials, signatures and
#: blob or pack data.
SENSITIVE_KEYS = frozenset(
    {"token", "authorization", "secret", "sig", "signature", "data", "key", "keys", "password"}
)
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_SIG_RE = re.compile(r"((?:sig|signature|X-Amz-Signature|X-Amz-Credential)=)[^&\s\"']+")
_DSN_PASSWORD_RE = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", re.IGNORECASE)


def redact_text(text: str) -> str:
    """``text`` with JWTs and URL signature parameters replaced by :data:`REDACTED`."""
    return _SIG_RE.sub(rf"\1{REDACTED}", _JWT_RE.sub(REDACTED, text))


def redact(value: Any, key: str | None = None) -> Any:
    """A copy of ``value`` safe to log or put in an evidence bundle.

    ``key`` is the name ``value`` was found under: a sensitive one masks it whole (empty
    values stay empty, so a log still shows that nothing was sent). Mappings and
    sequences are copied with their items redacted, strings through :func:`redact_text`.
    """
    if key is not None and key.lower() in SENSITIVE_KEYS and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_dsn(dsn: str) -> str:
    """``dsn`` with its password replaced by :data:`REDACTED` (URL and ``key=value`` forms)."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        userinfo, at, hostinfo = parts.netloc.rpartition("@")
        if at and ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            dsn = urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{hostinfo}"))
    return _DSN_PASSWORD_RE.sub(rf"\g<1>{REDACTED}", dsn)


def mask_secret(value: Any, *, dsn: bool = False) -> Any:
    """A secret setting, masked: a mapping keeps its keys (``auth.keys`` shows its key ids),
    a connection string (``dsn``) keeps all but its password, any other non-empty value
    becomes :data:`REDACTED`; an empty value stays empty (so "not set" stays visible)."""
    if isinstance(value, Mapping):
        return {k: REDACTED for k in value}
    if dsn and isinstance(value, str):
        return redact_dsn(value)
    return REDACTED if value not in (None, "", [], {}) else value
