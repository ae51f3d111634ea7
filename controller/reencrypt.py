"""`ack-secret-manager reencrypt`: rewrite every Secret so the apiserver stores it under the
current KMS key.

Why a command: after a key rotation the kms-plugin's key_id changes and new writes use the new
key version, but objects already in etcd stay wrapped under the old one until written again.
This lists them page by page and sends each a no-op update (`kube.rewrite`); the apiserver
writes only those stored under another key_id, so a second run rewrites nothing and an
interrupted run can simply be started again. `--qps` bounds the update rate (the apiserver
also serves the cluster meanwhile); a few workers keep that rate with the API's latency.

After a rotation the new key_id reaches the apiserver only after the plugin's next key
refresh (--key-refresh-interval, 30 s) and the apiserver's next Status call (every 60 s), so
rewriting at once would re-wrap under the old key. `--wait-for-key-rotation` waits for the
switch with what a cluster admin can see: the plugin's /metrics (a key refresh after this
command started, then `key_id_info`) and the apiserver's own /metrics, whose
`apiserver_envelope_encryption_key_id_hash_total{transformation_type="to_storage"}` counts
writes per SHA-256 of the key_id; a probe Secret is written until that count moves for the
plugin's key_id.

Output: progress on stderr (a self-overwriting line on a terminal; elsewhere a line every 5 s
or 1,000 objects), then one summary line
`rewritten=N unchanged=N skipped=N failed=N` (stdout). Exit 0 when nothing failed, 1 when
some objects failed (their names are logged; values never are) or the wait for the key
rotation gave up (nothing rewritten then), 2 on bad flags (one stderr line naming the flag,
before anything is contacted).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
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
from controller.settings import parse_duration

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
    wait: WaitOptions | None = None


PROBE_NAME = "ack-secret-manager-reencrypt-probe"
APISERVER_KEY_METRIC = "apiserver_envelope_encryption_key_id_hash"  # _total: a counter
PLUGIN_KEY_METRIC = "ack_secret_manager_kmsplugin_key_id_info"
PLUGIN_REFRESH_METRIC = "ack_secret_manager_kmsplugin_key_refreshes"  # _total


@dataclass(frozen=True)
class WaitOptions:
    """`--wait-for-key-rotation`: whose key_id to wait for and for how long."""

    plugin_metrics_url: str = "http://127.0.0.1:8095/metrics"
    key_id: str = ""  # given: skip the plugin's /metrics
    timeout: float = 300.0
    probe_namespace: str = "default"
    interval: float = 2.0


class WaitError(RuntimeError):
    """The switch was not seen in time, or what it is read from cannot be read."""


def key_id_hash(key_id: str) -> str:
    """How the apiserver labels a key_id in its metrics."""
    return "sha256:" + hashlib.sha256(key_id.encode()).hexdigest()


def _samples(text: str, family: str) -> list[tuple[dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    out: list[tuple[dict[str, str], float]] = []
    for metric in text_string_to_metric_families(text):
        if metric.name == family:
            out.extend((dict(s.labels), float(s.value)) for s in metric.samples
                       if s.name in (family, family + "_total"))
    return out


def _http_text(url: str) -> str:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as resp:
        return str(resp.read().decode())


class RotationWait:
    """Wait until the kube-apiserver writes with the kms-plugin's current key_id."""

    def __init__(self, rest: Rest, options: WaitOptions, *,
                 fetch: Callable[[str], str] = _http_text,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rest, self.options = rest, options
        self.fetch, self.clock, self.sleep = fetch, clock, sleep
        self.deadline = 0.0

    def run(self) -> str:
        """The key_id that writes now use; WaitError when not seen before the timeout."""
        self.deadline = self.clock() + self.options.timeout
        key_id = self.options.key_id or self._plugin_key_id_after_a_refresh()
        log.info("waiting for the kube-apiserver to write with key_id %s", key_id)
        self._await_writes_with(key_id)
        return key_id

    def _plugin_key_id_after_a_refresh(self) -> str:
        """The plugin's key_id once it has asked KMS again since this command started (the
        rotation came before: that refresh has seen it)."""
        before = self._plugin_refreshes()
        while True:
            refreshes = self._plugin_refreshes()
            if refreshes > before:
                break
            self._pause(f"no key refresh of the kms-plugin ({self.options.plugin_metrics_url}) "
                        "since the wait began; is it running on this node?")
        keys = [labels["key_id"] for labels, value in _samples(
            self._plugin_metrics(), PLUGIN_KEY_METRIC) if value == 1 and "key_id" in labels]
        if len(keys) != 1:
            raise WaitError(f"{self.options.plugin_metrics_url} reports no current key_id "
                            f"({PLUGIN_KEY_METRIC}); is the plugin healthy?")
        return keys[0]

    def _plugin_refreshes(self) -> float:
        return sum(value for labels, value in _samples(self._plugin_metrics(),
                                                       PLUGIN_REFRESH_METRIC)
                   if labels.get("result") == "ok")

    def _plugin_metrics(self) -> str:
        try:
            return self.fetch(self.options.plugin_metrics_url)
        except OSError as exc:
            raise WaitError(f"cannot read the kms-plugin's metrics at "
                            f"{self.options.plugin_metrics_url} ({type(exc).__name__}): run "
                            "this on a control-plane node, fix --plugin-metrics-url, or give "
                            "--wait-for-key-id") from None

    def _await_writes_with(self, key_id: str) -> None:
        wanted = key_id_hash(key_id)
        try:
            while True:
                before = self._writes_with(wanted)
                self._write_probe()
                if self._writes_with(wanted) > before:
                    return
                self._pause(f"the kube-apiserver still writes with another key_id than "
                            f"{key_id}")
        finally:
            self._delete_probe()

    def _writes_with(self, wanted: str) -> float:
        try:
            response = self.rest.request("GET", "/metrics", stream=True)
            text = response.read().decode()
        except ApiError as err:
            raise WaitError(f"cannot read the kube-apiserver's /metrics ({err.status} "
                            f"{err.reason}): grant get on nonResourceURLs /metrics") from None
        return sum(value for labels, value in _samples(text, APISERVER_KEY_METRIC)
                   if labels.get("key_id_hash") == wanted
                   and labels.get("transformation_type") == "to_storage")

    def _write_probe(self) -> None:
        namespace = self.options.probe_namespace
        marker = base64.b64encode(os.urandom(12)).decode()
        path = f"/api/v1/namespaces/{namespace}/secrets"
        try:
            self.rest.merge_patch(f"{path}/{PROBE_NAME}", {"data": {"probe": marker}})
        except ApiError as err:
            if err.status != 404:
                raise WaitError(f"cannot write the probe Secret {namespace}/{PROBE_NAME} "
                                f"({err.status} {err.reason})") from None
            self.rest.create(path, {"metadata": {"name": PROBE_NAME, "labels": {
                "app.kubernetes.io/managed-by": "ack-secret-manager-reencrypt"}},
                "data": {"probe": marker}})

    def _delete_probe(self) -> None:
        # Absent, or the error that ended the wait matters more.
        with contextlib.suppress(ApiError, OSError):
            self.rest.delete(f"/api/v1/namespaces/{self.options.probe_namespace}/secrets/"
                             f"{PROBE_NAME}")

    def _pause(self, waiting_for: str) -> None:
        if self.clock() + self.options.interval > self.deadline:
            raise WaitError(f"gave up after {self.options.timeout:.0f}s: {waiting_for}")
        self.sleep(self.options.interval)


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
    """On a terminal: one self-overwriting line. Elsewhere (a CI job, `kubectl logs` of a Job):
    a line every `every_seconds` or every `every_objects` objects, whichever comes first, so
    a long run is never silent."""

    def __init__(self, stream: TextIO, *, every_seconds: float = 5.0,
                 every_objects: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.terminal = stream.isatty()
        self.every_seconds, self.every_objects = every_seconds, every_objects
        self.clock = clock
        self._started = clock()
        self._last = float("-inf") if self.terminal else self._started
        self._last_done = 0

    def show(self, summary: Summary, total: int | None, *, force: bool = False) -> None:
        now, done = self.clock(), summary.done
        if self.terminal:
            if not force and now - self._last < 0.2:
                return
            self._last = now
            self.stream.write("\r" + self._bar(summary, total))
        else:
            due = (now - self._last >= self.every_seconds
                   or done - self._last_done >= self.every_objects)
            if not (due or force) or (force and done == self._last_done):
                return  # forced (the end): only when it says something new
            self._last, self._last_done = now, done
            elapsed = max(now - self._started, 1e-9)
            of = f"/{total}" if total else ""
            self.stream.write(f"progress: {done}{of} {summary.line()} "
                              f"elapsed={elapsed:.1f}s rate={done / elapsed:.0f}/s\n")
        self.stream.flush()

    @staticmethod
    def _bar(summary: Summary, total: int | None) -> str:
        done = summary.done
        if not total:
            return f"{done} done {summary.line()}"
        width = 30
        filled = min(width, int(width * done / max(total, 1)))
        return f"[{'#' * filled + '-' * (width - filled)}] {done}/{total} {summary.line()}"

    def end(self) -> None:
        if self.terminal:
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
    p.add_bool("--wait-for-key-rotation", default=False,
               help="first wait until the kube-apiserver writes with the kms-plugin's current "
               "key_id, read after the plugin's next key refresh (run it right after rotating "
               "the key; up to --key-refresh-interval + 60s)")
    a("--wait-for-key-id", default="",
      help="with --wait-for-key-rotation: this key_id (the plugin's key_id_info) instead of "
      "reading the plugin's /metrics")
    a("--plugin-metrics-url", default="http://127.0.0.1:8095/metrics",
      help="the kms-plugin's /metrics on this node (default http://127.0.0.1:8095/metrics)")
    a("--wait-timeout", default="5m", help="how long to wait for the switch (default 5m)")
    a("--probe-namespace", default="default",
      help=f"where the probe Secret {PROBE_NAME} is written while waiting (default: default)")
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
    wait = None
    if ns.wait_for_key_rotation or ns.wait_for_key_id:
        wait = WaitOptions(plugin_metrics_url=ns.plugin_metrics_url, key_id=ns.wait_for_key_id,
                           timeout=parse_duration(ns.wait_timeout),
                           probe_namespace=ns.probe_namespace)
    return Options(resources=resources or ("secrets",), namespace=ns.namespace, qps=ns.qps,
                   workers=ns.workers, page_size=ns.page_size, dry_run=ns.dry_run,
                   kubeconfig=ns.kubeconfig, log_format=ns.log_format, log_level=ns.log_level,
                   wait=wait)


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
        if options.wait is not None:
            waited = time.monotonic()
            key_id = RotationWait(Rest(api), options.wait).run()
            print(f"the kube-apiserver writes with key_id {key_id} "
                  f"(waited {time.monotonic() - waited:.0f}s)", file=sys.stderr, flush=True)
        started = time.monotonic()
        summary = run(Rest(api), options)
    except WaitError as err:
        print(f"ack-secret-manager reencrypt: {err}", file=sys.stderr)
        return 1
    except ApiError as err:
        print(f"ack-secret-manager reencrypt: listing failed: {err.status} {err.reason}: "
              f"{err.message}", file=sys.stderr)
        return 1
    finally:
        api.close()
    seconds = time.monotonic() - started
    print(f"{summary.line()} seconds={seconds:.1f}", flush=True)
    return 1 if summary.counts[rewrite.FAILED] else 0
