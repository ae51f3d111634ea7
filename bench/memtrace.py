"""`python -m bench.memtrace <controller flags>`: the controller under tracemalloc, for
`python -m bench --trace-memory`.

Runs `controller.cli.main` unchanged. On SIGUSR1 it writes where the live Python memory was
allocated to $BENCH_TRACEMALLOC_OUT (appending one report per signal): by source line, and by
the innermost frame inside `controller/` (so a dict built by json.loads in the informer counts
against the informer). tracemalloc slows the controller down; use it for where memory goes,
never for the timings.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import tracemalloc
from collections import Counter
from types import FrameType

DEPTH = 8
TOP = 25


def _report(snapshot: tracemalloc.Snapshot) -> str:
    total = sum(s.size for s in snapshot.statistics("filename"))
    lines = [f"== {time.strftime('%H:%M:%S')} traced {total / 2**20:.1f} MiB",
             "-- by innermost frame in controller/ (MiB, allocations)"]
    ours: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for stat in snapshot.statistics("traceback"):
        where = "(outside controller/)"
        for frame in reversed(stat.traceback):  # tracemalloc lists the oldest call first
            if "/controller/" in frame.filename:
                where = f"{frame.filename.split('/controller/', 1)[1]}:{frame.lineno}"
                break
        ours[where] += stat.size
        counts[where] += stat.count
    for where, size in ours.most_common(TOP):
        lines.append(f"{size / 2**20:8.1f} {counts[where]:9d}  controller/{where}")
    lines.append("-- by allocating line (MiB, allocations)")
    for stat in snapshot.statistics("lineno")[:TOP]:
        frame = stat.traceback[-1]
        name = frame.filename.split("site-packages/")[-1]
        lines.append(f"{stat.size / 2**20:8.1f} {stat.count:9d}  {name}:{frame.lineno}")
    return "\n".join(lines) + "\n"


def _dump(_signum: int, _frame: FrameType | None) -> None:
    out = os.environ.get("BENCH_TRACEMALLOC_OUT", "tracemalloc.txt")
    with open(out, "a") as fh:
        fh.write(_report(tracemalloc.take_snapshot()))


def main() -> int:
    tracemalloc.start(DEPTH)
    signal.signal(signal.SIGUSR1, _dump)
    from bench.patched import apply_from_env

    apply_from_env()  # --controller-patch works here too
    from controller.cli import main as controller_main

    return controller_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
