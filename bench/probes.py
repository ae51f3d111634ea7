"""Reading the controller from outside: its /metrics (only the series the benchmark needs),
its CPU time and memory from /proc, and a description of the machine."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import REPO, http_get

_WANTED = ("ack_secret_manager_kubernetes_writes_total", "ack_secret_manager_kms_requests_total",
           "ack_secret_manager_sync_total", "ack_secret_manager_workqueue_depth",
           "ack_secret_manager_sync_duration_seconds_sum",
           "ack_secret_manager_sync_duration_seconds_count",
           "process_cpu_seconds_total", "process_resident_memory_bytes")
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Scrape:
    """Selected series of one /metrics scrape: name -> {labels (sorted tuple) -> value}."""

    series: dict[str, dict[tuple[tuple[str, str], ...], float]] = field(default_factory=dict)

    def total(self, name: str, **match: str) -> float:
        return sum(v for labels, v in self.series.get(name, {}).items()
                   if all((k, want) in labels for k, want in match.items()))

    def by(self, name: str, *keys: str) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for labels, v in self.series.get(name, {}).items():
            d = dict(labels)
            out["/".join(d.get(k, "") for k in keys)] += v
        return dict(out)

    def writes(self) -> float:
        return self.total("ack_secret_manager_kubernetes_writes_total")

    def writes_by_kind(self) -> dict[str, float]:
        return self.by("ack_secret_manager_kubernetes_writes_total", "kind", "verb")


def scrape(url: str) -> Scrape:
    status, body = http_get(url, timeout=30)
    if status != 200:
        raise RuntimeError(f"{url}: HTTP {status}")
    result = Scrape()
    for line in body.decode().splitlines():
        if not line.startswith(_WANTED):
            continue
        m = _LINE.match(line)
        if not m or m.group(1) not in _WANTED:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(3) or "")))
        result.series.setdefault(m.group(1), {})[labels] = float(m.group(4))
    return result


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    keys = set(after) | set(before)
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(keys)
            if after.get(k, 0.0) != before.get(k, 0.0)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, summed over cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return (total - idle) / tick, total / tick


class CpuMeter:
    """CPU seconds used by named processes and by the whole machine between `start` and
    `read`: who competes for the 2 cores while the controller works."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self._machine = (0.0, 0.0)
        self._own = 0.0

    def start(self) -> CpuMeter:
        self._start = {name: self._cpu(pid) for name, pid in self.pids.items()}
        self._machine = machine_cpu()
        self._own = _own_cpu()
        return self

    @staticmethod
    def _cpu(pid: int) -> float:
        try:
            return cpu_seconds(pid)
        except OSError:
            return 0.0

    def read(self) -> dict[str, float]:
        out = {name: round(self._cpu(pid) - self._start.get(name, 0.0), 1)
               for name, pid in self.pids.items()}
        out["benchmark (this process)"] = round(_own_cpu() - self._own, 1)
        busy, total = machine_cpu()
        spent = total - self._machine[1]
        out["machine busy percent"] = round(100.0 * (busy - self._machine[0]) / spent, 1) \
            if spent > 0 else 0.0
        return out


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak resident set) in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def machine() -> dict[str, object]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "controller"], cwd=REPO,
                               check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + (" (controller/ modified)" if dirty else "")
