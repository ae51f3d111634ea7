"""KubeAccess writes through the informers' write tickets (a user's edit or delete that lands
while our apply is in flight is not undone in the cache), and what it remembers of its own
writes is forgotten on DELETED and bounded in size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.kube.access import KubeAccess
from controller.kube.informer import Informer
from controller.kube.rest import EXTERNAL_SECRETS, SECRETS


class SlowRest:
    """A fake Rest whose apply waits until the test has run `during` (the race window)."""

    def __init__(self) -> None:
        self.rv = 100
        self.during: Callable[[], None] = lambda: None
        self.fail = False

    def apply(self, path: str, body: dict[str, Any], manager: str,
              force: bool = True) -> dict[str, Any]:
        self.during()
        if self.fail:
            raise OSError("connection reset")
        self.rv += 1
        result = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.rv)}}
        return result


def secret_body(name: str, value: str = "djE=") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "ns", "annotations": {}},
            "data": {"k": value}}


def setup(written_max: int = 100) -> tuple[KubeAccess, SlowRest, Informer, Informer]:
    rest = SlowRest()
    secrets = Informer(rest, SECRETS, lambda kind, obj: None, namespace="ns")  # type: ignore[arg-type]
    es = Informer(rest, EXTERNAL_SECRETS, lambda kind, obj: None, namespace="ns")  # type: ignore[arg-type]
    access = KubeAccess(rest, None,  # type: ignore[arg-type]
                        external_secrets=lambda ns: es, secret_stores=lambda ns: None,
                        cluster_secret_stores=None, secrets=lambda ns: secrets,
                        written_max=written_max)
    return access, rest, secrets, es


def deliver(inf: Informer, kind: str, name: str, rv: str, **extra: Any) -> None:
    obj = {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}, **extra}
    inf._apply({"type": kind, "object": obj}, "0")


def test_a_secret_deleted_while_our_apply_is_in_flight_stays_deleted_in_the_cache() -> None:
    access, rest, secrets, _ = setup()
    deliver(secrets, "ADDED", "s", "50")
    rest.during = lambda: deliver(secrets, "DELETED", "s", "150")
    access.apply_secret(secret_body("s"))
    assert secrets.get("ns", "s") is None
    assert access.written_count() == 0  # the DELETED also dropped our write's fingerprint


def test_a_user_edit_landing_during_our_apply_is_kept_in_the_cache() -> None:
    access, rest, secrets, _ = setup()
    deliver(secrets, "ADDED", "s", "50")
    rest.during = lambda: deliver(secrets, "MODIFIED", "s", "150", data={"k": "ZWRpdA=="})
    access.apply_secret(secret_body("s"))  # its result is rv 101, older than the edit
    cached = secrets.get("ns", "s")
    assert cached is not None and cached["metadata"]["resourceVersion"] == "150"
    assert cached["data"] == {"k": "ZWRpdA=="}


def test_our_result_is_cached_ahead_of_its_watch_event() -> None:
    access, _, secrets, _ = setup()
    deliver(secrets, "ADDED", "s", "50")
    access.apply_secret(secret_body("s", "bmV3"))
    cached = secrets.get("ns", "s")
    assert cached is not None and cached["data"] == {"k": "bmV3"}
    assert access.is_own_write(cached)


def test_a_failed_apply_leaves_no_ticket_behind() -> None:
    access, rest, secrets, _ = setup()
    rest.fail = True
    try:
        access.apply_secret(secret_body("s"))
    except OSError:
        pass
    else:
        raise AssertionError("the apply's failure was swallowed")
    assert secrets._writing == {}


def test_status_write_racing_a_delete_does_not_resurrect_the_external_secret() -> None:
    access, rest, _, es = setup()
    deliver(es, "ADDED", "e", "50")
    rest.during = lambda: deliver(es, "DELETED", "e", "150")
    access.apply_status({"metadata": {"name": "e", "namespace": "ns"}}, {"conditions": []})
    assert es.get("ns", "e") is None


def test_remembered_writes_are_bounded_oldest_first() -> None:
    access, _, _, _ = setup(written_max=3)
    for i in range(5):
        access.apply_secret(secret_body(f"s{i}"))
    assert access.written_count() == 3
    gone = secret_body("s0")
    kept = secret_body("s4")
    assert not access.is_own_write(gone) and access.is_own_write(kept)


def test_every_deleted_secret_is_forgotten() -> None:
    access, _, secrets, _ = setup(written_max=10_000)
    names = [f"s{i}" for i in range(200)]
    for n in names:
        access.apply_secret(secret_body(n))
    assert access.written_count() == 200
    for n in names:
        deliver(secrets, "DELETED", n, "9999")
    assert access.written_count() == 0


def test_a_secret_over_its_namespaces_cache_budget_is_read_from_the_apiserver() -> None:
    rest = SlowRest()
    gets: list[str] = []

    def get(path: str, **_query: Any) -> dict[str, Any]:
        gets.append(path)
        return {"metadata": {"name": "big", "namespace": "ns", "resourceVersion": "9"},
                "data": {"k": "djE="}}

    rest.get = get  # type: ignore[attr-defined]
    secrets = Informer(rest, SECRETS, lambda kind, obj: None,  # type: ignore[arg-type]
                       namespace="ns", namespace_budget=1 << 20, full_events=True)
    access = KubeAccess(rest, None,  # type: ignore[arg-type]
                        external_secrets=lambda ns: None, secret_stores=lambda ns: None,
                        cluster_secret_stores=None, secrets=lambda ns: secrets)
    deliver(secrets, "ADDED", "small", "5", data={"k": "djE="})
    deliver(secrets, "ADDED", "big", "9", data={"k": "x" * (1 << 20)})
    assert access.secret("ns", "small") == secrets.get("ns", "small") and gets == []
    assert access.secret("ns", "big") == {
        "metadata": {"name": "big", "namespace": "ns", "resourceVersion": "9"},
        "data": {"k": "djE="}}
    assert gets == ["/api/v1/namespaces/ns/secrets/big"]
    assert "data" not in (secrets.get("ns", "big") or {})  # the cache keeps a stub only
