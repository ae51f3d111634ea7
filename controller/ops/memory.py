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

`limit_malloc_arenas()` does what MALLOC_ARENA_MAX=2 in the environment would (it must run
before the process starts threads); an operator's own MALLOC_ARENA_MAX wins. Elsewhere than
glibc (musl, macOS) it does nothing. It looks `mallopt` up among the process's own symbols
(no `ctypes.util.find_library`, which runs ldconfig or a compiler: work at start-up).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

__all__ = ["ARENAS", "limit_malloc_arenas"]

ARENAS = 2
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
