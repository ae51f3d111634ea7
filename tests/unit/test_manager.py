"""Unit tests for the manager's bookkeeping through its parts, on the fake clock, with races
made deterministic by hooks: the per-read poll schedule (polls.py), the event triggers
(externalsecret/triggers.py), and the manager itself with a fake reconciler in place of the real one
(no informer is started, no network)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

import pytest

from controller import settings
from controller.externalsecret import polls
from controller.externalsecret.controller import ExternalSecrets, Hooks, SecretPoll
from controller.externalsecret.fetcher import FetchRequest
from controller.externalsecret.polls import PollSchedule
from controller.externalsecret.reconciler import RETRY_CAP_NO_POLL, Outcome
from controller.externalsecret.triggers import Seen, Triggers, store_ref, writers
from controller.providers import FetchError, Kind, SecretValue
from controller.providers.alibaba.provider import Alibaba
from controller.providers.alibaba.shape import SHAPE as ALIBABA
from controller.providers.fake import FakeClient, FakeProvider, serving
from controller.runtime.clock import FakeClock
from controller.runtime.controller import Result

CLIENT = FakeClient("id", "kms.example")


def _request(name: str) -> FetchRequest:
    return FetchRequest(CLIENT, name)


# ------------------------------------------------------------------ poll schedule


def test_one_poll_per_read_at_the_shortest_interval_of_its_users() -> None:
    schedule = PollSchedule(lambda _r: None)
    db = _request("db")
    assert schedule.track(("ns", "a"), frozenset({db}), 60.0) == [(db, 60.0)]
    # A shorter interval than the poll was set for: poll sooner (the queue keeps the earlier)
    assert schedule.track(("ns", "b"), frozenset({db}), 30.0) == [(db, 30.0)]
    assert schedule.track(("ns", "c"), frozenset({db}), 90.0) == []  # already polled sooner
    assert schedule.track(("ns", "b"), frozenset({db}), 30.0) == []  # nothing new
    schedule.forget(("ns", "c"))
    due = schedule.due(db)
    assert due is not None and due.interval == 30.0
    assert due.users == {("ns", "a"), ("ns", "b")}
    schedule.forget(("ns", "a"))
    schedule.forget(("ns", "b"))
    assert schedule.due(db) is None  # nobody uses it: dropped
    assert schedule.take_released() == ({("kms", db.client)}, {db.client.credential})
    assert set(schedule.sizes().values()) == {0}


def test_a_poll_reports_a_change_once() -> None:
    schedule = PollSchedule(lambda _r: SecretValue("db", b"v1", "text", "1"))
    db = _request("db")
    schedule.track(("ns", "a"), frozenset({db}), 60.0)
    assert not schedule.record(db, SecretValue("db", b"v1", "text", "1"))
    assert schedule.record(db, SecretValue("db", b"v2", "text", "2"))
    assert not schedule.record(db, SecretValue("db", b"v2", "text", "2"))


def test_slots_are_fixed_offsets_inside_the_interval() -> None:
    clock = FakeClock(now=1000.0)
    first = polls.until_slot("seed", 60.0, clock.now())
    assert 0 < first <= 60.0
    clock.advance(first)
    assert abs(polls.until_slot("seed", 60.0, clock.now()) - 60.0) < 1e-6
    spread = {round(polls.until_slot(f"s{i}", 60.0, 1000.0)) for i in range(200)}
    assert len(spread) > 40  # 200 objects do not poll at one moment


# ----------------------------------------------------------------------- triggers


def test_triggers_index_stores_and_forget_everything() -> None:
    t = Triggers()
    w = _World()
    es = w.parse("app", [{"key": "db", "secretStoreRef": {"name": "store"}}])
    assert t.observe(("team", "app"), Seen(1, ""), es) == (True, False)
    assert t.observe(("team", "app"), Seen(1, ""), es) == (False, False)
    assert t.observe(("team", "app"), Seen(1, "now"), es) == (True, True)
    assert t.store_users(store_ref("SecretStore", "team", "store")) == {("team", "app")}
    assert not t.store_users(store_ref("ClusterSecretStore", "", "store"))
    t.forget(("team", "app"))
    assert set(t.sizes().values()) == {0}
    assert writers({"alibabacloud.com/external-secret": "a",
                    "u1.merge.alibabacloud.com/external-secret": "b"}) == ["a", "b"]


# ------------------------------------------------------------------------ manager


class _Hooks(Hooks):
    def __init__(self) -> None:
        self.synced: list[tuple[str, str, str]] = []
        self.forgotten: list[tuple[str, str]] = []
        self.known_objects: list[tuple[str, str, bool]] = []

    def sync(self, namespace: str, name: str, outcome: Outcome, seconds: float) -> None:
        self.synced.append((namespace, name, outcome.result))

    def forget(self, namespace: str, name: str) -> None:
        self.forgotten.append((namespace, name))

    def known(self, namespace: str, name: str, ready: bool) -> None:
        self.known_objects.append((namespace, name, ready))

    def polled(self, keys: Iterable[Hashable], changed: bool) -> None: ...


class _World:
    """A manager over the fake provider; `alibaba`: over the Alibaba one (its stores' rules,
    e.g. private CAs), with no reader."""

    def __init__(self, *argv: str, alibaba: bool = False) -> None:
        self.clock = FakeClock()
        self.hooks = _Hooks()
        self.kms = FakeProvider()
        cfg = settings.load(["--polling-interval", "60s", *argv], {})
        providers = serving(Alibaba(cfg), shape=ALIBABA) if alibaba else \
            serving(self.kms, shape=ALIBABA)
        self.manager = ExternalSecrets(cfg, rest=None, providers=providers,  # type: ignore[arg-type]
                               instance="test", hooks=self.hooks, clock=self.clock)
        self.manager._started.set()

    def obj(self, name: str, data: list[dict[str, Any]], **status: Any) -> dict[str, Any]:
        return {"apiVersion": "alibabacloud.com/v1alpha1", "kind": "ExternalSecret",
                "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}",
                             "generation": 1, "resourceVersion": "1"},
                "spec": {"data": data}, "status": status}

    def parse(self, name: str, data: list[dict[str, Any]]) -> Any:
        return self.manager.reconciler.parse(self.obj(name, data))


def test_deleted_during_a_sync_leaves_nothing_behind() -> None:
    w = _World()
    obj = w.obj("app", [{"key": "db"}])
    w.manager._on_external_secret("ADDED", obj)
    db = _request("db")

    def reconcile(namespace: str, name: str, *, fresh: bool = False) -> Outcome:
        w.manager._on_external_secret("DELETED", obj)  # arrives while the sync runs
        return Outcome("synced", interval=60.0, ready=True, requests=frozenset({db}))

    w.manager.reconciler.reconcile = reconcile  # type: ignore[method-assign]
    w.manager.queue.get(timeout=0)  # the ADDED's sync, handed to "a worker"
    w.manager._sync(("team", "app"))
    assert set(w.manager.polls.sizes().values()) == {0}
    assert set(w.manager.triggers.sizes().values()) == {0}
    assert w.hooks.synced == [("team", "app", "gone")]
    assert w.hooks.forgotten == [("team", "app")]
    assert len(w.manager.queue) == 0  # no poll scheduled for the deleted object


def _drain(w: _World) -> set[Hashable]:
    out = set()
    while (key := w.manager.queue.get(timeout=0)) is not None:
        w.manager.queue.done(key)
        out.add(key)
    return out


def test_a_poll_that_sees_a_change_syncs_every_user_at_once() -> None:
    w = _World()
    db = _request("db")
    w.kms.values["db"] = "v1"
    for name in ("a", "b"):
        w.manager._on_external_secret("ADDED", w.obj(name, [{"key": "db"}]))
        w.manager._track(("team", name), frozenset({db}), 60.0)
    _drain(w)
    w.manager._poll(SecretPoll(db))  # the first read: both users see v1
    _drain(w)
    w.manager._poll(SecretPoll(db))  # quiet: nobody syncs
    assert _drain(w) == set()
    w.kms.values["db"] = "v2"
    w.manager._poll(SecretPoll(db))
    assert _drain(w) == {("team", "a"), ("team", "b")}
    assert w.kms.reads == ["db", "db", "db"]  # one read per poll, for both users


def test_a_new_user_with_a_shorter_interval_is_polled_at_its_interval() -> None:
    """Two ExternalSecrets read the same secret: the first polls hourly, the second asks
    for 3 s. The read's next poll comes within 3 s, not at the hourly slot (the defect: the
    first user's hour held the second one's polls off)."""
    w = _World()
    db = _request("db")
    for name in ("hourly", "eager"):
        w.manager._on_external_secret("ADDED", w.obj(name, [{"key": "db"}]))
    _drain(w)
    w.manager._track(("team", "hourly"), frozenset({db}), 3600.0)
    w.manager._track(("team", "eager"), frozenset({db}), 3.0)
    w.clock.advance(3.0)
    assert w.manager.poll_queue.get(timeout=0) == SecretPoll(db)
    w.manager.poll_queue.done(SecretPoll(db))


def test_start_up_syncs_drifted_objects_now_and_others_at_their_slot() -> None:
    w = _World()
    ready = {"conditions": [{"type": "Ready", "status": "True"}], "observedGeneration": 1}
    intact = w.obj("intact", [{"key": "db"}], **ready)
    drifted = w.obj("drifted", [{"key": "db"}], **ready)
    checks = {"intact": True, "drifted": False}
    w.manager.reconciler.secret_intact = (  # type: ignore[method-assign]
        lambda es: checks[es.name])
    for obj in (intact, drifted):
        w.manager._enqueue_initial(obj)
    assert w.manager.queue.get(timeout=0) == ("team", "drifted")
    assert w.manager.queue.get(timeout=0) is None  # the intact one waits for its slot
    assert w.manager.queue.waiting_count() == 1
    assert sorted(w.hooks.known_objects) == [("team", "drifted", True), ("team", "intact", True)]


# ------------------------------------------------------------------------------ logs


def test_a_failed_sync_is_a_warning_with_its_reason_once_per_cause(caplog: Any) -> None:
    """A failed sync says why at WARNING; the same cause again (an object refused every
    interval) is DEBUG until the cause changes or the object syncs again."""
    import logging

    w = _World()
    obj = w.obj("app", [{"key": "db"}])
    w.manager._on_external_secret("ADDED", obj)
    outcomes = iter([
        Outcome("invalid", reason="InvalidSpec", message="spec.data[0].key: is empty; fix"),
        Outcome("invalid", reason="InvalidSpec", message="spec.data[0].key: is empty; fix"),
        Outcome("failed", retry=True, interval=60.0, reason="FetchFailed",
                message="data[0] (KMS secret db): Timeout"),
        Outcome("synced", interval=60.0, ready=True),
        Outcome("failed", retry=True, interval=60.0, reason="FetchFailed",
                message="data[0] (KMS secret db): Timeout"),
    ])
    w.manager.reconciler.reconcile = (  # type: ignore[method-assign]
        lambda namespace, name, *, fresh=False: next(outcomes))
    with caplog.at_level(logging.DEBUG, logger="controller.externalsecret.controller"):
        for _ in range(5):
            w.manager._sync(("team", "app"))
    lines = [(r.levelname, r.getMessage()) for r in caplog.records
             if r.name == "controller.externalsecret.controller"
             and "sync ExternalSecret" in r.getMessage()]
    assert lines == [
        ("WARNING", "sync ExternalSecret team/app failed: InvalidSpec: spec.data[0].key: is "
                    "empty; fix"),
        ("DEBUG", "sync ExternalSecret team/app still failing: InvalidSpec"),
        ("WARNING", "sync ExternalSecret team/app failed: FetchFailed: data[0] (KMS secret "
                    "db): Timeout"),
        ("INFO", "sync ExternalSecret team/app"),
        ("WARNING", "sync ExternalSecret team/app failed: FetchFailed: data[0] (KMS secret "
                    "db): Timeout"),
    ]


def test_a_user_change_never_waits_behind_polls() -> None:
    """ExternalSecret syncs and KMS polls have a queue and workers each: with every poll due at
    once (after a restart, say), a new or force-synced ExternalSecret is the first and only
    item its workers see."""
    w = _World()
    for i in range(50):
        w.manager._on_external_secret("ADDED", w.obj(f"old-{i}", [{"key": f"s{i}"}]))
        w.manager._track(("team", f"old-{i}"), frozenset({_request(f"s{i}")}), 60.0)
    _drain(w)  # their first syncs
    w.clock.advance(60.0)  # every poll is due now
    w.manager._on_external_secret("ADDED", w.obj("new", [{"key": "db"}]))
    assert w.manager.queue.get(timeout=0) == ("team", "new")
    assert w.manager.queue.get(timeout=0) is None
    polls_due = 0
    while w.manager.poll_queue.get(timeout=0) is not None:
        polls_due += 1
    assert polls_due == 50
    # Stores' Ready checks have a queue of their own too: a store's (re)check never takes an
    # ExternalSecret's place.
    store = {"kind": "SecretStore", "metadata": {"name": "s", "namespace": "team",
                                                 "generation": 1}}
    w.manager.store_status._started.set()
    w.manager._on_secret_store("ADDED", store)
    assert w.manager.queue.get(timeout=0) is None
    assert w.manager.store_status.queue.depth() == 1
    w.manager.start_workers()
    try:
        names = {t.name for t in w.manager._workers}
        assert {f"worker-{i}" for i in range(w.manager.settings.workers)} <= names
        assert {f"poller-{i}" for i in range(w.manager.settings.workers)} <= names
        assert "store-status" in names
    finally:
        w.manager.syncs.shutdown()
        w.manager.pollers.shutdown()
        w.manager.store_status.stop()
        for t in w.manager._workers:
            t.join(5)
        assert not [t.name for t in w.manager._workers if t.is_alive()]


def test_only_a_new_store_spec_syncs_its_users() -> None:
    """A store's status (the controller's own Ready condition) or labels changing is no reason
    to sync the ExternalSecrets that use it; a new generation (spec) or a deletion is."""
    w = _World()
    w.manager._on_external_secret("ADDED", w.obj("app", [
        {"key": "db", "secretStoreRef": {"name": "store"}}]))
    _drain(w)
    store = {"kind": "SecretStore", "metadata": {"name": "store", "namespace": "team",
                                                 "generation": 1}}
    w.manager._on_store("ADDED", store, "SecretStore")
    assert _drain(w) == {("team", "app")}
    w.manager._on_store("MODIFIED", {**store, "status": {"conditions": [{"type": "Ready"}]}},
                        "SecretStore")
    assert _drain(w) == set()
    w.manager._on_store("MODIFIED", {**store, "metadata": {**store["metadata"],
                                                           "generation": 2}}, "SecretStore")
    assert _drain(w) == {("team", "app")}
    w.manager._on_store("DELETED", store, "SecretStore")
    assert _drain(w) == {("team", "app")}


def test_a_deleted_store_gives_its_private_ca_place_to_the_next_one_at_once() -> None:
    """--max-cas-per-namespace: when a store's deletion (or a change) lets another store of
    the namespace use its CA, that store's ExternalSecrets sync now (not at their backoff's
    next step) and its Ready condition is checked again."""
    w = _World("--max-cas-per-namespace=1", alibaba=True)
    stores = {name: {"kind": "SecretStore",
                     "metadata": {"name": name, "namespace": "team", "generation": 1,
                                  "creationTimestamp": f"2026-12-07T10:00:0{i}Z"},
                     "spec": {"KMS": {"endpoint": "kst-1.cryptoservice.kms.aliyuncs.com",
                                      "ca": f"CA {i}"}}}
              for i, name in enumerate(("first", "second", "third"))}
    for name in stores:
        w.manager._on_external_secret("ADDED", w.obj(f"uses-{name}", [
            {"key": "db", "secretStoreRef": {"name": name}}]))
    for raw in stores.values():
        w.manager._on_store("ADDED", raw, "SecretStore")
    assert not w.manager.cas.allows("team", "second")
    _drain(w)
    w.manager.store_status._started.set()
    w.manager._on_store("DELETED", stores["first"], "SecretStore")
    assert _drain(w) == {("team", "uses-first"), ("team", "uses-second")}
    checks = set()
    while (key := w.manager.store_status.queue.get(timeout=0)) is not None:
        w.manager.store_status.queue.done(key)
        checks.add(key.name)
    assert checks == {"second"}
    assert w.manager.cas.allows("team", "second") and not w.manager.cas.allows("team", "third")
    # A status write on a store (same generation) moves nobody.
    w.manager._on_store("MODIFIED", {**stores["second"], "status": {}}, "SecretStore")
    assert _drain(w) == set()


def test_one_namespace_holds_all_workers_but_one_from_four() -> None:
    from controller.externalsecret.controller import namespace_limit

    pairs = [(1, 1), (2, 2), (3, 3), (4, 3), (8, 7), (32, 31)]
    assert [(w, namespace_limit(w)) for w in (1, 2, 3, 4, 8, 32)] == pairs


def test_an_external_secret_read_whole_again_after_its_stub_counts_as_changed() -> None:
    t = Triggers()
    key = ("team", "app")
    assert t.observe(key, Seen(1, "", whole=False), None) == (True, False)
    # Room was made: the same generation, now with its annotations (a force-sync value).
    assert t.observe(key, Seen(1, "now"), None) == (True, False)
    assert t.observe(key, Seen(1, "now"), None) == (False, False)


# ------------------------------------------------------------------ what comes back when


@pytest.mark.parametrize(("outcome", "result"), [
    (Outcome("synced", interval=60.0, ready=True), Result()),  # its polls bring it back
    (Outcome("synced", interval=60.0, ready=True, recheck=True), Result.after(60.0)),
    (Outcome("failed", interval=60.0, retry=True), Result.retry(cap=60.0)),
    (Outcome("failed", retry=True), Result.retry(cap=RETRY_CAP_NO_POLL)),  # not polled
    (Outcome("invalid", interval=60.0), Result()),  # fixed by an edit, which is an event
    (Outcome("gone", interval=60.0, retry=True), Result()),
])
def test_a_syncs_outcome_says_when_it_comes_back(outcome: Outcome, result: Result) -> None:
    assert outcome.requeue() == result


def test_a_sync_and_a_poll_return_their_result_and_the_loop_acts_on_it() -> None:
    """The sync's Result reaches the loop: a failed sync comes back after its backoff (at most
    its interval) and counts a retry; a quiet poll comes back at its slot, a throttled one
    after its backoff (at most its interval)."""
    retries = []
    w = _World()
    w.hooks.retry = lambda: retries.append(1)  # type: ignore[method-assign]
    w.manager._on_external_secret("ADDED", w.obj("app", [{"key": "db"}]))
    _drain(w)
    w.manager.reconciler.reconcile = (  # type: ignore[method-assign]
        lambda namespace, name, *, fresh=False: Outcome("failed", interval=60.0, retry=True))
    assert w.manager._sync(("team", "app")) == Result.retry(cap=60.0)
    assert retries == [1]
    db = _request("db")
    w.manager._track(("team", "app"), frozenset({db}), 60.0)
    w.kms.values["db"] = "v1"
    result = w.manager._poll(SecretPoll(db))
    assert result.requeue_after is not None and 0 < result.requeue_after <= 60.0
    assert not result.failed
    throttled = FetchError(Kind.THROTTLED, "Rejected.Throttling", "throttled")
    w.manager.fetcher.fetch = (  # type: ignore[method-assign]
        lambda request, max_age, *, fresh=False: throttled)
    assert w.manager._poll(SecretPoll(db)) == Result.retry(cap=60.0)
