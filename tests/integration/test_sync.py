"""What a user sees after applying an ExternalSecret: the Secret, its content, its owner, and
the ExternalSecret's status; including the ack-secret-manager example, unchanged."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import yaml

from tests.fakecloud import FakeCloud
from tests.integration.conftest import K8s
from tests.waiting import wait_for

COMPAT_EXAMPLE = """
apiVersion: alibabacloud.com/v1alpha1
kind: ExternalSecret
metadata: {name: esdemo}
spec:
  provider: kms
  data:
    - key: test1
      name: test1
      versionId: v1
      secretStoreRef: {name: scdemo}
      jmesPath:
        - {path: "name", objectAlias: "name"}
        - {path: "friends[0].name", objectAlias: "friendname"}
  dataProcess:
    - extract: {key: test1, name: extract, versionId: v1, secretStoreRef: {name: scdemo}}
      replaceRule:
        - {source: "^n.*e$", target: "alibabacloud"}
"""


def test_ack_secret_manager_example_syncs_unchanged(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    value = {"name": "alice", "friends": [{"name": "bob"}], "age": "7"}
    cloud.put_secret("test1", json.dumps(value), version_id="v1")
    k8s.access_key_store(namespace, "scdemo")
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    k8s.create(namespace, "externalsecrets", yaml.safe_load(COMPAT_EXAMPLE))
    data = wait_for(lambda: k8s.secret_data(namespace, "esdemo"), what="Secret esdemo")
    assert data == {
        "name": "alice",  # jmesPath
        "friendname": "bob",  # jmesPath
        "alibabacloud": "alice",  # extract, key "name" renamed by the replaceRule
        "friends": '[{"name":"bob"}]',  # extract, nested value JSON-encoded
        "age": "7",
    }
    ready = wait_for(lambda: k8s.ready(namespace, "esdemo"), what="Ready condition")
    assert (ready["status"], ready["reason"]) == ("True", "Synced")
    status = k8s.get(namespace, "externalsecrets", "esdemo")["status"]
    assert status["observedGeneration"] == 1
    results = {r["entry"]: r for r in status["dataSyncResults"]}
    assert results["data[0]"]["versionId"] == "v1"
    assert results["dataProcess[0].extract"]["status"] == "Synced"
    # Both of ack-secret-manager's keys survive the apiserver's pruning (the CRD declares them).
    assert {(r["KMSSecretKey"], r["ExternalSecretKey"]) for r in results.values()} == {
        ("test1", "test1")}
    assert cloud.calls("GetSecretValue", secret="test1") == 1  # both entries share one read


def test_created_secret_is_owned_labelled_and_garbage_collected(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("api-token", "t0ken")
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    es = k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "app"},
        "spec": {"data": [{"key": "api-token", "secretStoreRef": {"name": "store"}}],
                 "target": {"name": "app-credentials",
                            "template": {"metadata": {"labels": {"team": "web"}}}}}})
    secret = wait_for(lambda: k8s.secret(namespace, "app-credentials"), what="Secret")
    assert base64.b64decode(secret.data["api-token"]) == b"t0ken"  # name defaults to key
    assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "ack-secret-manager"
    assert secret.metadata.labels["team"] == "web"
    assert secret.metadata.annotations["alibabacloud.com/external-secret"] == "app"
    [owner] = secret.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("ExternalSecret", "app",
                                                   es["metadata"]["uid"])
    k8s.delete(namespace, "externalsecrets", "app")
    wait_for(lambda: k8s.secret(namespace, "app-credentials") is None, timeout=60,
             what="owned Secret garbage-collected")


def test_retain_policy_keeps_the_secret_after_deletion(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("api-token", "t0ken")
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "keep"},
        "spec": {"data": [{"key": "api-token", "secretStoreRef": {"name": "store"}}],
                 "target": {"deletionPolicy": "Retain"}}})
    secret = wait_for(lambda: k8s.secret(namespace, "keep"), what="Secret")
    assert not secret.metadata.owner_references
    k8s.delete(namespace, "externalsecrets", "keep")
    wait_for(lambda: k8s.gone(namespace, "externalsecrets", "keep"),
             what="ExternalSecret deleted")
    assert k8s.secret_data(namespace, "keep") == {"api-token": "t0ken"}


def test_binary_value_and_secret_type(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("keystore", b"\x00\xffbinary\x01")
    docker = json.dumps({"auths": {"registry.example": {"auth": "dXNlcjpwdw=="}}})
    cloud.put_secret("pull", docker)
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "bin"},
        "spec": {"data": [{"key": "keystore", "secretStoreRef": {"name": "store"}}]}})
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "regcred"},
        "spec": {"type": "kubernetes.io/dockerconfigjson",
                 "data": [{"key": "pull", "name": ".dockerconfigjson",
                           "secretStoreRef": {"name": "store"}}]}})
    secret = wait_for(lambda: k8s.secret(namespace, "bin"), what="binary Secret")
    assert base64.b64decode(secret.data["keystore"]) == b"\x00\xffbinary\x01"
    pull = wait_for(lambda: k8s.secret(namespace, "regcred"), what="docker Secret")
    assert pull.type == "kubernetes.io/dockerconfigjson"
    assert json.loads(base64.b64decode(pull.data[".dockerconfigjson"])) == json.loads(docker)


def test_missing_required_key_for_secret_type_is_a_clear_status(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("cert", "PEM")
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "tls"},
        "spec": {"type": "kubernetes.io/tls",
                 "data": [{"key": "cert", "name": "tls.crt",
                           "secretStoreRef": {"name": "store"}}]}})
    ready = wait_for(lambda: (k8s.ready(namespace, "tls") or {}).get("reason") == "InvalidSecret"
                     and k8s.ready(namespace, "tls"), what="InvalidSecret condition")
    assert ready["status"] == "False"
    assert "tls.key" in ready["message"]
    assert k8s.secret(namespace, "tls") is None


def test_reasons_name_the_real_problem_bad_keys_and_over_the_size_limit(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    """issue 21 item 6, as `kubectl get ackes` shows it: an extract that produces bad key
    names is InvalidSecret naming every bad key (not FetchFailed); values over the 1 MiB
    Secret limit leave no entry saying Synced and no Secret."""
    cloud.put_secret("doc", json.dumps({"a b": "1", "c/d": "2", "ok": "3"}))
    cloud.put_secret("big1", "x" * (600 * 1024))
    cloud.put_secret("big2", "y" * (600 * 1024))
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    ref = {"name": "store"}
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "keys"},
        "spec": {"dataProcess": [{"extract": {"key": "doc", "secretStoreRef": ref}}]}})
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "big"},
        "spec": {"data": [{"key": "big1", "name": "one", "secretStoreRef": ref},
                          {"key": "big2", "name": "two", "secretStoreRef": ref}]}})

    def failed(name: str) -> dict[str, Any] | None:
        ready = k8s.ready(namespace, name)
        return ready if ready and ready["status"] == "False" else None

    keys = wait_for(lambda: failed("keys"), what="keys Ready=False")
    assert keys["reason"] == "InvalidSecret", keys
    # Named by position and hash: the keys of the KMS value are its content.
    assert "key #1 of the document" in keys["message"], keys
    assert "key #2 of the document" in keys["message"], keys
    assert "key #3" not in keys["message"] and "c/d" not in keys["message"], keys
    big = wait_for(lambda: failed("big"), what="big Ready=False")
    assert big["reason"] == "InvalidSecret" and "1 MiB" in big["message"], big
    results = k8s.get(namespace, "externalsecrets", "big")["status"]["dataSyncResults"]
    assert [r["status"] for r in results] == ["Failed", "Failed"], results
    assert k8s.secret(namespace, "big") is None
    assert k8s.secret(namespace, "keys") is None
