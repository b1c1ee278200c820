"""Shared fixtures: a real server on a free port, and an aiohttp client session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from roomsync.testing.moto_server import create_bucket, moto_server, s3_blob_settings
from roomsync.testing.server import ServerHandle, running_server
from roomsync.testing.tls import TlsFiles, self_signed


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    """A dev-mode server (anonymous peers get every data cap) on SQLite in tmp_path."""
    async with running_server(tmp_path) as handle:
        yield handle


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's standalone S3 server on 127.0.0.1, one per test session."""
    with moto_server() as endpoint_url:
        yield endpoint_url


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    """A fresh, uniquely named bucket on the session's moto server."""
    name = f"roomsync-{uuid.uuid4().hex[:16]}"
    create_bucket(moto_endpoint, name)
    return name


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    """A certificate for 127.0.0.1 from a throwaway CA, and a client context trusting it."""
    return self_signed(tmp_path)


@pytest.fixture(params=["filesystem", "s3"])
async def bsrv(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ServerHandle]:
    """A dev-mode server with 1 MiB blobs, once on filesystem blobs and once on S3 (moto)."""
    overrides: dict[str, Any] = {"policy__blob_max_bytes": 1 << 20}
    if request.param == "s3":
        overrides.update(
            s3_blob_settings(
                request.getfixturevalue("moto_endpoint"), request.getfixturevalue("bucket")
            )
        )
    async with running_server(tmp_path, **overrides) as handle:
        yield handle
