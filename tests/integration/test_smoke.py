"""Smoke: an ExternalSecret syncs end to end."""

from __future__ import annotations

from tests.fakecloud import FakeCloud
from tests.integration.conftest import K8s, wait_for


def test_smoke(k8s: K8s, cloud: FakeCloud, namespace: str, start_controller) -> None:
    cloud.put_secret("db", '{"user": "app", "password": "pw1"}')
    k8s.access_key_store(namespace, endpoint=f"http://{cloud.kms_endpoint}")
    start_controller("--polling-interval", "5s")
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "es"},
        "spec": {"data": [{"key": "db", "name": "db", "secretStoreRef": {"name": "store"}}]}})
    data = wait_for(lambda: k8s.secret_data(namespace, "es"), what="Secret es")
    assert data == {"db": '{"user": "app", "password": "pw1"}'}
    print(k8s.ready(namespace, "es"))
