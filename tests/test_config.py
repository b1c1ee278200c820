"""Settings: defaults, file, environment, overrides, errors, redaction, docs (config/)."""

from __future__ import annotations

import re
import socket
import tomllib
import typing
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomsync.config import (
    SECTIONS,
    ConfigError,
    DataCap,
    Policy,
    ServerSettings,
    Settings,
    StorageSettings,
    load_settings,
    redact_dsn,
    redacted,
    to_toml,
)
from roomsync.core.types import DATA_CAPS
from roomsync.storage.factory import build_store

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s" * 40


@pytest.fixture(autouse=True)
def _no_stray_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty directory so ./roomsync.toml is never picked up by accident."""
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "conf.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def fails(message: str, **kwargs: Any) -> ConfigError:
    """Load with ``kwargs`` (env defaults to empty) and expect exactly ``message``."""
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigError) as excinfo:
        load_settings(**kwargs)
    assert str(excinfo.value) == message
    return excinfo.value


def all_keys() -> list[tuple[str, str, object]]:
    """(section, key, default) for every setting."""
    keys = []
    for section, cls in SECTIONS.items():
        for info in msgspec.structs.fields(cls):
            default = info.default_factory() if info.default is msgspec.NODEFAULT else info.default
            keys.append((section, info.name, default))
    return keys


# --- defaults -----------------------------------------------------------------------------


def test_defaults() -> None:
    s = load_settings(env={})
    assert msgspec.to_builtins(s) == msgspec.to_builtins(Settings())
    assert (s.server.host, s.server.port, s.server.data_dir) == (
        "127.0.0.1",
        8787,
        "./roomsync-data",
    )
    assert s.server.max_queued_bytes == 268435456 and s.server.room_idle_unload_ms == 30000
    assert s.auth.keys == {} and s.auth.active_kid == ""
    assert (s.storage.backend, s.storage.sqlite_synchronous) == ("sqlite", "NORMAL")
    assert (s.blobs.backend, s.blobs.url_ttl_s, s.blobs.s3_region) == (
        "filesystem",
        300,
        "us-east-1",
    )
    assert (s.log.level, s.log.format) == ("info", "json")
    p = s.policy
    assert p.anonymous_caps == []
    assert (p.rate_messages_per_s, p.rate_bytes_per_s) == (200.0, 2097152.0)
    assert (p.broadcast_window_ms, p.echo_to_sender, p.catchup_chunk) == (0, False, 1000)
    assert (p.presence_leave_grace_ms, p.max_peers) == (0, 1000)


def test_mutable_defaults_are_not_shared() -> None:
    a, b = Settings(), Settings()
    a.policy.anonymous_caps.append("read")
    a.auth.keys["k"] = SECRET
    assert b.policy.anonymous_caps == [] and b.auth.keys == {}


def test_node_name() -> None:
    assert ServerSettings().node_name() == f"{socket.gethostname()}:8787"
    assert ServerSettings(port=9000).node_name() == f"{socket.gethostname()}:9000"
    assert ServerSettings(node_id="node-a").node_name() == "node-a"


def test_blob_dir() -> None:
    s = load_settings(env={}, overrides={"server.data_dir": "/srv/rs"})
    assert s.blob_dir() == Path("/srv/rs/blobs")
    s = load_settings(env={}, overrides={"blobs.dir": "/mnt/blobs"})
    assert s.blob_dir() == Path("/mnt/blobs")


def test_data_cap_literal_matches_core() -> None:
    assert typing.get_args(DataCap) == DATA_CAPS


# --- sources ------------------------------------------------------------------------------


def test_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        [server]
        port = 9000
        dev = true
        [auth.keys]
        k1 = "{SECRET}"
        k2 = "{SECRET.upper()}"
        [auth]
        active_kid = "k2"
        [storage]
        backend = "memory"
        postgres_dsn = "postgresql://u:p@db/rs"
        [policy]
        anonymous_caps = ["read", "presence"]
        rate_messages_per_s = 50
        echo_to_sender = true
        """,
    )
    s = load_settings(path, env={})
    assert (s.server.port, s.server.dev) == (9000, True)
    assert s.auth.keys == {"k1": SECRET, "k2": SECRET.upper()} and s.auth.active_kid == "k2"
    assert s.storage.backend == "memory"
    assert s.storage.postgres_dsn == "postgresql://u:p@db/rs"
    assert s.policy.anonymous_caps == ["read", "presence"]
    assert s.policy.rate_messages_per_s == 50.0 and isinstance(s.policy.rate_messages_per_s, float)
    assert s.policy.echo_to_sender is True
    assert s.server.host == "127.0.0.1"  # untouched keys keep their defaults


