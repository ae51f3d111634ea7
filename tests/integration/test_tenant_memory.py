"""Issue 18, what stays: one namespace's objects hold at most --namespace-cache-bytes of each
of the controller's caches. Against the real controller process: a tenant creates 60
ExternalSecrets of ~0.5 MB (within the CRD's bounds) and 16 Secrets of ~0.9 MB carrying the
controller's managed-by label. Before, the controller cached all of them whole (200 such
objects took it from 89 to 327 MiB); now what it holds stays near its budget, the objects
past it report NamespaceCacheFull naming the flag, another tenant keeps syncing (within twice
its baseline once they are in; while ~30 MB arrive the apiserver itself is the bottleneck),
what had synced keeps its data, and a deletion lets a refused object sync."""

from __future__ import annotations

import re
import statistics
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from controller.names import MANAGED_BY, MANAGER
from tests.cluster import free_port
from tests.fakecloud import FakeCloud
from tests.integration.conftest import K8s
from tests.integration.tenancy import (
    BASELINE_FLOOR,
    CHART_LIMIT_MIB,
    RssWatch,
    change_time,
    rss_mib,
    templated,
)
from tests.waiting import wait_for

BUDGET = 1 << 20  # the flag's smallest value: 2 such ExternalSecrets fit
BIG_ES, BIG_SECRETS = 60, 16
# Without the bound the objects below stay in the cache: ~60 x 0.5 MB + 16 x 1.2 MB (base64)
# ~ 50 MB of JSON: measured 84 -> 160 MiB. With it: two budgets (1 MiB each) and what parsing
# leaves in Python's arenas: measured 84 -> 90 MiB.
HELD_TOLERANCE_MIB = 24
# While ~30 MB of objects arrive the apiserver itself is slow (a bare ConfigMap create took up
# to 0.26 s against 0.01 s) and every watcher of ExternalSecrets reads them in order: the
# other tenant's changes took 0.1-1.1 s then, with or without the bound. No change may stall.
ARRIVAL_MAX = 5.0


def big_es(name: str) -> dict[str, Any]:
    """~0.5 MB: 64 data templates of 4,000 characters and a 240 KB annotation."""
    body = templated(name, {"data": {f"k{i}": "{{ .db }}" + "x" * 3990 for i in range(64)}})
    body["metadata"]["annotations"] = {"pad": "p" * 240_000}
    return body


