"""The plain manifests in manifests/: generated from the chart, and applied for real."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml

from tests.cluster.tools import REPO
from tests.install.conftest import Helm
from tests.waiting import wait_for

MANIFESTS = REPO / "manifests"
APP = MANIFESTS / "ack-secret-manager.yaml"


def test_manifests_are_up_to_date() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "hack/gen_manifests.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_manifests_are_the_chart_with_default_values(tools: Helm) -> None:
    committed = [d for d in yaml.safe_load_all(APP.read_text()) if d]
    rendered = tools.template(release="ack-secret-manager", namespace="kube-system")
    assert committed == rendered
    crds = [d for d in yaml.safe_load_all((MANIFESTS / "crds.yaml").read_text()) if d]
    chart_crds = [yaml.safe_load(p.read_text())
                  for p in sorted((REPO / "helm/ack-secret-manager/crds").glob("*.yaml"))]
    assert crds == chart_crds


@pytest.fixture
def applied(on_cluster: Helm) -> Iterator[Helm]:
    """Deletes what the test applied, except the CRDs (other tests' objects live in them)."""
    yield on_cluster
    on_cluster.kubectl("delete", "-f", APP, "--ignore-not-found", "--wait=false", check=False)


@pytest.mark.cluster
def test_kubectl_apply_server_side(applied: Helm) -> None:
    k = applied
    out = k.kubectl("apply", "--server-side", "-f", MANIFESTS).stdout
    assert "deployment.apps/ack-secret-manager serverside-applied" in out, out
    assert 'clusterrole.rbac.authorization.k8s.io/ack-secret-manager:kube-system' in out, out

    def established() -> bool:
        proc = k.kubectl("wait", "--for=condition=Established", "--timeout=2s",
                         "crd/externalsecrets.alibabacloud.com",
                         "crd/secretstores.alibabacloud.com",
                         "crd/clustersecretstores.alibabacloud.com", check=False)
        return proc.returncode == 0

    wait_for(established, timeout=30, what="CRDs established")
    # Applying again changes nothing and conflicts with nothing.
    again = k.kubectl("apply", "--server-side", "-f", MANIFESTS).stdout
    assert "error" not in again.lower()
    sa = "system:serviceaccount:kube-system:ack-secret-manager"
    can = k.kubectl("auth", "can-i", "list", "externalsecrets.alibabacloud.com", "-A",
                    f"--as={sa}", check=False)
    assert can.stdout.strip() == "yes", can.stderr


# External Secrets Operator's short names and category: with both projects installed, a name
# both claim makes `kubectl get es` list one project's objects without a word.
ESO_NAMES = {"es", "ss", "css", "ces", "ps", "cps", "external-secrets", "externalsecrets"}


@pytest.mark.cluster
def test_short_names_and_category_are_ours_and_work(applied: Helm) -> None:
    k = applied
    chart_crds = [yaml.safe_load(p.read_text())
                  for p in sorted((REPO / "helm/ack-secret-manager/crds").glob("*.yaml"))]
    for crd in chart_crds:
        names = crd["spec"]["names"]
        assert not set(names["shortNames"]) & ESO_NAMES, names
        assert names["categories"] == ["ack-secret-manager"], names
    k.kubectl("apply", "--server-side", "-f", MANIFESTS / "crds.yaml")
    wait_for(lambda: k.kubectl("get", "ackes", "-A", check=False).returncode == 0,
             timeout=30, what="the short name served")
    listed = k.kubectl("get", "ack-secret-manager", "-A", "-o", "name", check=False)
    assert listed.returncode == 0, listed.stderr
    served = yaml.safe_load(k.kubectl("get", "crd", "externalsecrets.alibabacloud.com",
                                      "-o", "yaml").stdout)
    columns = [c["name"] for c in served["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Store", "Refresh", "Ready", "Reason", "Changed", "Age"], columns
