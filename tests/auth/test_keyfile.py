"""Signing keys: the data directory key file, ROOMSYNC_AUTH_KEYS, and which keys win."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from roomsync.auth.keyfile import (
    KEYFILE_NAME,
    load_keys,
    load_or_create_keys,
    parse_keys_env,
    resolve_signing_keys,
    signing_keys,
)
from roomsync.auth.tokens import TokenService
from roomsync.config import load_settings

SECRET = "x" * 40


def test_created_on_first_use_with_mode_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    keys = load_or_create_keys(data_dir)
    path = data_dir / KEYFILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(keys) == 1
    ((kid, secret),) = keys.items()
    assert re.fullmatch(r"k-[0-9a-f]{8}", kid)
    assert len(secret) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", secret)
    assert json.loads(path.read_text()) == {"keys": keys, "active_kid": kid}
    # The generated key is good enough for HS256.
    service = TokenService(keys)
    assert service.verify(service.mint(room="r", caps=[], ttl_s=5, now_s=0), now_s=1).kid == kid


def test_reused_on_later_calls(tmp_path: Path) -> None:
    first = load_or_create_keys(tmp_path)
    assert load_or_create_keys(tmp_path) == first
    assert load_keys(tmp_path) == (first, next(iter(first)))


def test_two_data_dirs_get_different_keys(tmp_path: Path) -> None:
    assert load_or_create_keys(tmp_path / "a") != load_or_create_keys(tmp_path / "b")


def test_load_keys_absent(tmp_path: Path) -> None:
    assert load_keys(tmp_path) is None
    assert load_keys(tmp_path / "missing") is None


def test_active_key_comes_first(tmp_path: Path) -> None:
    document = {"keys": {"old": SECRET, "new": "y" * 40}, "active_kid": "new"}
    (tmp_path / KEYFILE_NAME).write_text(json.dumps(document))
    assert load_keys(tmp_path) == ({"old": SECRET, "new": "y" * 40}, "new")
    keys = load_or_create_keys(tmp_path)
    assert list(keys) == ["new", "old"]
    assert TokenService(keys).active_kid == "new"


def test_active_kid_defaults_to_first_key(tmp_path: Path) -> None:
    (tmp_path / KEYFILE_NAME).write_text(json.dumps({"keys": {"a": SECRET, "b": SECRET}}))
    assert load_keys(tmp_path) == ({"a": SECRET, "b": SECRET}, "a")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ("{}", "'keys' must be a non-empty object"),
        ('{"keys": {}}', "'keys' must be a non-empty object"),
        ('{"keys": {"a": 1}}', "'keys' must be a non-empty object"),
        ('{"keys": {"a": ""}}', "'keys' must be a non-empty object"),
        ('{"keys": {"a b": "s"}}', "invalid key id 'a b'"),
        ('{"keys": {"a": "s"}, "active_kid": "b"}', "'active_kid' 'b' is not one of the keys"),
    ],
)
def test_bad_key_file(tmp_path: Path, content: str, fragment: str) -> None:
    (tmp_path / KEYFILE_NAME).write_text(content)
    with pytest.raises(ValueError, match=re.escape(fragment)) as excinfo:
        load_or_create_keys(tmp_path)
    assert KEYFILE_NAME in str(excinfo.value)


def test_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / KEYFILE_NAME
    path.write_text(json.dumps({"keys": {"mine": SECRET}, "active_kid": "mine"}))
    os.chmod(path, 0o640)
    assert load_or_create_keys(tmp_path) == {"mine": SECRET}
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("k1:s1", {"k1": "s1"}),
        ("k1:s1,k2:s2", {"k1": "s1", "k2": "s2"}),
        (" k1 : s1 , k2:s2 ,", {"k1": "s1", "k2": "s2"}),
        ("k1:a:b:c", {"k1": "a:b:c"}),
        ("k-1.x_y:abc", {"k-1.x_y": "abc"}),
    ],
)
def test_parse_keys_env(value: str, expected: dict[str, str]) -> None:
    assert parse_keys_env(value) == expected
    assert list(parse_keys_env(value)) == list(expected)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "at least one"),
        (" , ", "at least one"),
        ("secret-without-kid", "item 1: expected 'kid:secret'"),
        ("k1:s1,k2", "item 2: expected 'kid:secret'"),
        (":s1", "item 1: expected 'kid:secret'"),
        ("k1:", "item 1: expected 'kid:secret'"),
        ("k 1:s", "item 1: invalid key id 'k 1'"),
        ("k1:a,k1:b", "item 2: duplicate key id 'k1'"),
    ],
)
def test_parse_keys_env_errors(value: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_keys_env(value)


def test_parse_keys_env_errors_do_not_echo_secrets() -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_keys_env("k1:topsecret,broken")
    assert "topsecret" not in str(excinfo.value)


def test_resolve_prefers_configured_keys(tmp_path: Path) -> None:
    configured = {"a": SECRET, "b": "z" * 40}
    assert resolve_signing_keys(configured, "", tmp_path) == configured
    assert list(resolve_signing_keys(configured, "b", tmp_path)) == ["b", "a"]
    assert not (tmp_path / KEYFILE_NAME).exists()
    with pytest.raises(ValueError, match="'c' is not among the configured keys"):
        resolve_signing_keys(configured, "c", tmp_path)


def test_resolve_falls_back_to_key_file(tmp_path: Path) -> None:
    keys = resolve_signing_keys({}, "", tmp_path)
    assert (tmp_path / KEYFILE_NAME).exists()
    assert resolve_signing_keys({}, "", tmp_path) == keys


def test_signing_keys_of_a_nodes_settings(tmp_path: Path) -> None:
    """What serve and token mint share: configured keys, else the data dir's file."""
    configured = load_settings(
        env={},
        overrides={
            "auth.keys": {"a": SECRET, "b": "z" * 40},
            "auth.active_kid": "b",
            "server.data_dir": str(tmp_path),
        },
    )
    assert list(signing_keys(configured)) == ["b", "a"]
    assert not (tmp_path / KEYFILE_NAME).exists()
    bare = load_settings(env={}, overrides={"server.data_dir": str(tmp_path)})
    keys = signing_keys(bare)
    assert (tmp_path / KEYFILE_NAME).exists() and signing_keys(bare) == keys