def _metric(port: int, name: str, resource: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = re.search(rf'^ack_secret_manager_{name}{{resource="{resource}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def _reason(k8s: K8s, ns: str, name: str) -> dict[str, Any]:
    return k8s.ready(ns, name) or {}


def test_a_namespace_holds_at_most_its_budget_of_the_controllers_caches(
    k8s: K8s, cloud: FakeCloud, namespace: str, other_namespace: str,
    start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("db", "pw")
    for ns in (namespace, other_namespace):
        k8s.access_key_store(ns)
    port = free_port()
    controller = start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval",
                                  "1h", "--namespace-cache-bytes", str(BUDGET),
                                  "--metrics-bind-address", f"127.0.0.1:{port}")
    pid = controller.proc.pid
    k8s.create(other_namespace, "externalsecrets",
               templated("steady", {"data": {"db": "{{ .db }}-0"}}))
    k8s.create(namespace, "externalsecrets", big_es("big-000"))  # synced while it fits
    wait_for(lambda: k8s.secret_data(other_namespace, "steady") == {"db": "pw-0"}, timeout=60,
             what="the other tenant's first sync")
    wait_for(lambda: (k8s.secret_data(namespace, "big-000") or {}).get("k0", "").startswith(
        "pwxxx"), timeout=60, what="the tenant's first big ExternalSecret synced")
    synced = k8s.secret_data(namespace, "big-000")
    baseline = statistics.median(change_time(k8s, other_namespace, "steady", n)
                                 for n in range(1, 8))
    before = rss_mib(pid)

    with RssWatch(pid) as rss:
        arrival = []
        with ThreadPoolExecutor(4) as pool:
            for batch in range(4):
                per = BIG_SECRETS // 4
                list(pool.map(lambda s: k8s.core.create_namespaced_secret(namespace, {
                    "metadata": {"name": f"labelled-{s}", "labels": {MANAGED_BY: MANAGER}},
                    "stringData": {"pad": "s" * 900_000}}), range(batch * per, (batch + 1) * per)))
                list(pool.map(lambda i: k8s.create(namespace, "externalsecrets",
                                                   big_es(f"big-{i:03d}")),
                              range(1 + batch * 15, 1 + (batch + 1) * 15)))
                arrival.append(change_time(k8s, other_namespace, "steady", 10 + batch))
        last = f"big-{BIG_ES:03d}"
        cond = wait_for(lambda: _reason(k8s, namespace, last).get("reason") ==
                        "NamespaceCacheFull" and _reason(k8s, namespace, last), timeout=120,
                        what=f"{last}: NamespaceCacheFull")
        wait_for(lambda: _metric(port, "cache_over_budget_objects", "secrets") >= BIG_SECRETS,
                 timeout=60, what="the labelled Secrets counted over the budget")
        held = {r: _metric(port, "cache_bytes", r) for r in ("externalsecrets", "secrets")}
        after = rss_mib(pid)
        # Once they are there, refused, the other tenant is back at its pace.
        during = statistics.median(change_time(k8s, other_namespace, "steady", n)
                                   for n in range(20, 27))
    print(f"RSS {before:.0f} -> {after:.0f} MiB (peak {rss.peak:.0f}); held {held}; "
          f"baseline {baseline:.3f}s, while arriving {arrival}, after {during:.3f}s")
    assert cond["status"] == "False", cond
    assert f"ExternalSecret {namespace}/{last}" in cond["message"], cond
    assert "--namespace-cache-bytes" in cond["message"], cond
    assert "x" * 20 not in cond["message"] and "p" * 20 not in cond["message"], cond
    # What stays: the budget per cache (and what parsing left behind), not the objects.
    # (a held object keeps its place when the controller's own status on it grows: +2-3%)
    assert all(size <= BUDGET * 1.1 for size in held.values()), held
    assert after - before < HELD_TOLERANCE_MIB, (before, after)
    assert rss.peak < CHART_LIMIT_MIB, rss.peak
    # The other tenant never stalls while they arrive, and keeps its pace once they are in ...
    assert max(arrival) < ARRIVAL_MAX, (baseline, arrival)
    assert during <= 2 * max(baseline, BASELINE_FLOOR), (baseline, during)
    # ... and what had synced keeps its data.
    assert k8s.secret_data(namespace, "big-000") == synced

    # Deleting refused objects frees nothing; deleting a held one makes room, and the refused
    # one that now fits is read again and syncs.
    for i in [*range(2, BIG_ES), 1]:
        k8s.custom.delete_namespaced_custom_object(
            "alibabacloud.com", "v1alpha1", namespace, "externalsecrets", f"big-{i:03d}")
    wait_for(lambda: (k8s.secret_data(namespace, last) or {}).get("k0", "").startswith("pwx"),
             timeout=90, what=f"{last} synced once room was made")


VALUES_BOUND = 2 << 20
VALUE_OBJECTS = 8  # of 100 entries of 60 KB: 48 MB of values
TENANT_AK = ("LTAI5tTenantKeyId0002", "TenantKeySecretValue000000002")


def test_values_read_for_a_tenant_take_at_most_the_value_cache_bound(
    k8s: K8s, cloud: FakeCloud, namespace: str, other_namespace: str,
    start_controller: Callable[..., Any],
) -> None:
    """Before, every value read stayed while an object used it: 8 ExternalSecrets of 100
    entries of 60 KB values held 48 MB of values (RSS 80 -> 134 MiB), though each Secret
    would be over its 1 MiB limit (InvalidSecret). Now the values together stay within
    --value-cache-bytes, the tenant's own values are let go first, the other tenant's value
    stays cached (its syncs cost no extra call), and the copies the syncs made go back to the
    kernel."""
    cloud.put_secret("db", "pw")
    for i in range(VALUE_OBJECTS * 100):
        cloud.put_secret(f"big-{i}", "v" * 60_000)
    k8s.access_key_store(other_namespace)
    # The tenant signs with an AccessKey of its own (values are let go per identity).
    cloud.add_access_key(TENANT_AK[0], TENANT_AK[1], "app")
    k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "own-ak"}, "stringData": {
        "id": TENANT_AK[0], "secret": TENANT_AK[1]}})
    k8s.create(namespace, "secretstores", {"kind": "SecretStore", "metadata": {"name": "store"},
                                           "spec": {"KMS": {"KMSAuth": {
                                               "accessKey": {"name": "own-ak", "key": "id"},
                                               "accessKeySecret": {"name": "own-ak",
                                                                   "key": "secret"}}}}})
    port = free_port()
    controller = start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval",
                                  "1h", "--max-concurrent-kms-secret-pulls", "1000",
                                  "--value-cache-bytes",
                                  __import__("os").environ.get("XB", str(VALUES_BOUND)),
                                  "--metrics-bind-address", f"127.0.0.1:{port}")
    pid = controller.proc.pid
    k8s.create(other_namespace, "externalsecrets",
               templated("steady", {"data": {"db": "{{ .db }}-0"}}))
    wait_for(lambda: k8s.secret_data(other_namespace, "steady") == {"db": "pw-0"}, timeout=60,
             what="the other tenant's first sync")
    before = rss_mib(pid)
    for n in range(VALUE_OBJECTS):
        k8s.create(namespace, "externalsecrets", {
            "kind": "ExternalSecret", "metadata": {"name": f"values-{n}"},
            "spec": {"data": [{"key": f"big-{n * 100 + i}", "name": f"k{i}",
                               "secretStoreRef": {"name": "store"}} for i in range(100)]}})
    for n in range(VALUE_OBJECTS):
        cond = wait_for(lambda n=n: (k8s.ready(namespace, f"values-{n}") or {}).get(
            "reason") == "InvalidSecret" and k8s.ready(namespace, f"values-{n}"),
            timeout=120, what=f"values-{n}: InvalidSecret (over 1 MiB)")
        assert "v" * 20 not in cond["message"], cond
    held = _metric(port, "cache_bytes", "values")
    print(f"values held {held:.0f} bytes; RSS {before:.0f} -> {rss_mib(pid):.0f} MiB")
    assert 0 < held <= VALUES_BOUND, held
    # What the syncs copied is garbage once they end, and goes back to the kernel (a heavy
    # sync trims the heap, at most every 5 s: measured 122 -> 86 MiB). Without the bound
    # the 48 MB of values stay (134 MiB).
    wait_for(lambda: rss_mib(pid) - before < HELD_TOLERANCE_MIB, timeout=30,
             what=f"RSS back within {HELD_TOLERANCE_MIB} MiB of {before:.0f} MiB")
    # The other tenant's value was never let go: its next change is answered from the cache.
    reads = cloud.calls("GetSecretValue", secret="db")
    assert change_time(k8s, other_namespace, "steady", 1) < 2.0
    assert cloud.calls("GetSecretValue", secret="db") == reads


