"""Unit tests for controller.engine.fetcher on the fake clock: one read per distinct secret
while fresh, single flight, and a failure back-off shared by every ExternalSecret that uses the
same read (fairness: a broken secret costs one call per back-off step, not one per retry)."""

from __future__ import annotations

from controller.alicloud.errors import FetchError, Kind
from controller.alicloud.identity import ACCESS_KEY, Identity
from controller.alicloud.kms import Endpoint
from controller.engine.clock import FakeClock
from controller.engine.fetcher import Fetcher, FetchRequest
from tests.fakes import FakeKms

REQUEST = FetchRequest(Identity(ACCESS_KEY, access_key_id="id"), Endpoint("kms.example"), "db")


def test_a_fresh_value_is_read_once() -> None:
    kms, clock = FakeKms(), FakeClock()
    kms.values["db"] = "pw"
    fetcher = Fetcher(kms, clock)
    for _ in range(10):
        assert fetcher.fetch(REQUEST, 60.0).data == b"pw"  # type: ignore[union-attr]
    clock.advance(61)
    fetcher.fetch(REQUEST, 60.0)
    assert kms.reads == ["db", "db"]


def test_failures_back_off_per_read_and_a_success_resets_it() -> None:
    kms, clock = FakeKms(), FakeClock()
    kms.fail["db"] = FetchError(Kind.THROTTLED, "Throttling", "Throttling")
    fetcher = Fetcher(kms, clock)
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
    kms, clock = FakeKms(), FakeClock()
    kms.fail["db"] = FetchError(Kind.TRANSIENT, "InternalFailure", "500")
    fetcher = Fetcher(kms, clock)
    for _ in range(12):
        fetcher.fetch(REQUEST, 5.0)
        clock.advance(5.01)
    assert len(kms.reads) >= 10  # capped at the 5 s interval, not doubling past it
