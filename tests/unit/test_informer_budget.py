"""A namespace's objects hold at most --namespace-cache-bytes of one informer's cache: an
object past it is cached as a stub that says how big it was and why, other namespaces are not
affected, and a deletion that makes room reads the stubs that now fit again (MODIFIED)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.externalsecret.controller import entry_clients, store_clients
from controller.kube.informer import (
    NAMESPACE_CACHE_FULL,
    Informer,
    _Ledger,
    _size,
    overflow,
    overflow_message,
)
from controller.kube.rest import EXTERNAL_SECRETS, ApiError
from tests.fakes import World, entry

BUDGET = 4096


def es(name: str, rv: int, ns: str = "team", pad: int = 1000,
       generation: int = 1) -> dict[str, Any]:
    return {"apiVersion": "alibabacloud.com/v1alpha1", "kind": "ExternalSecret",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv),
                         "uid": f"uid-{name}", "generation": generation,
                         "annotations": {"note": "x" * 40}},
            "spec": {"data": [{"key": "k", "name": "n", "pad": "p" * pad}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


class Api:
    """A fake Rest: a list of `items`, and GETs of single objects from `objects`."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.gets: list[str] = []
        self.fail = False

    def get(self, path: str, **_query: Any) -> dict[str, Any]:
        parts = path.strip("/").split("/")
        if parts[-1] == "externalsecrets":  # a list
            return {"items": [json.loads(json.dumps(o)) for _k, o in sorted(self.objects.items())],
                    "metadata": {"resourceVersion": "100"}}
        self.gets.append(parts[-1])
        if self.fail:
            raise ApiError(500, "InternalError", {})
        found = self.objects.get((parts[-3], parts[-1]))
        if found is None:
            raise ApiError(404, "NotFound", {})
        return json.loads(json.dumps(found))


def informer(api: Api, budget: int = BUDGET) -> tuple[Informer, list[tuple[str, str, bool]]]:
    seen: list[tuple[str, str, bool]] = []
    inf = Informer(api, EXTERNAL_SECRETS,  # type: ignore[arg-type]
                   lambda kind, obj: seen.append((kind, obj["metadata"]["name"],
                                                  overflow(obj) is not None)),
                   namespace_budget=budget)
    return inf, seen


def filled(ns: str = "team") -> tuple[Api, Informer, list[tuple[str, str, bool]]]:
    """An informer whose namespace `ns` holds es-0..es-4: 3 whole, 2 stubs (~1.2 KiB each
    against 4 KiB)."""
    api = Api()
    inf, seen = informer(api)
    for i in range(5):
        deliver(inf, api, "ADDED", es(f"es-{i}", 10 + i, ns=ns))
    return api, inf, seen


