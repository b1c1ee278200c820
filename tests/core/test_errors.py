"""The error tree (core/errors.py): one root, unique names, whose fault and what next."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import roomsync
from roomsync.blobs import BlobBackendError, BlobMissing, BlobStoreError, BlobVerifyFailed
from roomsync.config import ConfigError
from roomsync.core.codes import CLOSE_ACTIONS, AuthReason, CloseCode, ErrorCode
from roomsync.core.errors import AuthError, InternalError, RoomsyncError, TokenExpired

#: Public errors allowed outside the tree: none (every error roomsync raises on purpose
#: is a RoomsyncError).
_JOINING_ELSEWHERE: set[str] = set()


def _exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in a roomsync module (private ones excluded)."""
    found: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(roomsync.__path__, "roomsync."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
                and not name.startswith("_")
            ):
                found.append(obj)
    return found


def test_every_public_error_is_under_the_root() -> None:
    outside = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _exception_classes()
        if not issubclass(cls, RoomsyncError)
    ]
    assert set(outside) <= _JOINING_ELSEWHERE, outside


def test_error_class_names_are_unique_across_packages() -> None:
    by_name: dict[str, list[str]] = {}
    for cls in _exception_classes():
        by_name.setdefault(cls.__name__, []).append(cls.__module__)
    assert {name: mods for name, mods in by_name.items() if len(mods) > 1} == {}


def test_every_class_in_the_tree_is_drawn_in_the_docstring() -> None:
    from roomsync.core import errors

    drawing = errors.__doc__ or ""
    for cls in _exception_classes():
        if issubclass(cls, RoomsyncError):
            assert re.search(rf"^[ │├└─]*{cls.__name__}(\s|$)", drawing, re.M), cls.__name__


@pytest.mark.parametrize(
    "error",
    [
        BlobStoreError("cannot read /srv/blobs/ab/cd: EACCES", reason="permission-denied"),
        BlobBackendError("bucket 'secret-bucket' is missing", reason="missing-bucket"),
        BlobMissing("no object under sha256:00"),
        BlobVerifyFailed("staged upload hash mismatch"),
        ConfigError("auth.keys: bad value", key="auth.keys"),
    ],
)
def test_server_side_failures_never_show_their_message(error: InternalError) -> None:
    assert isinstance(error, InternalError)
    assert error.code is ErrorCode.INTERNAL and error.close is CloseCode.INTERNAL
    assert error.to_error_fields() == {"code": "internal", "message": "internal server error"}
    assert error.next_action and error.next_action != CLOSE_ACTIONS[CloseCode.INTERNAL]


def test_blob_and_config_errors_keep_their_attributes() -> None:
    assert BlobBackendError("x", reason="no-space").reason == "no-space"
    assert BlobMissing("x").reason == "missing" and BlobMissing("x").message == "x"
    error = ConfigError("policy.max_peers: too small", key="policy.max_peers")
    assert str(error) == "config error: policy.max_peers: too small"
    assert error.message == "policy.max_peers: too small" and error.key == "policy.max_peers"
    assert "'policy.max_peers'" in error.next_action


def test_auth_error_carries_a_reason() -> None:
    error = AuthError("room 'r' is locked", reason=AuthReason.LOCKED)
    assert error.reason is AuthReason.LOCKED and error.message == "auth: room 'r' is locked"
    assert error.close is CloseCode.FORBIDDEN
    expired = TokenExpired("token expired")
    assert expired.reason is AuthReason.EXPIRED and expired.close is CloseCode.TOKEN_EXPIRED
    with pytest.raises(TypeError):
        AuthError("no reason")  # type: ignore[call-arg]
