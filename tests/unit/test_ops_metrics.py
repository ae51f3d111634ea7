"""Metrics: what each engine call records, series hygiene, the docs, and /metrics over HTTP."""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

from controller.ops.metrics import MAX_CODES, PREFIX, SYNC_RESULTS, Metrics, MetricsServer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(version="1.2.3", process_metrics=False, wall=lambda: 1_700_000_000.0,
                   known_endpoints=("kms-vpc.cn-hangzhou.aliyuncs.com", "127.0.0.1:8443"))


def value(m: Metrics, metric: str, /, **labels: str) -> float | None:
    return m.registry.get_sample_value(PREFIX + metric, labels)


def get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


# -- what the engine records -------------------------------------------------------------


def test_every_sync_result_is_exported_from_the_start(metrics: Metrics) -> None:
    for result in SYNC_RESULTS:
        assert value(metrics, "sync_total", result=result) == 0.0


def test_observe_sync_counts_the_result_and_times_it(metrics: Metrics) -> None:
    metrics.observe_sync("ns", "a", "synced", 0.02, ready=True)
    metrics.observe_sync("ns", "b", "unchanged", 0.004, ready=True)
    metrics.observe_sync("ns", "c", "failed", 3.0, ready=False)
    assert value(metrics, "sync_total", result="synced") == 1.0
    assert value(metrics, "sync_total", result="unchanged") == 1.0
    assert value(metrics, "sync_total", result="failed") == 1.0
    assert value(metrics, "sync_duration_seconds_count") == 3.0
    assert value(metrics, "sync_duration_seconds_sum") == pytest.approx(3.024)
    assert value(metrics, "sync_duration_seconds_bucket", le="0.005") == 1.0


def test_sync_duration_buckets_run_from_5ms_to_60s(metrics: Metrics) -> None:
    bounds = [
        float(s.labels["le"])
        for family in metrics.registry.collect()
        if family.name == PREFIX + "sync_duration_seconds"
        for s in family.samples
        if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"
    ]
    assert (min(bounds), max(bounds)) == (0.005, 60.0)


def test_ready_gauge_follows_the_last_sync(metrics: Metrics) -> None:
    metrics.observe_sync("ns", "a", "synced", 0.1, ready=True)
    assert value(metrics, "externalsecret_ready", namespace="ns", name="a") == 1.0
    metrics.observe_sync("ns", "a", "failed", 0.1, ready=False)
    assert value(metrics, "externalsecret_ready", namespace="ns", name="a") == 0.0


@pytest.mark.parametrize(("result", "stamped"), [
    ("synced", True), ("unchanged", True), ("failed", False), ("conflict", False),
    ("invalid", False),
])
def test_last_sync_timestamp_is_set_only_by_successful_syncs(
    metrics: Metrics, result: str, stamped: bool
) -> None:
    metrics.observe_sync("ns", "a", result, 0.1, ready=stamped)
    stamp = value(metrics, "externalsecret_last_sync_timestamp_seconds", namespace="ns", name="a")
    assert stamp == (1_700_000_000.0 if stamped else None)


def test_a_failed_sync_keeps_the_previous_timestamp() -> None:
    now = [100.0]
    m = Metrics(process_metrics=False, wall=lambda: now[0])
    m.observe_sync("ns", "a", "unchanged", 0.1, ready=True)
    now[0] = 200.0
    m.observe_sync("ns", "a", "failed", 0.1, ready=False)
    assert value(m, "externalsecret_last_sync_timestamp_seconds", namespace="ns", name="a") == 100


def test_a_quiet_poll_moves_the_timestamp_without_counting_a_sync() -> None:
    now = [100.0]
    m = Metrics(process_metrics=False, wall=lambda: now[0])
    m.observe_sync("ns", "a", "synced", 0.1, ready=True)
    now[0] = 220.0
    m.observe_quiet_poll("ns", "a")
    assert value(m, "externalsecret_last_sync_timestamp_seconds", namespace="ns", name="a") == 220
    assert value(m, "sync_total", result="unchanged") == 0.0
    assert value(m, "sync_duration_seconds_count") == 1.0


def test_unknown_sync_result_is_a_programming_error(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="not one of"):
        metrics.observe_sync("ns", "a", "ok", 0.1, ready=True)