def test_default_file_in_working_directory(tmp_path: Path) -> None:
    write(tmp_path, "[server]\nport = 9100\n", name="roomsync.toml")
    assert load_settings(env={}).server.port == 9100


def test_roomsync_config_variable(tmp_path: Path) -> None:
    write(tmp_path, "[server]\nport = 9100\n", name="roomsync.toml")
    other = write(tmp_path, "[server]\nport = 9200\n", name="other.toml")
    assert load_settings(env={"ROOMSYNC_CONFIG": str(other)}).server.port == 9200
    # An explicit path beats the variable.
    explicit = write(tmp_path, "[server]\nport = 9300\n", name="explicit.toml")
    assert load_settings(explicit, env={"ROOMSYNC_CONFIG": str(other)}).server.port == 9300
    fails(
        f"config error: {tmp_path / 'gone.toml'}: file not found",
        env={"ROOMSYNC_CONFIG": str(tmp_path / "gone.toml")},
    )


def test_explicit_missing_file(tmp_path: Path) -> None:
    fails(f"config error: {tmp_path / 'nope.toml'}: file not found", path=tmp_path / "nope.toml")


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\nport = 1\n")
    with pytest.raises(ConfigError, match=rf"^config error: {re.escape(str(path))}: invalid TOML"):
        load_settings(path, env={})


@pytest.mark.parametrize(
    ("file_port", "env_port", "override", "expected"),
    [
        (None, None, None, 8787),
        (9000, None, None, 9000),
        (9000, "9001", None, 9001),
        (None, "9001", None, 9001),
        (9000, "9001", 9002, 9002),
        (9000, None, "9002", 9002),
        (None, None, 9002, 9002),
    ],
)
def test_precedence_file_env_overrides(
    tmp_path: Path,
    file_port: int | None,
    env_port: str | None,
    override: int | str | None,
    expected: int,
) -> None:
    path = write(tmp_path, f"[server]\nport = {file_port}\n" if file_port else "")
    env = {"ROOMSYNC_SERVER_PORT": env_port} if env_port else {}
    s = load_settings(path, env=env, overrides={"server.port": override})
    assert s.server.port == expected


def test_environment_values() -> None:
    env = {
        "ROOMSYNC_SERVER_HOST": "0.0.0.0",
        "ROOMSYNC_SERVER_DEV": "Yes",
        "ROOMSYNC_SERVER_DATA_DIR": "/var/lib/rs",
        "ROOMSYNC_POLICY_ECHO_TO_SENDER": "true",
        "ROOMSYNC_POLICY_RATE_BYTES_PER_S": "1.5e6",
        "ROOMSYNC_POLICY_ANONYMOUS_CAPS": " read, presence ,",
        "ROOMSYNC_LOG_LEVEL": "debug",
        "ROOMSYNC_AUTH_KEYS": f"a:{SECRET},b:{SECRET}x",
        "ROOMSYNC_AUTH_ACTIVE_KID": "b",
        "ROOMSYNC_BLOBS_S3_SECRET_ACCESS_KEY": "shh",
        # Not settings: other tools' variables and unrelated ones are ignored.
        "ROOMSYNC_URL": "ws://x",
        "ROOMSYNC_TOKEN": "t",
        "ROOMSYNC_SERVERX": "1",
        "HOME": "/root",
    }
    s = load_settings(env=env)
    assert (s.server.host, s.server.dev, s.server.data_dir) == ("0.0.0.0", True, "/var/lib/rs")
    assert s.policy.echo_to_sender is True
    assert s.policy.rate_bytes_per_s == 1.5e6
    assert s.policy.anonymous_caps == ["read", "presence"]
    assert s.log.level == "debug"
    assert s.auth.keys == {"a": SECRET, "b": SECRET + "x"} and s.auth.active_kid == "b"
    assert s.blobs.s3_secret_access_key == "shh"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("TRUE", True), ("on", True), ("0", False), ("No", False), ("off", False)],
)
def test_environment_booleans(text: str, expected: bool) -> None:
    assert load_settings(env={"ROOMSYNC_POLICY_ECHO_TO_SENDER": text}).policy.echo_to_sender is (
        expected
    )


