"""Shared fixtures: the real control plane (one per session), a fresh namespace per test, an
admin Kubernetes client and a ServiceAccount token minter."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The Alibaba SDK honours HTTP(S)_PROXY but ignores NO_PROXY: tests talk to 127.0.0.1 only.
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)

from tests.cluster import ControlPlane  # noqa: E402
from tests.cluster.tools import REPO  # noqa: E402

CRDS = REPO / "helm/ack-secret-manager/crds"


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    cp = ControlPlane(crds=[CRDS])
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kube(cluster: ControlPlane) -> Iterator[Any]:
    """An admin kubernetes.client.ApiClient."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def namespace(kube: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    from kubernetes import client

    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    yield from _fresh_namespace(client.CoreV1Api(kube), f"t-{slug}-{uuid.uuid4().hex[:5]}")


@pytest.fixture
def other_namespace(kube: Any) -> Iterator[str]:
    """A second fresh namespace: another tenant's, in the tenant-isolation tests."""
    from kubernetes import client

    yield from _fresh_namespace(client.CoreV1Api(kube), f"t-other-{uuid.uuid4().hex[:5]}")


def _fresh_namespace(core: Any, name: str) -> Iterator[str]:
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture
def make_namespace(kube: Any) -> Iterator[Callable[..., str]]:
    """make_namespace(prefix, labels=None) -> a new namespace, deleted after the test."""
    from kubernetes import client

    core = client.CoreV1Api(kube)
    made: list[str] = []

    def make(prefix: str = "extra", labels: dict[str, str] | None = None) -> str:
        name = f"t-{prefix}-{uuid.uuid4().hex[:6]}"
        core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
        made.append(name)
        return name

    yield make
    for name in made:
        core.delete_namespace(name)


@pytest.fixture
def mint_token(kube: Any) -> Callable[..., str]:
    """mint_token(namespace, service_account, audiences=[...], seconds=3600) -> JWT.

    Creates the ServiceAccount if it does not exist, then asks the TokenRequest API.
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(kube)

    def mint(
        ns: str, sa: str, audiences: list[str] | None = None, seconds: int = 3600
    ) -> str:
        try:
            core.create_namespaced_service_account(ns, {"metadata": {"name": sa}})
        except ApiException as exc:
            if exc.status != 409:
                raise
        body = {"spec": {"audiences": audiences or ["sts.aliyuncs.com"],
                         "expirationSeconds": seconds}}
        resp = core.create_namespaced_service_account_token(sa, ns, body)
        return str(resp.status.token)

    return mint


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake cloud is on 127.0.0.1: a proxy from the environment must not carry the SDKs'
    requests elsewhere."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def plugin_cloud(request: pytest.FixtureRequest, no_proxies: None) -> Iterator[Any]:
    """The fake cloud with the test module's AccessKey (its AK and SK) as "plugin-user": the
    kms-plugin tests' cloud, on 127.0.0.1 with no proxy in the way."""
    from tests.fakecloud import FakeCloud

    with FakeCloud() as fake:
        fake.add_access_key(request.module.AK, request.module.SK, "plugin-user")
        yield fake


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for a unix socket (their paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="kms-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
