"""The store a node's settings name (SPEC §8): the one place that maps a backend to a class.

Used by ``roomsync serve`` (through :class:`~roomsync.server.app.RoomsyncServer`) and by the
commands that open a store without a server (``roomsync replay``), so every process reads
the same database the same way.
"""

from __future__ import annotations

from pathlib import Path

from ..config import POSTGRES_BACKENDS, Settings, storage_backend_unavailable
from .base import Store
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = ["DATABASE_FILE", "build_store"]

#: The SQLite database of the embedded backend, inside ``server.data_dir``.
DATABASE_FILE = "roomsync.db"


def build_store(settings: Settings) -> Store:
    """A new, unopened store for ``settings.storage``; the caller opens and closes it.

    Raises :class:`~roomsync.config.ConfigError` (key ``storage.backend``) for a backend
    this build cannot run, also for settings built without ``load_settings`` and its checks.
    """
    backend = settings.storage.backend
    if backend == "memory":
        return MemoryStore()
    if backend == "sqlite":
        return SqliteStore(
            Path(settings.server.data_dir) / DATABASE_FILE,
            synchronous=settings.storage.sqlite_synchronous,
            cache_kib=settings.storage.sqlite_cache_kib,
        )
    if backend in POSTGRES_BACKENDS:
        # Imported here: asyncpg is needed only by nodes that use it.
        from .postgres import PostgresStore

        return PostgresStore(
            settings.storage.postgres_dsn,
            max_size=settings.storage.postgres_pool_size,
            command_timeout_s=settings.storage.postgres_timeout_ms / 1000,
        )
    raise storage_backend_unavailable(backend)
