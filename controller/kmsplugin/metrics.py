"""Prometheus metrics of the KMS plugin, in a registry of its own (same conventions as the
controller's: `ack_secret_manager_` prefix, seconds, `_total` counters, bounded labels).

Why its own module: the controller's `ops.metrics.Metrics` describes ExternalSecret syncs;
the plugin needs KMS call latency and errors by operation, gRPC calls by method and result,
and which key_id is current. Labels are operation names, error codes and the key_id (a
public hash): never a plaintext, DEK or ciphertext.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from controller import __version__
from controller.ops.metrics import safe_label
from controller.ops.server import Reply, Route

PREFIX = "ack_secret_manager_kmsplugin_"
KMS_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
METHODS = ("Status", "Encrypt", "Decrypt")


class PluginMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.kms_duration = Histogram(
            PREFIX + "kms_request_duration_seconds",
            "KMS calls (every attempt) by operation.", ["operation"], buckets=KMS_BUCKETS,
            registry=r)
        self.kms_errors = Counter(
            PREFIX + "kms_request_errors_total", "Failed KMS calls by operation and code.",
            ["operation", "code"], registry=r)
        self.grpc_total = Counter(
            PREFIX + "grpc_requests_total", "Status/Encrypt/Decrypt calls by result.",
            ["method", "result"], registry=r)
        for method in METHODS:
            for result in ("ok", "error"):
                self.grpc_total.labels(method=method, result=result)
        self.key_id_info = Gauge(
            PREFIX + "key_id_info", "1 for the key_id Status currently reports.", ["key_id"],
            registry=r)
        self.key_refreshes = Counter(
            PREFIX + "key_refreshes_total",
            "DescribeKey refreshes of the key state by result (ok: answered; what "
            "`reencrypt --wait-for-key-rotation` waits for after a rotation).", ["result"],
            registry=r)
        for result in ("ok", "error"):
            self.key_refreshes.labels(result=result)
        self.key_healthy = Gauge(
            PREFIX + "key_healthy", "1 while Status reports healthz ok.", registry=r)
        Gauge(PREFIX + "build_info", "Version of the plugin.", ["version"],
              registry=r).labels(version=safe_label(__version__)).set(1)
        self._current_key_id = ""
        self._lock = threading.Lock()  # Status threads and the key-state thread both set it

    def observe_kms(self, operation: str, code: str, seconds: float) -> None:
        self.kms_duration.labels(operation=operation).observe(seconds)
        if code != "Success":
            self.kms_errors.labels(operation=operation, code=safe_label(code)).inc()

    def count_refresh(self, ok: bool) -> None:
        self.key_refreshes.labels(result="ok" if ok else "error").inc()

    def count(self, method: str, ok: bool) -> None:
        self.grpc_total.labels(method=method, result="ok" if ok else "error").inc()

    def set_key_id(self, key_id: str) -> None:
        label = safe_label(key_id)
        with self._lock:
            if label == self._current_key_id:
                return
            if self._current_key_id:
                self.key_id_info.remove(self._current_key_id)
            self._current_key_id = label
            self.key_id_info.labels(key_id=label).set(1)

    def route(self) -> Route:
        def serve(query: str) -> Reply:
            return Reply(200, generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4)

        return serve
