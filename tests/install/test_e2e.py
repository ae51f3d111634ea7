"""The controller as the chart deploys it, end to end, on the real control plane.

No kubelet runs here, so the chart's Deployment never gets a Pod. Instead: install the chart,
take the Deployment it rendered (`helm get manifest`), and run `python -m controller` with
exactly that container's args and env, authenticated as the chart's ServiceAccount (a token
from the TokenRequest API). Only what a Pod gets from the cluster is replaced: the
kubeconfig (in-cluster config), the downward-API env, bind addresses on free 127.0.0.1 ports,
and the KMS endpoint of a fake Alibaba Cloud. That proves the values-to-flags wiring, the RBAC
and the probe paths together.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.cluster import ControlPlane, free_port
from tests.cluster.tools import REPO
from tests.fakecloud import FakeCloud
from tests.install.conftest import CHART, Helm, set_args
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not importlib.util.find_spec("controller.app"),
                       reason="engine not yet merged"),
]

GROUP, VERSION = "alibabacloud.com", "v1alpha1"
AK_ID, AK_SECRET = "LTAI5tChartE2EKey0001", "ChartE2ESecretValue000000001"
GRACE = 30.0  # the chart's terminationGracePeriodSeconds


@dataclass
class Running:
    namespace: str
    release: str
    deployment: dict[str, Any]
    proc: subprocess.Popen[bytes]
    log_path: pathlib.Path
    health: int
    metrics: int
    cloud: FakeCloud

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def container(self) -> dict[str, Any]:
        return dict(self.deployment["spec"]["template"]["spec"]["containers"][0])


def rendered_deployment(k: Helm, release: str, namespace: str) -> dict[str, Any]:
    manifest = k.helm("get", "manifest", release, "-n", namespace).stdout
    deps = [d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "Deployment"]
    assert len(deps) == 1
    return dict(deps[0])


def pod_env(deployment: dict[str, Any], core: Any, namespace: str) -> dict[str, str]:
    """The container env as the kubelet would resolve it for a Pod of this Deployment."""
    out: dict[str, str] = {}
    for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", []):
        if "value" in e:
            out[e["name"]] = str(e["value"])
            continue
        src = e["valueFrom"]
        if "fieldRef" in src:
            field = src["fieldRef"]["fieldPath"]
            out[e["name"]] = {"metadata.namespace": namespace,
                              "metadata.name": f"{deployment['metadata']['name']}-e2e"}[field]
        elif "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            secret = core.read_namespaced_secret(ref["name"], namespace)
            out[e["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
        else:
            raise AssertionError(f"env {e['name']}: unexpected source {src}")
    return out


def local_args(rendered: list[str], *, kubeconfig: pathlib.Path, metrics: int, health: int,
               kms_endpoint: str) -> list[str]:
    """The rendered args, with the in-cluster-only parts replaced."""
    replaced = ("--metrics-bind-address", "--health-probe-bind-address", "--kms-endpoint=",
                "--kubeconfig")
    kept = [a for a in rendered if not a.startswith(replaced)]
    return [*kept, f"--kubeconfig={kubeconfig}",
            f"--metrics-bind-address=127.0.0.1:{metrics}",
            f"--health-probe-bind-address=127.0.0.1:{health}",
            f"--kms-endpoint=http://{kms_endpoint}"]


def service_account_kubeconfig(cluster: ControlPlane, token: str, path: pathlib.Path) -> None:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": cluster.url,
                                               "certificate-authority": str(cluster.ca_file)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
        "current-context": "c",
    }))
    path.chmod(0o600)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@pytest.fixture(scope="module")
def running(cluster: ControlPlane, kube: Any, tools: Helm) -> Iterator[Running]:
    from kubernetes import client

    k = Helm(tools.helm_bin, tools.kubectl_bin, cluster.kubeconfig)
    core: Any = client.CoreV1Api(kube)
    namespace = f"t-chart-e2e-{uuid.uuid4().hex[:5]}"
    release = "asm"
    core.create_namespace({"metadata": {"name": namespace}})
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="asm-chart-e2e-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        with FakeCloud() as cloud:
            cloud.add_access_key(AK_ID, AK_SECRET, "app")
            # Two replicas: the chart turns on leader election and grants the Lease.
            k.helm("install", release, CHART, "-n", namespace, *set_args({"replicaCount": "2"}))
            dep = rendered_deployment(k, release, namespace)
            pod = dep["spec"]["template"]["spec"]
            sa = pod["serviceAccountName"]
            token = core.create_namespaced_service_account_token(sa, namespace, {"spec": {
                "audiences": [cluster.issuer], "expirationSeconds": 3600}}).status.token
            kubeconfig = workdir / "sa.kubeconfig"
            service_account_kubeconfig(cluster, token, kubeconfig)
            metrics, health = free_port(), free_port()
            args = local_args(pod["containers"][0]["args"], kubeconfig=kubeconfig,
                              metrics=metrics, health=health, kms_endpoint=cloud.kms_endpoint)
            env = {"PATH": os.environ["PATH"], "HOME": str(workdir), "TMPDIR": str(workdir),
                   # No ECS metadata service here: the credentials library must not wait for it.
                   "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
                   **pod_env(dep, core, namespace)}
            log_path = workdir / "controller.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen([sys.executable, "-m", "controller", *args],
                                        stdout=log, stderr=subprocess.STDOUT, env=env,
                                        cwd=str(REPO))
            yield Running(namespace, release, dep, proc, log_path, health, metrics, cloud)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        k.helm("uninstall", release, "-n", namespace, "--ignore-not-found", check=False)
        core.delete_namespace(namespace)
        shutil.rmtree(workdir, ignore_errors=True)


def custom(kube: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(kube)


def test_syncs_as_the_chart_service_account(running: Running, kube: Any) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    ns = running.namespace
    core: Any = client.CoreV1Api(kube)
    running.cloud.put_secret("db-password", "s3cret-from-kms")
    core.create_namespaced_secret(ns, {"metadata": {"name": "ak"},
                                       "stringData": {"id": AK_ID, "secret": AK_SECRET}})
    objs = custom(kube)
    objs.create_namespaced_custom_object(GROUP, VERSION, ns, "secretstores", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SecretStore", "metadata": {"name": "kms"},
        "spec": {"KMS": {"KMSAuth": {"accessKey": {"name": "ak", "key": "id"},
                                     "accessKeySecret": {"name": "ak", "key": "secret"}}}}})
    objs.create_namespaced_custom_object(GROUP, VERSION, ns, "externalsecrets", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ExternalSecret", "metadata": {"name": "db"},
        "spec": {"data": [{"key": "db-password", "name": "password",
                           "secretStoreRef": {"name": "kms"}}]}})

    def synced() -> dict[str, str] | None:
        assert running.proc.poll() is None, f"controller exited:\n{running.log[-4000:]}"
        try:
            s = core.read_namespaced_secret("db", ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}

    try:
        data = wait_for(synced, timeout=60, what="Secret db")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ncontroller log:\n{running.log[-4000:]}") from None
    assert data == {"password": "s3cret-from-kms"}
    owner = core.read_namespaced_secret("db", ns).metadata.owner_references
    assert owner and owner[0].kind == "ExternalSecret" and owner[0].name == "db"

    def ready() -> bool:
        es = objs.get_namespaced_custom_object(GROUP, VERSION, ns, "externalsecrets", "db")
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (es.get("status") or {}).get("conditions") or [])

    wait_for(ready, timeout=30, what="ExternalSecret db Ready (status written)")
    # Nothing the controller tried was refused by the chart's RBAC.
    log = running.log.lower()
    assert "forbidden" not in log and " 403" not in log, running.log[-4000:]

    # Deleting the ExternalSecret removes its Secret through garbage collection: the chart
    # grants no delete on Secrets.
    objs.delete_namespaced_custom_object(GROUP, VERSION, ns, "externalsecrets", "db")
    wait_for(lambda: synced() is None, timeout=60, what="Secret db garbage-collected")


def test_probes_answer_on_the_rendered_ports(running: Running) -> None:
    c = running.container()
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    base = f"http://127.0.0.1:{running.health}"
    wait_for(lambda: http_status(f"{base}/readyz") == 200, timeout=5, what="/readyz 200")
    assert http_status(f"{base}/healthz") == 200
    assert http_status(f"http://127.0.0.1:{running.metrics}/metrics") == 200


def test_leader_takes_the_release_lease(running: Running, kube: Any) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    args = running.container()["args"]
    lease_id = next(a.split("=", 1)[1] for a in args if a.startswith("--leader-election-id="))
    coordination: Any = client.CoordinationV1Api(kube)

    def held() -> str:
        try:
            lease = coordination.read_namespaced_lease(lease_id, running.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return ""
            raise
        return str(lease.spec.holder_identity or "")

    assert wait_for(held, timeout=10, what=f"Lease {lease_id} held")


def test_stops_cleanly_within_the_grace_period(running: Running) -> None:
    """Runs last in this module: it stops the shared controller process."""
    assert running.proc.poll() is None, running.log[-4000:]
    running.proc.send_signal(signal.SIGTERM)
    try:
        code = running.proc.wait(GRACE)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {GRACE}s after SIGTERM") from None
    assert code == 0, running.log[-4000:]
    assert running.deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == GRACE