def test_forget_removes_the_series_of_a_deleted_externalsecret(metrics: Metrics) -> None:
    for i in range(1000):
        metrics.observe_sync("ns", f"es-{i}", "synced", 0.01, ready=True)
    for i in range(1000):
        metrics.forget("ns", f"es-{i}")
    metrics.forget("ns", "never-seen")  # no error
    text = metrics.exposition().decode()
    assert "externalsecret_ready{" not in text
    assert "externalsecret_last_sync_timestamp_seconds{" not in text
    assert value(metrics, "sync_total", result="synced") == 1000.0  # totals stay


def test_forget_all_objects_drops_every_per_object_series(metrics: Metrics) -> None:
    metrics.observe_sync("ns", "a", "synced", 0.01, ready=True)
    metrics.observe_sync("other", "b", "failed", 0.01, ready=False)
    metrics.forget_all_objects()
    assert "externalsecret_ready{" not in metrics.exposition().decode()


def test_observe_kms_counts_by_api_code_and_endpoint(metrics: Metrics) -> None:
    ep = "kms-vpc.cn-hangzhou.aliyuncs.com"
    metrics.observe_kms("GetSecretValue", ep, "OK", 0.03)
    metrics.observe_kms("GetSecretValue", ep, "Throttling.User", 0.01)
    metrics.observe_kms("GetSecretValue", ep, "Throttling.User", 0.01)
    assert value(metrics, "kms_requests_total", api="GetSecretValue", code="OK",
                 endpoint=ep) == 1.0
    assert value(metrics, "kms_requests_total", api="GetSecretValue", code="Throttling.User",
                 endpoint=ep) == 2.0
    assert value(metrics, "kms_request_duration_seconds_count", api="GetSecretValue",
                 endpoint=ep) == 3.0


def test_free_form_label_values_that_do_not_look_like_codes_become_invalid(
    metrics: Metrics,
) -> None:
    metrics.observe_kms("GetSecretValue", "127.0.0.1:8443", "password=hunter2 leaked?", 0.1)
    metrics.count_write("Secret", "x" * 200)
    text = metrics.exposition().decode()
    assert "hunter2" not in text
    assert value(metrics, "kms_requests_total", api="GetSecretValue", code="invalid",
                 endpoint="127.0.0.1:8443") == 1.0
    assert value(metrics, "kubernetes_writes_total", kind="Secret", verb="invalid") == 1.0


def test_endpoint_and_code_labels_stay_bounded_whatever_tenants_name(
    metrics: Metrics,
) -> None:
    """Tenants choose endpoint hosts (stores, entries, KMS instances): 1,000 distinct hosts
    and 1,000 distinct codes add a handful of series, not thousands; the operator's endpoints
    keep their names."""
    def series() -> int:
        return sum(1 for f in metrics.registry.collect()
                   if f.name.startswith(PREFIX + "kms_") for sample in f.samples
                   if sample.name.endswith("_total"))  # one per label set

    metrics.observe_kms("GetSecretValue", "kms-vpc.cn-hangzhou.aliyuncs.com", "OK", 0.1)
    for i in range(1000):
        metrics.observe_kms("GetSecretValue", f"kst-{i}.cryptoservice.kms.aliyuncs.com",
                            "OK", 0.1)
    settled = series()
    for i in range(1000):
        metrics.observe_kms("GetSecretValue", f"kst-{i}.example", f"Code{i}", 0.1)
    assert series() <= settled + MAX_CODES + 1
    assert value(metrics, "kms_requests_total", api="GetSecretValue", code="OK",
                 endpoint="other") == 1000.0
    assert value(metrics, "kms_requests_total", api="GetSecretValue", code="OK",
                 endpoint="kms-vpc.cn-hangzhou.aliyuncs.com") == 1.0
    assert value(metrics, "kms_requests_total", api="GetSecretValue", code="other",
                 endpoint="other") == 1000.0 - (MAX_CODES - 1)
    assert "kst-" not in metrics.exposition().decode()


def test_queue_metrics(metrics: Metrics) -> None:
    depth = [0]
    metrics.track_queue_depth(lambda: depth[0])
    depth[0] = 7
    assert value(metrics, "workqueue_depth") == 7.0
    metrics.observe_queue_wait(0.002)
    metrics.observe_queue_wait(12.0)
    assert value(metrics, "workqueue_wait_seconds_count") == 2.0
    assert value(metrics, "workqueue_wait_seconds_bucket", le="0.005") == 1.0
    metrics.count_retry()
    metrics.count_retry()
    assert value(metrics, "workqueue_retries_total") == 2.0


