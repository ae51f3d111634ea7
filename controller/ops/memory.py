"""How the process uses the C heap: two malloc arenas, not one per contending thread.

Why this module exists (issue 10, point 4): glibc's malloc gives each new thread an arena
of its own (and a thread that finds its arena busy another one), up to 8 per core, and
memory freed in one arena is reused only by the threads attached to it. The controller's
threads (workers, informers, KMS reads, token and credential refreshes) take turns at bursts
of work, so each arena keeps the high-water mark of its own bursts and the process's
resident size creeps up under churn although nothing stays allocated. Measured with the
churn benchmark at 3,000 objects (`python -m bench.churn --objects 3000 --heap-stats`): the
heap's free space grew 12.7 -> 17.3 -> 21.3 MB over three rounds with the default, 9.1 ->
10.5 -> 11.7 MB with two arenas, and the settled RSS of round 3 was 1.101 times round 1's
with the default, 1.064 with two.

`release_free_memory()` hands the heap's free pages back to the kernel (glibc's
`malloc_trim`), at most once per `TRIM_EVERY` seconds: called when something big was freed
(an SDK session with its TLS trust store, ~1 MiB), because free memory inside an arena stays
resident and a tenant who creates and deletes stores would otherwise leave the high-water mark
of every burst behind (issue 18 case 6: 1,000 stores came and went, +1 GB RSS).

`limit_malloc_arenas()` does what MALLOC_ARENA_MAX=2 in the environment would (it must run
before the process starts threads); an operator's own MALLOC_ARENA_MAX wins. Elsewhere than
glibc (musl, macOS) it does nothing. It looks `mallopt` up among the process's own symbols
(no `ctypes.util.find_library`, which runs ldconfig or a compiler: work at start-up).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Mapping

__all__ = ["ARENAS", "limit_malloc_arenas", "release_free_memory"]

ARENAS = 2
TRIM_EVERY = 5.0  # seconds between two malloc_trim calls at most
_trim_lock = threading.Lock()
_trimmed_at = -TRIM_EVERY
_pending: threading.Timer | None = None
_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_malloc_arenas(count: int = ARENAS, environ: Mapping[str, str] = os.environ,
                        libc_name: str | None = None) -> bool:
    """At most `count` malloc arenas from now on, unless MALLOC_ARENA_MAX is set. Returns
    whether the limit was applied (False: set by the environment, or not glibc)."""
    if environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(libc_name).mallopt  # None: the process itself (and its libc)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, count))


def release_free_memory(now: float | None = None) -> bool:
    """Return the heap's free pages to the kernel now, unless that was done less than
    `TRIM_EVERY` seconds ago: then once more when that time is up (a timer, one at most), so
    the last of a burst of frees is returned too. Returns whether it ran now (False also off
    glibc)."""
    global _trimmed_at, _pending
    now = time.monotonic() if now is None else now
    with _trim_lock:
        wait = _trimmed_at + TRIM_EVERY - now
        if wait > 0:
            if _pending is None:
                _pending = threading.Timer(wait, _trailing)
                _pending.daemon = True
                _pending.start()
            return False
        _trimmed_at = now
    return _malloc_trim()


def _trailing() -> None:
    global _trimmed_at, _pending
    with _trim_lock:
        _pending = None
        _trimmed_at = time.monotonic()
    _malloc_trim()


def _malloc_trim() -> bool:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True