def deliver(inf: Informer, api: Api, kind: str, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    if kind == "DELETED":
        api.objects.pop((meta["namespace"], meta["name"]), None)
    else:
        api.objects[(meta["namespace"], meta["name"])] = obj
    inf._apply({"type": kind, "object": json.loads(json.dumps(obj))}, "0")
    inf.readmit_pending()  # the readmitter thread's work, done here at once


def test_objects_past_the_budget_are_stubs_that_name_their_size_and_the_flag() -> None:
    _api, inf, seen = filled()
    full = [n for n in (f"es-{i}" for i in range(5)) if overflow(inf.get("team", n) or {}) is None]
    assert full == ["es-0", "es-1", "es-2"]  # ~1.2 KiB each against 4 KiB
    stub = inf.get("team", "es-4")
    assert stub is not None and "spec" not in stub and "annotations" not in stub["metadata"]
    assert stub["metadata"]["uid"] == "uid-es-4" and stub["status"]["conditions"]
    message = overflow_message(stub)
    assert message is not None
    assert "ExternalSecret team/es-4" in message and "--namespace-cache-bytes" in message
    assert "per namespace (4.0 KiB)" in message and "p" * 10 not in message
    assert seen[-1] == ("ADDED", "es-4", True)  # the handler sees the stub
    assert NAMESPACE_CACHE_FULL == "NamespaceCacheFull"


def test_another_namespace_has_a_budget_of_its_own() -> None:
    api, inf, _ = filled("hostile")
    deliver(inf, api, "ADDED", es("mine", 20, ns="team"))
    assert overflow(inf.get("team", "mine") or {}) is None


def test_a_deletion_that_makes_room_reads_the_stubs_that_fit_again() -> None:
    api, inf, seen = filled()
    seen.clear()
    deliver(inf, api, "DELETED", es("es-0", 20))
    assert api.gets == ["es-3"]  # one place freed: the first stub by name, read once
    assert overflow(inf.get("team", "es-3") or {}) is None
    assert overflow(inf.get("team", "es-4") or {}) is not None
    assert ("MODIFIED", "es-3", False) in seen
    deliver(inf, api, "DELETED", es("es-1", 21))
    assert overflow(inf.get("team", "es-4") or {}) is None


def test_a_failed_read_again_is_tried_at_the_namespaces_next_event() -> None:
    api, inf, _ = filled()
    api.fail = True
    deliver(inf, api, "DELETED", es("es-0", 20))
    assert overflow(inf.get("team", "es-3") or {}) is not None
    api.fail = False
    deliver(inf, api, "MODIFIED", es("es-1", 21))  # same size: no room made, but a retry due
    assert overflow(inf.get("team", "es-3") or {}) is None


def test_a_bigger_version_of_a_held_object_becomes_a_stub_and_frees_its_bytes() -> None:
    api = Api()
    inf, _ = informer(api)
    deliver(inf, api, "ADDED", es("a", 10))
    deliver(inf, api, "MODIFIED", es("a", 11, pad=8000, generation=2))  # its spec grew
    assert (overflow(inf.get("team", "a") or {}) or {})["held"] == 0
    deliver(inf, api, "ADDED", es("b", 12))
    assert overflow(inf.get("team", "b") or {}) is None
    deliver(inf, api, "MODIFIED", es("a", 13, generation=3))  # shrunk back: whole again
    assert overflow(inf.get("team", "a") or {}) is None


def test_a_relist_admits_in_the_apiservers_order_and_a_write_result_is_admitted_too() -> None:
    api = Api()
    for i in range(5):
        api.objects[("team", f"es-{i}")] = es(f"es-{i}", 10 + i)
    inf, _ = informer(api)
    inf._relist()
    assert [overflow(inf.get("team", f"es-{i}") or {}) is None for i in range(5)] == \
        [True, True, True, False, False]
    ticket = inf.begin_write("team", "es-4")
    assert inf.finish_write(ticket, es("es-4", 30))  # e.g. its status write's answer
    assert overflow(inf.get("team", "es-4") or {}) is not None


def test_no_budget_keeps_everything_whole() -> None:
    api = Api()
    inf, _ = informer(api, budget=0)
    for i in range(5):
        deliver(inf, api, "ADDED", es(f"es-{i}", 10 + i, pad=5000))
    assert all(overflow(inf.get("team", f"es-{i}") or {}) is None for i in range(5))


events = st.lists(st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]),
                            st.sampled_from(["a", "b", "c", "d", "e"]),
                            st.sampled_from(["team", "other"]),
                            st.integers(min_value=0, max_value=3000)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(events)
def test_what_a_namespace_holds_whole_never_passes_its_budget(
        steps: list[tuple[str, str, str, int]]) -> None:
    api = Api()
    inf, _ = informer(api)
    for rv, (kind, name, ns, pad) in enumerate(steps, start=10):
        deliver(inf, api, kind, es(name, rv, ns=ns, pad=pad, generation=rv))  # spec changes
        for namespace in ("team", "other"):
            whole = [o for o in inf.items() if o["metadata"]["namespace"] == namespace
                     and overflow(o) is None]
            assert sum(_size(o) for o in whole) <= BUDGET
            assert inf._ledger.held.get(namespace, 0) == sum(_size(o) for o in whole)
        # every object the API has is cached, whole or as a stub
        assert {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in inf.items()} == \
            set(api.objects)


# ------------------------------------------------------- what a tenant sees (reconciler)
def _stub_of(obj: dict[str, Any]) -> dict[str, Any]:
    ledger = _Ledger(1)  # nothing fits
    return ledger.admit((obj["metadata"]["namespace"], obj["metadata"]["name"]), obj)


def test_an_external_secret_over_the_budget_is_not_synced_and_its_secret_keeps_its_data() -> None:
    w = World()
    w.kms.values["db"] = "pw"
    w.add_es("app", {"data": [entry("db")]})
    assert w.reconcile("app").ready
    w.kms.values["db"] = "pw2"
    w.kube.external_secrets[(w.ns, "app")] = _stub_of(w.kube.external_secrets[(w.ns, "app")])
    outcome = w.reconcile("app")
    assert (outcome.ready, outcome.reason, outcome.retry) == (False, "NamespaceCacheFull", False)
    assert w.reason("app") == "NamespaceCacheFull"
    assert "--namespace-cache-bytes" in w.message("app") and "ExternalSecret team/app" in \
        w.message("app")
    assert w.kube.data(w.ns, "app") == {"db": "pw"}  # kept, not rewritten or wiped
    assert [e[2] for e in w.kube.events][-1] == "NamespaceCacheFull"


