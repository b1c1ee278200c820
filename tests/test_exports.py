"""The public surface of every public package stays exactly what is written here
(STYLE lesson 8, after httpx's ``tests/test_exported_members.py``).

A name added to or removed from a package's ``__all__`` fails this test until the list
below says so too: the change to the public API is then deliberate and reviewed. The
server and the CLI are not public APIs and export nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

import pytest

EXPECTED: dict[str, list[str]] = {
    # The core's API is its modules (one concept each; the TypeScript client ports them).
    "roomsync.core": [
        "archive",
        "blobflow",
        "catchup",
        "codec",
        "codes",
        "entries",
        "errors",
        "explain",
        "handshake",
        "hlc",
        "keepalive",
        "limits",
        "lineage",
        "merge",
        "messages",
        "mst",
        "packing",
        "postcard",
        "presence",
        "presence_view",
        "query",
        "ratelimit",
        "reconcile",
        "reconnect",
        "replica",
        "room",
        "session",
        "sketch",
        "types",
    ],
    "roomsync.control": [
        "REGISTRY",
        "Command",
        "Context",
        "Payload",
        "Registry",
        "Rejected",
        "handlers",
    ],
    "roomsync.auth": [
        "DATA_CAPS",
        "SUPPORTED_DATA_CAPS",
        "Claims",
        "TokenService",
        "check_room",
        "covers",
        "is_control_cap",
        "load_keys",
        "load_or_create_keys",
        "negotiate",
        "parse_caps",
        "parse_keys_env",
        "resolve_signing_keys",
        "room_matches",
        "signing_keys",
        "validate_cap",
        "validate_room_pattern",
    ],
    "roomsync.blobs": [
        "BlobBackendError",
        "BlobMissing",
        "BlobStore",
        "BlobStoreError",
        "BlobVerifyFailed",
        "FilesystemBlobStore",
        "MemoryBlobStore",
        "S3BlobStore",
        "UrlGrant",
        "UrlSigner",
        "gc",
        "sha256_hex",
    ],
    "roomsync.bus": ["Bus", "BusError", "Handler", "MemoryBus", "RoomEvent", "Subscription"],
    "roomsync.client": [
        "Backoff",
        "BlobError",
        "BlobFetchFailed",
        "BlobInfo",
        "BlobNotFound",
        "BlobRejected",
        "Change",
        "ChangeStream",
        "ConnectError",
        "ConnectionClosed",
        "ConnectionStats",
        "PresenceEvent",
        "PresenceInfo",
        "PresenceStream",
        "ReconcileResult",
        "RefusedChange",
        "RequestRefused",
        "RetryWait",
        "RoomClient",
        "SupersededChange",
        "TickInfo",
        "connect",
        "ws_url",
    ],
    # Settings: the schema, Policy, the loader and their one error (config/ re-exports them).
    "roomsync.config": [
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
    ],
    # Operator tools as a library (doctor, canary, evidence, capture diff): its modules.
    "roomsync.ops": ["capture_diff", "checks", "evidence", "probe"],
    # App hooks (docs/hooks.md): the contexts, results and the shipped validator.
    "roomsync.hooks": [
        "DECISION_HOOKS",
        "EVENT_HOOKS",
        "HOOK_NAMES",
        "REFUSAL_CODES",
        "Allow",
        "ChangesContext",
        "Claims",
        "CommitEvent",
        "HelloContext",
        "JsonSchemaValidator",
        "PeerEvent",
        "Refusal",
        "Refuse",
        "RoomInfo",
    ],
    # The test kit's API is its modules too.
    "roomsync.testing": [
        "blob_contract",
        "bus_contract",
        "clock",
        "control",
        "faults",
        "link",
        "load",
        "moto_server",
        "postgres",
        "proxy",
        "rawws",
        "redis",
        "reliability",
        "server",
        "store_contract",
        "tls",
        "webhook_contract",
        "wsclient",
    ],
}

#: Public packages that have no ``__all__`` yet (their ``__init__`` is being reworked
#: elsewhere); each must get one, and then its list above.
WITHOUT_ALL = ["roomsync.storage"]

NOT_PUBLIC = ["roomsync.server", "roomsync.cli"]


def resolve(package: ModuleType, name: str) -> object:
    """``from package import name``: an attribute, or else a submodule."""
    if hasattr(package, name):
        return getattr(package, name)
    if importlib.util.find_spec(f"{package.__name__}.{name}") is None:
        raise AssertionError(f"{package.__name__}.__all__ names {name!r}, which does not exist")
    return importlib.import_module(f"{package.__name__}.{name}")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_all_is_exact(name: str) -> None:
    package = importlib.import_module(name)
    assert list(package.__all__) == EXPECTED[name]
    assert len(set(package.__all__)) == len(package.__all__)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_exported_name_resolves(name: str) -> None:
    package = importlib.import_module(name)
    for member in package.__all__:
        assert resolve(package, member) is not None, f"{name}.{member}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_star_import_gives_exactly_all(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(EXPECTED[name])


@pytest.mark.parametrize("name", WITHOUT_ALL)
def test_packages_still_without_all(name: str) -> None:
    """Flips to failing when the package gets its ``__all__``: move it to EXPECTED."""
    assert not hasattr(importlib.import_module(name), "__all__")


@pytest.mark.parametrize("name", NOT_PUBLIC)
def test_server_and_cli_say_they_are_not_public(name: str) -> None:
    package = importlib.import_module(name)
    assert not hasattr(package, "__all__")
    assert "not a public api" in (package.__doc__ or "").lower()
