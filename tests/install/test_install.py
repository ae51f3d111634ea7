"""The chart on the real control plane: install, upgrade, uninstall, two releases side by
side, and what the chart's ServiceAccount may and may not do (`kubectl auth can-i`).

There is no kubelet, so the Deployment never gets Pods; test_e2e.py runs the controller as a
local process with the chart's ServiceAccount instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.install.conftest import CHART, Helm, set_args

pytestmark = pytest.mark.cluster

FULL = "ack-secret-manager"


def get_json(k: Helm, *args: str) -> dict[str, Any]:
    return dict(json.loads(k.kubectl("get", *args, "-o", "json").stdout))


def exists(k: Helm, *args: str) -> bool:
    proc = k.kubectl("get", *args, "--ignore-not-found", "-o", "name", check=False)
    assert proc.returncode == 0, proc.stderr
    return bool(proc.stdout.strip())


def container_args(k: Helm, namespace: str, name: str) -> list[str]:
    dep = get_json(k, "deployment", name, "-n", namespace)
    return list(dep["spec"]["template"]["spec"]["containers"][0]["args"])


def test_install_upgrade_uninstall(
    on_cluster: Helm, namespace: str, release: Callable[..., str]
) -> None:
    k = on_cluster
    name = release(namespace, *set_args({"replicaCount": "2"}))
    full = f"{name}-{FULL}"
    cluster_name = f"{full}:{namespace}"

    status = json.loads(k.helm("status", name, "-n", namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    notes = k.helm("get", "notes", name, "-n", namespace).stdout
    assert "kubectl get ackes" in notes and "SecretStore" in notes
    for obj in (["deployment", full], ["serviceaccount", full], ["service", f"{full}-metrics"],
                ["role", f"{full}-leader-election"], ["rolebinding", f"{full}-leader-election"]):
        assert exists(k, *obj, "-n", namespace), obj
    assert exists(k, "clusterrole", cluster_name)
    assert exists(k, "clusterrolebinding", cluster_name)
    for crd in ("externalsecrets", "secretstores", "clustersecretstores",
                "clusterexternalsecrets"):
        assert exists(k, "crd", f"{crd}.alibabacloud.com")
    args = container_args(k, namespace, full)
    assert "--leader-elect" in args and "--polling-interval=120s" in args

    k.helm("upgrade", name, CHART, "-n", namespace, *set_args({
        "replicaCount": "2", "command.pollingInterval": "60s", "metrics.enabled": "false",
        "podDisruptionBudget.enabled": "true"}))
    args = container_args(k, namespace, full)
    assert "--polling-interval=60s" in args
    assert "--metrics-bind-address=0" in args
    assert not exists(k, "service", f"{full}-metrics", "-n", namespace)
    assert exists(k, "poddisruptionbudget", full, "-n", namespace)

    k.helm("uninstall", name, "-n", namespace)
    assert not exists(k, "deployment", full, "-n", namespace)
    assert not exists(k, "clusterrole", cluster_name)
    assert not exists(k, "clusterrolebinding", cluster_name)
    # CRDs (and so every user's ExternalSecret) survive an uninstall.
    assert exists(k, "crd", "externalsecrets.alibabacloud.com")


def test_two_releases_never_collide(
    on_cluster: Helm, namespace: str, other_namespace: str, release: Callable[..., str]
) -> None:
    """Same release name in two namespaces, and two releases in one namespace."""
    release(namespace, name="asm")
    release(other_namespace, name="asm")
    two = set_args({"replicaCount": "2"})
    release(namespace, *two, name="asm2")
    release(namespace, *two, name="asm3")
    for ns in (namespace, other_namespace):
        assert exists(on_cluster, "clusterrole", f"asm-{FULL}:{ns}")
    leases = {
        name: container_args(on_cluster, namespace, f"{name}-{FULL}") for name in ("asm2", "asm3")
    }
    ids = {a for args in leases.values() for a in args if a.startswith("--leader-election-id=")}
    assert len(ids) == 2, ids


# Each row: (verb, resource, extra kubectl args). "{ns}" is the namespace of the release,
# "{lease}" the name of its Lease.
ALLOWED = [
    ("list", "externalsecrets.alibabacloud.com", ["-A"]),
    ("watch", "externalsecrets.alibabacloud.com", ["-A"]),
    ("patch", "externalsecrets.alibabacloud.com", ["-n", "default"]),
    ("patch", "externalsecrets.alibabacloud.com", ["--subresource=status", "-n", "default"]),
    ("list", "secretstores.alibabacloud.com", ["-A"]),
    ("watch", "secretstores.alibabacloud.com", ["-A"]),
    ("list", "clustersecretstores.alibabacloud.com", []),
    ("watch", "clustersecretstores.alibabacloud.com", []),
    ("get", "secrets", ["-n", "default"]),
    ("list", "secrets", ["-A"]),
    ("watch", "secrets", ["-A"]),
    ("create", "secrets", ["-n", "default"]),
    ("patch", "secrets", ["-n", "default"]),
    ("create", "events", ["-n", "default"]),
    ("get", "serviceaccounts", ["-n", "default"]),
    ("create", "serviceaccounts", ["--subresource=token", "-n", "default"]),
    ("get", "namespaces", []),
    ("get", "configmaps", ["-n", "default"]),  # templateFrom
    # ClusterExternalSecrets (crds.createClusterExternalSecret, default true)
    ("list", "clusterexternalsecrets.alibabacloud.com", []),
    ("watch", "clusterexternalsecrets.alibabacloud.com", []),
    ("patch", "clusterexternalsecrets.alibabacloud.com", ["--subresource=status"]),
    ("list", "namespaces", []),
    ("watch", "namespaces", []),
    ("get", "externalsecrets.alibabacloud.com", ["-n", "default"]),
    ("create", "externalsecrets.alibabacloud.com", ["-n", "default"]),
    ("delete", "externalsecrets.alibabacloud.com", ["-n", "default"]),
    ("create", "leases.coordination.k8s.io", ["-n", "{ns}"]),
    ("get", "leases.coordination.k8s.io/{lease}", ["-n", "{ns}"]),
    ("update", "leases.coordination.k8s.io/{lease}", ["-n", "{ns}"]),
]
DENIED = [
    # Verbs the controller never uses (tests/install/test_rbac_audit.py proves it).
    ("update", "externalsecrets.alibabacloud.com", ["-n", "default"]),
    ("deletecollection", "externalsecrets.alibabacloud.com", ["-n", "default"]),
    ("get", "clusterexternalsecrets.alibabacloud.com", []),
    ("create", "clusterexternalsecrets.alibabacloud.com", []),
    ("patch", "clusterexternalsecrets.alibabacloud.com", []),
    ("update", "clusterexternalsecrets.alibabacloud.com", []),
    ("delete", "clusterexternalsecrets.alibabacloud.com", []),
    ("update", "clusterexternalsecrets.alibabacloud.com", ["--subresource=status"]),
    ("patch", "namespaces", []),
    ("get", "externalsecrets.alibabacloud.com", ["--subresource=status", "-n", "default"]),
    ("update", "externalsecrets.alibabacloud.com", ["--subresource=status", "-n", "default"]),
    ("update", "secrets", ["-n", "default"]),
    ("patch", "events", ["-n", "default"]),
    ("delete", "secrets", ["-n", "default"]),
    ("deletecollection", "secrets", ["-n", "default"]),
    ("list", "pods", ["-A"]),
    ("list", "configmaps", ["-A"]),  # templateFrom reads one by name: get only
    ("watch", "configmaps", ["-n", "default"]),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", []),
    ("update", "customresourcedefinitions.apiextensions.k8s.io", []),
    ("update", "secretstores.alibabacloud.com", ["-n", "default"]),
    ("delete", "clustersecretstores.alibabacloud.com", []),
    ("list", "serviceaccounts", ["-A"]),
    ("create", "serviceaccounts", ["-n", "default"]),
    ("get", "nodes", []),
    ("create", "namespaces", []),
    ("delete", "events", ["-n", "default"]),
    ("create", "leases.coordination.k8s.io", ["-n", "default"]),
    ("update", "leases.coordination.k8s.io/someone-else", ["-n", "{ns}"]),
    ("delete", "leases.coordination.k8s.io/{lease}", ["-n", "{ns}"]),
    ("list", "leases.coordination.k8s.io", ["-n", "{ns}"]),
    ("impersonate", "serviceaccounts", ["-n", "default"]),
    ("bind", "clusterroles.rbac.authorization.k8s.io", []),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", []),
    ("*", "*", ["-A"]),
]


def test_service_account_can_do_exactly_what_the_controller_needs(
    on_cluster: Helm, namespace: str, release: Callable[..., str]
) -> None:
    name = release(namespace, *set_args({"replicaCount": "2"}))
    subject = f"--as=system:serviceaccount:{namespace}:{name}-{FULL}"
    lease = f"{name}-{FULL}"

    def can_i(row: tuple[str, str, list[str]]) -> tuple[str, bool]:
        verb, resource, extra = row
        resource = resource.format(ns=namespace, lease=lease)
        extra = [e.format(ns=namespace, lease=lease) for e in extra]
        proc = on_cluster.kubectl("auth", "can-i", verb, resource, *extra, subject, check=False)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), f"{verb} {resource}: {proc.stdout} {proc.stderr}"
        return f"{verb} {resource} {' '.join(extra)}", answer == "yes"

    with ThreadPoolExecutor(4) as pool:
        allowed = list(pool.map(can_i, ALLOWED))
        denied = list(pool.map(can_i, DENIED))
    assert [what for what, ok in allowed if not ok] == []
    assert [what for what, ok in denied if ok] == []


def test_rbac_create_false_grants_nothing(
    on_cluster: Helm, namespace: str, release: Callable[..., str]
) -> None:
    name = release(namespace, *set_args({"rbac.create": "false"}))
    subject = f"--as=system:serviceaccount:{namespace}:{name}-{FULL}"
    proc = on_cluster.kubectl("auth", "can-i", "list", "externalsecrets.alibabacloud.com", "-A",
                              subject, check=False)
    assert proc.stdout.strip() == "no"
    assert not exists(on_cluster, "clusterrole", f"{name}-{FULL}:{namespace}")


def test_create_cluster_external_secret_false_grants_none_of_its_rules(
    on_cluster: Helm, namespace: str, release: Callable[..., str]
) -> None:
    name = release(namespace, *set_args({"crds.createClusterExternalSecret": "false"}))
    subject = f"--as=system:serviceaccount:{namespace}:{name}-{FULL}"
    for verb, resource, extra in [
            ("list", "clusterexternalsecrets.alibabacloud.com", []),
            ("patch", "clusterexternalsecrets.alibabacloud.com", ["--subresource=status"]),
            ("list", "namespaces", []),
            ("create", "externalsecrets.alibabacloud.com", ["-n", "default"]),
            ("delete", "externalsecrets.alibabacloud.com", ["-n", "default"])]:
        proc = on_cluster.kubectl("auth", "can-i", verb, resource, *extra, subject, check=False)
        assert proc.stdout.strip() == "no", (verb, resource)
    proc = on_cluster.kubectl("auth", "can-i", "list", "externalsecrets.alibabacloud.com", "-A",
                              subject, check=False)
    assert proc.stdout.strip() == "yes"
