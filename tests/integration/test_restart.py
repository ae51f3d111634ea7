"""A restart converges on content, not existence: a Secret edited (or a key removed) while the
controller was down is repaired at start-up whatever its interval, and an intact one is not
rewritten."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from tests.fakecloud import FakeCloud
from tests.integration.conftest import K8s
from tests.waiting import wait_for


def _es(name: str, *keys: str) -> dict[str, Any]:
    return {"kind": "ExternalSecret", "metadata": {"name": name},
            "spec": {"refreshInterval": "1h",
                     "data": [{"key": k, "secretStoreRef": {"name": "store"}} for k in keys]}}


def test_secrets_changed_while_down_are_repaired_at_start_up(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("a", "va")
    cloud.put_secret("b", "vb")
    k8s.access_key_store(namespace)
    args = ("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h")
    first = start_controller(*args)
    for name in ("edited", "trimmed", "intact"):
        k8s.create(namespace, "externalsecrets", _es(name, "a", "b"))
    for name in ("edited", "trimmed", "intact"):
        wait_for(lambda n=name: k8s.secret_data(namespace, n) == {"a": "va", "b": "vb"},
                 what=f"{name} synced")
    assert first.stop() == 0
    # While the controller is down: one value edited, one key removed.
    k8s.core.patch_namespaced_secret("edited", namespace,
                                     {"data": {"a": base64.b64encode(b"hand").decode()}})
    k8s.core.patch_namespaced_secret("trimmed", namespace, {"data": {"b": None}})
    intact_rv = k8s.secret(namespace, "intact").metadata.resource_version
    start_controller(*args)
    for name in ("edited", "trimmed"):
        wait_for(lambda n=name: k8s.secret_data(namespace, n) == {"a": "va", "b": "vb"},
                 timeout=15, what=f"{name} repaired at start-up (interval 1h)")
    assert k8s.secret(namespace, "intact").metadata.resource_version == intact_rv
