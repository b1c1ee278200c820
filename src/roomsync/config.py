"""Typed settings: one TOML file, environment overrides, flag overrides (SPEC §6, §7, §8).

Every setting has an explicit default here and a row in ``docs/configuration.md``;
``roomsync serve`` with no file at all runs the embedded defaults (SQLite + filesystem
blobs under ``./roomsync-data``). Sources, lowest precedence first:

1. the defaults below;
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

The :class:`Policy` section holds the room defaults that the control plane's
``policy get|set`` reads and overrides per room through :meth:`Policy.patched`.
"""

from __future__ import annotations

import math
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec
from msgspec import Meta

from roomsync.auth.keyfile import KID_RE, parse_keys_env
from roomsync.auth.tokens import MIN_SECRET_BYTES
from roomsync.core.errors import InternalError

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "SECRET_KEYS",
    "SECTIONS",
    "STORAGE_BACKENDS",
    "AuthSettings",
    "BlobSettings",
    "ConfigError",
    "DataCap",
    "LogSettings",
    "Policy",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "load_settings",
    "redact_dsn",
    "redacted",
    "storage_backend_unavailable",
    "to_toml",
]

#: The file ``load_settings()`` reads from the working directory when given no path.
DEFAULT_CONFIG_FILE = "roomsync.toml"
#: Prefix of every environment variable read here.
ENV_PREFIX = "ROOMSYNC_"
#: Dotted keys whose values are secret: never shown in errors, masked by :func:`redacted`.
SECRET_KEYS = frozenset({"auth.keys", "blobs.s3_secret_access_key", "storage.postgres_dsn"})

#: A data capability (SPEC §3); equal to ``roomsync.core.types.DATA_CAPS`` (a test checks).
DataCap = Literal["read", "write", "presence", "blob", "blob-direct", "reconcile"]

_REDACTED = "***"


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


#: The ``storage.backend`` values this build runs. ``postgres`` (SPEC §8, several nodes on
#: one database) is a known value but planned, not built: it is refused with a clear error.
STORAGE_BACKENDS = ("sqlite", "memory")


def storage_backend_unavailable(backend: str) -> ConfigError:
    """The error for a ``storage.backend`` this build cannot run (``postgres``: planned)."""
    planned = " yet (planned)" if backend == "postgres" else ""
    choices = " or ".join(repr(name) for name in STORAGE_BACKENDS)
    return ConfigError(
        f"storage.backend {backend!r} is not available{planned}: use {choices}",
        key="storage.backend",
    )


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every section: unknown fields are errors, fields are keyword-only."""


class ServerSettings(_Section):
    """``[server]``: the network endpoint and this node's resources."""

    host: Annotated[
        str, Meta(description="Address to listen on; `0.0.0.0` listens on every interface.")
    ] = "127.0.0.1"
    port: Annotated[
        int,
        Meta(
            ge=1,
            le=65535,
            description="TCP port for WebSocket (`/ws/{room}`), control plane, health and metrics.",
        ),
    ] = 8787
    data_dir: Annotated[
        str,
        Meta(
            description=(
                "Directory for the SQLite database, filesystem blobs and the generated "
                "signing-key file; relative paths are relative to the working directory."
            )
        ),
    ] = "./roomsync-data"
    dev: Annotated[
        bool,
        Meta(
            description=(
                "Development mode: relaxed checks and verbose diagnostics for local work. "
                "Never enable in production."
            )
        ),
    ] = False
    node_id: Annotated[
        str,
        Meta(description="This node's id in `topology`; empty means `<hostname>:<port>`."),
    ] = ""
    max_connections: Annotated[
        int,
        Meta(
            ge=1,
            description=(
                "WebSocket connections this node holds at once; at the cap, one that has not "
                "sent its hello is shed, else the newcomer is refused."
            ),
        ),
    ] = 10000
    max_frame_bytes: Annotated[
        int,
        Meta(
            ge=1024,
            description="Largest incoming WebSocket frame; a larger one closes with 1009.",
        ),
    ] = 1048576
    heartbeat_ms: Annotated[
        int,
        Meta(
            ge=100,
            description="Heartbeat interval announced in `welcome` and used for WebSocket pings.",
        ),
    ] = 15000
    hello_timeout_ms: Annotated[
        int,
        Meta(
            ge=100,
            description=(
                "How long a new WebSocket connection has to send its `hello`; at the "
                "connection cap, connections still waiting for theirs are shed first."
            ),
        ),
    ] = 5000
    shutdown_grace_ms: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "On shutdown, how long sessions get for their queued frames and 1012 close "
                "to be written before their connections end."
            ),
        ),
    ] = 5000
    tls_cert: Annotated[
        str,
        Meta(
            description=(
                "PEM certificate chain for `wss://`/`https://`; set together with "
                "`server.tls_key`, or leave both empty for plain `ws://`."
            )
        ),
    ] = ""
    tls_key: Annotated[
        str,
        Meta(description="PEM private key of `server.tls_cert`; both set or both empty."),
    ] = ""
    max_queued_bytes: Annotated[
        int,
        Meta(
            ge=1,
            description=(
                "Bytes queued for sending to all peers together; above it new sessions are "
                "refused with `overload` (1011)."
            ),
        ),
    ] = 268435456
    room_idle_unload_ms: Annotated[
        int,
        Meta(
            ge=0,
            description="How long a room without peers stays in memory before it is unloaded.",
        ),
    ] = 30000

    def node_name(self) -> str:
        """This node's id: ``node_id``, or ``<hostname>:<port>`` when it is empty."""
        return self.node_id or f"{socket.gethostname()}:{self.port}"


