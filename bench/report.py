"""The results table (Markdown, so it can be pasted into docs/performance.md) and the targets
from the issue, checked for every size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = tuple[str, Callable[[dict[str, Any]], Any], Callable[[dict[str, Any]], bool] | None]


def _get(result: dict[str, Any], *path: str) -> Any:
    value: Any = result
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _f(*path: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: _get(r, *path)


def _once(r: dict[str, Any]) -> bool:
    """KMS calls in one interval equal the distinct secrets: every one read, none read twice
    within less than half an interval (a read at each end of the window, an interval apart,
    is the next cycle, not a duplicate)."""
    q = r.get("quiet_poll") or {}
    return bool(q) and q.get("distinct_secrets_read") == q.get("distinct_secrets") \
        and q.get("reads_less_than_half_an_interval_apart") == 0


TARGETS: list[tuple[str, str, Callable[[dict[str, Any]], bool]]] = [
    ("cold start: every ExternalSecret Ready within 120 s", "cold_start",
     lambda r: (_get(r, "cold_start", "seconds_to_all_ready") or 1e9) <= 120),
    ("quiet poll: zero Kubernetes writes", "quiet_poll",
     lambda r: _get(r, "quiet_poll", "kubernetes_writes") == 0),
    ("quiet poll: each distinct secret read once per interval", "quiet_poll", _once),
    ("peak RSS under 250 MB", "memory",
     lambda r: (_get(r, "memory", "peak_rss_mb") or 1e9) < 250),
    ("create-to-Secret p50 under 300 ms", "create_latency",
     lambda r: (_get(r, "create_latency", "secret_p50_ms") or 1e9) < 300),
]

ROWS: list[Row] = [
    ("ExternalSecrets (2 entries each)", _f("size"), None),
    ("cold start: all Ready (s)", _f("cold_start", "seconds_to_all_ready"), TARGETS[0][2]),
    ("cold start: caches synced (s)", _f("cold_start", "seconds_to_caches_synced"), None),
    ("cold start: KMS calls", _f("cold_start", "kms_calls"), None),
    ("cold start: Kubernetes writes", _f("cold_start", "kubernetes_writes"), None),
    ("cold start: controller CPU (s)", _f("cold_start", "controller_cpu_seconds"), None),
    ("cold start: kube-apiserver + etcd CPU (s)",
     lambda r: None if "cold_start" not in r else round(
         r["cold_start"]["cpu_seconds_by_process"].get("kube-apiserver", 0)
         + r["cold_start"]["cpu_seconds_by_process"].get("etcd", 0), 1), None),
    ("cold start: machine busy (% of all cores)",
     _f("cold_start", "cpu_seconds_by_process", "machine busy percent"), None),
    ("create-to-Secret p50 (ms)", _f("create_latency", "secret_p50_ms"), TARGETS[4][2]),
    ("create-to-Secret p99 (ms)", _f("create_latency", "secret_p99_ms"), None),
    ("quiet poll: interval (s)", _f("quiet_poll", "interval_seconds"), None),
    ("quiet poll: every secret read after (s)",
     _f("quiet_poll", "seconds_until_every_secret_read"), None),
    ("quiet poll: KMS calls (distinct secrets)",
     lambda r: None if "quiet_poll" not in r else
     f"{r['quiet_poll']['kms_calls']:,} ({r['quiet_poll']['distinct_secrets']:,})", None),
    ("quiet poll: distinct secrets read / read twice (shortest gap, s)",
     lambda r: None if "quiet_poll" not in r else
     f"{r['quiet_poll']['distinct_secrets_read']:,} / {r['quiet_poll']['secrets_read_twice']}"
     + (f" ({r['quiet_poll']['shortest_gap_between_two_reads_of_one_secret']})"
        if r["quiet_poll"]["secrets_read_twice"] else ""), TARGETS[2][2]),
    ("quiet poll: Kubernetes writes", _f("quiet_poll", "kubernetes_writes"), TARGETS[1][2]),
    ("quiet poll: controller CPU (s)", _f("quiet_poll", "controller_cpu_seconds"), None),
    ("change: KMS values changed", _f("change_propagation", "kms_secrets_changed"), None),
    ("change: Secrets to follow",
     _f("change_propagation", "secrets_to_follow"), None),
    ("change: all followed after (s)",
     _f("change_propagation", "seconds_until_all_followed"), None),
    ("change: p50 (s)", _f("change_propagation", "p50_seconds"), None),
    ("change: KMS calls", _f("change_propagation", "kms_calls"), None),
    ("controller peak RSS (MB)", _f("memory", "peak_rss_mb"), TARGETS[3][2]),
]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(results: list[dict[str, Any]]) -> str:
    header = "| | " + " | ".join(f"{r['size']:,}" for r in results) + " |"
    lines = [header, "|---" + "|---:" * len(results) + "|"]
    for label, get, check in ROWS[1:]:
        cells = []
        for r in results:
            text = _cell(get(r))
            if check is not None and get(r) is not None:
                text += " ✓" if check(r) else " ✗"
            cells.append(text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: list[dict[str, Any]]) -> dict[str, dict[str, bool]]:
    """target -> {size: met}."""
    return {name: {str(r["size"]): check(r) for r in results if phase in r}
            for name, phase, check in TARGETS}
