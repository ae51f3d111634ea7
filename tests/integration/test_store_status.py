"""A store's Ready condition as a user sees it with `kubectl get secretstores`: False with the
reason an ExternalSecret would get (a missing credentials Secret, a refused endpoint), True
once the Secret exists (within the re-check cadence, --store-recheck-interval here 1s), and
no status write at all while nothing changes, however often the store is checked."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.cluster import free_port
from tests.fakecloud import FakeCloud
from tests.integration.conftest import AK_ID, AK_SECRET, K8s
from tests.waiting import wait_for

GROUP, VERSION = "alibabacloud.com", "v1alpha1"


def _store_ready(k8s: K8s, ns: str, name: str) -> dict[str, Any] | None:
    obj = k8s.get(ns, "secretstores", name)
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return None


def _cluster_store_ready(k8s: K8s, name: str) -> dict[str, Any] | None:
    from kubernetes import client

    obj = client.CustomObjectsApi(k8s.core.api_client).get_cluster_custom_object(
        GROUP, VERSION, "clustersecretstores", name)
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return None


def _status_writes(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.findall(r'ack_secret_manager_kubernetes_writes_total\{kind="SecretStoreStatus"'
                       r',verb="apply"\} ([0-9.]+)', text)
    return float(found[0]) if found else 0.0


def test_store_ready_condition_follows_its_credentials_and_endpoint(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    from kubernetes import client

    objs: Any = client.CustomObjectsApi(k8s.core.api_client)
    refs = {"accessKey": {"name": "cred", "key": "id"},
            "accessKeySecret": {"name": "cred", "key": "secret"}}
    k8s.create(namespace, "secretstores", {"kind": "SecretStore", "metadata": {"name": "late"},
                                          "spec": {"KMS": {"KMSAuth": refs}}})
    k8s.access_key_store(namespace, "far", endpoint="https://kms.example.com")
    k8s.access_key_store(namespace, "quiet")
    cluster_store = f"shared-{namespace}"
    objs.create_cluster_custom_object(GROUP, VERSION, "clustersecretstores", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterSecretStore",
        "metadata": {"name": cluster_store},
        "spec": {"KMS": {"KMSAuth": {
            "accessKey": {"name": "cred", "namespace": namespace, "key": "id"},
            "accessKeySecret": {"name": "cred", "namespace": namespace, "key": "secret"}}}}})
    metrics = free_port()
    controller = None
    try:
        controller = start_controller("--kms-endpoint", cloud.kms_endpoint,
                                      "--store-recheck-interval", "1s", "--log-level", "debug",
                                      "--metrics-bind-address", f"127.0.0.1:{metrics}")
        late = wait_for(lambda: _store_ready(k8s, namespace, "late"), what="late's Ready")
        assert (late["status"], late["reason"]) == ("False", "CredentialsNotFound"), late
        assert "spec.KMS.KMSAuth.accessKey" in late["message"]
        assert f"Secret {namespace}/cred" in late["message"]
        assert late["observedGeneration"] == 1
        shared = wait_for(lambda: _cluster_store_ready(k8s, cluster_store),
                          what="the ClusterSecretStore's Ready")
        assert (shared["status"], shared["reason"]) == ("False", "CredentialsNotFound")
        far = wait_for(lambda: _store_ready(k8s, namespace, "far"), what="far's Ready")
        assert (far["status"], far["reason"]) == ("False", "EndpointRefused"), far
        assert "spec.KMS.endpoint" in far["message"] and "kms.example.com" in far["message"]
        quiet = wait_for(lambda: _store_ready(k8s, namespace, "quiet"), what="quiet's Ready")
        assert (quiet["status"], quiet["reason"]) == ("True", "Valid"), quiet

        # The missing Secret is created: both stores turn Ready at their next check.
        k8s.core.create_namespaced_secret(namespace, {
            "metadata": {"name": "cred"}, "stringData": {"id": AK_ID, "secret": AK_SECRET}})
        wait_for(lambda: (_store_ready(k8s, namespace, "late") or {}).get("status") == "True",
                 timeout=30, what="late Ready=True after its Secret was created")
        wait_for(lambda: (_cluster_store_ready(k8s, cluster_store) or {}).get("status")
                 == "True", timeout=30, what="the ClusterSecretStore Ready=True")

        # A quiet store: checked again and again, never written again. The write counter is
        # the controller's, for every store: other tests' namespaces, still being deleted,
        # have stores checked (and written) for the first time meanwhile (CI, 2026-12-07).
        # Three checks of the quiet store in a window with no store status write anywhere
        # prove its checks write nothing; a store written at each check never gives one.
        before = k8s.get(namespace, "secretstores", "quiet")["metadata"]["resourceVersion"]
        line = f"SecretStore {namespace}/quiet checked: unchanged"

        def quiet_window() -> bool:
            assert controller is not None
            writes, checks = _status_writes(metrics), controller.log.count(line)
            wait_for(lambda: controller is not None and
                     controller.log.count(line) >= checks + 3, timeout=30,
                     what="three more checks of the quiet store")
            return _status_writes(metrics) == writes

        wait_for(quiet_window, timeout=90,
                 what="three checks of the quiet store without a status write")
        after = k8s.get(namespace, "secretstores", "quiet")["metadata"]["resourceVersion"]
        assert after == before
        assert AK_SECRET not in controller.log
    except AssertionError as exc:
        tail = controller.log[-4000:] if controller is not None else ""
        raise AssertionError(f"{exc}\n{tail}") from None
    finally:
        objs.delete_cluster_custom_object(GROUP, VERSION, "clustersecretstores", cluster_store)
