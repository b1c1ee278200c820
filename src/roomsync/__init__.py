"""roomsync: a self-hostable realtime sync server (see README.md and docs/)."""

import os as _os

__version__ = "0.1.0"

if _os.environ.get("ROOMSYNC_PURE_PYTHON", "") not in ("", "0"):
    # Decode packs in pure Python even where the C decoder is built (to rule it out).
    from .core import postcard as _postcard

    _postcard.use_accelerator(False)
