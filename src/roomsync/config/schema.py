"""What the settings are: one msgspec Struct per TOML table, explicit defaults, the keys
whose values are secret, and the settings as data with those masked (:func:`redacted`).

Every field has an explicit default and a ``Meta(description=...)``, and a row in
``docs/configuration.md`` with that default (``tests/test_config.py`` checks every key).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ..redaction import mask_secret
from .errors import ConfigError
from .policy import Policy

__all__ = [
    "POSTGRES_BACKENDS",
    "SECRET_KEYS",
    "SECTIONS",
    "STORAGE_BACKENDS",
    "AppSettings",
    "AuthSettings",
    "BlobSettings",
    "LogSettings",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "WebhookSettings",
    "redacted",
    "storage_backend_unavailable",
]

#: Dotted keys whose values are secret: never shown in errors, masked by :func:`redacted`.
SECRET_KEYS = frozenset(
    {"auth.keys", "blobs.s3_secret_access_key", "storage.postgres_dsn", "bus.redis_url"}
)

#: The ``storage.backend`` values this build runs. ``postgres`` (SPEC §8, several nodes on
#: one database, ``storage.postgres_dsn``) is also spelled ``postgresql``.
STORAGE_BACKENDS = ("sqlite", "memory", "postgres", "postgresql")
#: The ``storage.backend`` values that name the PostgreSQL store.
POSTGRES_BACKENDS = ("postgres", "postgresql")


def storage_backend_unavailable(backend: str) -> ConfigError:
    """The error for a ``storage.backend`` this build cannot run."""
    choices = " or ".join(repr(name) for name in STORAGE_BACKENDS)
    return ConfigError(
        f"storage.backend {backend!r} is not available: use {choices}",
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
    control_rate_per_s: Annotated[
        float,
        Meta(
            gt=0,
            description=(
                "Control-plane requests per second per operator (token `sub`), a token "
                "bucket; more are refused `rate-limited` (429 with `Retry-After`)."
            ),
        ),
    ] = 20.0
    control_burst: Annotated[
        int,
        Meta(ge=1, description="Control-plane requests an operator may send in a burst."),
    ] = 40
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
    events_ring: Annotated[
        int,
        Meta(
            ge=0,
            le=1000000,
            description=(
                "Recent log records, and ended sessions with their close codes, this node "
                "keeps (redacted) for `topology events` and `roomsync evidence`; 0 keeps none."
            ),
        ),
    ] = 2000

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
        Literal["sqlite", "memory", "postgres", "postgresql"],
        Meta(
            description=(
                "`sqlite` (embedded, in `server.data_dir`), `memory` (nothing survives a "
                "restart) or `postgres` (also spelled `postgresql`: one database shared by "
                "several nodes, at `storage.postgres_dsn`)."
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
                "Secret (password redacted). PostgreSQL connection string of the `postgres` "
                "backend, `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=...]`; "
                "required with it."
            )
        ),
    ] = ""
    postgres_pool_size: Annotated[
        int,
        Meta(
            ge=1,
            le=1000,
            description=(
                "Connections this node holds at most to PostgreSQL (one commits appends, "
                "the others serve reads and room writes)."
            ),
        ),
    ] = 10
    postgres_timeout_ms: Annotated[
        int,
        Meta(
            ge=100,
            le=600_000,
            description=(
                "How long connecting to PostgreSQL or one query or commit may take; past it "
                "the operation fails (writes are refused `internal` with a retry hint), so a "
                "node cut off from the database stops acknowledging after this long."
            ),
        ),
    ] = 30000


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
    shared: Annotated[
        bool,
        Meta(
            description=(
                "The `filesystem` directory is shared by every node (NFS, a shared volume). "
                "Several nodes (`bus.backend` `redis`) refuse to start on filesystem blobs "
                "without it: a blob uploaded via one node must be readable via the others."
            )
        ),
    ] = False


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


class AppSettings(_Section):
    """``[app]``: the application object whose hooks the server calls (``docs/hooks.md``)."""

    object: Annotated[
        str,
        Meta(
            description=(
                "`module:object` of the app whose hooks the server calls (`roomsync serve "
                "--app`); a class is built with `app.options`. Empty: no app."
            )
        ),
    ] = ""
    options: Annotated[
        dict[str, Any],
        Meta(
            description=(
                "Keyword arguments for `app.object` when it names a class, e.g. `schemas` "
                "for `roomsync.hooks:JsonSchemaValidator`."
            )
        ),
    ] = msgspec.field(default_factory=dict)
    budget_ms: Annotated[
        int,
        Meta(
            ge=1,
            le=60_000,
            description=(
                "Time `authorize` and `validate` may take; past it the hello or the pack is "
                "refused (fail closed)."
            ),
        ),
    ] = 1000
    event_budget_ms: Annotated[
        int,
        Meta(
            ge=1,
            le=600_000,
            description="Time a side-effect hook (`on_commit`, `on_join`, ...) may take; past it "
            "it is cancelled and counted as `timeout`.",
        ),
    ] = 5000
    max_queued_events: Annotated[
        int,
        Meta(
            ge=1,
            le=10_000_000,
            description="Side-effect hook calls queued at most; more are dropped and counted.",
        ),
    ] = 10_000


class WebhookSettings(_Section):
    """``[webhooks]``: how this node delivers the events of ``policy.webhooks``."""

    timeout_ms: Annotated[
        int,
        Meta(ge=100, le=120_000, description="Time one delivery attempt may take."),
    ] = 5000
    retry_for_ms: Annotated[
        int,
        Meta(
            ge=1000,
            le=30 * 86_400_000,
            description="How long after an event its delivery is retried before it fails.",
        ),
    ] = 86_400_000
    max_backoff_ms: Annotated[
        int,
        Meta(
            ge=100,
            le=3_600_000,
            description="Longest wait between two attempts (the wait doubles from 1 s).",
        ),
    ] = 60_000
    debounce_ms: Annotated[
        int,
        Meta(
            ge=0,
            le=600_000,
            description="Window in which a room's commits fold into one `changes.committed`.",
        ),
    ] = 1000
    lease_ms: Annotated[
        int,
        Meta(
            ge=1000,
            le=3_600_000,
            description="How long a claimed delivery is this node's before another node may "
            "try it (a node that died mid-delivery delays it by this much).",
        ),
    ] = 30_000


class BusSettings(_Section):
    """``[bus]``: how nodes hear each other's commits, presence and control signals, and
    how they find each other (SPEC §8). One node needs nothing here."""

    backend: Annotated[
        Literal["memory", "redis"],
        Meta(
            description=(
                "`memory` (one node) or `redis` (several nodes sharing a PostgreSQL store: "
                "pub/sub at `bus.redis_url`)."
            )
        ),
    ] = "memory"
    redis_url: Annotated[
        str,
        Meta(
            description=(
                "Secret (password redacted). Redis URL of the `redis` bus, "
                "`redis://[:PASSWORD@]HOST[:PORT]/DB` (or `rediss://`); required with it."
            )
        ),
    ] = ""
    prefix: Annotated[
        str,
        Meta(
            description=(
                "Starts every channel name: deployments sharing a Redis use different ones."
            )
        ),
    ] = "roomsync:"
    outbox_max: Annotated[
        int,
        Meta(
            ge=1,
            le=10_000_000,
            description=(
                "Events kept while Redis is unreachable; older ones are dropped (receivers "
                "refetch them from the store by seq)."
            ),
        ),
    ] = 10_000
    heartbeat_ms: Annotated[
        int,
        Meta(
            ge=100,
            le=60_000,
            description=(
                "How often this node records its heartbeat in the store's node registry "
                "(and sends the `heads` signal that repairs a lost last event)."
            ),
        ),
    ] = 1000
    node_dead_ms: Annotated[
        int,
        Meta(
            ge=500,
            le=600_000,
            description=(
                "A node whose heartbeat is older than this is dead: its placed rooms fail "
                "over to a live node and its presence entries leave."
            ),
        ),
    ] = 5000


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """All settings, one attribute per TOML table."""

    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)
    blobs: BlobSettings = msgspec.field(default_factory=BlobSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    policy: Policy = msgspec.field(default_factory=Policy)
    app: AppSettings = msgspec.field(default_factory=AppSettings)
    webhooks: WebhookSettings = msgspec.field(default_factory=WebhookSettings)
    bus: BusSettings = msgspec.field(default_factory=BusSettings)

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
    "app": AppSettings,
    "webhooks": WebhookSettings,
    "bus": BusSettings,
}


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret replaced by ``"***"``.

    Masks the values of ``auth.keys`` (key ids stay visible), a non-empty
    ``blobs.s3_secret_access_key`` and the passwords inside ``storage.postgres_dsn`` and
    ``bus.redis_url``.
    This is what ``roomsync config show`` prints. Every key of :data:`SECRET_KEYS` is
    masked by :func:`roomsync.redaction.mask_secret`.
    """
    data: dict[str, Any] = msgspec.to_builtins(settings)
    for dotted in SECRET_KEYS:
        section, name = dotted.split(".", 1)
        # Connection strings (*_dsn, *_url): only their password is secret.
        data[section][name] = mask_secret(data[section][name], dsn=name.endswith(("_dsn", "_url")))
    return data
