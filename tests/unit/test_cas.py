"""Unit tests for controller.secretstore.cas: the per-namespace bound on distinct private CAs
(--max-cas-per-namespace). The rule (the first N distinct CAs of a namespace's SecretStores in
(creationTimestamp, name) order), the index that applies it as store events arrive, and, by
hypothesis, that the index always answers what the rule says and reports exactly the stores
whose admission an event changed."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from controller import api
from controller.providers.alibaba.blocks import kms_of
from controller.secretstore.cas import CaIdentity, Place, PrivateCas, allowed_cas
from tests import shaped

NS = "team"


def _ca(n: int, host: str = "kst-1.cryptoservice.kms.aliyuncs.com") -> CaIdentity:
    return (host, f"sha256:{n:064x}")


def _raw(name: str, created: str, ca: int | None, namespace: str = NS) -> dict[str, Any]:
    """A SecretStore with CA number `ca` (None: none), a marker the test identify reads."""
    kms: dict[str, Any] = {"endpoint": "kst-1.cryptoservice.kms.aliyuncs.com"}
    if ca is not None:
        kms["ca"] = f"CA {ca}"
    return {"kind": "SecretStore",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created,
                         "uid": f"uid-{name}", "resourceVersion": "1"},
            "spec": {"KMS": kms}}


def _identify(store: api.SecretStore) -> CaIdentity | None:
    kms = kms_of(store)
    if kms is None or not kms.ca:
        return None
    return _ca(int(kms.ca.split()[1]))


def _store(raw: dict[str, Any]) -> api.SecretStore:
    return shaped.parse_secret_store(raw)


def _t(second: int) -> str:
    return f"2026-12-07T10:{second // 60:02d}:{second % 60:02d}Z"


# ----------------------------------------------------------------------------- the rule


def test_the_oldest_stores_get_the_places() -> None:
    places = [Place(_t(5), "e", _ca(5)), Place(_t(1), "z", _ca(1)), Place(_t(3), "c", _ca(3)),
              Place(_t(2), "y", _ca(2)), Place(_t(4), "a", _ca(4))]
    assert allowed_cas(places, 3) == {_ca(1), _ca(2), _ca(3)}  # by time, not by name
    assert allowed_cas(places, 5) == allowed_cas(places, 9) == {_ca(n) for n in range(1, 6)}


def test_the_name_breaks_a_tie_of_creation_times() -> None:
    same = _t(0)  # one second: kubectl apply of a file of stores
    places = [Place(same, "b", _ca(2)), Place(same, "c", _ca(3)), Place(same, "a", _ca(1))]
    assert allowed_cas(places, 2) == {_ca(1), _ca(2)}
    assert allowed_cas(list(reversed(places)), 2) == {_ca(1), _ca(2)}


def test_a_ca_counts_once_whatever_the_number_of_stores_using_it() -> None:
    places = [Place(_t(i), f"s{i}", _ca(1)) for i in range(10)]
    places += [Place(_t(20), "late", _ca(2)), Place(_t(21), "later", _ca(3))]
    assert allowed_cas(places, 2) == {_ca(1), _ca(2)}


def test_a_ca_counts_once_per_endpoint_host() -> None:
    places = [Place(_t(1), "a", _ca(1, "kst-1.example")),
              Place(_t(2), "b", _ca(1, "kst-2.example")),
              Place(_t(3), "c", _ca(2, "kst-1.example"))]
    assert allowed_cas(places, 2) == {_ca(1, "kst-1.example"), _ca(1, "kst-2.example")}


def test_zero_is_no_bound() -> None:
    places = [Place(_t(i), f"s{i}", _ca(i)) for i in range(100)]
    assert len(allowed_cas(places, 0)) == 100
    cas = PrivateCas(0, _identify, shaped.SHAPE)
    assert cas.observe("ADDED", _raw("s0", _t(0), 0)) == set()
    assert not cas.refused(_store(_raw("s1", _t(1), 1)), _ca(1))
    assert cas.sizes() == {"namespaces": 0, "stores": 0}  # nothing indexed at all


# ---------------------------------------------------------------------------- the index


def test_stores_beyond_the_bound_are_refused_and_a_deletion_frees_a_place() -> None:
    cas = PrivateCas(2, _identify, shaped.SHAPE)
    raws = [_raw(f"s{i}", _t(i), i) for i in range(4)]
    for raw in reversed(raws):  # a list arrives in name order, not in time order
        cas.observe("ADDED", raw)
    refused = {r["metadata"]["name"] for r in raws
               if cas.refused(_store(r), _ca(int(r["metadata"]["name"][1:])))}
    assert refused == {"s2", "s3"}
    # Deleting an allowed store: the next one by creation time gets its place, and is named
    # so that its ExternalSecrets sync now.
    assert cas.observe("DELETED", raws[0]) == {"s2"}
    assert not cas.refused(_store(raws[2]), _ca(2))
    assert cas.refused(_store(raws[3]), _ca(3))
    # A refused store going away moves nobody.
    assert cas.observe("DELETED", raws[3]) == set()
    for raw in raws[1:3]:
        cas.observe("DELETED", raw)
    assert cas.sizes() == {"namespaces": 0, "stores": 0}


def test_a_store_switching_to_an_allowed_ca_frees_its_place() -> None:
    cas = PrivateCas(2, _identify, shaped.SHAPE)
    for i in range(3):
        cas.observe("ADDED", _raw(f"s{i}", _t(i), i))
    assert cas.refused(_store(_raw("s2", _t(2), 2)), _ca(2))
    # s1 takes s0's CA: CA 1 leaves the namespace, CA 2 (s2) gets the place.
    assert cas.observe("MODIFIED", _raw("s1", _t(1), 0)) == {"s2"}
    assert not cas.refused(_store(_raw("s2", _t(2), 2)), _ca(2))
    # and back: s2 is refused again
    assert cas.observe("MODIFIED", _raw("s1", _t(1), 1)) == {"s2"}
    assert not cas.allows(NS, "s2") and cas.allows(NS, "s1")
    # A store dropping its CA leaves the index (no CA: nothing to count).
    assert cas.observe("MODIFIED", _raw("s0", _t(0), None)) == {"s2"}
    assert cas.sizes() == {"namespaces": 1, "stores": 2}


def test_namespaces_are_counted_apart() -> None:
    cas = PrivateCas(1, _identify, shaped.SHAPE)
    cas.observe("ADDED", _raw("a", _t(0), 1, namespace="one"))
    cas.observe("ADDED", _raw("a", _t(0), 2, namespace="two"))
    assert not cas.refused(_store(_raw("a", _t(0), 1, namespace="one")), _ca(1))
    assert not cas.refused(_store(_raw("a", _t(0), 2, namespace="two")), _ca(2))
    assert cas.refused(_store(_raw("b", _t(1), 3, namespace="one")), _ca(3))


def test_a_store_the_index_has_not_seen_yet_is_counted_in_its_place() -> None:
    """The informer puts an object in its cache before its handler runs: a sync can see a
    store (or a new version of it) before the index does."""
    cas = PrivateCas(1, _identify, shaped.SHAPE)
    cas.observe("ADDED", _raw("later", _t(5), 1))
    # An older store, not yet indexed, takes the place before 'later'.
    assert not cas.refused(_store(_raw("older", _t(1), 2)), _ca(2))
    assert cas.refused(_store(_raw("newer", _t(9), 2)), _ca(2))
    # A new version of the indexed store, with another CA: answered for that CA.
    assert not cas.refused(_store(_raw("later", _t(5), 3)), _ca(3))


def test_cluster_secret_stores_are_not_counted() -> None:
    cas = PrivateCas(1, _identify, shaped.SHAPE)
    cas.observe("ADDED", _raw("a", _t(0), 1))
    cluster = shaped.parse_cluster_secret_store({
        "kind": "ClusterSecretStore",
        "metadata": {"name": "platform", "creationTimestamp": _t(0)},
        "spec": {"KMS": {"endpoint": "kst-1.cryptoservice.kms.aliyuncs.com", "ca": "CA 9"}}})
    assert not cas.refused(cluster, _ca(9))


def test_an_invalid_store_takes_no_place() -> None:
    cas = PrivateCas(1, _identify, shaped.SHAPE)
    broken = _raw("broken", _t(0), 1)
    broken["spec"]["OOS"] = {}  # two providers: InvalidStore, it never makes a session
    cas.observe("ADDED", broken)
    assert not cas.refused(_store(_raw("good", _t(1), 2)), _ca(2))


# ------------------------------------------------------------------------ the property

_NAMES = [f"s{i}" for i in range(8)]
_EVENT = st.tuples(st.sampled_from(["put", "delete"]), st.sampled_from(_NAMES),
                   st.integers(0, 5), st.one_of(st.none(), st.integers(0, 5)))


@settings_(max_examples=300, deadline=None)
@given(st.integers(1, 4), st.lists(_EVENT, max_size=40))
def test_the_index_answers_what_the_rule_says_and_names_every_store_that_moved(
    limit: int, events: list[tuple[str, str, int, int | None]],
) -> None:
    """Any sequence of creations, changes and deletions (creation times collide, CAs repeat):
    after each, every store is refused exactly when the rule over the current stores says so,
    and the event names exactly the other stores whose answer changed."""
    cas = PrivateCas(limit, _identify, shaped.SHAPE)
    live: dict[str, tuple[str, int | None]] = {}  # name -> (created, ca)

    def answers() -> dict[str, bool]:
        places = [Place(created, n, _ca(ca)) for n, (created, ca) in live.items()
                  if ca is not None]
        allowed = allowed_cas(places, limit)
        return {n: _ca(ca) not in allowed for n, (_c, ca) in live.items() if ca is not None}

    for kind, name, second, ca in events:
        before = answers()
        created = live[name][0] if name in live else _t(second)  # creation time never moves
        if kind == "delete":
            if name not in live:
                continue
            moved = cas.observe("DELETED", _raw(name, created, live.pop(name)[1]))
        else:
            event = "MODIFIED" if name in live else "ADDED"
            live[name] = (created, ca)
            moved = cas.observe(event, _raw(name, created, ca))
        after = answers()
        for store, refused in after.items():
            ca_of = live[store][1]
            assert ca_of is not None
            assert cas.refused(_store(_raw(store, live[store][0], ca_of)), _ca(ca_of)) \
                == refused
            assert cas.allows(NS, store) is not refused
        expected = {n for n in set(before) | set(after) if n != name
                    and before.get(n) != after.get(n) and n in before and n in after}
        assert moved == expected
    for name, (created, ca) in list(live.items()):
        cas.observe("DELETED", _raw(name, created, ca))
    assert cas.sizes() == {"namespaces": 0, "stores": 0}
