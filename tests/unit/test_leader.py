"""Leader election against a fake Lease API: expiry by locally observed change (not by the
holder's clock), the renew deadline, stepping down on a stall, release and keep-renewing."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import pytest

from controller.kube.leader import LeaderElector, check_timing
from controller.kube.rest import ApiError
from tests.waiting import wait_for

PATH = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/lease"


class FakeLeases:
    """One Lease behind GET/PUT/POST with resourceVersion conflicts, and a stall switch."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.timeouts: list[float] = []
        self.writes: list[str] = []  # holderIdentity of every accepted write
        self.stalled = threading.Event()
        self.unstall = threading.Event()
        self.lock = threading.Lock()
        self.on_call: Any = lambda timeout: None

    def request(self, method: str, path: str, *, body: Any = None, timeout: Any = None,
                **_: Any) -> Any:
        self.timeouts.append(float(timeout))
        self.on_call(float(timeout))
        if self.stalled.is_set():
            self.unstall.wait(10)
            raise OSError("connection reset")
        with self.lock:
            if method == "GET":
                if self.lease is None:
                    raise ApiError(404, "NotFound")
                return copy.deepcopy(self.lease)
            if method == "POST":
                if self.lease is not None:
                    raise ApiError(409, "AlreadyExists")
                return self._store(body)
            assert method == "PUT" and path == PATH
            assert self.lease is not None
            if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict")
            return self._store(body)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.rv)
        self.writes.append(self.lease["spec"]["holderIdentity"])
        return copy.deepcopy(self.lease)

    @property
    def holder(self) -> str:
        return str((self.lease or {}).get("spec", {}).get("holderIdentity", ""))


class Mono:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def elector(api: FakeLeases, identity: str, mono: Any = time.monotonic, *,
            offset: float = 0.0, lease: float = 15.0, renew: float = 10.0,
            retry: float = 2.0) -> LeaderElector:
    return LeaderElector(api, namespace="ns", name="lease", identity=identity,  # type: ignore[arg-type]
                         lease_duration=lease, renew_deadline=renew, retry_period=retry,
                         monotonic=mono, clock_offset=offset)


def test_creates_the_lease_and_leads() -> None:
    api, mono = FakeLeases(), Mono()
    a = elector(api, "a", mono)
    assert a.try_acquire_or_renew(deadline=mono() + 10)
    assert api.holder == "a" and a.leading
    assert api.lease is not None and api.lease["spec"]["leaseTransitions"] == 0


def test_a_live_lease_is_not_taken_whatever_its_renew_time_says() -> None:
    """The holder's clock is an hour behind: its renewTime looks ancient, but it changes."""
    api, mono = FakeLeases(), Mono()
    a, b = elector(api, "a", mono, offset=-3600), elector(api, "b", mono, offset=+3600)
    assert a.try_acquire_or_renew(deadline=mono() + 10)
    for _ in range(20):
        assert not b.try_acquire_or_renew(deadline=mono() + 10)
        mono.t += 2.0
        assert a.try_acquire_or_renew(deadline=mono() + 10)
    assert api.holder == "a" and set(api.writes) == {"a"}


def test_the_lease_expires_a_lease_duration_after_its_last_observed_change() -> None:
    api, mono = FakeLeases(), Mono()
    a, b = elector(api, "a", mono), elector(api, "b", mono)
    assert a.try_acquire_or_renew(deadline=mono() + 10)
    assert not b.try_acquire_or_renew(deadline=mono() + 10)  # first sight: the clock starts
    mono.t += 14.9
    assert not b.try_acquire_or_renew(deadline=mono() + 10)
    assert not a.leading  # a stopped renewing 14.9 s ago: past its 10 s renew deadline
    mono.t += 0.2
    assert b.try_acquire_or_renew(deadline=mono() + 10)
    assert api.holder == "b" and api.lease is not None
    assert api.lease["spec"]["leaseTransitions"] == 1


def test_a_new_candidate_waits_a_whole_lease_even_for_an_old_record() -> None:
    """A record never seen change before is judged from when this candidate first saw it."""
    api, mono = FakeLeases(), Mono()
    a = elector(api, "a", mono, offset=-86400)  # a day-old renewTime
    assert a.try_acquire_or_renew(deadline=mono() + 10)
    b = elector(api, "b", mono)
    assert not b.try_acquire_or_renew(deadline=mono() + 10)
    mono.t += 14.0
    assert not b.try_acquire_or_renew(deadline=mono() + 10)


