"""A throwaway PostgreSQL database for tests (needs a reachable server; asyncpg).

::

    with postgres_database() as dsn:            # CREATE DATABASE roomsync_test_<random>
        store = PostgresStore(schema_dsn(dsn, "t1"))   # after create_schema(dsn, "t1")

The server is ``$ROOMSYNC_TEST_POSTGRES`` (a ``postgresql://`` URL of a role that may
create databases), else ``postgresql://<user>@127.0.0.1:5432/postgres`` with trust
authentication for the first of ``$PGUSER``, ``root`` and ``postgres`` that connects.
The database is dropped when the block ends (connections still open are ended first).

:func:`unavailable` is the rule for a missing service: skip locally, fail under CI
(``$CI`` set and not false), so a CI machine without PostgreSQL cannot pass silently.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import NoReturn
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

__all__ = [
    "ENV_SERVER",
    "create_schema",
    "find_server",
    "find_server_async",
    "postgres_database",
    "postgres_database_async",
    "schema_dsn",
    "unavailable",
]

#: The environment variable naming the test server.
ENV_SERVER = "ROOMSYNC_TEST_POSTGRES"


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI (``$CI`` set and not ``0``/``false``/``no``)."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + quote(database)))


async def _connect(dsn: str) -> object:
    import asyncpg  # type: ignore[import-untyped]

    return await asyncpg.connect(dsn, timeout=5)


async def _probe(candidates: list[str]) -> tuple[str | None, str]:
    errors: list[str] = []
    for dsn in candidates:
        try:
            conn = await _connect(dsn)
        except Exception as exc:  # any failure means "not this one"
            errors.append(f"{dsn}: {exc}")
            continue
        await conn.close()  # type: ignore[attr-defined]
        return dsn, ""
    return None, "; ".join(errors)


def _candidates() -> list[str]:
    named = os.environ.get(ENV_SERVER, "")
    if named:
        return [named]
    users = [u for u in (os.environ.get("PGUSER", ""), "root", "postgres") if u]
    return [f"postgresql://{u}@127.0.0.1:5432/postgres" for u in dict.fromkeys(users)]


def find_server() -> tuple[str | None, str]:
    """``(dsn of a maintenance database, "")`` of the test server, or ``(None, why)``."""
    return asyncio.run(_probe(_candidates()))


async def find_server_async() -> tuple[str | None, str]:
    """:func:`find_server` from a running event loop."""
    return await _probe(_candidates())


async def _admin(dsn: str, *statements: str) -> None:
    conn = await _connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)  # type: ignore[attr-defined]
    finally:
        await conn.close()  # type: ignore[attr-defined]


@contextmanager
def postgres_database(server: str | None = None) -> Iterator[str]:
    """Create a uniquely named UTF-8 database on ``server`` (default :func:`find_server`;
    :func:`unavailable` when there is none) for the block; yield its DSN; drop it after."""
    if server is None:
        server, why = find_server()
        if server is None:
            unavailable(f"PostgreSQL is not reachable ({why})")
    name = f"roomsync_test_{secrets.token_hex(6)}"
    asyncio.run(_admin(server, f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0"))
    try:
        yield _with_database(server, name)
    finally:
        asyncio.run(_admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@asynccontextmanager
async def postgres_database_async(server: str) -> AsyncIterator[str]:
    """:func:`postgres_database` from a running event loop, on ``server`` (a DSN of
    :func:`find_server_async`)."""
    name = f"roomsync_test_{secrets.token_hex(6)}"
    await _admin(server, f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
    try:
        yield _with_database(server, name)
    finally:
        await _admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def create_schema(dsn: str, schema: str) -> None:
    """Create ``schema`` (an identifier) in the database of ``dsn``."""
    await _admin(dsn, f'CREATE SCHEMA "{schema}"')


def schema_dsn(dsn: str, schema: str) -> str:
    """``dsn`` whose connections use ``schema`` first (asyncpg passes unknown query
    parameters as server settings): a fresh, empty store per test in one database."""
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}search_path={quote(schema)}"
