"""`ack-secret-manager reencrypt`: rewrite every Secret so the apiserver stores it under the
current KMS key.

Why a command: after a key rotation the kms-plugin's key_id changes and new writes use the new
key version, but objects already in etcd stay wrapped under the old one until written again.
This lists them page by page and sends each a no-op update (`kube.rewrite`); the apiserver
writes only those stored under another key_id, so a second run rewrites nothing and an
interrupted run can simply be started again. `--qps` bounds the update rate (the apiserver
also serves the cluster meanwhile); a few workers keep that rate with the API's latency.

Output: a progress line on a terminal (stderr), then one summary line
`rewritten=N unchanged=N skipped=N failed=N` (stdout). Exit 0 when nothing failed, 1 when
some objects failed (their names are logged; values never are), 2 on bad flags (one stderr
line naming the flag, before anything is contacted).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TextIO

from controller.goflags import GoFlagParser, one_line
from controller.kube import rewrite
from controller.kube.rest import ApiError, Resource, Rest

log = logging.getLogger("controller.reencrypt")


@dataclass(frozen=True)
class Options:
    resources: tuple[str, ...] = ("secrets",)
    namespace: str = ""
    qps: float = 200.0
    workers: int = 8
    page_size: int = 500
    dry_run: bool = False
    kubeconfig: str = ""
    log_format: str = "text"
    log_level: str = "info"


@dataclass
class Summary:
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def line(self) -> str:
        names = [rewrite.REWRITTEN, rewrite.UNCHANGED, rewrite.SKIPPED, rewrite.FAILED]
        if self.counts[rewrite.CHECKED]:
            names.append(rewrite.CHECKED)
        return " ".join(f"{name}={self.counts[name]}" for name in names)


class Pacer:
    """Start at most `qps` updates per second, evenly spaced (thread-safe)."""

    def __init__(self, qps: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.period = 1.0 / qps if qps > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            start = max(now, self._next)
            self._next = start + self.period
        if start > now:
            self.sleep(start - now)


class Progress:
    """One self-overwriting line on a terminal; silent otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self._last = 0.0

    def show(self, summary: Summary, total: int | None, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.2):
            return
        self._last = now
        done = summary.done
        if total:
            width = 30
            filled = min(width, int(width * done / max(total, 1)))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {done}/{total} {summary.line()}")
        else:
            self.stream.write(f"\r{done} done {summary.line()}")
        self.stream.flush()

    def end(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def run(rest: Rest, options: Options, *, stream: TextIO = sys.stderr) -> Summary:
    """Rewrite every object of every resource; returns the counts."""
    summary = Summary()
    progress = Progress(stream)
    pacer = Pacer(options.qps)
    lock = threading.Lock()

    def one(resource: Resource, obj: dict[str, Any]) -> None:
        pacer.wait()
        meta = obj.get("metadata") or {}
        where = f"{resource.plural} {meta.get('namespace', '')}/{meta.get('name', '')}"
        try:
            result = rewrite.rewrite(rest, resource, obj, dry_run=options.dry_run)
        except (ApiError, OSError) as err:
            result = rewrite.FAILED
            reason = err.reason if isinstance(err, ApiError) else type(err).__name__
            status = err.status if isinstance(err, ApiError) else 0
            log.warning("%s: update failed (%s %s)", where, status, reason)
            with lock:
                summary.failures.append(where)
        with lock:
            summary.counts[result] += 1

    with ThreadPoolExecutor(max_workers=max(1, options.workers),
                            thread_name_prefix="reencrypt") as pool:
        for resource in (rewrite.resource_for(spec) for spec in options.resources):
            _drain(pool, _pages(rest, resource, options), one, resource,
                   lambda total: progress.show(summary, total))
    progress.show(summary, None, force=True)
    progress.end()
    return summary


def _pages(rest: Rest, resource: Resource, options: Options) -> Iterable[rewrite.Page]:
    return rewrite.list_pages(rest, resource, namespace=options.namespace,
                              limit=options.page_size)


def _drain(pool: ThreadPoolExecutor, pages: Iterable[rewrite.Page],
           one: Callable[[Resource, dict[str, Any]], None], resource: Resource,
           show: Callable[[int | None], None]) -> None:
    """Submit each page's updates and wait for them before fetching the next page (memory
    stays one page; the continue token stays fresh)."""
    seen = 0
    for page in pages:
        seen += len(page.items)
        total = seen + page.remaining if page.remaining is not None else None
        futures: list[Future[None]] = [pool.submit(one, resource, obj) for obj in page.items]
        for future in futures:
            future.result()
            show(total)


def build_parser() -> GoFlagParser:
    p = GoFlagParser(
        prog="ack-secret-manager reencrypt",
        description="Rewrite stored objects so the kube-apiserver re-encrypts them under the "
        "current KMS key (run after a key rotation; safe to re-run).")
    a = p.add_argument
    from controller.settings import version_line

    a("--version", action="version", version=version_line())
    a("--kubeconfig", default="", help="kubeconfig file (default: in-cluster, then ~/.kube)")
    a("--namespace", "-n", default="", help="only this namespace (default: all)")
    a("--resources", default="secrets",
      help="comma-separated: secrets (default), configmaps, or <plural>.<group>/<version>")
    a("--qps", type=float, default=200.0, help="updates per second at most (default 200)")
    a("--workers", type=int, default=8, help="updates in flight at once (default 8)")
    a("--page-size", type=int, default=500, help="objects per list page (default 500)")
    p.add_bool("--dry-run", default=False,
               help="send server-side dry-run updates: checks access, writes nothing")
    a("--log-format", choices=["text", "json"], default="text")
    a("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    return p


def parse(argv: Sequence[str]) -> Options:
    ns = build_parser().parse_args(list(argv))
    resources = tuple(r.strip() for r in ns.resources.split(",") if r.strip())
    for spec in resources:
        rewrite.resource_for(spec)  # ValueError with the fix
    if ns.qps <= 0 or ns.workers < 1 or not 1 <= ns.page_size <= 10000:
        raise ValueError("--qps must be > 0, --workers >= 1, --page-size 1..10000")
    if ns.kubeconfig and not os.path.isfile(ns.kubeconfig):
        raise ValueError(f"--kubeconfig {ns.kubeconfig[:200]}: no such file; give a readable "
                         "kubeconfig, or omit the flag in a Pod")
    return Options(resources=resources or ("secrets",), namespace=ns.namespace, qps=ns.qps,
                   workers=ns.workers, page_size=ns.page_size, dry_run=ns.dry_run,
                   kubeconfig=ns.kubeconfig, log_format=ns.log_format, log_level=ns.log_level)


def main(argv: Sequence[str]) -> int:
    try:
        options = parse(argv)
    except ValueError as err:
        print(one_line("ack-secret-manager reencrypt", err), file=sys.stderr)
        return 2
    from controller.kube.client import api_client
    from controller.ops.logs import setup_logging

    setup_logging(options.log_format, options.log_level)
    try:
        api = api_client(options.kubeconfig, pool_size=max(8, options.workers * 2))
    except Exception as exc:  # noqa: BLE001 - one line that names the problem and the fix
        print(f"ack-secret-manager reencrypt: cannot reach Kubernetes: no usable configuration "
              f"({type(exc).__name__}); pass --kubeconfig (or KUBECONFIG) naming a readable "
              "kubeconfig, or run in a Pod", file=sys.stderr)
        return 2
    try:
        started = time.monotonic()
        summary = run(Rest(api), options)
    except ApiError as err:
        print(f"ack-secret-manager reencrypt: listing failed: {err.status} {err.reason}: "
              f"{err.message}", file=sys.stderr)
        return 1
    finally:
        api.close()
    seconds = time.monotonic() - started
    print(f"{summary.line()} seconds={seconds:.1f}", flush=True)
    return 1 if summary.counts[rewrite.FAILED] else 0
