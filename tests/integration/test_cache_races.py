"""The informer cache only moves forward, on the real apiserver: a user's edit or delete that
lands between our apply's answer and its entry into the cache is not undone in the cache.

A hook runs in the race window (after the apiserver answered our apply, before KubeAccess
hands the result to the informer): it edits or deletes the Secret as the admin and waits
until the watch has delivered that change. The real watch, the real resourceVersions."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from controller.kube.access import KubeAccess
from controller.kube.client import api_client
from controller.kube.informer import Informer
from controller.kube.rest import SECRETS, Rest
from tests.cluster import ControlPlane
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster


class RacingRest(Rest):
    """A Rest that runs `window` after every apply was answered."""

    window: Callable[[], None] = staticmethod(lambda: None)

    def apply(self, path: str, body: dict[str, Any], manager: str, force: bool = True) -> Any:
        result = super().apply(path, body, manager, force)
        self.window()
        return result


@pytest.fixture
def kube_access(cluster: ControlPlane, namespace: str) -> Iterator[tuple[KubeAccess, Informer,
                                                                        RacingRest, Rest]]:
    api = api_client(str(cluster.kubeconfig))
    rest, admin = RacingRest(api), Rest(api)
    secrets = Informer(rest, SECRETS, lambda kind, obj: None, namespace=namespace)
    access = KubeAccess(rest, None,  # type: ignore[arg-type]
                        external_secrets=lambda ns: None, secret_stores=lambda ns: None,
                        cluster_secret_stores=None, secrets=lambda ns: secrets)
    secrets.start()
    try:
        assert secrets.wait_synced(10), "the Secret informer did not sync"
        yield access, secrets, rest, admin
    finally:
        secrets.stop()
        api.close()


def body(namespace: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": namespace},
            "data": {"k": base64.b64encode(value.encode()).decode()}}


def test_a_user_edit_in_the_window_survives_in_the_cache(kube_access: Any,
                                                          namespace: str) -> None:
    access, secrets, rest, admin = kube_access
    access.apply_secret(body(namespace, "first"))
    edited = base64.b64encode(b"user-edit").decode()

    def edit() -> None:
        changed = admin.merge_patch(SECRETS.path(namespace, "s"), {"data": {"k2": edited}})
        rv = changed["metadata"]["resourceVersion"]
        wait_for(lambda: (secrets.get(namespace, "s") or {}).get("metadata", {})
                 .get("resourceVersion") == rv, timeout=10, what="the watch delivering the edit")

    rest.window = edit
    result = access.apply_secret(body(namespace, "second"))
    cached = secrets.get(namespace, "s")
    assert cached is not None
    assert int(cached["metadata"]["resourceVersion"]) > int(result["metadata"]["resourceVersion"])
    assert cached["data"].get("k2") == edited  # the user's edit, not our older answer


def test_a_delete_in_the_window_stays_deleted_in_the_cache(kube_access: Any,
                                                            namespace: str) -> None:
    access, secrets, rest, admin = kube_access
    access.apply_secret(body(namespace, "first"))
    wait_for(lambda: secrets.get(namespace, "s"), timeout=10, what="the Secret cached")

    def delete() -> None:
        admin.delete(SECRETS.path(namespace, "s"))
        wait_for(lambda: secrets.get(namespace, "s") is None, timeout=10,
                 what="the watch delivering the DELETED")

    rest.window = delete
    access.apply_secret(body(namespace, "second"))
    assert secrets.get(namespace, "s") is None
    rest.window = lambda: None
    # The next write recreates it, and the cache follows again.
    access.apply_secret(body(namespace, "third"))
    cached = secrets.get(namespace, "s")
    assert cached is not None
    assert cached["data"]["k"] == base64.b64encode(b"third").decode()
