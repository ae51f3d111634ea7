"""Unit tests for controller.secretstore.storestatus: a store's Ready condition, written only when
it changes, re-checked on its cadence (sooner while not Ready), and only for stores whose
credentials live in Secrets. Plain fakes and a FakeClock; no threads."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from controller import settings
from controller.runtime.clock import FakeClock
from controller.secretstore.stores import StoreResolver
from controller.secretstore.storestatus import (
    VALID,
    CheckReads,
    StoreKey,
    StoreStatus,
    build,
    changed,
)
from tests.unit.test_stores import alibaba

NS = "team-a"
AK_REFS = {"accessKey": {"name": "ak", "key": "id"},
           "accessKeySecret": {"name": "ak", "key": "secret"}}


class Secrets:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str], dict[str, str]] = {}
        self.reads = 0

    def read_secret_key(self, namespace: str, name: str, key: str) -> bytes | None:
        self.reads += 1
        value = self.data.get((namespace, name), {}).get(key)
        return None if value is None else value.encode()


class World:
    def __init__(self, argv: list[str] | None = None) -> None:
        self.clock = FakeClock()
        self.wall = datetime(2026, 1, 1, tzinfo=UTC)
        self.secrets = Secrets()
        self.stores: dict[StoreKey, dict[str, Any]] = {}
        self.writes: list[tuple[StoreKey, dict[str, Any]]] = []
        cfg = settings.load(argv or ["--enable-worker-role=false"], {})
        resolver = StoreResolver(cfg, lambda *_a: None, self.secrets, lambda _ns: {},
                                 alibaba(cfg))
        self.status = StoreStatus(resolver, self.stores.get, self._apply, recheck=600.0,
                                  clock=self.clock, now=lambda: self.wall)

    def _apply(self, key: StoreKey, raw: dict[str, Any], status: dict[str, Any]) -> None:
        self.writes.append((key, status))
        self.stores[key] = {**self.stores[key], "status": status}

    def add(self, name: str, kms: dict[str, Any], generation: int = 1) -> StoreKey:
        key = StoreKey("SecretStore", NS, name)
        self.stores[key] = {"metadata": {"name": name, "namespace": NS, "uid": f"u-{name}",
                                         "generation": generation, "resourceVersion": "1"},
                            "spec": {"KMS": kms}}
        return key

    def condition(self, key: StoreKey) -> dict[str, Any]:
        conditions: list[dict[str, Any]] = self.stores[key]["status"]["conditions"]
        return conditions[0]

    def due(self) -> list[StoreKey]:
        """Keys the queue hands out now (each marked done at once)."""
        out = []
        while self.status.queue.depth():
            key = self.status.queue.get(timeout=0)
            if key is None:
                break
            out.append(key)
            self.status.queue.done(key)
        return out


def test_missing_credentials_then_ready_once_the_secret_exists_within_a_minute() -> None:
    w = World()
    key = w.add("ak", {"KMSAuth": AK_REFS})
    assert w.status.check(key) is False
    cond = w.condition(key)
    assert (cond["status"], cond["reason"]) == ("False", "CredentialsNotFound")
    assert "spec.KMS.KMSAuth.accessKey" in cond["message"] and "Secret team-a/ak" in \
        cond["message"]
    assert cond["observedGeneration"] == 1
    w.secrets.data[(NS, "ak")] = {"id": "LTAI-x", "secret": "s3cr3t-value"}
    w.clock.advance(59.0)
    assert w.due() == []
    w.clock.advance(1.5)
    assert w.due() == [key]  # not Ready: checked again after 60 s
    w.wall += timedelta(seconds=61)
    assert w.status.check(key) is True
    cond = w.condition(key)
    assert (cond["status"], cond["reason"]) == ("True", VALID)
    assert cond["lastTransitionTime"] == "2026-01-01T00:01:01Z"
    assert "s3cr3t-value" not in str(w.writes) and "LTAI-x" not in str(w.writes)


def test_a_quiet_store_is_rechecked_on_its_cadence_with_no_write() -> None:
    w = World()
    w.secrets.data[(NS, "ak")] = {"id": "LTAI-x", "secret": "s"}
    key = w.add("ak", {"KMSAuth": AK_REFS})
    assert w.status.check(key) is True
    assert len(w.writes) == 1
    for _ in range(3):
        reads = w.secrets.reads
        w.clock.advance(600.0)
        assert w.due() == [key]  # at most once per recheck interval
        w.wall += timedelta(seconds=600)
        assert w.status.check(key) is True
        assert w.secrets.reads > reads  # the Secret is read again (not cached)
    assert len(w.writes) == 1  # nothing changed: no write
    del w.secrets.data[(NS, "ak")]
    w.clock.advance(600.0)
    assert w.due() == [key]
    assert w.status.check(key) is False
    assert len(w.writes) == 2


def test_a_store_without_credential_secrets_is_not_rechecked() -> None:
    w = World(["--enable-worker-role=true"])
    key = w.add("worker", {})
    assert w.status.check(key) is True
    w.clock.advance(10_000.0)
    assert w.due() == []


def test_only_new_generations_are_checked_and_only_once_started() -> None:
    w = World()
    key = w.add("ak", {"KMSAuth": AK_REFS})
    w.status.observe("SecretStore", "ADDED", w.stores[key])
    assert w.due() == []  # not the leader yet
    w.status._started.set()
    w.status.observe("SecretStore", "MODIFIED", w.stores[key])
    assert w.due() == []  # same generation (e.g. our own status write)
    w.add("ak", {"KMSAuth": AK_REFS, "endpoint": "https://evil.example.com"}, generation=2)
    w.status.observe("SecretStore", "MODIFIED", w.stores[key])
    assert w.due() == [key]
    assert w.status.check(key) is False
    assert w.condition(key)["reason"] in ("CredentialsNotFound", "EndpointRefused")
    assert w.condition(key)["observedGeneration"] == 2


def test_status_keeps_the_transition_time_while_the_condition_holds() -> None:
    t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    first = build(None, ready=False, reason="X", message="m", generation=1, now=t0)
    again = build(first, ready=False, reason="X", message="m", generation=1, now=t1)
    assert not changed(first, again)
    other = build(first, ready=False, reason="Y", message="m2", generation=1, now=t1)
    assert changed(first, other)
    assert other["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    flipped = build(other, ready=True, reason=VALID, message="ok", generation=1, now=t1)
    assert flipped["conditions"][0]["lastTransitionTime"] == "2026-01-02T00:00:00Z"


def test_a_store_this_controller_does_not_serve_gets_no_status() -> None:
    w = World()
    w.status.serves = lambda raw: raw["metadata"]["name"] != "theirs"
    key = w.add("theirs", {"KMSAuth": AK_REFS})
    assert w.status.check(key) is None
    assert w.writes == [] and w.secrets.reads == 0
    w.clock.advance(10_000.0)
    assert w.due() == []


def test_each_credential_secret_is_read_once_per_check_and_again_at_the_next() -> None:
    secrets = Secrets()
    secrets.data[(NS, "ak")] = {"id": "LTAI-x", "secret": "s"}

    def get(namespace: str, name: str) -> dict[str, Any] | None:
        secrets.reads += 1
        data = secrets.data.get((namespace, name))
        return None if data is None else {"data": {
            k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}

    reads = CheckReads(get)
    cfg = settings.load(["--enable-worker-role=false"], {})
    resolver = StoreResolver(cfg, lambda *_a: None, reads, lambda _ns: {}, alibaba(cfg))
    stores: dict[StoreKey, dict[str, Any]] = {}
    status = StoreStatus(resolver, stores.get, lambda *_a: None, recheck=600.0,
                         clock=FakeClock(), reads=reads)
    key = StoreKey("SecretStore", NS, "ak")
    stores[key] = {"metadata": {"name": "ak", "namespace": NS, "uid": "u", "generation": 1},
                   "spec": {"KMS": {"KMSAuth": AK_REFS}}}
    assert status.check(key) is True
    assert secrets.reads == 1  # accessKey and accessKeySecret: two keys of one Secret
    status.check(key)
    assert secrets.reads == 2  # not cached across checks
    del secrets.data[(NS, "ak")]
    assert status.check(key) is False
