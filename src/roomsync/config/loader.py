"""The layered loader: defaults, then the TOML file, then ``ROOMSYNC_*`` environment
variables, then flag overrides, validated into :class:`~.schema.Settings`.

Text from the environment and from flags is parsed into the type of each key's default;
anything wrong raises :class:`~.errors.ConfigError` naming the key and where it came from,
and never shows the value of a secret key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from ..auth.keyfile import KID_RE, parse_keys_env
from ..auth.tokens import MIN_SECRET_BYTES
from .errors import ConfigError, validation_error
from .schema import (
    POSTGRES_BACKENDS,
    SECRET_KEYS,
    SECTIONS,
    STORAGE_BACKENDS,
    Settings,
    storage_backend_unavailable,
)

__all__ = ["DEFAULT_CONFIG_FILE", "ENV_PREFIX", "load_settings"]

#: The file ``load_settings()`` reads from the working directory when given no path.
DEFAULT_CONFIG_FILE = "roomsync.toml"
#: Prefix of every environment variable read here.
ENV_PREFIX = "ROOMSYNC_"


def _default_kinds(cls: type[msgspec.Struct]) -> dict[str, type]:
    """Field name -> Python type of its default, which decides how text is parsed."""
    kinds: dict[str, type] = {}
    for info in msgspec.structs.fields(cls):
        default = info.default_factory() if info.default is msgspec.NODEFAULT else info.default
        kinds[info.name] = type(default)
    return kinds


_KINDS: dict[str, dict[str, type]] = {name: _default_kinds(cls) for name, cls in SECTIONS.items()}

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse_text(key: str, kind: type, text: str, source: str) -> object:
    """Turn the text of an environment variable or flag into the type of ``key``."""

    def bad(expected: str) -> ConfigError:
        shown = "<redacted>" if key in SECRET_KEYS else repr(text)
        return ConfigError(f"{key}: expected {expected}, got {shown} (from {source})", key=key)

    if kind is bool:
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise bad("a boolean (true/false, yes/no, on/off, 1/0)")
    if kind is int:
        try:
            return int(text.strip())
        except ValueError:
            raise bad("an integer") from None
    if kind is float:
        try:
            # An integral text stays an int (msgspec widens it), so errors echo "-3", not "-3.0".
            return int(text.strip())
        except ValueError:
            pass
        try:
            return float(text.strip())
        except ValueError:
            raise bad("a number") from None
    if kind is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    if kind is dict:
        try:
            return parse_keys_env(text)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc} (from {source})", key=key) from None
    return text


def _split_key(dotted: str, source: str) -> tuple[str, str]:
    section, _, name = dotted.partition(".")
    if section not in SECTIONS or name not in _KINDS[section]:
        where = "" if source == "" else f" (from {source})"
        raise ConfigError(f"unknown key '{dotted}'{where}", key=dotted)
    return section, name


def _read_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    data: dict[str, dict[str, Any]] = {}
    for section, table in raw.items():
        if section not in SECTIONS:
            if isinstance(table, dict):
                raise ConfigError(f"unknown section '{section}'", key=section)
            raise ConfigError(
                f"unknown key '{section}' (settings belong in a [section])", key=section
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{section}: expected a table [{section}]", key=section)
        for name in table:
            _split_key(f"{section}.{name}", "")
        data[section] = dict(table)
    return data


def _env_layer(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = {}
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :]
        for section in SECTIONS:
            head = f"{section.upper()}_"
            if rest.startswith(head):
                section_, name = _split_key(f"{section}.{rest[len(head) :].lower()}", var)
                key = f"{section_}.{name}"
                value = _parse_text(key, _KINDS[section_][name], text, var)
                data.setdefault(section_, {})[name] = value
                break
    return data


def _override_layer(overrides: Mapping[str, object]) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        if value is None:  # a flag that was not given
            continue
        section, name = _split_key(dotted, "override")
        kind = _KINDS[section][name]
        if isinstance(value, str) and kind is not str:
            value = _parse_text(dotted, kind, value, "override")
        elif isinstance(value, os.PathLike) and kind is str:
            value = os.fspath(value)
        elif isinstance(value, tuple | set | frozenset) and kind is list:
            value = list(value)
        data.setdefault(section, {})[name] = value
    return data


def _check(settings: Settings) -> Settings:
    """Checks that span fields or need more than a type: cross-field rules, key syntax."""
    server, auth = settings.server, settings.auth
    if bool(server.tls_cert) != bool(server.tls_key):
        missing = "server.tls_key" if server.tls_cert else "server.tls_cert"
        other = "server.tls_cert" if server.tls_cert else "server.tls_key"
        raise ConfigError(
            f"{missing}: required when {other} is set (set both or neither)", key=missing
        )
    for kid, secret in auth.keys.items():
        key = f"auth.keys.{kid}"
        if not KID_RE.fullmatch(kid):
            raise ConfigError(
                f"auth.keys: invalid key id {kid!r}: must match {KID_RE.pattern}", key="auth.keys"
            )
        size = len(secret.encode("utf-8"))
        if size < MIN_SECRET_BYTES:
            raise ConfigError(
                f"{key}: secret is {size} bytes; HS256 needs at least {MIN_SECRET_BYTES}",
                key=key,
            )
    if auth.active_kid and auth.active_kid not in auth.keys:
        raise ConfigError(
            f"auth.active_kid: {auth.active_kid!r} is not one of auth.keys", key="auth.active_kid"
        )
    if settings.storage.backend not in STORAGE_BACKENDS:
        raise storage_backend_unavailable(settings.storage.backend)
    if settings.storage.backend in POSTGRES_BACKENDS:
        dsn = settings.storage.postgres_dsn
        if not dsn:
            raise ConfigError(
                f"storage.postgres_dsn: required when storage.backend is "
                f"'{settings.storage.backend}'",
                key="storage.postgres_dsn",
            )
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                "storage.postgres_dsn: expected a postgresql:// connection string",
                key="storage.postgres_dsn",
            )
    if settings.bus.backend == "redis":
        url = settings.bus.redis_url
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                "bus.redis_url: required when bus.backend is 'redis', a redis:// URL",
                key="bus.redis_url",
            )
        if settings.storage.backend not in POSTGRES_BACKENDS:
            raise ConfigError(
                "bus.backend 'redis': several nodes share one store, set storage.backend "
                f"'postgres' (it is {settings.storage.backend!r})",
                key="storage.backend",
            )
        if settings.blobs.backend == "filesystem" and not settings.blobs.shared:
            raise ConfigError(
                "blobs.backend 'filesystem' with several nodes: a blob uploaded via one node "
                "must be readable via every other; use blobs.backend 's3', or set "
                "blobs.shared = true when blobs.dir is shared by every node",
                key="blobs.shared",
            )
    if settings.blobs.backend == "s3" and not settings.blobs.s3_bucket:
        raise ConfigError(
            "blobs.s3_bucket: required when blobs.backend is 's3'", key="blobs.s3_bucket"
        )
    return settings


def load_settings(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Build the settings from defaults, file, environment and overrides (in that order).

    ``path`` None reads ``$ROOMSYNC_CONFIG`` if set (it must exist), else
    ``./roomsync.toml`` if it exists, else no file. ``env`` defaults to ``os.environ``;
    ``ROOMSYNC_*`` variables that do not start with a section name (``ROOMSYNC_URL``,
    ``ROOMSYNC_TOKEN``, ...) are left to other tools. ``overrides`` maps dotted keys to
    values; strings are parsed like environment variables, None values are skipped.
    Raises :class:`ConfigError`.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if path is None:
        named = environ.get(f"{ENV_PREFIX}CONFIG", "")
        if named:
            path = Path(named)
        elif Path(DEFAULT_CONFIG_FILE).is_file():
            path = Path(DEFAULT_CONFIG_FILE)
    data: dict[str, dict[str, Any]] = {} if path is None else _read_file(Path(path))
    for layer in (_env_layer(environ), _override_layer(overrides or {})):
        for section, values in layer.items():
            data.setdefault(section, {}).update(values)
    try:
        settings = msgspec.convert(data, Settings)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, data, secret_keys=SECRET_KEYS) from None
    return _check(settings)
