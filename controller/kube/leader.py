"""Leader election on a coordination.k8s.io Lease with client-go's semantics: one active
replica, the others standing by with warm caches.

Why it is shaped this way:

- Expiry is judged by local monotonic time, never by comparing the holder's `renewTime` with
  our wall clock (clocks of two machines can be far apart). A candidate remembers the Lease
  record it last saw and when (on its own monotonic clock) the record last changed; the Lease
  is free once the record has not changed for its `leaseDurationSeconds`, or when its holder
  is empty (released).
- The leader is sure of its leadership only until `renew_deadline` after the start of its
  last successful renew. `renew_deadline` is shorter than `lease_duration`, so the leader
  stops (`leading` turns False, `hold` returns False) before any candidate, which waits a full
  `lease_duration` after it *observed* that renew, may take over. The difference is the margin
  for a write that started just before the deadline.
- Every attempt (GET + PUT) runs on its own short-lived thread and is waited for only until
  the deadline, so a stalled apiserver cannot stretch it: the per-call timeouts are cut to
  the time left as well. The Lease's client makes each call once (urllib3 would retry a timed
  out GET or PUT three times, each with the full timeout, holding the one-call lock past the
  deadline: kube/client.py `without_retries`), so the next attempt starts in time.
- On shutdown the leader can keep renewing after `stop` until its caller says it is done
  (`hold(stop, until=...)`), then `release()` empties the holder so a standby takes over at
  its next retry instead of waiting for the Lease to expire.

`clock_offset` shifts this replica's wall clock (the timestamps it writes): tests use it to
prove that skewed clocks do not matter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3

from controller.kube.rest import LEASES, ApiError, Rest

log = logging.getLogger(__name__)
# The renew loop's failures have a logger of their own: only they are folded with their
# repeats (ops/lognoise.py); "became leader", "lost leadership" are never folded.
retries = logging.getLogger(__name__ + ".retries")

JITTER = 1.2  # client-go: renew_deadline must exceed retry_period * this
MIN_CALL_TIMEOUT = 0.05
RELEASE_TIMEOUT = 2.0
# What one call can fail with: an answer, the socket, urllib3 (after its retries), bad JSON.
FAILURES = (ApiError, OSError, urllib3.exceptions.HTTPError, ValueError)


def _now() -> datetime:
    return datetime.now(UTC)


def _fmt(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_timing(lease_duration: float, renew_deadline: float, retry_period: float) -> None:
    """Raise ValueError unless lease_duration > renew_deadline > retry_period * 1.2 > 0."""
    if retry_period <= 0:
        raise ValueError(f"--retry-period must be positive (got {retry_period}s)")
    if renew_deadline <= retry_period * JITTER:
        raise ValueError(f"--renew-deadline ({renew_deadline}s) must be longer than "
                         f"{JITTER} x --retry-period ({retry_period}s); raise it")
    if lease_duration <= renew_deadline:
        raise ValueError(f"--lease-duration ({lease_duration}s) must be longer than "
                         f"--renew-deadline ({renew_deadline}s); raise --lease-duration")


@dataclass(frozen=True)
class Record:
    """The Lease fields leader election compares (client-go's LeaderElectionRecord)."""

    holder: str
    duration: float
    acquire_time: str
    renew_time: str
    transitions: int

    @classmethod
    def of(cls, spec: dict[str, Any], default_duration: float) -> Record:
        return cls(holder=str(spec.get("holderIdentity") or ""),
                   duration=float(spec.get("leaseDurationSeconds") or default_duration),
                   acquire_time=str(spec.get("acquireTime") or ""),
                   renew_time=str(spec.get("renewTime") or ""),
                   transitions=int(spec.get("leaseTransitions") or 0))

    def spec(self) -> dict[str, Any]:
        return {"holderIdentity": self.holder, "leaseDurationSeconds": max(1, int(self.duration)),
                "acquireTime": self.acquire_time, "renewTime": self.renew_time,
                "leaseTransitions": self.transitions}


class LeaderElector:
    """Acquire, hold and release one Lease as `identity`."""

    def __init__(
        self,
        rest: Rest,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], datetime] = _now,
        monotonic: Callable[[], float] = time.monotonic,
        clock_offset: float = 0.0,
    ) -> None:
        check_timing(lease_duration, renew_deadline, retry_period)
        self.rest = rest
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock
        self.monotonic = monotonic
        self.clock_offset = clock_offset
        self.transitions_seen = 0
        self._calls = threading.Lock()  # one attempt (or the release) talks to the API at once
        self._lock = threading.Lock()  # guards the fields below
        self._observed: Record | None = None
        self._observed_at = 0.0
        self._valid_until = 0.0  # monotonic; leading only before this
        self._term = 0  # bumped on loss and release: late answers of older attempts are void
        self._leading = False
        self._released = False

    # ------------------------------------------------------------- queries
    @property
    def leading(self) -> bool:
        """Whether this replica is surely the only leader right now."""
        with self._lock:
            return self._leading and self.monotonic() < self._valid_until

    def leading_for(self) -> float:
        """Seconds this replica stays surely the only leader without another renew (0 if not
        leading): a write that may take longer than this must not start."""
        with self._lock:
            if not self._leading:
                return 0.0
            return max(0.0, self._valid_until - self.monotonic())

    # ---------------------------------------------------------------- loop
    def acquire(self, stop: threading.Event) -> bool:
        """Block until this replica holds the Lease (True) or `stop` is set (False)."""
        log.info("waiting to lead: Lease %s/%s as %s", self.namespace, self.name, self.identity)
        with self._lock:
            self._released = False
        while not stop.is_set():
            if self._attempt(stop, self.monotonic() + self.renew_deadline, self._current_term()):
                log.info("became leader (Lease %s/%s)", self.namespace, self.name)
                return True
            stop.wait(self.retry_period)
        return False

    def hold(self, stop: threading.Event, *, until: threading.Event | None = None) -> bool:
        """Renew every `retry_period` until `until` is set (default: `stop`) or `release()`
        is called: True. False as soon as no renew succeeded within `renew_deadline`: the
        leadership is lost and the caller must stop writing at once.

        Pass `until` to keep renewing after `stop` (draining workers still write); `stop` is
        then not consulted, and `release()` (or setting `until`) ends the loop."""
        end = until if until is not None else stop
        while True:
            with self._lock:
                valid_until, released, term = self._valid_until, self._released, self._term
            if released:
                return True
            left = valid_until - self.monotonic()
            if left <= 0:
                return self._lose()
            if end.wait(min(self.retry_period, left)):
                return True
            if not self._attempt(end, valid_until, term) and self.monotonic() >= self._deadline():
                return self._lose()

    def release(self) -> None:
        """Give the Lease up (empty holder) so a standby takes over at once; ends `hold`."""
        with self._lock:
            was_leading = self._leading and self.monotonic() < self._valid_until
            remaining = self._valid_until - self.monotonic()
            self._released, self._leading = True, False
            self._term += 1
        if not was_leading:
            return
        timeout = max(MIN_CALL_TIMEOUT, min(RELEASE_TIMEOUT, remaining))
        if not self._calls.acquire(timeout=timeout):  # a renew in flight would make ours 409
            log.warning("could not release Lease %s/%s: a renew is still in flight; it "
                        "expires on its own", self.namespace, self.name)
            return
        try:
            lease = self.rest.request("GET", self._path(), timeout=timeout)
            spec = lease.get("spec", {})
            if spec.get("holderIdentity") != self.identity:
                return
            now = _fmt(self._wall())
            spec.update({"holderIdentity": "", "leaseDurationSeconds": 1,
                         "acquireTime": now, "renewTime": now})
            self.rest.request("PUT", self._path(), body=lease, timeout=timeout)
            log.info("released Lease %s/%s", self.namespace, self.name)
        except FAILURES as exc:  # the Lease then expires on its own
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, exc)
        finally:
            self._calls.release()

    # ------------------------------------------------------------ attempts
    def _current_term(self) -> int:
        with self._lock:
            return self._term

    def _current(self, term: int) -> bool:
        with self._lock:
            return term == self._term

    def _deadline(self) -> float:
        with self._lock:
            return self._valid_until

    def _lose(self) -> bool:
        with self._lock:
            self._leading = False
            self._term += 1
        log.error("lost leadership of Lease %s/%s: no renew within %.1fs (renew deadline); "
                  "stopping", self.namespace, self.name, self.renew_deadline)
        return False

    def _attempt(self, stop: threading.Event, deadline: float, term: int) -> bool:
        """One try_acquire_or_renew on its own thread, waited for until `deadline` at most;
        void if the term changed (loss, release) since the caller read `term`."""
        result: list[bool] = []
        done = threading.Event()

        def run() -> None:
            try:
                with self._calls:
                    result.append(self._current(term) and
                                  self.try_acquire_or_renew(deadline=deadline, term=term))
            finally:
                done.set()

        threading.Thread(target=run, name="lease-attempt", daemon=True).start()
        while not done.is_set():
            left = deadline - self.monotonic()
            if left <= 0 or stop.is_set():
                return False
            done.wait(min(left, 0.1))
        return bool(result and result[0])

    def try_acquire_or_renew(self, *, deadline: float, term: int | None = None) -> bool:
        """Read the Lease; take or renew it when free or ours. True when we now hold it.

        `deadline` (monotonic) bounds the per-call timeouts; `term` voids a late success of
        an attempt begun before a loss or release."""
        started = self.monotonic()
        try:
            lease = self.rest.request("GET", self._path(), timeout=self._timeout(deadline, 2))
        except ApiError as exc:
            if exc.status != 404:
                retries.warning("reading Lease %s/%s failed: %s", self.namespace, self.name, exc)
                return False
            return self._create(started, deadline, term)
        except FAILURES as exc:
            retries.warning("reading Lease %s/%s failed: %s", self.namespace, self.name, exc)
            return False
        spec = lease.setdefault("spec", {})
        seen = Record.of(spec, self.lease_duration)
        if not self._may_take(seen, started):
            return False
        mine = self._next_record(seen)
        lease["spec"] = {**spec, **mine.spec()}
        try:  # metadata.resourceVersion makes this optimistic: a racing writer gets 409
            self.rest.request("PUT", self._path(), body=lease, timeout=self._timeout(deadline, 1))
        except FAILURES as exc:
            log.debug("updating Lease %s/%s failed: %s", self.namespace, self.name, exc)
            return False
        return self._won(mine, started, term)

    def _may_take(self, seen: Record, now: float) -> bool:
        with self._lock:
            if seen != self._observed:
                self._observed, self._observed_at = seen, now
            observed_at = self._observed_at
        if not seen.holder or seen.holder == self.identity:
            return True
        return now >= observed_at + seen.duration  # unchanged for a whole lease: expired

    def _next_record(self, seen: Record) -> Record:
        now = _fmt(self._wall())
        if seen.holder == self.identity:
            return Record(self.identity, self.lease_duration, seen.acquire_time or now, now,
                          seen.transitions)
        return Record(self.identity, self.lease_duration, now, now, seen.transitions + 1)

    def _won(self, mine: Record, started: float, term: int | None) -> bool:
        with self._lock:
            if term is not None and term != self._term:
                return False  # a loss or release happened meanwhile: this answer is void
            self._observed, self._observed_at = mine, self.monotonic()
            self._valid_until = started + self.renew_deadline
            self._leading = True
            self.transitions_seen = mine.transitions
        return True

    def _create(self, started: float, deadline: float, term: int | None) -> bool:
        now = _fmt(self._wall())
        mine = Record(self.identity, self.lease_duration, now, now, 0)
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": mine.spec()}
        try:
            self.rest.request("POST", LEASES.path(self.namespace), body=body,
                              timeout=self._timeout(deadline, 1))
        except FAILURES as exc:
            log.debug("creating Lease %s/%s failed: %s", self.namespace, self.name, exc)
            return False
        return self._won(mine, started, term)

    # ------------------------------------------------------------- helpers
    def _timeout(self, deadline: float, calls_left: int) -> float:
        """A per-call timeout that lets the remaining calls fit before `deadline`."""
        left = (deadline - self.monotonic()) / calls_left
        return max(MIN_CALL_TIMEOUT, min(left, self.renew_deadline / 2))

    def _wall(self) -> datetime:
        return self.clock() + timedelta(seconds=self.clock_offset)

    def _path(self) -> str:
        return LEASES.path(self.namespace, self.name)