def test_writes_refreshes_leader_and_build_info(metrics: Metrics) -> None:
    metrics.count_write("Secret", "apply")
    metrics.count_write("Event", "create")
    metrics.count_write("Secret", "apply")
    metrics.count_credential_refresh("oidc_role_arn")
    assert value(metrics, "kubernetes_writes_total", kind="Secret", verb="apply") == 2.0
    assert value(metrics, "kubernetes_writes_total", kind="Event", verb="create") == 1.0
    assert value(metrics, "credential_refreshes_total", kind="oidc_role_arn") == 1.0
    assert value(metrics, "leader") == 0.0
    metrics.set_leader(True)
    assert value(metrics, "leader") == 1.0
    metrics.set_leader(False)
    assert value(metrics, "leader") == 0.0
    assert value(metrics, "build_info", version="1.2.3", commit="unknown") == 1.0
    with_commit = Metrics(version="1.2.3", commit="0123abc", process_metrics=False)
    assert value(with_commit, "build_info", version="1.2.3", commit="0123abc") == 1.0


def test_two_instances_do_not_share_or_touch_the_global_registry() -> None:
    first, second = Metrics(process_metrics=False), Metrics(process_metrics=True)
    first.count_retry()
    assert value(second, "workqueue_retries_total") == 0.0
    assert REGISTRY.get_sample_value(PREFIX + "workqueue_retries_total") is None
    assert second.registry.get_sample_value("process_resident_memory_bytes") is not None


# -- the docs list exactly what is exported ------------------------------------------------


def _exposed_name(family: Metric) -> str:
    # prometheus_client names a counter family without its "_total"; Prometheus sees it with.
    return family.name + ("_total" if family.type == "counter" else "")


def test_docs_describe_every_metric_with_its_type_and_labels(metrics: Metrics) -> None:
    rows = {
        m.group(1): (m.group(2), set(re.findall(r"`(\w+)`", m.group(3))))
        for m in re.finditer(r"^\| `(ack_secret_manager_\w+)` \| (\w+) \|([^|]*)\|",
                             DOCS.read_text(), re.MULTILINE)
    }
    # One of each call, so that every labelled family has a sample to read labels from.
    metrics.observe_sync("ns", "a", "synced", 0.1, ready=True)
    metrics.observe_kms("GetSecretValue", "kms.example", "OK", 0.1)
    metrics.count_credential_refresh("access_key")
    metrics.count_write("Secret", "apply")
    metrics.track_caches(lambda: [("externalsecrets", 10, 1), ("values", 5, None)])
    families = [f for f in metrics.registry.collect() if f.name.startswith(PREFIX)]
    assert set(rows) == {_exposed_name(f) for f in families}
    for family in families:
        documented_type, documented_labels = rows[_exposed_name(family)]
        assert documented_type == family.type, family.name
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        assert labels == documented_labels, family.name


# -- /metrics over HTTP ----------------------------------------------------------------------


@pytest.fixture
def server(metrics: Metrics) -> Iterator[MetricsServer]:
    srv = MetricsServer(metrics, "127.0.0.1:0")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_metrics_are_served_in_prometheus_text_format(
    metrics: Metrics, server: MetricsServer
) -> None:
    metrics.observe_sync("ns", "a", "synced", 0.1, ready=True)
    assert server.port
    status, content_type, body = get(server.port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert 'ack_secret_manager_externalsecret_ready{name="a",namespace="ns"} 1.0' in body.decode()


def test_other_paths_are_not_found(server: MetricsServer) -> None:
    assert server.port
    assert get(server.port, "/")[0] == 404
    assert get(server.port, "/healthz")[0] == 404


def test_stop_closes_the_port(metrics: Metrics) -> None:
    srv = MetricsServer(metrics, "127.0.0.1:0")
    srv.start()
    port = srv.port
    assert port
    srv.stop()
    srv.stop()  # twice is fine
    assert srv.port is None
    with pytest.raises(ConnectionRefusedError):
        get(port, "/metrics")


def test_address_zero_disables_the_server(metrics: Metrics) -> None:
    srv = MetricsServer(metrics, "0")
    srv.start()
    assert (srv.enabled, srv.port) == (False, None)
    srv.stop()


def test_cache_footprints_are_summed_per_resource(metrics: Metrics) -> None:
    metrics.track_caches(lambda: [("externalsecrets", 100, 2), ("secrets", 30, 0),
                                  ("secrets", 12, 3), ("values", 4096, None)])
    assert value(metrics, "cache_bytes", resource="secrets") == 42
    assert value(metrics, "cache_over_budget_objects", resource="secrets") == 3
    assert value(metrics, "cache_bytes", resource="values") == 4096
    assert value(metrics, "cache_over_budget_objects", resource="values") is None
