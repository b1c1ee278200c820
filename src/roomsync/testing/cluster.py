"""Several roomsync nodes for a test (SPEC §8): one PostgreSQL store, one Redis bus, one
blob store, the way a deployment runs them.

::

    async with running_cluster(tmp_path, dsn=dsn, redis=url, nodes=2) as (a, b):
        ...  # a and b are ServerHandles; a.server.cluster is the node's view

:func:`running_cluster` runs the nodes in this process (each its own store connection
pool, bus connection and event-loop tasks: nothing is shared but PostgreSQL, Redis and
the blob directory); :func:`cluster_processes` runs them as ``roomsync serve`` child
processes (for kill -9). Blobs are filesystem blobs in one directory with
``blobs.shared`` (every node reads the same disk), unless ``blobs`` settings are given
(e.g. :func:`~.moto_server.s3_blob_settings`). Heartbeats are fast (``bus.heartbeat_ms``
200, a node is dead after 1 s) so that tests of a node going away stay short.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

from .redis import unique_prefix
from .server import ServerHandle, ServerProcess, running_server, server_process, test_settings

__all__ = ["FAST_BEATS", "cluster_processes", "node_settings", "running_cluster"]

#: Heartbeat settings of test clusters: a dead node is noticed within about a second.
FAST_BEATS: dict[str, Any] = {"bus.heartbeat_ms": 200, "bus.node_dead_ms": 1000}


def node_settings(
    data_dir: Path,
    i: int,
    *,
    dsn: str,
    redis: str,
    prefix: str,
    blobs: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The dotted settings of node ``i`` of a test cluster."""
    values: dict[str, Any] = {
        "storage.backend": "postgres",
        "storage.postgres_dsn": dsn,
        "bus.backend": "redis",
        "bus.redis_url": redis,
        "bus.prefix": prefix,
        "server.node_id": f"node-{i}",
        **FAST_BEATS,
    }
    if blobs is None:
        values["blobs.dir"] = str(data_dir / "blobs")
        values["blobs.shared"] = True
    else:
        values.update({f"blobs.{k}": v for k, v in blobs.items()})
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    return values


@contextlib.asynccontextmanager
async def running_cluster(
    data_dir: Path,
    *,
    dsn: str,
    redis: str,
    nodes: int = 2,
    prefix: str | None = None,
    blobs: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[list[ServerHandle]]:
    """``nodes`` in-process nodes sharing the store at ``dsn`` and the Redis at
    ``redis`` (under ``prefix``, by default one of the run's own); stopped on exit."""
    prefix = prefix or unique_prefix()
    async with contextlib.AsyncExitStack() as stack:
        handles = []
        for i in range(nodes):
            values = node_settings(
                data_dir, i, dsn=dsn, redis=redis, prefix=prefix, blobs=blobs, **overrides
            )
            settings = test_settings(data_dir / f"node-{i}", **values)
            handles.append(
                await stack.enter_async_context(running_server(data_dir, settings=settings))
            )
        yield handles


@contextlib.contextmanager
def cluster_processes(
    data_dir: Path,
    *,
    dsn: str,
    redis: str,
    nodes: int = 2,
    prefix: str | None = None,
) -> Iterator[list[ServerProcess]]:
    """``nodes`` ``roomsync serve`` processes, started with the flags an operator uses
    (``--store``, ``--bus``, ``--node-id``) and the rest in ``ROOMSYNC_*`` variables."""
    prefix = prefix or unique_prefix()
    env = {
        "ROOMSYNC_BUS_PREFIX": prefix,
        "ROOMSYNC_BUS_HEARTBEAT_MS": str(FAST_BEATS["bus.heartbeat_ms"]),
        "ROOMSYNC_BUS_NODE_DEAD_MS": str(FAST_BEATS["bus.node_dead_ms"]),
        "ROOMSYNC_BLOBS_DIR": str(data_dir / "blobs"),
        "ROOMSYNC_BLOBS_SHARED": "true",
    }
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                server_process(
                    data_dir / f"node-{i}",
                    extra_env=env,
                    args=["--store", dsn, "--bus", redis, "--node-id", f"node-{i}"],
                )
            )
            for i in range(nodes)
        ]
        yield procs
