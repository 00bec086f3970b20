"""Give freed memory back to the operating system (glibc; a no-op elsewhere).

A full-size forward pass with its views allocates blocks of a few to tens of MB (one layer's
attention over 512 tokens is 12 MB in float32). glibc keeps freed blocks in per-thread heaps:
it raises its mmap threshold to the largest block freed so far (up to 32 MiB), and every worker
thread has its own heap (arena), so what a class leaves behind adds up across threads. Two
measures, both measured in docs/PERFORMANCE.md ("Memory per session"):

- `tune()`, once when the app is built: blocks of 8 MiB and more are mapped on their own (so
  freeing them returns them at once) and two arenas instead of eight per core. A 1 MiB threshold
  returns more but made every full-size answer about 50% slower (each block faulted in afresh).
  `XRAY_MALLOC_TUNE=0` switches it off.
- `trim()` (`malloc_trim(0)`) after every computed call (`trimmed`, applied by
  `demos.runtime.task_compute`) and after the session sweep: it returns the free pages of every
  arena, i.e. the blocks under the threshold. A 488-token generation that keeps 44 MB held
  140-210 MB afterwards without it and 48-50 MB with it; the trim took 6-9 ms. At most one
  thread trims at a time; the others skip it (that trim returns their pages too).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
from typing import Any, Callable

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc mallopt parameters (malloc.h)
MMAP_FROM = 8 * 2**20  # blocks this large are mapped on their own (1 MiB cost short answers +50% here)


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        return libc
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return None


_LIBC = _glibc()
_trimming = threading.Lock()


def available() -> bool:
    """Whether this process runs on glibc (where `tune` and `trim` do something)."""
    return _LIBC is not None


def tune() -> bool:
    """mmap threshold 8 MiB and two arenas, unless XRAY_MALLOC_TUNE=0. Returns whether applied."""
    if _LIBC is None or os.environ.get("XRAY_MALLOC_TUNE", "1").strip().lower() in ("0", "false", "no"):
        return False
    return bool(_LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_FROM)) and bool(_LIBC.mallopt(M_ARENA_MAX, 2))


def trim() -> bool:
    """Return the heaps' free pages to the OS; False when not glibc or another thread is at it."""
    if _LIBC is None or not _trimming.acquire(blocking=False):
        return False
    try:
        _LIBC.malloc_trim(0)
        return True
    finally:
        _trimming.release()


def trimmed(fn: Callable) -> Callable:
    """Decorator: `trim()` after each call (also after one that raised)."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            trim()

    return call
