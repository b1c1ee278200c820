"""Typed settings: one TOML file, environment overrides, flag overrides (SPEC §6, §7, §8).

Every setting has an explicit default and a row in ``docs/configuration.md``;
``roomsync serve`` with no file at all runs the embedded defaults (SQLite + filesystem
blobs under ``./roomsync-data``). Sources, lowest precedence first:

1. the defaults (:mod:`.schema`);
2. the TOML file (``load_settings(path)``; without a path, ``$ROOMSYNC_CONFIG`` if set,
   else ``./roomsync.toml`` if it exists);
3. environment variables ``ROOMSYNC_<SECTION>_<KEY>`` (``ROOMSYNC_SERVER_PORT=9000``,
   ``ROOMSYNC_POLICY_ECHO_TO_SENDER=true``, lists comma-separated), and
   ``ROOMSYNC_AUTH_KEYS="kid1:secret1,kid2:secret2"`` for ``auth.keys``;
4. overrides from command-line flags, a mapping of dotted keys (``{"server.port": 9000}``).

Anything wrong fails loudly with a :class:`ConfigError` naming the key, e.g.
``config error: unknown key 'server.prot'`` or
``config error: policy.rate_messages_per_s: Expected `float` >= 0.001, got -3``.
Secrets (``auth.keys``, ``blobs.s3_secret_access_key``, the password of
``storage.postgres_dsn``) never appear in error messages and are masked by
:func:`redacted`.

The :class:`Policy` section holds the room defaults; the control plane's global and
per-room overrides (``policy get|set``) go through :meth:`Policy.patched`.

One concept per module, all re-exported here:

- :mod:`.schema`: the sections and their defaults, :data:`SECRET_KEYS`, :func:`redacted`;
- :mod:`.policy`: :class:`Policy`, the room limits as a domain object;
- :mod:`.loader`: :func:`load_settings`, the layers and the checks that span keys;
- :mod:`.errors`: :class:`ConfigError` and the rewriting of msgspec's errors;
- :mod:`.toml`: :func:`to_toml`, the writer behind ``roomsync config show``.

Masking itself (``***``, connection-string passwords) is :mod:`roomsync.redaction`'s.
"""

from __future__ import annotations

from ..redaction import redact_dsn
from .errors import ConfigError
from .loader import DEFAULT_CONFIG_FILE, ENV_PREFIX, load_settings
from .policy import DataCap, Policy
from .schema import (
    POSTGRES_BACKENDS,
    SECRET_KEYS,
    SECTIONS,
    STORAGE_BACKENDS,
    AppSettings,
    AuthSettings,
    BlobSettings,
    BusSettings,
    LogSettings,
    ServerSettings,
    Settings,
    StorageSettings,
    WebhookSettings,
    redacted,
    storage_backend_unavailable,
)
from .toml import to_toml

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "POSTGRES_BACKENDS",
    "SECRET_KEYS",
    "SECTIONS",
    "STORAGE_BACKENDS",
    "AppSettings",
    "AuthSettings",
    "BlobSettings",
    "BusSettings",
    "ConfigError",
    "DataCap",
    "LogSettings",
    "Policy",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "WebhookSettings",
    "load_settings",
    "redact_dsn",
    "redacted",
    "storage_backend_unavailable",
    "to_toml",
]
