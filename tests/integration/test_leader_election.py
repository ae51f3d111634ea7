"""Leader election on the real apiserver under faults: skewed clocks, one replica cut off,
and a stalled (SIGSTOPped) kube-apiserver.

Each replica is a LeaderElector with its own ApiClient plus a writer that writes a ConfigMap
only while the elector says it leads, and never starts a write that could outlast that
(`leading_for()`). Every write is logged with its replica and its start and end on this
process's monotonic clock; the tests assert that the write intervals of two replicas never
overlap. The control plane is this module's own: stalling the session's apiserver would
disturb other tests' watches.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.kube.client import api_client, without_retries
from controller.kube.leader import FAILURES, LeaderElector
from controller.kube.rest import MERGE, Rest
from tests.cluster import ControlPlane
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster

LEASE, RENEW, RETRY = 6.0, 4.0, 0.5  # roomy: a loaded 2-core CI machine
WRITE_TIMEOUT = 0.5
NS = "default"


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    cp = ControlPlane(with_controller_manager=False)
    cp.start()
    try:
        yield cp
    finally:
        proc = cp.procs.get("kube-apiserver")
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
        cp.stop()


class CutRest(Rest):
    """A Rest whose network can be cut: requests then hang for their timeout and fail."""

    def __init__(self, api: Any) -> None:
        super().__init__(api)
        self.cut = threading.Event()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self.cut.is_set():
            timeout = kwargs.get("timeout")
            time.sleep(float(timeout) if isinstance(timeout, (int, float)) else 1.0)
            raise OSError("network cut by the test")
        return super().request(method, path, **kwargs)


@dataclass
class Write:
    replica: str
    start: float
    end: float


@dataclass
class Replica:
    name: str
    rest: CutRest
    elector: LeaderElector
    writes: list[Write]
    done: threading.Event = field(default_factory=threading.Event)
    lost: int = 0
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for target in (self._lead, self._write):
            t = threading.Thread(target=target, name=f"{self.name}-{target.__name__}",
                                 daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self) -> None:
        self.done.set()
        self.elector.release()
        for t in self.threads:
            t.join(LEASE + 2)
        self.rest.api.close()

    def _lead(self) -> None:
        while not self.done.is_set():
            if not self.elector.acquire(self.done):
                return
            if self.elector.hold(self.done):
                return
            self.lost += 1

    def _write(self) -> None:
        path = f"/api/v1/namespaces/{NS}/configmaps/{self.elector.name}"
        while not self.done.wait(0.05):
            if self.elector.leading_for() <= WRITE_TIMEOUT:
                continue
            start = time.monotonic()
            # PATCH: urllib3 does not retry it, so the timeout bounds the call.
            with contextlib.suppress(*FAILURES):
                self.rest.request("PATCH", path, body={"data": {"writer": self.name}},
                                  content_type=MERGE, timeout=WRITE_TIMEOUT)
            self.writes.append(Write(self.name, start, time.monotonic()))


@pytest.fixture
def replicas(plane: ControlPlane) -> Iterator[Any]:
    made: list[Replica] = []
    writes: list[Write] = []
    lease = f"lease-{uuid.uuid4().hex[:6]}"
    admin = Rest(api_client(str(plane.kubeconfig)))
    admin.create(f"/api/v1/namespaces/{NS}/configmaps",
                 {"metadata": {"name": lease}, "data": {}})

    def make(name: str, offset: float = 0.0) -> Replica:
        # As the controller does: the Lease's own client, no urllib3 retries (kube/client.py).
        rest = CutRest(without_retries(api_client(str(plane.kubeconfig))))
        elector = LeaderElector(rest, namespace=NS, name=lease, identity=name,
                                lease_duration=LEASE, renew_deadline=RENEW,
                                retry_period=RETRY, clock_offset=offset)
        r = Replica(name, rest, elector, writes)
        made.append(r)
        r.start()
        return r

    try:
        yield make, writes, admin
    finally:
        for r in made:
            r.rest.cut.clear()
            r.stop()
        admin.api.close()


def holder(admin: Rest, r: Replica) -> str:
    lease = admin.get(f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{r.elector.name}")
    return str(lease.get("spec", {}).get("holderIdentity") or "")


def assert_no_overlap(writes: list[Write]) -> None:
    """No write of one replica overlaps in time with a write of another."""
    ordered = sorted(writes, key=lambda w: w.start)
    for i, w in enumerate(ordered):
        for other in ordered[i + 1:]:
            if other.start > w.end:
                break
            assert other.replica == w.replica, f"{w} overlaps {other}"


def test_skewed_clocks_do_not_steal_a_live_lease(replicas: Any) -> None:
    make, writes, admin = replicas
    a = make("a", offset=-60.0)  # its renewTime looks a minute old to everyone else
    wait_for(lambda: a.elector.leading, timeout=10, what="a leads")
    b = make("b", offset=+60.0)
    deadline = time.monotonic() + 2.5 * LEASE  # well past any expiry the timestamps suggest
    while time.monotonic() < deadline:
        assert not b.elector.leading, "b took a live Lease"
        assert a.lost == 0, "a lost its Lease"
        time.sleep(0.1)  # watching for something that must not happen: nothing to await
    assert holder(admin, a) == "a" and a.lost == 0
    assert {w.replica for w in writes} == {"a"}


def test_a_cut_off_leader_steps_down_before_the_standby_writes(replicas: Any) -> None:
    make, writes, admin = replicas
    a = make("a")
    wait_for(lambda: a.elector.leading and writes, timeout=10, what="a leads and writes")
    b = make("b")
    wait_for(lambda: len(writes) >= 5, timeout=10, what="writes by a")
    cut_at = time.monotonic()
    a.rest.cut.set()
    wait_for(lambda: a.lost == 1, timeout=RENEW + 2, what="a steps down")
    assert time.monotonic() - cut_at <= RENEW + 1.0
    wait_for(lambda: b.elector.leading and any(w.replica == "b" for w in writes),
             timeout=LEASE + RENEW + 5, what="b leads and writes")
    a.rest.cut.clear()
    wait_for(lambda: holder(admin, b) == "b", timeout=5, what="b holds the Lease")
    time.sleep(2 * RETRY)  # a is back and standing by; give it chances to misbehave
    assert not a.elector.leading
    assert_no_overlap(writes)


def test_a_stalled_apiserver_makes_the_leader_step_down(plane: ControlPlane,
                                                        replicas: Any) -> None:
    make, writes, _ = replicas
    a = make("a")
    wait_for(lambda: a.elector.leading and writes, timeout=10, what="a leads and writes")
    b = make("b")
    proc = plane.procs["kube-apiserver"]
    stalled_at = time.monotonic()
    proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: a.lost == 1, timeout=RENEW + 2, what="a steps down during the stall")
        stepped_down = time.monotonic() - stalled_at
        assert not a.elector.leading and not b.elector.leading
        wait_for(lambda: time.monotonic() - stalled_at > LEASE + 1, timeout=LEASE + 2,
                 what="the stall outlasting the lease")
    finally:
        proc.send_signal(signal.SIGCONT)
    assert stepped_down <= RENEW + 1.0
    wait_for(lambda: a.elector.leading or b.elector.leading, timeout=LEASE + RENEW + 5,
             what="a leader after the stall")
    wait_for(lambda: any(w.start > stalled_at + LEASE for w in writes), timeout=10,
             what="writes after the stall")
    assert not (a.elector.leading and b.elector.leading)
    assert_no_overlap(writes)
