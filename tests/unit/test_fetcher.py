"""Unit tests for controller.externalsecret.fetcher on the fake clock: one read per distinct secret
while fresh, single flight, and a failure back-off shared by every ExternalSecret that uses the
same read (fairness: a broken secret costs one call per back-off step, not one per retry)."""

from __future__ import annotations

from controller.externalsecret.fetcher import Fetcher, FetchRequest
from controller.providers import FetchError, Kind
from controller.providers.fake import FakeClient, FakeProvider, serving
from controller.runtime.clock import FakeClock

REQUEST = FetchRequest(FakeClient("id", "kms.example"), "db")


def test_a_fresh_value_is_read_once() -> None:
    kms, clock = FakeProvider(), FakeClock()
    kms.values["db"] = "pw"
    fetcher = Fetcher(serving(kms), clock)
    for _ in range(10):
        assert fetcher.fetch(REQUEST, 60.0).data == b"pw"  # type: ignore[union-attr]
    clock.advance(61)
    fetcher.fetch(REQUEST, 60.0)
    assert kms.reads == ["db", "db"]


def test_failures_back_off_per_read_and_a_success_resets_it() -> None:
    kms, clock = FakeProvider(), FakeClock()
    kms.fail["db"] = FetchError(Kind.THROTTLED, "Throttling", "Throttling")
    fetcher = Fetcher(serving(kms), clock)
    times = []
    # Many ExternalSecrets retrying every half second for a minute.
    for step in range(120):
        before = len(kms.reads)
        result = fetcher.fetch(REQUEST, 600.0)
        assert isinstance(result, FetchError)
        if len(kms.reads) > before:
            times.append(step / 2)
        clock.advance(0.5)
    # 2, 4, 8, 16, 32 s apart: 6 calls in a minute, not 120.
    assert times == [0.0, 2.0, 6.0, 14.0, 30.0]
    del kms.fail["db"]
    kms.values["db"] = "pw"
    clock.advance(64)
    assert not isinstance(fetcher.fetch(REQUEST, 600.0), FetchError)
    kms.fail["db"] = FetchError(Kind.TRANSIENT, "ServiceUnavailable", "503")
    clock.advance(601)
    fetcher.fetch(REQUEST, 600.0)
    clock.advance(2.1)
    fetcher.fetch(REQUEST, 600.0)  # back to the first step: 2 s
    assert len(kms.reads) == 8


def test_the_back_off_never_outlasts_the_readers_interval() -> None:
    kms, clock = FakeProvider(), FakeClock()
    kms.fail["db"] = FetchError(Kind.TRANSIENT, "InternalFailure", "500")
    fetcher = Fetcher(serving(kms), clock)
    for _ in range(12):
        fetcher.fetch(REQUEST, 5.0)
        clock.advance(5.01)
    assert len(kms.reads) >= 10  # capped at the 5 s interval, not doubling past it


# ------------------------------------------------------------ what stays (--value-cache-bytes)
MIB = 1 << 20


def _as(who: str, name: str) -> FetchRequest:
    return FetchRequest(FakeClient(who, "kms.example"), name)


def test_values_past_the_bound_are_let_go_the_largest_holders_first() -> None:
    kms, clock = FakeProvider(), FakeClock()
    fetcher = Fetcher(serving(kms), clock, max_bytes=MIB)
    kms.values.update({f"v{i}": "x" * 60_000 for i in range(40)})
    kms.values["mine"] = "pw"
    fetcher.fetch(_as("victim", "mine"), 3600.0)
    for i in range(40):  # a tenant's identity reads 2.4 MB of values
        fetcher.fetch(_as("hostile", f"v{i}"), 3600.0)
    assert fetcher.value_bytes <= MIB
    assert fetcher.evictions >= 20
    # The other identity's value stayed: read once, answered from the cache.
    assert fetcher.fetch(_as("victim", "mine"), 3600.0).data == b"pw"  # type: ignore[union-attr]
    assert kms.reads.count("mine") == 1
    # The hostile identity's oldest values went first; reading one again costs one call.
    assert fetcher.peek(_as("hostile", "v0")) is None
    assert fetcher.peek(_as("hostile", "v39")) is not None
    fetcher.fetch(_as("hostile", "v0"), 3600.0)
    assert kms.reads.count("v0") == 2


def test_a_value_read_recently_is_kept_before_an_older_one_of_the_same_identity() -> None:
    kms, clock = FakeProvider(), FakeClock()
    fetcher = Fetcher(serving(kms), clock, max_bytes=MIB)
    kms.values.update({f"v{i}": "x" * 300_000 for i in range(4)})
    for i in range(3):
        fetcher.fetch(_as("t", f"v{i}"), 3600.0)
    fetcher.fetch(_as("t", "v0"), 3600.0)  # a cache hit: now the most recently used
    fetcher.fetch(_as("t", "v3"), 3600.0)
    assert fetcher.peek(_as("t", "v0")) is not None and fetcher.peek(_as("t", "v1")) is None


def test_dropped_and_failed_reads_hold_no_bytes() -> None:
    kms, clock = FakeProvider(), FakeClock()
    fetcher = Fetcher(serving(kms), clock, max_bytes=MIB)
    kms.values["a"] = "x" * 1000
    fetcher.fetch(_as("t", "a"), 1.0)
    assert fetcher.value_bytes > 1000
    kms.fail["a"] = FetchError(Kind.TRANSIENT, "InternalFailure", "500")
    clock.advance(2)
    fetcher.fetch(_as("t", "a"), 1.0)
    assert fetcher.value_bytes == 0
    del kms.fail["a"]
    clock.advance(10)
    fetcher.fetch(_as("t", "a"), 1.0)
    fetcher.drop(_as("t", "a"))
    assert fetcher.value_bytes == 0 and not fetcher._held and not fetcher._held_bytes


def test_a_tenant_spreading_its_values_over_identities_still_evicts_its_own() -> None:
    """Eviction goes by tenant (the namespace that read), not by identity: otherwise a
    tenant with 10 identities holding a little each would make a victim with one larger
    value the largest holder."""
    from controller.providers import on_behalf_of

    kms, clock = FakeProvider(), FakeClock()
    fetcher = Fetcher(serving(kms), clock, max_bytes=MIB)
    kms.values["mine"] = "m" * 200_000
    kms.values.update({f"v{i}": "x" * 60_000 for i in range(30)})
    with on_behalf_of("victim"):
        fetcher.fetch(_as("victim", "mine"), 3600.0)
    with on_behalf_of("hostile"):
        for i in range(30):
            fetcher.fetch(_as(f"hostile-{i % 10}", f"v{i}"), 3600.0)
    assert fetcher.value_bytes <= MIB
    assert fetcher.peek(_as("victim", "mine")) is not None
