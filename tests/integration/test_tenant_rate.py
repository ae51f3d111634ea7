"""One tenant asking for more KMS reads than an endpoint's rate allows takes one identity's
share of it (issue 18; found by a black-box attempt, 2026-12-07).

Calls per endpoint are limited for the whole controller (--max-concurrent-kms-secret-pulls,
10/s by default). A tenant with many ExternalSecrets each reading a KMS secret of its own asks
for more than that. Before, every one of its reads reserved a start time in one queue, and
another tenant's read waited behind all of them: 4.4 s at steady state against a 0.1 s
baseline. Now one identity holds at most `RateLimiter.per_caller` places (1 at 10/s) and each
start time goes to the caller served least recently: another tenant's read starts at the next
start time, within one period (0.11 s; 0.055 s on average)."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.fakecloud import FakeCloud
from tests.integration.conftest import K8s
from tests.waiting import wait_for

HOSTILE = 150  # their first reads alone keep the endpoint busy for 15 s at 10/s
PERIOD = 1.1 / 10  # RateLimiter at 10 calls/s: a start every 110 ms


def _es(name: str, key: str, refresh: str = "", store: str = "store") -> dict[str, Any]:
    spec: dict[str, Any] = {"data": [{"key": key, "name": "v",
                                      "secretStoreRef": {"name": store}}]}
    if refresh:
        spec["refreshInterval"] = refresh
    return {"kind": "ExternalSecret", "metadata": {"name": name}, "spec": spec}


def _kms_change_time(k8s: K8s, cloud: FakeCloud, ns: str, n: int) -> float:
    """Seconds from a KMS change and a force-sync (a fresh read) to the other tenant's Secret."""
    cloud.put_secret("other-db", f"pw-{n}")
    started = time.monotonic()
    k8s.patch(ns, "externalsecrets", "steady",
              {"metadata": {"annotations": {"alibabacloud.com/force-sync": str(n)}}})
    wait_for(lambda: (k8s.secret_data(ns, "steady") or {}).get("v") == f"pw-{n}",
             timeout=60, what=f"KMS change {n}", interval=0.02)
    return time.monotonic() - started


@pytest.mark.parametrize("identities", [1, 10])
def test_a_tenant_asking_for_more_reads_than_the_rate_takes_one_tenants_share(
    k8s: K8s, cloud: FakeCloud, namespace: str, other_namespace: str,
    start_controller: Callable[..., Any], identities: int,
) -> None:
    """With 10 identities of its own (AccessKeys, one store each) the tenant is still one
    caller: the rate is shared by namespace. Before, fairness was per identity, and a tenant
    with 20 AccessKeys took 94% of the calls while another tenant's reads took 1.8 s each
    (a black-box attempt, 2026-12-07)."""
    cloud.put_secret("other-db", "pw-0")
    for i in range(HOSTILE):
        cloud.put_secret(f"mine-{i}", "x")
    k8s.access_key_store(other_namespace)
    # The hostile tenant has AccessKeys (RAM identities) of its own.
    for n in range(identities):
        key_id, secret = f"LTAI5tHostileKey{n:04d}", f"HostileKeySecretValue0000{n:04d}"
        cloud.add_access_key(key_id, secret, "hostile")
        k8s.core.create_namespaced_secret(namespace, {
            "metadata": {"name": f"store-ak-{n}"}, "stringData": {"id": key_id, "secret": secret}})
        k8s.create(namespace, "secretstores", {
            "kind": "SecretStore", "metadata": {"name": f"store-{n}"},
            "spec": {"KMS": {"KMSAuth": {
                "accessKey": {"name": f"store-ak-{n}", "key": "id"},
                "accessKeySecret": {"name": f"store-ak-{n}", "key": "secret"}}}}})
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    k8s.create(other_namespace, "externalsecrets", _es("steady", "other-db"))
    wait_for(lambda: k8s.secret_data(other_namespace, "steady") == {"v": "pw-0"}, timeout=60,
             what="first sync")
    baseline = statistics.median(_kms_change_time(k8s, cloud, other_namespace, n)
                                 for n in range(1, 6))
    for i in range(HOSTILE):
        k8s.create(namespace, "externalsecrets",
                   _es(f"h-{i}", f"mine-{i}", "10s", store=f"store-{i % identities}"))
    # The endpoint is saturated once the hostile reads keep coming.
    wait_for(lambda: cloud.calls("GetSecretValue", identity="hostile") >= 20, timeout=60,
             what="the hostile reads under way")
    hostile_before = cloud.calls("GetSecretValue", identity="hostile")
    # The changes come at random moments of the limiter's period, as users' do: one after
    # another they would lock onto one phase of it (each took two periods, always arriving
    # just after a start time was taken).
    phase = random.Random(18)
    during = []
    window = time.monotonic()
    for n in range(10, 19):
        time.sleep(phase.uniform(0, PERIOD))
        during.append(_kms_change_time(k8s, cloud, other_namespace, n))
    window = time.monotonic() - window
    hostile_during = cloud.calls("GetSecretValue", identity="hostile") - hostile_before
    print(f"baseline {baseline:.3f}s, during {[round(d, 3) for d in during]}, hostile reads "
          f"meanwhile {hostile_during}, peak KMS rate {cloud.peak_rate(arrival=True):.1f}/s "
          f"on arrival")
    # The endpoint was at its rate throughout, the hostile reads taking every start time the
    # other tenant did not (else this proves nothing) ...
    assert hostile_during + len(during) >= 0.8 * window / PERIOD, (hostile_during, window)
    # ... and never above it, counted on arrival as a service counts. The limiter spaces
    # starts so that rate + 1 of them span 1.1 s; with one core kept busy a call once reached
    # the fake more than 100 ms late (11 completions in a second, 2026-12-07), so one more
    # than the rate is allowed, as in test_identities' burst: rate + 2 takes 0.32 s of delay,
    # and a limiter with a burst (a bucket of `rate` tokens: 2 * rate - 1) still fails.
    assert 9.0 <= cloud.peak_rate(arrival=True) <= 11.0
    # Within twice the baseline: a read that finds the endpoint at its rate waits for the
    # next start time, at most one period (so the baseline counts as at least one period).
    # Before: 4.4 s; with a place per identity but start times in arrival order, two periods.
    assert statistics.median(during) <= 2 * max(baseline, PERIOD), (baseline, during)