class AuthSettings(_Section):
    """``[auth]``: token signing keys (SPEC §3)."""

    keys: Annotated[
        dict[str, str],
        Meta(
            description=(
                "Secret. HS256 signing keys, key id -> secret (at least 32 bytes). Every key "
                "verifies; empty means use `<data_dir>/signing-keys.json`, created on first use. "
                "Env: `ROOMSYNC_AUTH_KEYS=kid1:secret1,kid2:secret2`."
            )
        ),
    ] = {}
    active_kid: Annotated[
        str,
        Meta(description="Key id that signs new tokens; empty means the first of `auth.keys`."),
    ] = ""


class StorageSettings(_Section):
    """``[storage]``: where op logs, rooms and archives live (SPEC §8)."""

    backend: Annotated[
        Literal["sqlite", "memory", "postgres"],
        Meta(
            description=(
                "`sqlite` (embedded, in `server.data_dir`) or `memory` (nothing survives a "
                "restart). `postgres` (shared by several nodes) is planned: refused until "
                "it exists."
            )
        ),
    ] = "sqlite"
    sqlite_synchronous: Annotated[
        Literal["NORMAL", "FULL"],
        Meta(
            description=(
                "SQLite `PRAGMA synchronous` in WAL mode: `NORMAL` survives process crashes, "
                "`FULL` also power loss."
            )
        ),
    ] = "NORMAL"
    sqlite_cache_kib: Annotated[
        int,
        Meta(
            ge=256,
            le=1048576,
            description=(
                "SQLite page cache per connection (a writer and a reader), in KiB. It bounds "
                "how much of the database stays in memory, whatever the number of rooms."
            ),
        ),
    ] = 8192
    commit_window_ms: Annotated[
        int,
        Meta(
            ge=0,
            le=1000,
            description=(
                "How long a room waits for more changes before committing a batch. 0 commits "
                "right after the event-loop turn that applied them, best when commits are "
                "cheap (SQLite NORMAL: no fsync); with synchronous FULL a few ms put more "
                "changes behind each fsync. Acks wait for the commit, broadcasts do not."
            ),
        ),
    ] = 0
    postgres_dsn: Annotated[
        str,
        Meta(
            description=(
                "Secret (password redacted). PostgreSQL connection string for the planned "
                "`postgres` backend; unused until it exists."
            )
        ),
    ] = ""