def test_a_store_over_the_budget_fails_its_entries_with_the_same_reason() -> None:
    w = World()
    w.kms.values["db"] = "pw"
    w.add_es("app", {"data": [entry("db")]})
    key = ("SecretStore", w.ns, "store")
    w.stores[key] = _stub_of({**w.stores[key], "apiVersion": "alibabacloud.com/v1alpha1"})
    outcome = w.reconcile("app")
    assert (outcome.ready, w.reason("app")) == (False, "NamespaceCacheFull")
    assert "SecretStore team/store" in w.message("app")
    assert w.kube.applies == []


def _with_status(obj: dict[str, Any], pad: int) -> dict[str, Any]:
    obj["status"] = {"conditions": [{"type": "Ready", "status": "False", "message": "m" * pad}]}
    return obj


def test_a_status_write_never_flips_an_object_between_whole_and_stub() -> None:
    """At the edge of the budget a status write (same generation) keeps the object's
    standing: otherwise a bigger status would make it a stub, its NamespaceCacheFull status a
    smaller one, whole again, sync, bigger status... a loop of syncs and writes."""
    api = Api()
    inf, _ = informer(api)
    for i in range(3):
        deliver(inf, api, "ADDED", es(f"es-{i}", 10 + i))
    deliver(inf, api, "ADDED", es("es-3", 13))  # the fourth does not fit
    held = inf._ledger.held["team"]
    assert held + 300 > BUDGET
    # A held object's status grows past the budget: it stays whole (the overrun is the
    # controller's own status, bounded by its own limits).
    deliver(inf, api, "MODIFIED", _with_status(es("es-2", 20), 300))
    assert overflow(inf.get("team", "es-2") or {}) is None
    ticket = inf.begin_write("team", "es-2")
    assert inf.finish_write(ticket, _with_status(es("es-2", 21), 400))
    assert overflow(inf.get("team", "es-2") or {}) is None
    # A stub's status shrinks: it stays a stub until room is made or its spec changes.
    deliver(inf, api, "MODIFIED", _with_status(es("es-3", 22, pad=10), 0))
    assert overflow(inf.get("team", "es-3") or {}) is not None
    # A new generation is judged again.
    bigger = es("es-2", 23, pad=3000)
    bigger["metadata"]["generation"] = 2
    deliver(inf, api, "MODIFIED", bigger)
    assert overflow(inf.get("team", "es-2") or {}) is not None


# ------------------------------------------- what objects make the controller hold (tokens)
def test_a_token_costs_once_per_namespace_however_many_objects_name_it() -> None:
    ledger = _Ledger(8_000, tokens=lambda o: frozenset(o["spec"]["t"]), token_cost=3000)

    def obj(name: str, tokens: list[str], ns: str = "team") -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": ns, "generation": 1},
                "spec": {"t": tokens}}

    base = _size(obj("a", ["x"]))
    for name in ("a", "b", "c"):  # the same client three times: paid once
        assert overflow(ledger.admit(("team", name), obj(name, ["x"]))) is None
    assert ledger.held["team"] == 3 * base + 3000
    # two new ones do not fit beside it (3000 each), one does
    assert overflow(ledger.admit(("team", "d"), obj("d", ["y", "z"]))) is not None
    assert overflow(ledger.admit(("team", "e"), obj("e", ["y"]))) is None
    # the token is released with the last object that names it
    ledger.forget(("team", "a"))
    ledger.forget(("team", "b"))
    assert ledger.refs["team"] == {"x": 1, "y": 1}
    ledger.forget(("team", "c"))
    assert ledger.refs["team"] == {"y": 1}
    assert ledger.held["team"] == _size(obj("e", ["y"])) + 3000
    assert overflow(ledger.admit(("other", "a"), obj("a", ["y"], ns="other"))) is None


def test_stores_and_entries_with_an_endpoint_of_their_own_name_their_clients() -> None:
    assert store_clients({"metadata": {"name": "s"}}) == frozenset({"s"})
    es_obj = {"spec": {"data": [
        {"key": "a", "secretStoreRef": {"name": "s"}, "kmsEndpoint": "kst-1.example"},
        {"key": "b", "secretStoreRef": {"name": "s"}, "kmsEndpoint": "kst-1.example"},
        {"key": "c", "secretStoreRef": {"name": "s", "kind": "ClusterSecretStore"},
         "kmsEndpoint": "kst-2.example"},
        {"key": "d", "secretStoreRef": {"name": "s"}}]},
        "dataFrom": "not a list"}
    assert entry_clients(es_obj) == frozenset({"/s@kst-1.example",
                                                "ClusterSecretStore/s@kst-2.example"})
    assert entry_clients({"spec": None}) == frozenset()


