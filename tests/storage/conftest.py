"""Let pytest explain failed asserts inside the published store contract."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator

import pytest

from roomsync.testing.postgres import create_schema, postgres_database, schema_dsn

# Only possible before the first import; a module imported earlier keeps plain asserts.
if "roomsync.testing.store_contract" not in sys.modules:
    pytest.register_assert_rewrite("roomsync.testing.store_contract")

_SCHEMAS = itertools.count()


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A database of its own on the test PostgreSQL for the session (dropped after);
    skipped locally, failed under CI, when PostgreSQL is not reachable."""
    with postgres_database() as dsn:
        yield dsn


@pytest.fixture
async def postgres_schema_dsn(postgres_dsn: str) -> str:
    """The session database with a fresh, empty schema of the test's own."""
    schema = f"t_{next(_SCHEMAS)}"
    await create_schema(postgres_dsn, schema)
    return schema_dsn(postgres_dsn, schema)