def test_environment_empty_list() -> None:
    env = {"ROOMSYNC_POLICY_ANONYMOUS_CAPS": "read"}
    assert load_settings(env=env).policy.anonymous_caps == ["read"]
    env = {"ROOMSYNC_POLICY_ANONYMOUS_CAPS": ""}
    assert load_settings(env=env).policy.anonymous_caps == []


def test_env_auth_keys_replace_file_keys(tmp_path: Path) -> None:
    path = write(tmp_path, f'[auth.keys]\nold = "{SECRET}"\n')
    s = load_settings(path, env={"ROOMSYNC_AUTH_KEYS": f"new:{SECRET}"})
    assert s.auth.keys == {"new": SECRET}


def test_overrides() -> None:
    s = load_settings(
        env={},
        overrides={
            "server.port": "9100",
            "server.dev": True,
            "server.data_dir": Path("/data"),
            "server.host": None,  # a flag that was not given
            "policy.anonymous_caps": ("read",),
            "policy.echo_to_sender": "yes",
            "policy.rate_messages_per_s": 12,
            "auth.keys": f"k:{SECRET}",
        },
    )
    assert (s.server.port, s.server.dev, s.server.data_dir) == (9100, True, "/data")
    assert s.server.host == "127.0.0.1"
    assert s.policy.anonymous_caps == ["read"] and s.policy.echo_to_sender is True
    assert s.policy.rate_messages_per_s == 12.0
    assert s.auth.keys == {"k": SECRET}


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[policy]\nrate_messages_per_s = -3",
            "config error: policy.rate_messages_per_s: Expected `float` >= 0.001, got -3",
        ),
        ("[server]\nprot = 1", "config error: unknown key 'server.prot'"),
        ("[sever]\nport = 1", "config error: unknown section 'sever'"),
        ("port = 1", "config error: unknown key 'port' (settings belong in a [section])"),
        ("server = 1", "config error: server: expected a table [server]"),
        ('[server]\nport = "x"', "config error: server.port: Expected `int`, got `str`"),
        ("[server]\nport = 0", "config error: server.port: Expected `int` >= 1, got 0"),
        (
            "[server]\nport = 70000",
            "config error: server.port: Expected `int` <= 65535, got 70000",
        ),
        ("[server]\nport = 1.5", "config error: server.port: Expected `int`, got `float`"),
        ("[server]\ndev = 1", "config error: server.dev: Expected `bool`, got `int`"),
        (
            "[policy]\nbroadcast_window_ms = 1001",
            "config error: policy.broadcast_window_ms: Expected `int` <= 1000, got 1001",
        ),
        (
            "[policy]\nrate_grace_ms = -1",
            "config error: policy.rate_grace_ms: Expected `int` >= 0, got -1",
        ),
        (
            "[policy]\nrate_bytes_per_s = nan",
            "config error: policy.rate_bytes_per_s: Expected `float` >= 1.0, got nan",
        ),
        ('[log]\nlevel = "loud"', "config error: log.level: Invalid enum value 'loud'"),
        (
            '[storage]\nbackend = "mysql"',
            "config error: storage.backend: Invalid enum value 'mysql'",
        ),
        (
            '[policy]\nanonymous_caps = ["read", "admin"]',
            "config error: policy.anonymous_caps[1]: Invalid enum value 'admin'",
        ),
        (
            '[policy]\nanonymous_caps = "read"',
            "config error: policy.anonymous_caps: Expected `array`, got `str`",
        ),
        (
            '[server]\ntls_cert = "c.pem"',
            "config error: server.tls_key: required when server.tls_cert is set "
            "(set both or neither)",
        ),
        (
            '[server]\ntls_key = "k.pem"',
            "config error: server.tls_cert: required when server.tls_key is set "
            "(set both or neither)",
        ),
        (
            '[storage]\nbackend = "postgres"',
            "config error: storage.postgres_dsn: required when storage.backend is 'postgres'",
        ),
        (
            '[storage]\nbackend = "postgresql"\npostgres_dsn = "mysql://db/rs"',
            "config error: storage.postgres_dsn: expected a postgresql:// connection string",
        ),
        (
            '[storage]\nbackend = "mongo"',
            "config error: storage.backend: Invalid enum value 'mongo'",
        ),
        (
            '[blobs]\nbackend = "s3"',
            "config error: blobs.s3_bucket: required when blobs.backend is 's3'",
        ),
        (
            '[auth.keys]\nk1 = "short!"',
            "config error: auth.keys.k1: secret is 6 bytes; HS256 needs at least 32",
        ),
        (
            f'[auth.keys]\n"bad kid" = "{SECRET}"',
            "config error: auth.keys: invalid key id 'bad kid': must match [A-Za-z0-9._-]{1,64}",
        ),
        (
            f'[auth]\nactive_kid = "k2"\n[auth.keys]\nk1 = "{SECRET}"',
            "config error: auth.active_kid: 'k2' is not one of auth.keys",
        ),
        (
            '[auth]\nactive_kid = "k2"',
            "config error: auth.active_kid: 'k2' is not one of auth.keys",
        ),
        (
            "[auth.keys]\nk1 = 5",
            "config error: auth.keys[...]: Expected `str`, got `int`",
        ),
    ],
)
def test_file_errors(tmp_path: Path, toml: str, message: str) -> None:
    fails(message, path=write(tmp_path, toml))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"ROOMSYNC_SERVER_PROT": "1"},
            "config error: unknown key 'server.prot' (from ROOMSYNC_SERVER_PROT)",
        ),
        (
            {"ROOMSYNC_SERVER_PORT": "http"},
            "config error: server.port: expected an integer, got 'http' "
            "(from ROOMSYNC_SERVER_PORT)",
        ),
        (
            {"ROOMSYNC_SERVER_PORT": "99999"},
            "config error: server.port: Expected `int` <= 65535, got 99999",
        ),
        (
            {"ROOMSYNC_POLICY_RATE_MESSAGES_PER_S": "-3"},
            "config error: policy.rate_messages_per_s: Expected `float` >= 0.001, got -3",
        ),
        (
            {"ROOMSYNC_POLICY_RATE_MESSAGES_PER_S": "fast"},
            "config error: policy.rate_messages_per_s: expected a number, got 'fast' "
            "(from ROOMSYNC_POLICY_RATE_MESSAGES_PER_S)",
        ),
        (
            {"ROOMSYNC_POLICY_ECHO_TO_SENDER": "maybe"},
            "config error: policy.echo_to_sender: expected a boolean (true/false, yes/no, "
            "on/off, 1/0), got 'maybe' (from ROOMSYNC_POLICY_ECHO_TO_SENDER)",
        ),
        (
            {"ROOMSYNC_POLICY_ANONYMOUS_CAPS": "read,root"},
            "config error: policy.anonymous_caps[1]: Invalid enum value 'root'",
        ),
        (
            {"ROOMSYNC_AUTH_KEYS": "no-colon-here"},
            "config error: auth.keys: item 1: expected 'kid:secret' (from ROOMSYNC_AUTH_KEYS)",
        ),
        (
            {"ROOMSYNC_CONFIG": ""},
            None,
        ),
    ],
)
def test_env_errors(env: dict[str, str], message: str | None) -> None:
    if message is None:
        load_settings(env=env)
    else:
        fails(message, env=env)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"server.prot": 1}, "config error: unknown key 'server.prot' (from override)"),
        ({"port": 1}, "config error: unknown key 'port' (from override)"),
        ({"sever.port": 1}, "config error: unknown key 'sever.port' (from override)"),
        (
            {"server.port": "x"},
            "config error: server.port: expected an integer, got 'x' (from override)",
        ),
        ({"server.port": -1}, "config error: server.port: Expected `int` >= 1, got -1"),
    ],
)
def test_override_errors(overrides: dict[str, object], message: str) -> None:
    fails(message, overrides=overrides)