def test_entries_with_endpoints_of_their_own_count_the_clients_they_need(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    """Each distinct endpoint host an entry names (kmsEndpoint) makes the controller keep an
    SDK client and session while the object lives (~0.13 MiB): 20,000 tiny ExternalSecrets
    fit in a namespace's bytes, and each could name a host of its own under aliyuncs.com. A
    distinct (store, kmsEndpoint) of a namespace now counts 128 KiB against
    --namespace-cache-bytes: at the smallest bound, 7 of them; the rest report
    NamespaceCacheFull and are not read."""
    port = int(cloud.kms_endpoint.rsplit(":", 1)[1])
    cloud.put_secret("db", "pw")
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h",
                     "--allow-http-endpoints", "--allowed-endpoints", "*.1",
                     "--namespace-cache-bytes", str(BUDGET))
    hosts = 16
    for i in range(hosts):
        # 127.0.0.1 spelled 16 ways: distinct hosts, all the fake cloud
        host = f"127.{'0' * (1 + i // 4)}.{'0' * (1 + i % 4)}.1:{port}"
        k8s.create(namespace, "externalsecrets", {
            "kind": "ExternalSecret", "metadata": {"name": f"via-{i:02d}"},
            "spec": {"data": [{"key": "db", "name": "db", "kmsEndpoint": host,
                               "secretStoreRef": {"name": "store"}}]}})

    def reasons() -> list[str]:
        return [(k8s.ready(namespace, f"via-{i:02d}") or {}).get("reason", "")
                for i in range(hosts)]

    wait_for(lambda: all(reasons()), timeout=90, what="every ExternalSecret reported")
    found = reasons()
    # Those held are read (the fake speaks plain HTTP there, so their reads fail: what is
    # counted is the client each needs); the others are not read at all.
    served = [r for r in found if r != "NamespaceCacheFull"]
    assert 1 <= len(served) <= BUDGET // (128 << 10), found
    full = next(i for i, r in enumerate(found) if r == "NamespaceCacheFull")
    message = (k8s.ready(namespace, f"via-{full:02d}") or {}).get("message", "")
    assert "with the clients it needs" in message and "--namespace-cache-bytes" in message


