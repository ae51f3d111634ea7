"""Helpers for the install-path tests: helm and kubectl from the tools cache, rendering the
chart into objects, and Helm releases that are always uninstalled."""

from __future__ import annotations

import pathlib
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.cluster import ControlPlane, ensure_tools
from tests.cluster.tools import REPO

CHART = REPO / "helm/ack-secret-manager"
VALUES_DIR = pathlib.Path(__file__).parent / "values"
MARKETPLACE_VALUES = sorted(VALUES_DIR.glob("marketplace-*.yaml"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: builds a virtualenv from the network or pip's cache (tens of seconds)"
    )


def run(cmd: Sequence[str | pathlib.Path], *, check: bool = True,
        timeout: float = 120.0, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion shows its output."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def set_args(values: dict[str, str]) -> list[str]:
    out: list[str] = []
    for key, value in values.items():
        out += ["--set", f"{key}={value}"]
    return out


@dataclass(frozen=True)
class Helm:
    """helm and kubectl, optionally bound to a cluster's kubeconfig."""

    helm_bin: pathlib.Path
    kubectl_bin: pathlib.Path
    kubeconfig: pathlib.Path | None = None

    def helm(self, *args: str | pathlib.Path, check: bool = True,
             timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        extra = ["--kubeconfig", str(self.kubeconfig)] if self.kubeconfig else []
        return run([self.helm_bin, *args, *extra], check=check, timeout=timeout)

    def kubectl(self, *args: str | pathlib.Path, check: bool = True,
                timeout: float = 60.0, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert self.kubeconfig, "kubectl needs a cluster"
        return run([self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args],
                   check=check, timeout=timeout, **kwargs)

    def template(self, *args: str | pathlib.Path, release: str = "asm",
                 namespace: str = "ack-system") -> list[dict[str, Any]]:
        """Render the chart (`helm template`) into a list of objects."""
        out = run([self.helm_bin, "template", release, CHART, "--namespace", namespace,
                   *args]).stdout
        return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="session")
def tools() -> Helm:
    t = ensure_tools()
    return Helm(t.helm, t.kubectl)


@pytest.fixture(scope="session")
def on_cluster(cluster: ControlPlane, tools: Helm) -> Helm:
    return Helm(tools.helm_bin, tools.kubectl_bin, cluster.kubeconfig)


@pytest.fixture
def release(on_cluster: Helm) -> Iterator[Callable[..., str]]:
    """release(namespace, *helm_args, name=None) -> release name; uninstalled afterwards.

    Uninstalling matters: the ClusterRole and ClusterRoleBinding outlive the namespace.
    """
    installed: list[tuple[str, str]] = []

    def install(namespace: str, *args: str, name: str | None = None) -> str:
        name = name or f"asm-{uuid.uuid4().hex[:6]}"
        installed.append((name, namespace))
        on_cluster.helm("install", name, CHART, "--namespace", namespace, *args)
        return name

    yield install
    for name, namespace in reversed(installed):
        on_cluster.helm("uninstall", name, "--namespace", namespace, "--ignore-not-found",
                        check=False)


@pytest.fixture
def other_namespace(kube: Any) -> Iterator[str]:
    """A second fresh namespace, deleted afterwards."""
    from kubernetes import client

    name = f"t-other-{uuid.uuid4().hex[:6]}"
    core: Any = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [o for o in objs if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)]
    names = [o["metadata"]["name"] for o in hits]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, got {names}"
    return hits[0]


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The controller container of the rendered Deployment."""
    dep = find(objs, "Deployment")
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])
