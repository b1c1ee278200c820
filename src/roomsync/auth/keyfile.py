"""Where signing keys come from when the configuration names none.

``roomsync serve`` with no configuration must still issue and verify tokens, and
``roomsync token mint`` run against the same data directory must produce tokens the
server accepts. Both therefore share ``<data_dir>/signing-keys.json``::

    {"keys": {"k-1a2b3c4d": "<secret>"}, "active_kid": "k-1a2b3c4d"}

created on first use with a random 32-byte secret, readable by its owner only (0600).
To rotate, add a key, point ``active_kid`` at it, and remove the old key once the tokens
it signed have expired. Keys given in the configuration (``auth.keys`` or the
``ROOMSYNC_AUTH_KEYS`` environment variable, parsed by :func:`parse_keys_env`) take
precedence over the file: see :func:`resolve_signing_keys`, or :func:`signing_keys` for
a node's settings.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config imports this module (key ids, ROOMSYNC_AUTH_KEYS)
    from ..config import Settings

__all__ = [
    "KEYFILE_NAME",
    "KID_RE",
    "load_keys",
    "load_or_create_keys",
    "parse_keys_env",
    "resolve_signing_keys",
    "signing_keys",
]

KEYFILE_NAME = "signing-keys.json"
#: Key ids: short, printable, safe in a JWT header, a file and an environment variable.
KID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _active_first(keys: Mapping[str, str], active_kid: str) -> dict[str, str]:
    """``keys`` reordered so that ``active_kid`` comes first (TokenService's default)."""
    ordered = {active_kid: keys[active_kid]}
    ordered.update((kid, secret) for kid, secret in keys.items() if kid != active_kid)
    return ordered


def load_keys(data_dir: Path) -> tuple[dict[str, str], str] | None:
    """Read ``<data_dir>/signing-keys.json``: ``(keys, active_kid)``, or None if absent.

    Raises ValueError naming the file when it exists but is not a valid key file.
    """
    path = Path(data_dir) / KEYFILE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with 'keys' and 'active_kid'")
    keys = data.get("keys")
    if (
        not isinstance(keys, dict)
        or not keys
        or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in keys.items())
    ):
        raise ValueError(f"{path}: 'keys' must be a non-empty object of kid -> secret strings")
    for kid in keys:
        if not KID_RE.fullmatch(kid):
            raise ValueError(f"{path}: invalid key id {kid!r}: must match {KID_RE.pattern}")
    active_kid = data.get("active_kid", next(iter(keys)))
    if not isinstance(active_kid, str) or active_kid not in keys:
        raise ValueError(f"{path}: 'active_kid' {active_kid!r} is not one of the keys")
    return dict(keys), active_kid


def load_or_create_keys(data_dir: Path) -> dict[str, str]:
    """The keys of ``<data_dir>/signing-keys.json``, creating the file if needed.

    The returned dict lists the active key first, so ``TokenService(keys)`` signs with
    it. A new file holds one key ``k-<8 hex>`` with a random 32-byte urlsafe secret;
    it is created exclusively (``O_CREAT | O_EXCL``) with mode 0600, and if another
    process wins the race to create it, its keys are used instead.
    """
    data_dir = Path(data_dir)
    loaded = load_keys(data_dir)
    if loaded is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        kid = f"k-{secrets.token_hex(4)}"
        created = {kid: secrets.token_urlsafe(32)}
        document = {"keys": created, "active_kid": kid}
        try:
            fd = os.open(data_dir / KEYFILE_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            loaded = load_keys(data_dir)
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(document, out, indent=2)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            return created
        if loaded is None:  # created and removed again between our two reads
            raise ValueError(f"{data_dir / KEYFILE_NAME}: vanished while being created")
    keys, active_kid = loaded
    return _active_first(keys, active_kid)


def parse_keys_env(value: str) -> dict[str, str]:
    """Parse ``ROOMSYNC_AUTH_KEYS``: ``"kid1:secret1,kid2:secret2"``, in that order.

    The secret is everything after the first ``:`` (it may contain more colons, not
    commas). Whitespace around items is ignored, empty items are skipped. ValueError on
    an item without ``:``, an empty kid or secret, an invalid kid, a duplicate kid, or
    no key at all.
    """
    keys: dict[str, str] = {}
    for index, raw_item in enumerate(value.split(",")):
        item = raw_item.strip()
        if not item:
            continue
        kid, sep, secret = item.partition(":")
        kid, secret = kid.strip(), secret.strip()
        if not sep or not kid or not secret:
            raise ValueError(f"item {index + 1}: expected 'kid:secret'")
        if not KID_RE.fullmatch(kid):
            raise ValueError(f"item {index + 1}: invalid key id {kid!r}")
        if kid in keys:
            raise ValueError(f"item {index + 1}: duplicate key id {kid!r}")
        keys[kid] = secret
    if not keys:
        raise ValueError("expected at least one 'kid:secret' item")
    return keys


def resolve_signing_keys(
    configured: Mapping[str, str], active_kid: str, data_dir: Path
) -> dict[str, str]:
    """The signing keys to use, active key first: the configured ones if any, else the
    data directory's key file (created on first use).

    ``active_kid`` empty means the first configured key. ValueError if it names a key
    that is not configured.
    """
    if not configured:
        return load_or_create_keys(data_dir)
    if not active_kid:
        return dict(configured)
    if active_kid not in configured:
        raise ValueError(f"active kid {active_kid!r} is not among the configured keys")
    return _active_first(configured, active_kid)


def signing_keys(settings: Settings) -> dict[str, str]:
    """The signing keys of a node, active first: ``auth.keys`` (with ``auth.active_kid``)
    if configured, else ``<server.data_dir>/signing-keys.json``, created on first use.

    ``roomsync serve`` and ``roomsync token`` both call this, so tokens minted by the CLI
    verify on a server that shares its settings or data directory.
    """
    return resolve_signing_keys(
        settings.auth.keys, settings.auth.active_kid, Path(settings.server.data_dir)
    )
