"""Fixtures of the tests that run several nodes: a PostgreSQL database per module (a
schema per test) and a Redis key prefix per test, both cleaned up."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest

from roomsync.testing.postgres import create_schema, postgres_database, schema_dsn
from roomsync.testing.redis import delete_prefix, redis_url, unique_prefix

_SCHEMAS = itertools.count()


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with postgres_database() as dsn:
        yield dsn


@pytest.fixture
async def dsn(pg_database: str) -> str:
    """The DSN of a fresh schema of the module's database."""
    schema = f"t_{next(_SCHEMAS)}"
    await create_schema(pg_database, schema)
    return schema_dsn(pg_database, schema)


@pytest.fixture(scope="module")
def redis() -> str:
    return redis_url()  # checks that Redis answers (fails under CI=true when it does not)


@pytest.fixture
async def prefix(redis: str) -> AsyncIterator[str]:
    p = unique_prefix()
    yield p
    await delete_prefix(redis, p)