class BlobSettings(_Section):
    """``[blobs]``: content-addressed blob storage (SPEC §4)."""

    backend: Annotated[
        Literal["filesystem", "s3", "memory"],
        Meta(
            description=(
                "`filesystem` (this server signs `/v1/blobs/...` URLs), `s3` (presigned "
                "URLs) or `memory` (tests)."
            )
        ),
    ] = "filesystem"
    dir: Annotated[
        str,
        Meta(description="Directory of filesystem blobs; empty means `<server.data_dir>/blobs`."),
    ] = ""
    url_ttl_s: Annotated[
        int,
        Meta(
            ge=1,
            le=604800,
            description="Lifetime in seconds of upload and download URL grants.",
        ),
    ] = 300
    public_url: Annotated[
        str,
        Meta(
            description=(
                "Base URL clients reach this server at, used in filesystem blob URLs "
                "(set it behind a proxy); empty means derived from the request."
            )
        ),
    ] = ""
    s3_bucket: Annotated[
        str,
        Meta(description="S3 bucket, required when `blobs.backend` is `s3`."),
    ] = ""
    s3_endpoint_url: Annotated[
        str,
        Meta(description="Endpoint of an S3-compatible store (MinIO, R2, ...); empty means AWS."),
    ] = ""
    s3_region: Annotated[str, Meta(description="S3 region.")] = "us-east-1"
    s3_access_key_id: Annotated[
        str,
        Meta(description="S3 access key id; empty means the default AWS credential chain."),
    ] = ""
    s3_secret_access_key: Annotated[
        str,
        Meta(description="Secret. S3 secret access key, paired with `blobs.s3_access_key_id`."),
    ] = ""


class LogSettings(_Section):
    """``[log]``: structured logs (SPEC §7); tokens and blob data are always redacted."""

    level: Annotated[
        Literal["debug", "info", "warning", "error"],
        Meta(description="Lowest level written: `debug`, `info`, `warning` or `error`."),
    ] = "info"
    format: Annotated[
        Literal["json", "text"],
        Meta(description="`json` (one object per line) or `text` (for humans)."),
    ] = "json"


