"""OOS encryption parameters (`provider: oos`), end to end: the shape of ack-secret-manager's
OOS documentation unchanged, the real OOS SDK against the fake cloud, one poll per distinct
parameter, a parameter change followed within one interval, jmesPath as for KMS, and the
refusals (a KMS store, a version stage)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.fakecloud import FakeCloud
from tests.integration.conftest import AK_ID, AK_SECRET, K8s
from tests.waiting import wait_for


def _oos_store(k8s: K8s, ns: str) -> None:
    k8s.core.create_namespaced_secret(ns, {"metadata": {"name": "oos-secret"},
                                           "stringData": {"accessKey": AK_ID,
                                                          "accessKeySecret": AK_SECRET}})
    k8s.create(ns, "secretstores", {"kind": "SecretStore", "metadata": {"name": "scdemo"},
                                    "spec": {"OOS": {"OOSAuth": {
                                        "accessKey": {"name": "oos-secret", "namespace": ns,
                                                      "key": "accessKey"},
                                        "accessKeySecret": {"name": "oos-secret",
                                                            "namespace": ns,
                                                            "key": "accessKeySecret"}}}}})


def _cond(k8s: K8s, ns: str, name: str) -> dict[str, Any]:
    return k8s.ready(ns, name) or {}


def test_oos_parameters_sync_like_kms_secrets(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    cloud.oos.put("test-parameter", "v1-value")
    cloud.oos.put("db-config", json.dumps({"user": "app", "password": "pw1"}))
    _oos_store(k8s, namespace)
    start_controller("--oos-endpoint", cloud.oos_endpoint, "--polling-interval", "2s",
                     "--min-refresh-interval", "1s")
    # As in ack-secret-manager's OOS documentation.
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "esdemo"},
        "spec": {"provider": "oos", "data": [
            {"key": "test-parameter", "name": "test", "secretStoreRef": {"name": "scdemo"}}]}})
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "json"},
        "spec": {"provider": "oos", "data": [
            {"key": "db-config", "secretStoreRef": {"name": "scdemo"},
             "jmesPath": [{"path": "user", "objectAlias": "user"},
                          {"path": "password", "objectAlias": "password"}]}]}})
    wait_for(lambda: k8s.secret_data(namespace, "esdemo") == {"test": "v1-value"},
             what="the OOS parameter synced")
    wait_for(lambda: k8s.secret_data(namespace, "json") == {"user": "app", "password": "pw1"},
             what="jmesPath over an OOS parameter")
    wait_for(lambda: _cond(k8s, namespace, "esdemo").get("reason") == "Synced",
             what="esdemo Synced (the status is written after the Secret)")
    cloud.oos.put("test-parameter", "v2-value")
    wait_for(lambda: k8s.secret_data(namespace, "esdemo") == {"test": "v2-value"},
             timeout=15, what="the parameter change followed")
    assert cloud.calls("GetSecretParameter") >= 3
    # None of these went to KMS (other tests' objects, still being deleted, may read theirs).
    assert sum(cloud.calls("GetSecretValue", secret=name)
               for name in ("test-parameter", "db-config")) == 0


def test_oos_refusals_name_the_field(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    k8s.access_key_store(namespace)  # a KMS store
    start_controller("--oos-endpoint", cloud.oos_endpoint, "--polling-interval", "1h")
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "kms-store"},
        "spec": {"provider": "oos", "data": [{"key": "p", "secretStoreRef": {"name": "store"}}]}})
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "staged"},
        "spec": {"provider": "oos", "data": [{"key": "p", "versionStage": "ACSCurrent"}]}})
    wait_for(lambda: _cond(k8s, namespace, "kms-store").get("reason") == "InvalidStore",
             what="InvalidStore")
    assert "spec.OOS.OOSAuth" in _cond(k8s, namespace, "kms-store")["message"]
    wait_for(lambda: _cond(k8s, namespace, "staged").get("reason") == "InvalidSpec",
             what="InvalidSpec")
    assert "spec.data[0].versionStage" in _cond(k8s, namespace, "staged")["message"]
    assert cloud.calls("GetSecretParameter") == 0
