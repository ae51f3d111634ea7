"""controller/ops/memory.py: the process keeps to two malloc arenas (glibc), unless the
operator says otherwise, and does nothing where there is no glibc."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
import textwrap
import time

import pytest

from controller.ops.memory import limit_malloc_arenas

# A child process that starts 16 threads which each allocate from the C heap, then counts
# the heaps glibc made (malloc_info's XML has one <heap nr=...> per arena).
_CHILD = textwrap.dedent("""
    import ctypes, os, sys, tempfile, threading
    if sys.argv[1] == "limit":
        from controller.ops.memory import limit_malloc_arenas
        assert limit_malloc_arenas()
    barrier = threading.Barrier(16)
    def work():
        barrier.wait()
        blocks = [bytearray(200_000) for _ in range(20)]
        barrier.wait()
    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc = ctypes.CDLL("libc.so.6")
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(delete=False) as tmp:
        path = tmp.name
    fp = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(open(path).read().count("<heap nr="))
    os.unlink(path)
""")

glibc = pytest.mark.skipif(not sys.platform.startswith("linux")
                           or "libc.so.6" not in (ctypes.util.find_library("c") or ""),
                           reason="glibc only")


def _heaps(mode: str, env: dict[str, str] | None = None) -> int:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], check=True, capture_output=True,
                         text=True, env=env, timeout=60)
    return int(out.stdout.strip())


@glibc
def test_two_arenas_whatever_the_number_of_threads() -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _heaps("default", env) > 2  # what the limit is for: glibc's own default
    assert _heaps("limit", env) <= 2


def test_the_operators_malloc_arena_max_wins() -> None:
    assert limit_malloc_arenas(environ={"MALLOC_ARENA_MAX": "4"}) is False


def test_without_glibc_nothing_happens() -> None:
    assert limit_malloc_arenas(environ={}, libc_name="libno-such-libc.so.9") is False


def test_free_memory_is_released_at_most_every_few_seconds_and_once_after_a_burst() -> None:
    """Each SDK session released frees ~1 MiB; a burst of them trims once now and once when
    the interval is up (a trailing timer), not once per session."""
    from controller.ops import memory

    start = time.monotonic() + 1000.0  # later than any earlier test's trim
    assert memory.release_free_memory(start) is True
    assert memory.release_free_memory(start + 0.1) is False  # too soon: a timer instead
    pending = memory._pending
    assert pending is not None
    assert memory.release_free_memory(start + 0.2) is False and memory._pending is pending
    pending.cancel()
    memory._pending = None
    assert memory.release_free_memory(start + memory.TRIM_EVERY + 0.1) is True