STUBS = 600


def test_room_made_in_one_namespace_never_holds_another_namespaces_events(
    k8s: K8s, cloud: FakeCloud, namespace: str, other_namespace: str,
    start_controller: Callable[..., Any],
) -> None:
    """Found by a black-box attempt: a tenant fills its bound with two big ExternalSecrets,
    adds 1,500 tiny ones (stubs), then deletes a big one: the stubs that now fit were read
    again one GET at a time on the watch's thread, which serves every namespace, and another
    tenant's change waited 4 s (11 s with 900 stubs read). They are read on a thread of
    their own now."""
    cloud.put_secret("db", "pw")
    for ns in (namespace, other_namespace):
        k8s.access_key_store(ns)
    port = free_port()
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h",
                     "--namespace-cache-bytes", str(BUDGET),
                     "--metrics-bind-address", f"127.0.0.1:{port}")
    k8s.create(other_namespace, "externalsecrets",
               templated("steady", {"data": {"db": "{{ .db }}-0"}}))
    wait_for(lambda: k8s.secret_data(other_namespace, "steady") == {"db": "pw-0"}, timeout=60,
             what="the other tenant's first sync")
    baseline = statistics.median(change_time(k8s, other_namespace, "steady", n)
                                 for n in range(1, 6))
    for name in ("aa-big-0", "aa-big-1"):
        body = big_es(name)
        k8s.create(namespace, "externalsecrets", body)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: k8s.create(namespace, "externalsecrets", templated(
            f"s-{i:04d}", {"data": {"db": "{{ .db }}"}})), range(STUBS)))
    # the two big ones fill ~0.95 MiB: ~200 tiny ones fit beside them, the rest are stubs
    wait_for(lambda: _metric(port, "cache_over_budget_objects", "externalsecrets") >= 300,
             timeout=60, what="the tiny ExternalSecrets past the bound held as stubs")
    # Everything settled: the stubs' NamespaceCacheFull status writes are done.
    wait_for(lambda: (k8s.ready(namespace, f"s-{STUBS - 1:04d}") or {}).get("reason") ==
             "NamespaceCacheFull", timeout=120, what="the last stub reported")
    k8s.delete(namespace, "externalsecrets", "aa-big-0")  # room for ~450 of them
    after = [change_time(k8s, other_namespace, "steady", n) for n in range(10, 14)]
    stubbed = _metric(port, "cache_over_budget_objects", "externalsecrets")
    wait_for(lambda: _metric(port, "cache_over_budget_objects", "externalsecrets") == 0,
             timeout=60, what=f"the {stubbed:.0f} stubs read again once room was made")
    print(f"baseline {baseline:.3f}s, right after the room was made {after}")
    assert max(after) < 1.0, (baseline, after)
