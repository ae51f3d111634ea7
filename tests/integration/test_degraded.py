"""Transient KMS faults do not flip Ready while the data is fresh: a throttling storm over
every ExternalSecret leaves them Ready=True with a Degraded condition and no Warning Event
(before: 14 of 15 turned Ready=False, each with a Warning), and Degraded goes when KMS heals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.fakecloud import FakeCloud
from tests.integration.conftest import K8s
from tests.waiting import wait_for

COUNT = 5


def _conditions(k8s: K8s, ns: str, name: str) -> dict[str, dict[str, Any]]:
    status = k8s.get(ns, "externalsecrets", name).get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


def test_a_throttling_storm_degrades_but_keeps_ready(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    for i in range(COUNT):
        cloud.put_secret(f"s{i}", f"v{i}")
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "6s",
                     "--min-refresh-interval", "1s")
    names = [f"app-{i}" for i in range(COUNT)]
    for i, name in enumerate(names):
        k8s.create(namespace, "externalsecrets", {
            "kind": "ExternalSecret", "metadata": {"name": name},
            "spec": {"data": [{"key": f"s{i}", "secretStoreRef": {"name": "store"}}]}})
    for name in names:
        wait_for(lambda n=name: _conditions(k8s, namespace, n).get("Ready", {}).get(
            "status") == "True", what=f"{name} Ready")
    fault = cloud.inject(fault="throttling", times=None)
    try:
        wait_for(lambda: all("Degraded" in _conditions(k8s, namespace, n) for n in names),
                 timeout=20, what="every object Degraded by the throttling")
        for name in names:
            conditions = _conditions(k8s, namespace, name)
            assert conditions["Ready"]["status"] == "True", conditions
            assert [e.reason for e in k8s.events(namespace, name) if e.type == "Warning"] == []
    finally:
        cloud.clear_faults(fault)
    wait_for(lambda: not any("Degraded" in _conditions(k8s, namespace, n) for n in names),
             timeout=30, what="Degraded gone once KMS heals")
    for i, name in enumerate(names):
        assert k8s.secret_data(namespace, name) == {f"s{i}": f"v{i}"}