class Policy(_Section):
    """``[policy]``: room behaviour limits; the global defaults of ``policy get|set``.

    The control plane stores per-room overrides and applies them with :meth:`patched`.
    """

    anonymous_caps: Annotated[
        list[DataCap],
        Meta(
            description=(
                "Data caps granted to peers without a token in unlocked rooms; empty means "
                "anonymous peers get no access."
            )
        ),
    ] = []
    rate_messages_per_s: Annotated[
        float,
        Meta(
            ge=0.001,
            le=1e9,
            description="Per-peer token-bucket refill, messages per second (over the limit: 4008).",
        ),
    ] = 200.0
    rate_bytes_per_s: Annotated[
        float,
        Meta(
            ge=1.0,
            le=1e15,
            description="Per-peer token-bucket refill, received bytes per second.",
        ),
    ] = 2097152.0
    rate_burst_messages: Annotated[
        int,
        Meta(ge=1, description="Token-bucket capacity in messages (the allowed burst)."),
    ] = 400
    rate_burst_bytes: Annotated[
        int,
        Meta(ge=1, description="Token-bucket capacity in bytes."),
    ] = 4194304
    rate_grace_ms: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "How long a peer may stay over its rate limit (messages refused with "
                "`rate-limited`) before it is closed with 4008."
            ),
        ),
    ] = 1000
    max_pack_bytes: Annotated[
        int,
        Meta(ge=1, description="Largest decoded pack; larger ones are refused with `too-large`."),
    ] = 1048576
    max_changes_per_pack: Annotated[
        int,
        Meta(ge=1, description="Most changes in one pack."),
    ] = 10000
    max_value_bytes: Annotated[
        int,
        Meta(ge=1, description="Largest value of one change; larger changes are refused."),
    ] = 262144
    stream_budget_bytes: Annotated[
        int,
        Meta(
            ge=1,
            description="A peer's outbound queue limit; a peer further behind gets 4001.",
        ),
    ] = 8388608
    broadcast_window_ms: Annotated[
        int,
        Meta(
            ge=0,
            le=1000,
            description="Extra wait that coalesces broadcasts (presence: at least 10 ms); "
            "0 sends at the end of the event-loop turn.",
        ),
    ] = 0
    echo_to_sender: Annotated[
        bool,
        Meta(
            description="Also broadcast a peer's own changes back to it (it always gets an `ack`)."
        ),
    ] = False
    retention_changes: Annotated[
        int,
        Meta(
            ge=1,
            description=(
                "Changes kept in the op log for cursor catch-up; an older cursor gets 4001."
            ),
        ),
    ] = 100000
    max_clock_skew_ms: Annotated[
        int,
        Meta(
            ge=0,
            description="Changes stamped further than this ahead of the server clock are refused.",
        ),
    ] = 60000
    blob_max_bytes: Annotated[
        int,
        Meta(ge=1, description="Largest blob accepted, inline or direct."),
    ] = 67108864
    presence_ttl_ms: Annotated[
        int,
        Meta(ge=1, description="A peer's presence expires when not refreshed within this time."),
    ] = 30000
    presence_max_bytes: Annotated[
        int,
        Meta(ge=1, description="Largest presence state of one peer (JSON bytes)."),
    ] = 4096
    presence_max_members: Annotated[
        int,
        Meta(ge=1, description="Most peers with presence state in one room."),
    ] = 500
    presence_leave_grace_ms: Annotated[
        int,
        Meta(
            ge=0,
            description="Delay before `presence-leave` is broadcast after a disconnect.",
        ),
    ] = 0
    max_peers: Annotated[
        int,
        Meta(ge=1, description="Most peers connected to one room at once."),
    ] = 1000
    catchup_chunk: Annotated[
        int,
        Meta(ge=1, description="Changes per pack during catch-up."),
    ] = 1000

    def patched(self, patch: Mapping[str, object]) -> Policy:
        """A validated copy with ``patch`` (field name -> new value) applied.

        Values must have their JSON types (no string coercion). Raises
        :class:`ConfigError` with ``key`` ``policy.<field>`` on an unknown field or a bad
        value; ``self`` is never modified.
        """
        known = _field_names(Policy)
        for name in patch:
            if name not in known:
                raise ConfigError(f"unknown key 'policy.{name}'", key=f"policy.{name}")
        data: dict[str, Any] = msgspec.to_builtins(self)
        data.update(patch)
        try:
            return msgspec.convert(data, Policy)
        except msgspec.ValidationError as exc:
            raise _validation_error(exc, data, prefix="policy") from None


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """All settings, one attribute per TOML table."""

    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)
    blobs: BlobSettings = msgspec.field(default_factory=BlobSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    policy: Policy = msgspec.field(default_factory=Policy)

    def blob_dir(self) -> Path:
        """The filesystem blob directory: ``blobs.dir`` or ``<server.data_dir>/blobs``."""
        return Path(self.blobs.dir) if self.blobs.dir else Path(self.server.data_dir) / "blobs"


#: Section name -> its Struct type, in file order.
SECTIONS: dict[str, type[msgspec.Struct]] = {
    "server": ServerSettings,
    "auth": AuthSettings,
    "storage": StorageSettings,
    "blobs": BlobSettings,
    "log": LogSettings,
    "policy": Policy,
}


def _field_names(cls: type[msgspec.Struct]) -> tuple[str, ...]:
    return cls.__struct_fields__


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


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


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


def _validation_error(
    exc: msgspec.ValidationError, data: Mapping[str, Any], *, prefix: str = ""
) -> ConfigError:
    """Rewrite msgspec's ``<detail> - at `$.a.b``` as ``a.b: <detail>, got <value>``."""
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
    if ", got" not in detail and not detail.startswith("Invalid enum") and top not in SECRET_KEYS:
        found, value = _lookup(data, path)
        if found:
            detail = f"{detail}, got {_show(value)}"
    return ConfigError(f"{key}: {detail}", key=key)


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
        raise _validation_error(exc, data) from None
    return _check(settings)


def redact_dsn(dsn: str) -> str:
    """``dsn`` with its password replaced by ``***`` (URL and ``key=value`` forms)."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        userinfo, at, hostinfo = parts.netloc.rpartition("@")
        if at and ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            dsn = urlunsplit(parts._replace(netloc=f"{user}:{_REDACTED}@{hostinfo}"))
    return re.sub(
        r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)",
        rf"\g<1>{_REDACTED}",
        dsn,
        flags=re.IGNORECASE,
    )


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret replaced by ``"***"``.

    Masks the values of ``auth.keys`` (key ids stay visible), a non-empty
    ``blobs.s3_secret_access_key`` and the password inside ``storage.postgres_dsn``.
    This is what ``roomsync config show`` prints and what evidence bundles include.
    """
    data: dict[str, Any] = msgspec.to_builtins(settings)
    data["auth"]["keys"] = {kid: _REDACTED for kid in data["auth"]["keys"]}
    if data["blobs"]["s3_secret_access_key"]:
        data["blobs"]["s3_secret_access_key"] = _REDACTED
    data["storage"]["postgres_dsn"] = redact_dsn(data["storage"]["postgres_dsn"])
    return data


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
