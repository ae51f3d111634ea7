"""Which objects the controller acts on, which stores and credentials it lets them use, and
what a shared KMS secret costs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.fakecloud import FakeCloud
from tests.integration.conftest import AK_ID, AK_SECRET, K8s
from tests.waiting import wait_for


def _es(name: str, key: str, ref: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": "ExternalSecret", "metadata": {"name": name},
            "spec": {"data": [{"key": key, "secretStoreRef": ref or {"name": "store"}}]}}


def _reason(k8s: K8s, ns: str, name: str) -> str:
    return str((k8s.ready(ns, name) or {}).get("reason", ""))


def test_watch_and_exclude_namespaces(
    k8s: K8s, cloud: FakeCloud, make_namespace: Callable[..., str],
    start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("db", "pw")
    watched, other, excluded = (make_namespace(p) for p in ("watched", "other", "excluded"))
    for ns in (watched, other, excluded):
        k8s.access_key_store(ns)
    # (A namespace both watched and excluded is refused at start-up:
    # tests/unit/test_settings_compat.py.)
    start_controller("--kms-endpoint", cloud.kms_endpoint,
                     "--watch-namespaces", watched, "--exclude-namespaces", excluded)
    for ns in (watched, other, excluded):
        k8s.create(ns, "externalsecrets", _es("app", "db"))
    wait_for(lambda: k8s.secret_data(watched, "app") == {"db": "pw"}, what="watched synced")
    time.sleep(2)  # asserting that nothing happens elsewhere: nothing to await
    assert k8s.secret(other, "app") is None and k8s.ready(other, "app") is None
    assert k8s.secret(excluded, "app") is None and k8s.ready(excluded, "app") is None


def test_cross_namespace_store_is_refused_unless_enabled(
    k8s: K8s, cloud: FakeCloud, namespace: str, make_namespace: Callable[..., str],
    start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("scope-db", "pw")
    platform = make_namespace("platform")
    k8s.access_key_store(platform)
    proc = start_controller("--kms-endpoint", cloud.kms_endpoint)
    k8s.create(namespace, "externalsecrets",
               _es("app", "scope-db", {"name": "store", "namespace": platform}))
    wait_for(lambda: _reason(k8s, namespace, "app") == "CrossNamespaceRefused",
             what="CrossNamespaceRefused")
    assert "--enable-cross-namespace-secret-store" in k8s.ready(namespace, "app")["message"]
    assert k8s.secret(namespace, "app") is None
    # (its own key: other tests' objects, still being deleted, may read "db")
    assert cloud.calls("GetSecretValue", secret="scope-db") == 0
    proc.stop()
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--enable-cross-namespace-secret-store")
    wait_for(lambda: k8s.secret_data(namespace, "app") == {"scope-db": "pw"}, what="allowed")


def test_cluster_secret_store_admits_only_its_namespaces(
    k8s: K8s, cloud: FakeCloud, make_namespace: Callable[..., str],
    start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("db", "pw")
    platform = make_namespace("platform")
    k8s.core.create_namespaced_secret(platform, {"metadata": {"name": "ak"},
                                                 "stringData": {"id": AK_ID,
                                                                "secret": AK_SECRET}})
    allowed = make_namespace("team-a", labels={"team": "a"})
    refused = make_namespace("team-b", labels={"team": "b"})
    store_name = f"shared-{allowed}"
    k8s.custom.create_cluster_custom_object("alibabacloud.com", "v1alpha1",
                                            "clustersecretstores", {
        "apiVersion": "alibabacloud.com/v1alpha1", "kind": "ClusterSecretStore",
        "metadata": {"name": store_name},
        "spec": {"KMS": {"KMSAuth": {
            "accessKey": {"name": "ak", "namespace": platform, "key": "id"},
            "accessKeySecret": {"name": "ak", "namespace": platform, "key": "secret"}}},
            "conditions": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}})
    try:
        start_controller("--kms-endpoint", cloud.kms_endpoint)
        ref = {"name": store_name, "kind": "ClusterSecretStore"}
        k8s.create(allowed, "externalsecrets", _es("app", "db", ref))
        k8s.create(refused, "externalsecrets", _es("app", "db", ref))
        wait_for(lambda: k8s.secret_data(allowed, "app") == {"db": "pw"}, what="allowed ns")
        wait_for(lambda: _reason(k8s, refused, "app") == "StoreNotAllowed", what="refused ns")
        assert k8s.secret(refused, "app") is None
    finally:
        k8s.custom.delete_cluster_custom_object("alibabacloud.com", "v1alpha1",
                                                "clustersecretstores", store_name)


def test_many_external_secrets_reading_one_kms_secret_cost_one_call(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("shared", "pw")
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h")
    for i in range(10):
        k8s.create(namespace, "externalsecrets", _es(f"app-{i}", "shared"))
    for i in range(10):
        wait_for(lambda i=i: k8s.secret_data(namespace, f"app-{i}") == {"shared": "pw"},
                 what=f"app-{i} synced")
    assert cloud.calls("GetSecretValue", secret="shared") == 1


def test_secret_values_and_credentials_never_reach_logs_events_or_status(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    marker = "MARKER-d41d8cd98f00b204"
    cloud.put_secret("good", f'{{"password": "{marker}-json"}}')
    cloud.put_secret("notjson", f"{marker}-not-json")
    cloud.put_secret("denied", f"{marker}-denied")
    cloud.deny("app", "denied")
    k8s.access_key_store(namespace)
    proc = start_controller("--kms-endpoint", cloud.kms_endpoint, "--log-level", "debug")
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "app"},
        "spec": {"data": [
            {"key": "good", "secretStoreRef": {"name": "store"},
             "jmesPath": [{"path": "password", "objectAlias": "pw"}]},
            {"key": "notjson", "secretStoreRef": {"name": "store"},
             "jmesPath": [{"path": "x", "objectAlias": "x"}]},
            {"key": "denied", "secretStoreRef": {"name": "store"}}]}})
    wait_for(lambda: (k8s.secret_data(namespace, "app") or {}).get("pw") == f"{marker}-json",
             what="partial sync")
    wait_for(lambda: _reason(k8s, namespace, "app") in ("AccessDenied", "FetchFailed"),
             what="failure status")
    status = str(k8s.get(namespace, "externalsecrets", "app")["status"])
    events = " ".join(f"{e.reason} {e.message}" for e in k8s.events(namespace, "app"))
    proc.stop()
    for text in (status, events, proc.log):
        assert marker not in text
        assert AK_SECRET not in text