token_events = st.lists(st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]),
                                  st.sampled_from(["a", "b", "c", "d"]),
                                  st.integers(min_value=0, max_value=1500),
                                  st.frozensets(st.sampled_from(["x", "y", "z"]), max_size=2)),
                        max_size=40)


@settings(max_examples=200, deadline=None)
@given(token_events)
def test_held_bytes_are_the_whole_objects_and_their_distinct_tokens(
        steps: list[tuple[str, str, int, frozenset[str]]]) -> None:
    api = Api()
    inf = Informer(api, EXTERNAL_SECRETS, lambda kind, obj: None,  # type: ignore[arg-type]
                   namespace_budget=BUDGET, tokens=lambda o: frozenset(o["spec"]["t"]),
                   token_cost=700)
    for rv, (kind, name, pad, tokens) in enumerate(steps, start=10):
        obj = es(name, rv, pad=pad, generation=rv)
        obj["spec"]["t"] = sorted(tokens)
        deliver(inf, api, kind, obj)
        whole = [o for o in inf.items() if overflow(o) is None]
        distinct = {t for o in whole for t in o["spec"]["t"]}
        held = sum(_size(o) for o in whole) + 700 * len(distinct)
        assert inf._ledger.held.get("team", 0) == held
        assert held <= BUDGET


def test_labels_and_annotations_grown_after_admission_are_judged_again() -> None:
    """Found by a black-box attempt: 120 tiny ExternalSecrets admitted, then each given
    ~250 KB of annotations and 1,200 labels (the same generation), held 48 MB under a 1 MiB
    bound. Only growth in the status keeps an object's standing."""
    api, inf, _ = filled()
    grown = es("es-0", 30)
    grown["metadata"]["annotations"] = {"pad": "a" * 5000}
    deliver(inf, api, "MODIFIED", grown)  # generation 1 still
    assert overflow(inf.get("team", "es-0") or {}) is not None
    assert inf._ledger.held["team"] <= BUDGET
    labelled = es("es-1", 31)
    labelled["metadata"]["labels"] = {f"l{i}": "v" for i in range(400)}
    deliver(inf, api, "MODIFIED", labelled)
    assert inf._ledger.held["team"] <= BUDGET


def test_stubs_are_read_again_off_the_watchs_thread() -> None:
    """Found by a black-box attempt: the stubs that fit were read again on the watch's
    thread, which serves every namespace: 900 of them held another tenant's change 11 s."""
    api, inf, _ = filled()
    inf._apply({"type": "DELETED", "object": es("es-0", 20)}, "0")
    api.objects.pop(("team", "es-0"), None)
    assert api.gets == []  # the watch went on; nothing was read on its thread
    assert inf._pending == {"team"}
    inf.readmit_pending()
    assert api.gets == ["es-3"] and not inf._pending


def test_a_refused_object_looked_at_again_says_nothing_new() -> None:
    """A restart (or a neighbour's deletion) reconciles every stub again: its status is
    unchanged, so no second Warning Event (a black-box attempt: 1,500 stubs after a restart
    made 1,500 Events while another tenant waited)."""
    w = World()
    w.add_es("app", {"data": [entry("db")]})
    w.kube.external_secrets[(w.ns, "app")] = _stub_of(w.kube.external_secrets[(w.ns, "app")])
    w.reconcile("app")
    stored = w.kube.statuses[(w.ns, "app")]
    w.kube.external_secrets[(w.ns, "app")]["status"] = stored  # as the watch brings it back
    w.reconcile("app")
    assert [e[2] for e in w.kube.events] == ["NamespaceCacheFull"]


def test_a_stubs_message_does_not_move_with_what_its_namespace_holds() -> None:
    """Every look again at a stub (a restart, a neighbour's change) compares its status: a
    message that named the namespace's current total rewrote every stub's status (a PATCH
    of the whole object each) whenever that total moved."""
    a = _Ledger(4096).admit(("team", "x"), es("x", 10, pad=5000))
    ledger = _Ledger(4096)
    ledger.admit(("team", "y"), es("y", 9, pad=1000))
    b = ledger.admit(("team", "x"), es("x", 10, pad=5000))
    assert overflow(a) != overflow(b)  # what the namespace held differed
    assert overflow_message(a) == overflow_message(b)
