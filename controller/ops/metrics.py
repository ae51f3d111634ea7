"""What the controller counts, and the /metrics endpoint that shows it to Prometheus.

The engine reports what happened through plain methods (`observe_sync`, `observe_kms`,
`count_write`, ...) and never touches prometheus_client, so the metric names, types, label
sets and buckets are decided here, in one place, and documented in docs/metrics.md (a unit
test keeps the two in step).

Each `Metrics` owns its own `CollectorRegistry`, not prometheus_client's global one: two
controllers in one process (tests, the benchmark) then never clash over a metric name.

Label values are object identities and outcomes only: namespace, name, endpoint, API name,
error code, result, kind, verb. Never a secret value, key content or message text. Free-form
values the engine passes for code/endpoint/kind/verb/api are checked against a conservative
charset and length; anything else is exported as "invalid" rather than as itself, which also
keeps a surprising error string from creating unbounded series. Endpoints are chosen by
tenants (a store's endpoint, an entry's kmsEndpoint): only the endpoints the operator named
(`known_endpoints`: --kms-endpoint or the region's, --oos-endpoint, exact --allowed-endpoints
hosts) are labels of their own, every other host is counted as "other"; error codes are kept
as themselves up to `MAX_CODES` distinct ones, then "other". So the series stay bounded
whatever tenants create, and a deleted store leaves no series behind.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from controller.ops.server import EndpointServer, Reply, Route

__all__ = [
    "PREFIX",
    "SUCCESSFUL_RESULTS",
    "SYNC_RESULTS",
    "Metrics",
    "MetricsServer",
    "metrics_route",
]

PREFIX = "ack_secret_manager_"

# What one sync of one ExternalSecret came to.
SYNCED = "synced"  # the Secret was created or changed
UNCHANGED = "unchanged"  # values read, nothing to write (a quiet poll)
FAILED = "failed"  # fetching or writing failed; will be retried
CONFLICT = "conflict"  # the target Secret belongs to someone else
INVALID = "invalid"  # the spec cannot work as written; not retried until it changes
SYNC_RESULTS = (SYNCED, UNCHANGED, FAILED, CONFLICT, INVALID)
SUCCESSFUL_RESULTS = frozenset({SYNCED, UNCHANGED})

# 5 ms .. 60 s: a cached quiet poll takes milliseconds, a throttled KMS call with retries
# takes tens of seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Time a ready key waits for a free worker: ~0 when idle, minutes when badly backlogged.
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)

INVALID_LABEL = "invalid"
OTHER_LABEL = "other"
MAX_CODES = 64  # distinct error codes labelled as themselves (the services have ~40)
_SAFE_LABEL = re.compile(r"[A-Za-z0-9_.:/\[\]-]{1,128}")


def safe_label(value: str) -> str:
    """`value` if it looks like an identifier, host or error code; else "invalid"."""
    return value if _SAFE_LABEL.fullmatch(value) else INVALID_LABEL


class Metrics:
    """The controller's metrics, in a registry of their own.

    `version` and `commit` become the `build_info` labels. `process_metrics` adds
    prometheus_client's process_*, python_gc_* and python_info collectors (memory and CPU at
    10,000 objects).
    `wall` is the clock for last-sync timestamps (seconds since the epoch).
    """

    def __init__(
        self,
        *,
        version: str = "unknown",
        commit: str = "unknown",
        process_metrics: bool = True,
        wall: Callable[[], float] = time.time,
        known_endpoints: Iterable[str] = (),
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._wall = wall
        self.known_endpoints = frozenset(e.lower() for e in known_endpoints)
        self._codes: set[str] = set()
        self._codes_lock = threading.Lock()
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self._define_sync_metrics()
        self._define_kms_metrics()
        self._define_queue_metrics()
        self._define_process_state_metrics()
        self.build_info.labels(version=safe_label(version), commit=safe_label(commit)).set(1)

    # -- definitions -----------------------------------------------------------------------

    def _define_sync_metrics(self) -> None:
        r = self.registry
        self.sync_total = Counter(
            PREFIX + "sync_total", "Syncs of ExternalSecrets, by result.", ["result"], registry=r
        )
        for result in SYNC_RESULTS:  # every result exported from the start, at 0
            self.sync_total.labels(result=result)
        self.sync_duration = Histogram(
            PREFIX + "sync_duration_seconds",
            "Time to sync one ExternalSecret end to end (fetch, render, write, status).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.sync_degraded = Counter(
            PREFIX + "sync_degraded_total",
            "Syncs that met a transient KMS fault (throttling, 5xx, timeout) while the Secret's "
            "data was still fresh: Ready stays True, the Degraded condition says so.",
            registry=r,
        )
        self.externalsecret_ready = Gauge(
            PREFIX + "externalsecret_ready",
            "1 when the ExternalSecret's last sync left it Ready, else 0.",
            ["namespace", "name"],
            registry=r,
        )
        self.externalsecret_last_sync = Gauge(
            PREFIX + "externalsecret_last_sync_timestamp_seconds",
            "When the ExternalSecret last synced successfully (written or unchanged).",
            ["namespace", "name"],
            registry=r,
        )

    def _define_kms_metrics(self) -> None:
        r = self.registry
        self.kms_requests_total = Counter(
            PREFIX + "kms_requests_total",
            "Calls to Alibaba Cloud KMS, by API, result code (OK on success) and endpoint.",
            ["api", "code", "endpoint"],
            registry=r,
        )
        self.kms_request_duration = Histogram(
            PREFIX + "kms_request_duration_seconds",
            "Duration of calls to Alibaba Cloud KMS.",
            ["api", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.credential_refreshes_total = Counter(
            PREFIX + "credential_refreshes_total",
            "Cloud identities built or rebuilt (e.g. after a security token expired), by kind.",
            ["kind"],
            registry=r,
        )

    def _define_queue_metrics(self) -> None:
        r = self.registry
        self.workqueue_depth = Gauge(
            PREFIX + "workqueue_depth", "ExternalSecrets ready to sync, waiting for a worker.",
            registry=r,
        )
        self.workqueue_wait = Histogram(
            PREFIX + "workqueue_wait_seconds",
            "How long an ExternalSecret was ready to sync before a worker took it.",
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.workqueue_retries_total = Counter(
            PREFIX + "workqueue_retries_total", "Syncs re-queued with backoff after a failure.",
            registry=r,
        )

    def _define_process_state_metrics(self) -> None:
        r = self.registry
        self.kubernetes_writes_total = Counter(
            PREFIX + "kubernetes_writes_total",
            "Writes to the Kubernetes API, by object kind and verb.",
            ["kind", "verb"],
            registry=r,
        )
        self.leader = Gauge(
            PREFIX + "leader", "1 while this replica holds the leader Lease (or runs alone).",
            registry=r,
        )
        self.build_info = Gauge(
            PREFIX + "build_info", "Always 1; the version and commit labels say what is "
            "running.", ["version", "commit"], registry=r,
        )

    # -- what the engine calls -----------------------------------------------------------

    def observe_sync(
        self, namespace: str, name: str, result: str, seconds: float, ready: bool
    ) -> None:
        """One sync of ExternalSecret namespace/name finished with `result` (see SYNC_RESULTS).

        Raises ValueError for a result outside SYNC_RESULTS: a programming error.
        """
        if result not in SYNC_RESULTS:
            raise ValueError(f"sync result {result!r} is not one of {', '.join(SYNC_RESULTS)}")
        self.sync_total.labels(result=result).inc()
        self.sync_duration.observe(seconds)
        self.externalsecret_ready.labels(namespace=namespace, name=name).set(1 if ready else 0)
        if result in SUCCESSFUL_RESULTS:
            self.externalsecret_last_sync.labels(namespace=namespace, name=name).set(self._wall())

    def count_degraded(self) -> None:
        self.sync_degraded.inc()

    def observe_known(self, namespace: str, name: str, ready: bool) -> None:
        """An ExternalSecret found at start-up: its readiness as its status says, so that every
        object has its gauge from the first second (its own sync may come at its slot)."""
        self.externalsecret_ready.labels(namespace=namespace, name=name).set(1 if ready else 0)

    def observe_quiet_poll(self, namespace: str, name: str) -> None:
        """A poll found the values ExternalSecret namespace/name reads unchanged.

        Polls run per KMS secret, not per ExternalSecret, so a quiet poll does not go
        through `observe_sync`; this moves the last-sync timestamp of each ExternalSecret
        that reads the polled secret. Call it only for ExternalSecrets whose last sync
        succeeded: a quiet poll does not make a failing one synced.
        """
        self.externalsecret_last_sync.labels(namespace=namespace, name=name).set(self._wall())

    def forget(self, namespace: str, name: str) -> None:
        """Drop the per-object series of a deleted ExternalSecret (no-op if it had none)."""
        self.externalsecret_ready.remove(namespace, name)
        self.externalsecret_last_sync.remove(namespace, name)

    def forget_all_objects(self) -> None:
        """Drop every per-object series, e.g. when this replica stops being the leader."""
        self.externalsecret_ready.clear()
        self.externalsecret_last_sync.clear()

    def observe_kms(self, api: str, endpoint: str, code: str, seconds: float) -> None:
        """One KMS call to `endpoint` (host[:port]) returned `code`: "OK" or the error code."""
        api = safe_label(api)
        endpoint = endpoint if endpoint.lower() in self.known_endpoints else OTHER_LABEL
        self.kms_requests_total.labels(api=api, code=self._code(code), endpoint=endpoint).inc()
        self.kms_request_duration.labels(api=api, endpoint=endpoint).observe(seconds)

    def _code(self, code: str) -> str:
        code = safe_label(code)
        with self._codes_lock:
            if code in self._codes:
                return code
            if len(self._codes) < MAX_CODES:
                self._codes.add(code)
                return code
        return OTHER_LABEL

    def track_queue_depth(self, depth: Callable[[], float]) -> None:
        """Read the queue depth from `depth()` at each scrape (e.g. `WorkQueue.depth`)."""
        self.workqueue_depth.set_function(depth)

    def track_caches(self,
                     footprints: Callable[[], Iterable[tuple[str, int, int | None]]]) -> None:
        """At each scrape, `footprints()` gives (resource, bytes held whole, objects over
        their namespace's budget, None where there is no such budget) for each bounded
        cache: --namespace-cache-bytes, --value-cache-bytes ("values")."""
        self.registry.register(_CacheCollector(footprints))

    def observe_queue_wait(self, seconds: float) -> None:
        """Fits `WorkQueue(on_wait=...)`: how long a key waited for a worker."""
        self.workqueue_wait.observe(seconds)

    def count_retry(self) -> None:
        self.workqueue_retries_total.inc()

    def count_credential_refresh(self, kind: str) -> None:
        """A cloud identity of `kind` (access_key, ram_role_arn, ...) was built or rebuilt."""
        self.credential_refreshes_total.labels(kind=safe_label(kind)).inc()

    def count_write(self, kind: str, verb: str) -> None:
        """One write to the Kubernetes API, e.g. ("Secret", "apply"), ("Event", "create")."""
        self.kubernetes_writes_total.labels(kind=safe_label(kind), verb=safe_label(verb)).inc()

    def set_leader(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format, as served on /metrics."""
        return generate_latest(self.registry)


class _CacheCollector(Collector):
    """ack_secret_manager_cache_bytes and _cache_over_budget_objects, per resource (a fixed
    set of label values: the namespaces are summed)."""

    def __init__(self,
                 footprints: Callable[[], Iterable[tuple[str, int, int | None]]]) -> None:
        self.footprints = footprints

    def collect(self) -> Iterator[Metric]:
        held = GaugeMetricFamily(
            PREFIX + "cache_bytes", "Bytes (as JSON) of the objects the controller caches "
            "whole, by resource, under --namespace-cache-bytes; resource=\"values\": the "
            "values read from KMS and OOS, under --value-cache-bytes.", labels=["resource"])
        over = GaugeMetricFamily(
            PREFIX + "cache_over_budget_objects", "Objects cached as stubs because their "
            "namespace's objects already filled --namespace-cache-bytes, by resource "
            "(ExternalSecrets and SecretStores report NamespaceCacheFull).",
            labels=["resource"])
        sizes: dict[str, int] = {}
        stubbed: dict[str, int] = {}
        for resource, size, stubs in self.footprints():
            label = safe_label(resource)
            sizes[label] = sizes.get(label, 0) + size
            if stubs is not None:
                stubbed[label] = stubbed.get(label, 0) + stubs
        for label, size in sorted(sizes.items()):
            held.add_metric([label], size)
        for label, stubs in sorted(stubbed.items()):
            over.add_metric([label], stubs)
        yield held
        yield over


def metrics_route(metrics: Metrics) -> Route:
    """The /metrics handler, for any EndpointServer (the health server reuses it)."""

    def serve(query: str) -> Reply:
        return Reply(200, metrics.exposition(), CONTENT_TYPE_PLAIN_0_0_4)

    return serve


class MetricsServer(EndpointServer):
    """/metrics on `address` (flag form: ":8080", "127.0.0.1:0", "0" disables)."""

    def __init__(self, metrics: Metrics, address: str) -> None:
        super().__init__(address, {"/metrics": metrics_route(metrics)}, name="metrics")
