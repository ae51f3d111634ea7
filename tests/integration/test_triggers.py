"""When the controller syncs: every poll interval, at once on any change (ExternalSecret,
managed Secret, SecretStore), on demand with an annotation; and a quiet poll writes nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.fakecloud import FakeCloud
from tests.integration.conftest import K8s
from tests.waiting import wait_for


def _es(name: str, key: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "ExternalSecret", "metadata": {"name": name},
            "spec": {"data": [{"key": key, "secretStoreRef": {"name": "store"}}], **spec}}


def test_quiet_polls_read_kms_but_write_nothing(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("db", "pw")
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1s")
    k8s.create(namespace, "externalsecrets", _es("app", "db"))
    wait_for(lambda: (k8s.ready(namespace, "app") or {}).get("status") == "True", what="Ready")
    secret_rv = k8s.secret(namespace, "app").metadata.resource_version
    es_rv = k8s.get(namespace, "externalsecrets", "app")["metadata"]["resourceVersion"]
    events = len(k8s.events(namespace, "app"))
    reads = cloud.calls("GetSecretValue", secret="db")
    # Three more poll windows: each reads KMS once ...
    wait_for(lambda: cloud.calls("GetSecretValue", secret="db") >= reads + 3, timeout=10,
             what="three more polls")
    # ... and none of them writes to Kubernetes.
    assert k8s.secret(namespace, "app").metadata.resource_version == secret_rv
    assert k8s.get(namespace, "externalsecrets", "app")["metadata"]["resourceVersion"] == es_rv
    assert len(k8s.events(namespace, "app")) == events


def test_value_changed_in_kms_reaches_the_secret_within_one_interval(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("db", "old")
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "3s")
    k8s.create(namespace, "externalsecrets", _es("app", "db"))
    wait_for(lambda: k8s.secret_data(namespace, "app") == {"db": "old"}, what="first sync")
    changed_at = time.monotonic()
    cloud.put_secret("db", "new")
    wait_for(lambda: k8s.secret_data(namespace, "app") == {"db": "new"}, timeout=10,
             what="new value")
    assert time.monotonic() - changed_at <= 3.0 + 1.0  # one interval, plus apply latency
    # The Event is posted after the Secret's write: await it.
    wait_for(lambda: "Updated" in [e.reason for e in k8s.events(namespace, "app")],
             what="an Updated Event")


def test_spec_change_syncs_at_once_without_polling(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("a", "1")
    cloud.put_secret("b", "2")
    k8s.access_key_store(namespace)
    proc = start_controller("--kms-endpoint", cloud.kms_endpoint, "--disable-polling",
                            "--log-level", "debug")
    k8s.create(namespace, "externalsecrets", _es("app", "a"))
    wait_for(lambda: k8s.secret_data(namespace, "app") == {"a": "1"}, what="first sync")
    k8s.patch(namespace, "externalsecrets", "app", {"spec": {"data": [
        {"key": "a", "secretStoreRef": {"name": "store"}},
        {"key": "b", "secretStoreRef": {"name": "store"}}]}})
    wait_for(lambda: k8s.secret_data(namespace, "app") == {"a": "1", "b": "2"}, timeout=5,
             what="spec change applied")
    # With polling disabled, a KMS change is not seen until asked ...
    cloud.put_secret("a", "changed")

    def ours() -> int:  # other tests' objects, still being deleted, may read other secrets
        return sum(cloud.calls("GetSecretValue", secret=name) for name in ("a", "b"))

    reads = ours()
    time.sleep(2)  # nothing to await: we assert that nothing happens
    assert ours() == reads, proc.log
    # ... and the force-sync annotation reads KMS again at once.
    k8s.patch(namespace, "externalsecrets", "app",
              {"metadata": {"annotations": {"alibabacloud.com/force-sync": "1"}}})
    wait_for(lambda: (k8s.secret_data(namespace, "app") or {}).get("a") == "changed",
             timeout=5, what="forced sync")


def test_edited_or_deleted_secret_is_repaired_at_once(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("db", "pw")
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--disable-polling")
    k8s.create(namespace, "externalsecrets", _es("app", "db"))
    wait_for(lambda: k8s.secret_data(namespace, "app") == {"db": "pw"}, what="first sync")
    k8s.core.patch_namespaced_secret("app", namespace, {"stringData": {"db": "tampered"}})
    wait_for(lambda: k8s.secret_data(namespace, "app") == {"db": "pw"}, timeout=5,
             what="edited Secret repaired")
    k8s.core.delete_namespaced_secret("app", namespace)
    wait_for(lambda: k8s.secret_data(namespace, "app") == {"db": "pw"}, timeout=5,
             what="deleted Secret recreated")


def test_secret_store_change_resyncs_the_objects_that_use_it(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("db", "pw")
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--disable-polling")
    k8s.create(namespace, "externalsecrets", _es("app", "db"))
    ready = wait_for(lambda: (k8s.ready(namespace, "app") or {}).get("reason") == "StoreNotFound"
                     and k8s.ready(namespace, "app"), what="StoreNotFound")
    assert "spec.data[0].secretStoreRef" in ready["message"]
    assert f"SecretStore {namespace}/store does not exist" in ready["message"]
    k8s.access_key_store(namespace)  # creating the store triggers the sync
    wait_for(lambda: k8s.secret_data(namespace, "app") == {"db": "pw"}, timeout=5,
             what="sync after the store appeared")
    # The Secret is written before the status: await the condition, do not race it.
    wait_for(lambda: (k8s.ready(namespace, "app") or {}).get("reason") == "Synced", timeout=5,
             what="Ready=True Synced after the store appeared")