@pytest.mark.parametrize(
    "kwargs",
    [
        {
            "env": {
                "ROOMSYNC_STORAGE_BACKEND": "postgres",
                "ROOMSYNC_STORAGE_POSTGRES_DSN": "postgresql://u:pw@db/rs",
            }
        },
        {
            "overrides": {
                "storage.backend": "postgresql",
                "storage.postgres_dsn": "postgresql://u:pw@db/rs",
                "storage.postgres_pool_size": "4",
            }
        },
    ],
    ids=["env", "override"],
)
def test_postgres_backend_builds_a_postgres_store(kwargs: dict[str, Any]) -> None:
    from roomsync.storage.postgres import PostgresStore

    settings = load_settings(env=kwargs.get("env", {}), overrides=kwargs.get("overrides"))
    store = build_store(settings)
    assert isinstance(store, PostgresStore)
    assert store.dsn == "postgresql://u:pw@db/rs"
    assert store.max_size == (4 if "overrides" in kwargs else 10)
    assert "pw" not in repr(store)


def test_build_store_refuses_a_backend_it_does_not_have(tmp_path: Path) -> None:
    """Settings built without load_settings skip its checks; build_store still says why."""
    settings = Settings(storage=StorageSettings(backend=cast(Any, "mongo")))
    with pytest.raises(ConfigError) as excinfo:
        build_store(settings)
    assert str(excinfo.value).startswith("config error: storage.backend 'mongo' is not available")
    assert excinfo.value.key == "storage.backend"


