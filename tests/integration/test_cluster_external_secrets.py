"""ClusterExternalSecret with the real controller process: one spec stamped into the
namespaces its selector picks, following label changes and deleted namespaces, never taking an
ExternalSecret someone else made; and --cleanup-secret-on-failure."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.fakecloud import FakeCloud
from tests.integration.conftest import GROUP, VERSION, K8s
from tests.waiting import wait_for

PLURAL = "clusterexternalsecrets"
OWNER_LABEL = "alibabacloud.com/cluster-external-secret"


@pytest.fixture
def namespaces(k8s: K8s, crds: None, kube: Any) -> Iterator[list[str]]:
    """Four fresh namespaces (deleted afterwards), once the CRD is served."""
    ext: Any = client.ApiextensionsV1Api(kube)

    def established() -> bool:
        crd = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        return any(c.type == "Established" and c.status == "True"
                   for c in crd.status.conditions or [])

    wait_for(established, what="ClusterExternalSecret CRD established")
    suffix = uuid.uuid4().hex[:5]
    names = [f"ces-{i}-{suffix}" for i in range(4)]
    core: Any = k8s.core
    for name in names:
        core.create_namespace({"metadata": {"name": name}})
    try:
        yield names
    finally:
        for name in names:
            try:
                k8s.core.delete_namespace(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def label(k8s: K8s, namespace: str, value: str | None) -> None:
    k8s.core.patch_namespace(namespace, {"metadata": {"labels": {"ces-test": value}}})


def ces_status(k8s: K8s, name: str) -> dict[str, Any]:
    obj: Any = k8s.custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    return dict(obj.get("status") or {})


def es(k8s: K8s, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return k8s.get(namespace, "externalsecrets", name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_cluster_external_secret_follows_namespaces_and_leaves_others_alone(
    k8s: K8s, cloud: FakeCloud, namespaces: list[str], start_controller: Callable[..., Any]
) -> None:
    ns1, ns2, ns3, excluded = namespaces
    cloud.put_secret("shared-token", "t0ken")
    for ns in namespaces:
        k8s.access_key_store(ns)
    for ns in (ns1, ns2, excluded):
        label(k8s, ns, "yes")
    # Someone's own ExternalSecret, already there under the name the ClusterExternalSecret uses.
    theirs_spec = {"data": [{"key": "shared-token", "name": "mine",
                             "secretStoreRef": {"name": "store"}}]}
    k8s.create(ns2, "externalsecrets", {"kind": "ExternalSecret",
                                        "metadata": {"name": "shared"}, "spec": theirs_spec})
    proc = start_controller("--kms-endpoint", cloud.kms_endpoint,
                            "--exclude-namespaces", excluded)
    name = f"ces-{ns1}"
    spec = {"data": [{"key": "shared-token", "name": "token",
                      "secretStoreRef": {"name": "store"}}]}
    ces: Any = k8s.custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterExternalSecret",
        "metadata": {"name": name},
        # rotationInterval: namespaces are re-checked besides watch events (a name that is
        # taken is retried on this cadence, or with backoff up to 5 minutes without it).
        "spec": {"externalSecretName": "shared", "rotationInterval": "2s",
                 "externalSecretMetadata": {"labels": {"team": "platform"}},
                 "conditions": [{"namespaceSelector": {"matchLabels": {"ces-test": "yes"}}}],
                 "externalSecretSpec": spec}})
    uid = ces["metadata"]["uid"]
    try:
        # ns1: created, owned, synced into a Secret.
        made = wait_for(lambda: es(k8s, ns1, "shared"), what="ExternalSecret in ns1")
        assert [r["uid"] for r in made["metadata"]["ownerReferences"]] == [uid]
        assert made["metadata"]["labels"] == {"team": "platform", OWNER_LABEL: name}
        assert made["spec"] == spec
        assert wait_for(lambda: k8s.secret_data(ns1, "shared"), what="Secret in ns1") == \
            {"token": "t0ken"}
        # ns2: the existing ExternalSecret is not touched; status names the conflict.
        status = wait_for(lambda: ces_status(k8s, name).get("failedNamespaces") and
                          ces_status(k8s, name), what="status with the conflict",
                          timeout=30)
        assert status["provisionedNamespaces"] == [ns1], proc.log[-3000:]
        [failed] = status["failedNamespaces"]
        assert failed["namespace"] == ns2
        assert "not created by this ClusterExternalSecret" in failed["reason"]
        assert status["conditions"][0]["status"] == "False"
        untouched = es(k8s, ns2, "shared")
        assert untouched is not None and untouched["spec"] == theirs_spec
        assert not untouched["metadata"].get("ownerReferences")
        assert OWNER_LABEL not in (untouched["metadata"].get("labels") or {})
        # The excluded namespace matches the selector and gets nothing.
        assert es(k8s, excluded, "shared") is None

        # A namespace gains the label: it gets its ExternalSecret.
        label(k8s, ns3, "yes")
        wait_for(lambda: es(k8s, ns3, "shared"), what="ExternalSecret in ns3")
        wait_for(lambda: ces_status(k8s, name)["provisionedNamespaces"] == [ns1, ns3],
                 what="ns3 provisioned")
        # An edit of an owned ExternalSecret by hand is put back.
        k8s.patch(ns3, "externalsecrets", "shared", {"spec": {"data": [
            {"key": "other", "secretStoreRef": {"name": "store"}}]}})
        wait_for(lambda: (es(k8s, ns3, "shared") or {}).get("spec") == spec,
                 what="ns3 ExternalSecret restored")

        # A namespace loses the label: its ExternalSecret goes (the user's in ns2 stays).
        label(k8s, ns1, None)
        wait_for(lambda: es(k8s, ns1, "shared") is None, what="ExternalSecret in ns1 deleted")
        wait_for(lambda: ces_status(k8s, name)["provisionedNamespaces"] == [ns3],
                 what="ns1 no longer provisioned")

        # A namespace is deleted: it leaves the status.
        k8s.core.delete_namespace(ns3)
        wait_for(lambda: ces_status(k8s, name)["provisionedNamespaces"] == [],
                 what="deleted namespace gone from the status")

        # The user's ExternalSecret goes away: now the name is free and the namespace gets ours.
        k8s.delete(ns2, "externalsecrets", "shared")
        wait_for(lambda: ces_status(k8s, name)["provisionedNamespaces"] == [ns2]
                 and not ces_status(k8s, name)["failedNamespaces"],
                 what="ns2 provisioned once free", timeout=30)
        assert ces_status(k8s, name)["conditions"][0]["status"] == "True"
        assert es(k8s, ns2, "shared")["metadata"]["ownerReferences"][0]["uid"] == uid  # type: ignore[index]
        assert es(k8s, ns1, "shared") is None and es(k8s, excluded, "shared") is None
        assert proc.proc.poll() is None, proc.log[-3000:]
    finally:
        k8s.custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    # Deleting the ClusterExternalSecret lets the garbage collector take its ExternalSecrets.
    wait_for(lambda: es(k8s, ns2, "shared") is None, what="owned ExternalSecret collected")
    assert proc.stop() == 0, proc.log[-3000:]


def test_a_bad_spec_is_reported_in_status(
    k8s: K8s, namespaces: list[str], start_controller: Callable[..., Any]
) -> None:
    name = f"bad-{namespaces[0]}"
    start_controller()
    k8s.custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterExternalSecret",
        "metadata": {"name": name},
        "spec": {"conditions": [{"namespaceRegexes": ["(unclosed"]}],
                 "externalSecretSpec": {"data": [{"key": "k"}]}}})
    try:
        status = wait_for(lambda: ces_status(k8s, name).get("conditions") and
                          ces_status(k8s, name), what="InvalidSpec status")
        ready = status["conditions"][0]
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert "spec.conditions[0].namespaceRegexes[0]" in ready["message"]
        assert all(es(k8s, ns, name) is None for ns in namespaces)
    finally:
        k8s.custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def test_cleanup_secret_on_failure_deletes_when_every_source_fails(
    k8s: K8s, cloud: FakeCloud, namespaces: list[str], start_controller: Callable[..., Any]
) -> None:
    """ack-secret-manager's opt-in: a Secret whose every source fails is deleted (a partial
    failure keeps it: tests/unit/test_reconciler.py)."""
    ns = namespaces[0]
    cloud.put_secret("doomed-token", "v")
    k8s.access_key_store(ns)
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--cleanup-secret-on-failure",
                     "--min-refresh-interval=1s")
    k8s.create(ns, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "doomed"},
        "spec": {"refreshInterval": "1s",
                 "data": [{"key": "doomed-token", "secretStoreRef": {"name": "store"}}]}})
    assert wait_for(lambda: k8s.secret_data(ns, "doomed"), what="Secret") == {
        "doomed-token": "v"}
    cloud.delete_secret("doomed-token")
    wait_for(lambda: k8s.secret(ns, "doomed") is None, what="Secret deleted")

    def deleted_event() -> list[Any]:
        events = k8s.core.list_namespaced_event(ns).items
        return [e for e in events if e.reason == "SecretDeleted"
                and e.involved_object.name == "doomed" and e.type == "Warning"]

    assert "every source" in wait_for(deleted_event, what="SecretDeleted Event")[0].message
    assert (k8s.ready(ns, "doomed") or {}).get("status") == "False"


def test_cleanup_secret_on_failure_false_is_accepted(
    k8s: K8s, cloud: FakeCloud, namespaces: list[str], start_controller: Callable[..., Any]
) -> None:
    ns = namespaces[0]
    cloud.put_secret("flag-token", "v")
    k8s.access_key_store(ns)
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--cleanup-secret-on-failure=false")
    k8s.create(ns, "externalsecrets", {"kind": "ExternalSecret", "metadata": {"name": "app"},
                                       "spec": {"data": [{"key": "flag-token",
                                                          "secretStoreRef": {"name": "store"}}]}})
    assert wait_for(lambda: k8s.secret_data(ns, "app"), what="Secret") == {"flag-token": "v"}
