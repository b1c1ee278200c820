"""Identifiers and their validators (SPEC §1): room ids, paths, blob hashes, capabilities."""

from __future__ import annotations

import re

from .errors import InvalidPath, InvalidRoom, MalformedEnvelope

ROOM_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
BLOB_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
MAX_PATH_BYTES = 1024

#: Data capabilities a session can hold (SPEC §3).
DATA_CAPS: tuple[str, ...] = (
    "read",
    "write",
    "presence",
    "blob",
    "blob-direct",
    "reconcile",
    "binary",
)


def validate_room_id(room: object) -> str:
    """Return ``room`` if it is a valid room id, else raise :class:`InvalidRoom`."""
    if not isinstance(room, str) or not ROOM_ID_RE.fullmatch(room):
        raise InvalidRoom(f"invalid room id {room!r}: must match [A-Za-z0-9._-]{{1,128}}")
    return room


def path_error(path: object) -> str | None:
    """Why ``path`` is not a valid state path, or None when it is valid."""
    if not isinstance(path, str):
        return "path must be a string"
    if not path.startswith("/"):
        return "path must start with '/'"
    if len(path) > MAX_PATH_BYTES or len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return f"path longer than {MAX_PATH_BYTES} bytes"
    if path == "/" or "//" in path or path.endswith("/"):
        return "path has an empty segment"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "path is not valid UTF-8"
    return None


def validate_path(path: object) -> str:
    """Return ``path`` if it is a valid state path, else raise :class:`InvalidPath`."""
    why = path_error(path)
    if why is not None:
        raise InvalidPath(f"invalid path {path!r}: {why}")
    assert isinstance(path, str)
    return path


def validate_prefix(prefix: object) -> str:
    """A subscription prefix: ``/`` or a valid path (matches itself and everything below)."""
    if prefix == "/":
        return "/"
    if isinstance(prefix, str) and prefix.endswith("/") and len(prefix) > 1:
        prefix = prefix[:-1]
    why = path_error(prefix)
    if why is not None:
        raise MalformedEnvelope(f"invalid subscription prefix {prefix!r}: {why}", close=None)
    assert isinstance(prefix, str)
    return prefix


def prefix_matches(prefix: str, path: str) -> bool:
    """True when ``path`` is ``prefix`` itself or lies below it (segment-wise)."""
    if prefix == "/":
        return True
    return path == prefix or (path.startswith(prefix) and path[len(prefix)] == "/")


def any_prefix_matches(prefixes: tuple[str, ...], path: str) -> bool:
    return any(prefix_matches(p, path) for p in prefixes)


#: With a token, a change's actor is the token's ``sub`` or ``sub`` + this + a client
#: suffix (one user, several devices or tabs, each with its own actor id).
ACTOR_SUFFIX_SEP = "#"


def actor_allowed(bound: str, actor: str) -> bool:
    """True when ``actor`` may write for a session whose token names ``bound`` (SPEC §3)."""
    return actor == bound or (
        actor.startswith(bound) and actor[len(bound) : len(bound) + 1] == ACTOR_SUFFIX_SEP
    )


def session_actor(sub: str | None, wanted: str | None, fallback: str) -> str:
    """The actor a client should write as: ``wanted`` (or ``fallback``) when it has no
    token ``sub``; with one, ``wanted`` if :func:`actor_allowed` accepts it, else
    ``sub#<wanted or fallback>``, so each replica keeps an actor id of its own."""
    if not sub:
        return wanted or fallback
    if wanted and actor_allowed(sub, wanted):
        return wanted
    return f"{sub}{ACTOR_SUFFIX_SEP}{wanted or fallback}"


def validate_blob_hash(value: object) -> str:
    if not isinstance(value, str) or not BLOB_HASH_RE.fullmatch(value):
        raise MalformedEnvelope(
            f"invalid blob hash {value!r}: expected sha256:<64 lowercase hex>", close=None
        )
    return value