def test_error_key_attribute(tmp_path: Path) -> None:
    error = fails(
        "config error: policy.max_peers: Expected `int` >= 1, got 0",
        path=write(tmp_path, "[policy]\nmax_peers = 0"),
    )
    assert error.key == "policy.max_peers"
    assert error.message == "policy.max_peers: Expected `int` >= 1, got 0"
    assert fails(
        "config error: unknown key 'server.prot'", path=write(tmp_path, "[server]\nprot=1")
    ).key == ("server.prot")


@pytest.mark.parametrize(
    ("kwargs", "secret"),
    [
        ({"env": {"ROOMSYNC_AUTH_KEYS": "k1:tiny-secret"}}, "tiny-secret"),
        ({"env": {"ROOMSYNC_AUTH_KEYS": "tiny-secret"}}, "tiny-secret"),
        ({"overrides": {"auth.keys": {"k1": "tiny-secret"}}}, "tiny-secret"),
        ({"overrides": {"blobs.s3_secret_access_key": 12345}}, "12345"),
    ],
)
def test_errors_never_show_secrets(kwargs: dict[str, Any], secret: str) -> None:
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigError) as excinfo:
        load_settings(**kwargs)
    assert secret not in str(excinfo.value)


# --- redaction ----------------------------------------------------------------------------


def test_redacted() -> None:
    s = load_settings(
        env={
            "ROOMSYNC_AUTH_KEYS": f"k1:{SECRET},k2:{SECRET}",
            "ROOMSYNC_BLOBS_S3_SECRET_ACCESS_KEY": "aws-secret",
            "ROOMSYNC_BLOBS_S3_ACCESS_KEY_ID": "AKIA123",
            "ROOMSYNC_STORAGE_POSTGRES_DSN": "postgresql://rs:pg-pass@db:5432/rs",
        }
    )
    data = redacted(s)
    assert data["auth"]["keys"] == {"k1": "***", "k2": "***"}
    assert data["blobs"]["s3_secret_access_key"] == "***"
    assert data["blobs"]["s3_access_key_id"] == "AKIA123"
    assert data["storage"]["postgres_dsn"] == "postgresql://rs:***@db:5432/rs"
    text = to_toml(data)
    for secret in (SECRET, "aws-secret", "pg-pass"):
        assert secret not in text
    # The settings themselves are untouched.
    assert s.auth.keys["k1"] == SECRET and s.blobs.s3_secret_access_key == "aws-secret"


