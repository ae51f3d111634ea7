"""A Secret the controller did not create is never taken over, changed or deleted unless the
user says so; migrating from ack-secret-manager adopts its Secrets and drops its finalizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.fakecloud import FakeCloud
from tests.integration.conftest import K8s
from tests.waiting import wait_for

ACK_FINALIZER = "finalizer.ack.secrets-manager.alibabacloud.com"


def _es(name: str, key: str, **extra: Any) -> dict[str, Any]:
    spec = {"data": [{"key": key, "secretStoreRef": {"name": "store"}}], **extra.pop("spec", {})}
    return {"kind": "ExternalSecret", "metadata": {"name": name, **extra}, "spec": spec}


def _reason(k8s: K8s, ns: str, name: str) -> str:
    return str((k8s.ready(ns, name) or {}).get("reason", ""))


def test_existing_secret_is_not_taken_over(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("db", "from-kms")
    k8s.access_key_store(namespace)
    k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "app"},
                                                  "stringData": {"db": "hand-made"}})
    before = k8s.secret(namespace, "app").metadata.resource_version
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    k8s.create(namespace, "externalsecrets", _es("app", "db"))
    wait_for(lambda: _reason(k8s, namespace, "app") == "SecretConflict", what="SecretConflict")
    cond = k8s.ready(namespace, "app")
    assert cond["status"] == "False"
    assert "creationPolicy: Merge" in cond["message"]
    assert "alibabacloud.com/adopt" in cond["message"]
    secret = k8s.secret(namespace, "app")
    assert secret.metadata.resource_version == before
    assert k8s.secret_data(namespace, "app") == {"db": "hand-made"}
    # The Event is posted after the status: await it.
    warnings = wait_for(lambda: [e for e in k8s.events(namespace, "app")
                                 if e.type == "Warning"], what="a Warning Event")
    assert [e.reason for e in warnings] == ["SecretConflict"]
    # Deleting the ExternalSecret leaves the Secret it never owned.
    k8s.delete(namespace, "externalsecrets", "app")
    wait_for(lambda: k8s.gone(namespace, "externalsecrets", "app"),
             what="ExternalSecret deleted")
    assert k8s.secret_data(namespace, "app") == {"db": "hand-made"}


def test_merge_adds_keys_and_leaves_the_rest(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("db", "from-kms")
    k8s.access_key_store(namespace)
    k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "shared"},
                                                  "stringData": {"other": "keep-me"}})
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    k8s.create(namespace, "externalsecrets", _es(
        "app", "db", spec={"target": {"name": "shared", "creationPolicy": "Merge"}}))
    wait_for(lambda: k8s.secret_data(namespace, "shared") == {"other": "keep-me",
                                                              "db": "from-kms"},
             what="merged keys")
    assert not k8s.secret(namespace, "shared").metadata.owner_references
    # The merged key follows KMS; the other key stays.
    cloud.put_secret("db", "rotated")
    k8s.patch(namespace, "externalsecrets", "app",
              {"metadata": {"annotations": {"alibabacloud.com/force-sync": "now"}}})
    wait_for(lambda: k8s.secret_data(namespace, "shared") == {"other": "keep-me",
                                                              "db": "rotated"},
             what="merged key updated")


def test_a_deleted_merge_external_secret_leaves_its_keys_and_takes_its_marks(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    """Deleting a Merge ExternalSecret never removes data from the user's Secret (a workload may
    read it); its labels and annotations go, the merge-target label with the last merger."""
    cloud.put_secret("db", "from-kms")
    cloud.put_secret("cache", "from-kms-too")
    k8s.access_key_store(namespace)
    k8s.core.create_namespaced_secret(namespace, {
        "metadata": {"name": "shared", "labels": {"team": "payments"}},
        "stringData": {"other": "keep-me"}})
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    merge = {"target": {"name": "shared", "creationPolicy": "Merge"}}
    first = k8s.create(namespace, "externalsecrets", _es("first", "db", spec=merge))
    second = k8s.create(namespace, "externalsecrets", _es("second", "cache", spec=merge))
    everything = {"other": "keep-me", "db": "from-kms", "cache": "from-kms-too"}
    wait_for(lambda: k8s.secret_data(namespace, "shared") == everything, what="both merged")

    def marks(uid: str) -> list[str]:
        annotations = k8s.secret(namespace, "shared").metadata.annotations or {}
        return [a for a in annotations if a.startswith(f"{uid}.merge.alibabacloud.com/")]

    def labels() -> dict[str, str]:
        return dict(k8s.secret(namespace, "shared").metadata.labels or {})

    assert marks(first["metadata"]["uid"]) and marks(second["metadata"]["uid"])
    k8s.delete(namespace, "externalsecrets", "first")
    wait_for(lambda: not marks(first["metadata"]["uid"]), what="the first one's marks gone")
    assert k8s.secret_data(namespace, "shared") == everything
    assert marks(second["metadata"]["uid"])
    assert labels() == {"team": "payments", "alibabacloud.com/merge-target": "true"}
    k8s.delete(namespace, "externalsecrets", "second")
    wait_for(lambda: labels() == {"team": "payments"}, what="the merge-target label gone")
    assert not marks(second["metadata"]["uid"])
    assert k8s.secret_data(namespace, "shared") == everything


def test_adopt_annotation_takes_over_an_existing_secret(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("db", "from-kms")
    k8s.access_key_store(namespace)
    k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "app"},
                                                  "stringData": {"db": "stale"}})
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    es = k8s.create(namespace, "externalsecrets", _es(
        "app", "db", annotations={"alibabacloud.com/adopt": "true"}))
    wait_for(lambda: k8s.secret_data(namespace, "app") == {"db": "from-kms"}, what="adopted")
    [owner] = k8s.secret(namespace, "app").metadata.owner_references
    assert owner.uid == es["metadata"]["uid"]


def test_migration_from_ack_secret_manager(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    """An ExternalSecret left by ack-secret-manager: its finalizer is removed (so it can be
    deleted) and the same-name Secret ack wrote (no owner, no labels) is adopted."""
    cloud.put_secret("db", "from-kms")
    k8s.access_key_store(namespace)
    k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "legacy"},
                                                  "stringData": {"db": "written-by-ack"}})
    k8s.create(namespace, "externalsecrets", _es("legacy", "db", finalizers=[ACK_FINALIZER]))
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    wait_for(lambda: k8s.secret_data(namespace, "legacy") == {"db": "from-kms"},
             what="ack's Secret adopted")
    es = k8s.get(namespace, "externalsecrets", "legacy")
    assert ACK_FINALIZER not in (es["metadata"].get("finalizers") or [])
    k8s.delete(namespace, "externalsecrets", "legacy")
    wait_for(lambda: k8s.gone(namespace, "externalsecrets", "legacy"),
             what="ExternalSecret deletable")
