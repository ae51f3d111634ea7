"""Sampling the controller with py-spy while a phase runs, and summing the samples up.

`py-spy record --format raw` writes collapsed stacks ("f1;f2;f3 count"); `summarize` turns
them into the functions that were on CPU most (self) and the ones under which most samples
fell (inclusive). Only the thread holding the GIL is sampled (`--gil`): in one Python process
that is the one resource every thread queues for, so the shares say where the controller's
Python time goes, not where its threads wait (a socket read, a lock, a sleep).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.procs import REPO, spawn

_LOCATION = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def py_spy_path() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class Recorder:
    """py-spy attached to `pid` from `start()` until `stop()` (SIGINT makes it write)."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Recorder:
        exe = py_spy_path()
        if exe is None:
            raise RuntimeError("py-spy is not installed: pip install -r bench/requirements.txt")
        self.proc = spawn([exe, "record", "--pid", str(self.pid), "--rate", str(self.rate),
                           "--format", "raw", "--output", str(self.out), "--nonblocking", "--gil"],
                          self.out.with_suffix(".log"))
        return self

    def stop(self) -> dict[str, Any]:
        if self.proc is None:
            return {}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        if not self.out.exists():
            log = self.out.with_suffix(".log")
            return {"error": log.read_text()[-500:] if log.exists() else "no output"}
        return summarize(self.out)


def _short(frame: str) -> str:
    m = _LOCATION.match(frame)
    if not m:
        return frame
    func, path = m.group(1), m.group(2)
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif path.startswith(str(REPO) + "/"):
        path = path[len(str(REPO)) + 1:]
    elif "/lib/python" in path:
        path = "stdlib/" + path.split("/lib/python", 1)[1].split("/", 1)[-1]
    return f"{func} ({path})"


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100.0 * n / total, 1)] for name, n in counter.most_common(top)]

    return {"samples": total, "self_percent": share(own),
            "inclusive_percent": share(inclusive), "raw": str(path)}


def format_summary(title: str, summary: dict[str, Any]) -> str:
    if not summary or "error" in summary:
        return f"{title}: no profile ({summary.get('error', 'not recorded')})"
    lines = [f"{title}: {summary['samples']} samples (100 Hz, the thread holding the GIL)",
             "  self %   function"]
    lines += [f"  {pct:6.1f}   {name}" for name, pct in summary["self_percent"]]
    lines += ["  incl %   function"]
    lines += [f"  {pct:6.1f}   {name}" for name, pct in summary["inclusive_percent"]]
    return "\n".join(lines)