def test_a_released_lease_is_taken_at_once() -> None:
    api, mono = FakeLeases(), Mono()
    a, b = elector(api, "a", mono), elector(api, "b", mono)
    assert a.try_acquire_or_renew(deadline=mono() + 10)
    assert not b.try_acquire_or_renew(deadline=mono() + 10)
    a.release()
    assert api.holder == "" and not a.leading
    assert b.try_acquire_or_renew(deadline=mono() + 10)
    assert api.holder == "b"


def test_leadership_ends_renew_deadline_after_the_last_renew_began() -> None:
    api, mono = FakeLeases(), Mono()
    a = elector(api, "a", mono)
    assert a.try_acquire_or_renew(deadline=mono() + 10)
    mono.t += 9.9
    assert a.leading and a.leading_for() == pytest.approx(0.1)
    mono.t += 0.1
    assert not a.leading and a.leading_for() == 0.0


def test_per_call_timeouts_fit_inside_the_renew_deadline() -> None:
    api, mono = FakeLeases(), Mono()
    a = elector(api, "a", mono)
    assert a.try_acquire_or_renew(deadline=mono() + 10)
    api.timeouts.clear()

    def slow(timeout: float) -> None:  # every call uses all of its timeout
        mono.t += timeout

    api.on_call = slow
    start = mono()
    assert a.try_acquire_or_renew(deadline=start + 3.0)  # a renew (GET + PUT) with 3 s left
    assert len(api.timeouts) == 2 and mono() - start <= 3.0


def test_a_late_success_after_a_loss_is_void() -> None:
    api, mono = FakeLeases(), Mono()
    a = elector(api, "a", mono)
    assert a.try_acquire_or_renew(deadline=mono() + 10)
    assert not a.try_acquire_or_renew(deadline=mono() + 10, term=-1)  # begun in another term
    assert api.holder == "a"  # the write landed, but a does not believe it leads anew
    mono.t += 10
    assert not a.leading


@pytest.mark.parametrize(("lease", "renew", "retry", "flag"), [
    (10, 10, 2, "--lease-duration"), (15, 2, 2, "--renew-deadline"),
    (15, 10, 0, "--retry-period")])
def test_timing_is_checked(lease: float, renew: float, retry: float, flag: str) -> None:
    with pytest.raises(ValueError, match=flag):
        check_timing(lease, renew, retry)


def test_hold_steps_down_within_the_renew_deadline_when_the_apiserver_stalls() -> None:
    api = FakeLeases()
    a = elector(api, "a", lease=0.9, renew=0.6, retry=0.1)
    stop = threading.Event()
    assert a.acquire(stop)
    result: list[bool] = []
    holder = threading.Thread(target=lambda: result.append(a.hold(stop)))
    holder.start()
    try:
        wait_for(lambda: len(api.writes) >= 3, timeout=5, what="renews")
        stalled_at = time.monotonic()
        api.stalled.set()
        holder.join(5)
        took = time.monotonic() - stalled_at
        assert result == [False] and not a.leading
        assert took <= 0.6 + 0.4, f"stepped down {took:.2f}s after the stall"
    finally:
        api.unstall.set()
        stop.set()
        holder.join(5)


def test_hold_until_keeps_renewing_after_stop_until_release() -> None:
    api = FakeLeases()
    a = elector(api, "a", lease=0.9, renew=0.6, retry=0.1)
    stop, until = threading.Event(), threading.Event()
    assert a.acquire(stop)
    result: list[bool] = []
    holder = threading.Thread(target=lambda: result.append(a.hold(stop, until=until)))
    holder.start()
    stop.set()
    renews = len(api.writes)
    wait_for(lambda: len(api.writes) >= renews + 5, timeout=5, what="renews after stop")
    assert a.leading and holder.is_alive()
    a.release()
    holder.join(5)
    assert result == [True] and api.holder == ""
    writes = len(api.writes)
    time.sleep(0.3)  # the absence of renews after release: nothing to await
    assert len(api.writes) == writes


def test_hold_without_until_ends_on_stop() -> None:
    api = FakeLeases()
    a = elector(api, "a", lease=0.9, renew=0.6, retry=0.1)
    stop = threading.Event()
    assert a.acquire(stop)
    result: list[bool] = []
    holder = threading.Thread(target=lambda: result.append(a.hold(stop)))
    holder.start()
    stop.set()
    holder.join(5)
    assert result == [True]


def test_acquire_returns_false_when_stopped_while_standing_by() -> None:
    api, mono = FakeLeases(), Mono()
    assert elector(api, "a", mono).try_acquire_or_renew(deadline=mono() + 10)
    b = elector(api, "b", lease=0.9, renew=0.6, retry=0.1)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    assert not b.acquire(stop)
    assert api.holder == "a"
