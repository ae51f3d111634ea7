"""Upgrading a marketplace ack-secret-manager release in place, on a private control plane.

The marketplace chart shipped its CRDs as templates, so they belong to its release; this chart
keeps them in crds/, so a plain `helm upgrade` would delete them and every ExternalSecret. The
chart refuses such an upgrade (templates/upgrade-guard.yaml), and docs/install.md gives the
steps that work. This test runs those steps exactly as the document prints them.

A private control plane, because the test installs and upgrades CRDs: on the shared one a
failure could delete the CRDs under every other test.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

import controller
from tests.cluster import ControlPlane
from tests.cluster.tools import REPO
from tests.install.conftest import CHART, VALUES_DIR, Helm
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster

LEGACY_CHART = pathlib.Path(__file__).parent / "legacy_chart"
OLD_VALUES = VALUES_DIR / "marketplace-v0.5.8.yaml"
DOC = REPO / "docs/install.md"
RELEASE, NAMESPACE = "ack-secret-manager", "kube-system"
ACK_FINALIZER = "finalizer.ack.secrets-manager.alibabacloud.com"


def documented_upgrade_steps() -> str:
    text = DOC.read_text()
    m = re.search(r"<!-- upgrade-from-ack:begin -->\s*```sh\n(.*?)```\s*"
                  r"<!-- upgrade-from-ack:end -->", text, re.S)
    assert m, "docs/install.md lost its upgrade-from-ack block"
    return m.group(1)


@pytest.fixture
def private(tools: Helm) -> Iterator[Helm]:
    with ControlPlane(with_controller_manager=False) as cp:
        yield Helm(tools.helm_bin, tools.kubectl_bin, cp.kubeconfig)


def get(k: Helm, *args: str) -> dict[str, Any]:
    return dict(json.loads(k.kubectl("get", *args, "-o", "json").stdout))


def test_upgrade_in_place_from_the_marketplace_chart(
    private: Helm, tmp_path: pathlib.Path
) -> None:
    k = private
    k.helm("install", RELEASE, LEGACY_CHART, "-n", NAMESPACE, "-f", OLD_VALUES)
    k.kubectl("wait", "--for=condition=Established", "--timeout=30s",
              "crd/externalsecrets.alibabacloud.com", "crd/secretstores.alibabacloud.com")
    es = {"apiVersion": "alibabacloud.com/v1alpha1", "kind": "ExternalSecret",
          "metadata": {"name": "esdemo", "namespace": "default", "finalizers": [ACK_FINALIZER]},
          "spec": {"data": [{"key": "test1", "name": "test1",
                             "secretStoreRef": {"name": "scdemo", "namespace": "default"}}]}}
    k.kubectl("create", "-f", "-", input=json.dumps(es))

    # A plain upgrade is refused, with the fix in the message, and deletes nothing.
    refused = k.helm("upgrade", RELEASE, CHART, "-n", NAMESPACE, "-f", OLD_VALUES, check=False)
    assert refused.returncode != 0
    assert "would delete it" in refused.stderr and "resource-policy=keep" in refused.stderr
    assert get(k, "externalsecret", "esdemo", "-n", "default")

    # The documented steps, verbatim.
    assert k.kubeconfig is not None
    env = {**os.environ, "KUBECONFIG": str(k.kubeconfig), "TMPDIR": str(tmp_path),
           "PATH": f"{k.helm_bin.parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", documented_upgrade_steps()],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # The CRDs and the user's objects survived, and the CRDs are this project's.
    obj = get(k, "externalsecret", "esdemo", "-n", "default")
    assert obj["metadata"]["finalizers"] == [ACK_FINALIZER]
    crd = get(k, "crd", "externalsecrets.alibabacloud.com")
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert "Ready" in columns
    assert get(k, "crd", "clustersecretstores.alibabacloud.com")

    # The release now runs this chart with the old values.
    status = json.loads(k.helm("status", RELEASE, "-n", NAMESPACE, "-o", "json").stdout)
    assert (status["info"]["status"], status["version"]) == ("deployed", 2)
    dep = get(k, "deployment", RELEASE, "-n", NAMESPACE)
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in c
    assert "--leader-elect" in c["args"] and not [a for a in c["args"] if a == "--region="]
    assert c["image"] == f"registry.example.com/acme/ack-secret-manager:{controller.__version__}"
    assert dep["spec"]["replicas"] == 2
    cluster_roles = k.kubectl("get", "clusterrole", "-o", "name").stdout.split()
    assert f"clusterrole.rbac.authorization.k8s.io/{RELEASE}:{NAMESPACE}" in cluster_roles
    assert f"clusterrole.rbac.authorization.k8s.io/{RELEASE}" not in cluster_roles
    bindings = k.kubectl("get", "clusterrolebinding", "-o", "name").stdout.split()
    assert f"clusterrolebinding.rbac.authorization.k8s.io/{RELEASE}-auth" not in bindings

    # Uninstalling the new release leaves the CRDs, and so the ExternalSecrets, in place.
    k.helm("uninstall", RELEASE, "-n", NAMESPACE)
    wait_for(lambda: not k.kubectl("get", "deployment", RELEASE, "-n", NAMESPACE,
                                   "--ignore-not-found", "-o", "name").stdout.strip(),
             what="Deployment removed")
    assert get(k, "externalsecret", "esdemo", "-n", "default")
