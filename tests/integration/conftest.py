"""Fixtures for end-to-end tests: the CRDs installed on the real control plane, a fake Alibaba
Cloud, and the controller running as a real process (`python -m controller`) against both."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster import ControlPlane, ensure_tools
from tests.cluster.tools import REPO
from tests.fakecloud import FakeCloud
from tests.waiting import wait_for

GROUP, VERSION = "alibabacloud.com", "v1alpha1"
AK_ID, AK_SECRET = "LTAI5tTestKeyId0001", "TestKeySecretValue0000000001"


@pytest.fixture(scope="session")
def crds(cluster: ControlPlane, kube: Any) -> None:
    subprocess.run(
        [str(ensure_tools().kubectl), "--kubeconfig", str(cluster.kubeconfig), "apply",
         "--server-side", "-f", str(REPO / "helm/ack-secret-manager/crds")],
        check=True, capture_output=True, text=True)
    ext = client.ApiextensionsV1Api(kube)

    def established() -> bool:
        for name in ("externalsecrets", "secretstores", "clustersecretstores"):
            crd = ext.read_custom_resource_definition(f"{name}.{GROUP}")
            if not any(c.type == "Established" and c.status == "True"
                       for c in crd.status.conditions or []):
                return False
        return True

    wait_for(established, what="CRDs established")


@pytest.fixture
def cloud() -> Iterator[FakeCloud]:
    with FakeCloud() as fake:
        fake.add_access_key(AK_ID, AK_SECRET, "app")
        yield fake


class K8s:
    """Small helpers over the admin client for tests."""

    def __init__(self, api: Any) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def create(self, ns: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        body.setdefault("apiVersion", f"{GROUP}/{VERSION}")
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, plural, body)
        return result

    def get(self, ns: str, plural: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, ns, plural, name)
        return result

    def patch(self, ns: str, plural: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, plural, name, body)
        return result

    def delete(self, ns: str, plural: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, plural, name)

    def gone(self, ns: str, plural: str, name: str) -> bool:
        try:
            self.get(ns, plural, name)
        except ApiException as exc:
            return exc.status == 404
        return False

    def secret(self, ns: str, name: str) -> Any:
        try:
            return self.core.read_namespaced_secret(name, ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def secret_data(self, ns: str, name: str) -> dict[str, str] | None:
        s = self.secret(ns, name)
        if s is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}

    def ready(self, ns: str, name: str) -> dict[str, Any] | None:
        """The Ready condition, once the controller has written one."""
        obj = self.get(ns, "externalsecrets", name)
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Ready":
                return dict(cond)
        return None

    def access_key_store(self, ns: str, name: str = "store", endpoint: str = "") -> None:
        self.core.create_namespaced_secret(ns, {
            "metadata": {"name": f"{name}-ak"},
            "stringData": {"id": AK_ID, "secret": AK_SECRET}})
        kms: dict[str, Any] = {"KMSAuth": {
            "accessKey": {"name": f"{name}-ak", "key": "id"},
            "accessKeySecret": {"name": f"{name}-ak", "key": "secret"}}}
        if endpoint:
            kms["endpoint"] = endpoint
        self.create(ns, "secretstores", {"kind": "SecretStore",
                                         "metadata": {"name": name}, "spec": {"KMS": kms}})

    def events(self, ns: str, name: str) -> list[Any]:
        items = self.core.list_namespaced_event(
            ns, field_selector=f"involvedObject.name={name}").items
        return list(items)


@pytest.fixture(scope="session")
def k8s(kube: Any) -> K8s:
    return K8s(kube)


class ControllerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


@pytest.fixture
def start_controller(
    cluster: ControlPlane, crds: None, tmp_path: Path
) -> Iterator[Callable[..., ControllerProcess]]:
    """start_controller(*args, env={...}) -> a running controller process (stopped after)."""
    started: list[ControllerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None,
              kubeconfig: str | None = None) -> ControllerProcess:
        log_path = tmp_path / f"controller-{len(started)}.log"
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("ALIBABA_CLOUD", "ALICLOUD", "ACCESS_KEY",
                                         "SECRET_ACCESS_KEY")) and "proxy" not in k.lower()}
        full_env["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] = "true"
        full_env.update(env or {})
        cmd = [sys.executable, "-m", "controller",
               "--kubeconfig", kubeconfig or str(cluster.kubeconfig),
               "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
               "--kms-protocol", "http", *args]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                    cwd=str(REPO))
        cp = ControllerProcess(proc, log_path)
        started.append(cp)
        return cp

    yield start
    for cp in started:
        cp.stop()
