"""Give freed heap memory back to the operating system after rooms unload.

CPython frees a room's objects as soon as it unloads, but glibc keeps the pages in the
process heap, so RSS would stay at its high-water mark. ``malloc_trim(0)`` returns free
pages to the OS; it is cheap enough to run once per heartbeat after unloads and is a
no-op where glibc is not the allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _load_trim()


def release_free_memory() -> bool:
    """Return free heap pages to the OS; False where the allocator cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