def test_redacted_leaves_empty_secrets_empty() -> None:
    data = redacted(Settings())
    assert data["blobs"]["s3_secret_access_key"] == ""
    assert data["storage"]["postgres_dsn"] == ""
    assert data["auth"]["keys"] == {}


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://u:p@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u:p%40ss@h:5/db?sslmode=require",
            "postgresql://u:***@h:5/db?sslmode=require",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h/db?password=x&user=u", "postgresql://h/db?password=***&user=u"),
        ("host=h user=u password=secret dbname=d", "host=h user=u password=*** dbname=d"),
        ("host=h password='a b\\' c' user=u", "host=h password=*** user=u"),
        ("host=h PASSWORD = s3", "host=h PASSWORD = ***"),
        ("", ""),
    ],
)
def test_redact_dsn(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected


# --- policy patches -----------------------------------------------------------------------


def test_policy_patched() -> None:
    base = Policy()
    patched = base.patched({"max_peers": 5, "echo_to_sender": True, "rate_messages_per_s": 10})
    assert (patched.max_peers, patched.echo_to_sender, patched.rate_messages_per_s) == (
        5,
        True,
        10.0,
    )
    assert patched.catchup_chunk == base.catchup_chunk
    assert base.max_peers == 1000 and base.echo_to_sender is False
    assert base.patched({}) == base and base.patched({}) is not base
    caps = base.patched({"anonymous_caps": ["read"]})
    caps.anonymous_caps.append("write")
    assert base.anonymous_caps == []


@pytest.mark.parametrize(
    ("patch", "message", "key"),
    [
        ({"max_peerz": 5}, "config error: unknown key 'policy.max_peerz'", "policy.max_peerz"),
        (
            {"rate_messages_per_s": -3},
            "config error: policy.rate_messages_per_s: Expected `float` >= 0.001, got -3",
            "policy.rate_messages_per_s",
        ),
        (
            {"max_peers": "5"},
            "config error: policy.max_peers: Expected `int`, got `str`",
            "policy.max_peers",
        ),
        (
            {"broadcast_window_ms": 5000},
            "config error: policy.broadcast_window_ms: Expected `int` <= 1000, got 5000",
            "policy.broadcast_window_ms",
        ),
        (
            {"anonymous_caps": ["fly"]},
            "config error: policy.anonymous_caps[0]: Invalid enum value 'fly'",
            "policy.anonymous_caps[0]",
        ),
        (
            {"echo_to_sender": None},
            "config error: policy.echo_to_sender: Expected `bool`, got `null`",
            "policy.echo_to_sender",
        ),
    ],
)
def test_policy_patched_errors(patch: dict[str, object], message: str, key: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        Policy().patched(patch)
    assert str(excinfo.value) == message
    assert excinfo.value.key == key


def test_policy_schema_has_descriptions() -> None:
    schema = msgspec.json.schema(Policy)
    props = schema["$defs"]["Policy"]["properties"]
    assert props["broadcast_window_ms"]["maximum"] == 1000
    assert all(prop.get("description") for prop in props.values())


# --- TOML writer --------------------------------------------------------------------------


def test_to_toml_round_trips_settings(tmp_path: Path) -> None:
    s = load_settings(
        env={},
        overrides={
            "auth.keys": f"k1:{SECRET}",
            "policy.anonymous_caps": "read,blob",
            "server.node_id": 'n "1"\\x',
        },
    )
    data = msgspec.to_builtins(s)
    text = to_toml(data)
    assert tomllib.loads(text) == data
    reloaded = load_settings(write(tmp_path, text), env={})
    assert msgspec.to_builtins(reloaded) == data


def test_to_toml_layout() -> None:
    text = to_toml({"top": 1, "a": {"x": "y", "b": {"c": [1, 2.5, True]}, "e": {}}})
    assert text == 'top = 1\n\n[a]\nx = "y"\ne = {}\n\n[a.b]\nc = [1, 2.5, true]\n'
    assert to_toml({}) == ""


def test_to_toml_escapes() -> None:
    data = {
        "plain key": {"dotted.key": 'q"b\\s\b\t\n\f\r\x00\x1f\x7fé😀'},
        "": {"floats": [float("inf"), float("-inf"), 1e-5, 1e16, -0.5]},
        "inline": [{"a": 1, "b": {"c": []}}, {}],
    }
    assert tomllib.loads(to_toml(data)) == data


def test_to_toml_nan() -> None:
    assert "x = nan" in to_toml({"x": float("nan")})


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"x": None}, TypeError),
        ({"x": b"bytes"}, TypeError),
        ({1: "int key"}, TypeError),
        ({"x": "\ud800"}, ValueError),
    ],
)
def test_to_toml_refuses(data: dict[Any, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        to_toml(data)


_SCALARS = (
    st.text(max_size=10)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=6), _VALUES, max_size=4))
def test_to_toml_round_trip_property(data: dict[str, Any]) -> None:
    assert tomllib.loads(to_toml(data)) == data


# --- documentation ------------------------------------------------------------------------


def test_every_setting_is_documented_with_its_default() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for section, key, default in all_keys():
        rendered = to_toml({"v": default}).strip().removeprefix("v = ")
        row = re.search(rf"^\| `{section}\.{key}` \| `([^`]*)` \|", docs, re.MULTILINE)
        assert row is not None, f"{section}.{key} missing from docs/configuration.md"
        assert row.group(1) == rendered, f"{section}.{key}: documented default differs"


def test_example_file_lists_every_key_at_its_default() -> None:
    path = ROOT / "roomsync.example.toml"
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    expected = {section: {key for s, key, _ in all_keys() if s == section} for section in SECTIONS}
    assert {section: set(table) for section, table in raw.items()} == expected
    assert msgspec.to_builtins(load_settings(path, env={})) == msgspec.to_builtins(Settings())
