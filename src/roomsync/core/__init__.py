"""The sans-I/O core of roomsync.

Nothing in this package performs I/O, reads the clock, sleeps, spawns threads or draws
random numbers: time, randomness and ids are passed in. The server (``roomsync.server``),
the client SDK (``roomsync.client``) and the CLI are thin shells over it. A test
(``tests/core/test_purity.py``) fails the build if a module here imports asyncio, socket,
threading, time, os or random.

The public API of the core is its modules, one concept each, which is also how the
TypeScript client ports it: import names from them (``from roomsync.core.codec import
parse_client``) or the module itself (``from roomsync.core import messages as m``).
``__all__`` lists them (``tests/test_exports.py`` keeps it exact); importing the package
imports none of them.
"""

__all__ = [
    "archive",
    "blobflow",
    "catchup",
    "codec",
    "codes",
    "entries",
    "errors",
    "explain",
    "handshake",
    "hlc",
    "keepalive",
    "limits",
    "lineage",
    "merge",
    "messages",
    "mst",
    "packing",
    "postcard",
    "presence",
    "presence_view",
    "query",
    "ratelimit",
    "reconcile",
    "reconnect",
    "replica",
    "room",
    "session",
    "sketch",
    "types",
]
