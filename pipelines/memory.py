"""Hand the memory a finished window freed back to the operating system.

Python (through glibc's malloc) and Arrow (through mimalloc) keep freed memory for reuse. Across
the windows of a bucket that reuse is imperfect: freed pieces of one window do not always fit
the next, and a long run's resident memory creeps up window after window (measured: 223 → 330
MB between buckets over 30 windows, with the peak following). Releasing after each window keeps
the resident memory where the previous window started (153 MB flat) at no measurable cost.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import pyarrow as pa


def _malloc_trim() -> object | None:
    """glibc's ``malloc_trim``, or None on a C library without it (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    return getattr(ctypes.CDLL(name), "malloc_trim", None)


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Return the free memory of Arrow's pool and of the C heap to the operating system."""
    pa.default_memory_pool().release_unused()
    if _TRIM is not None:
        _TRIM(0)  # type: ignore[operator]
