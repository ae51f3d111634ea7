"""The work queue between "something changed" and the workers.

Watch events, poll timers and retries all say "do this key again". The queue turns that
stream of keys into work for a bounded pool of worker threads, with the guarantees of
client-go's workqueue (queue.go, delaying_queue.go):

- one key is never handed to two workers at once;
- adds of a key that is already queued collapse into one run, and adds of a key that is
  being processed become exactly one re-run, started after `done(key)`;
- delayed adds (next poll, retry backoff) wait in a heap by due time; a key waiting for
  several due times runs once, at the earliest; an immediate `add` of a waiting key runs
  it now and cancels the wait.

Retries are the worker loop's (runtime/controller.py): it asks its `ExponentialBackoff` (per
key, jittered) how long to wait and calls `add_after`; on success it forgets the key's
failures there.

Structure: one lock guards a FIFO of ready keys, the `dirty` set (keys that need a run and
have not started it) and the `processing` set (keys a worker holds), plus the heap of
waiting keys. There is no timer thread. Whoever looks at the queue (`get`, `len`,
`waiting_count`) first moves due keys into the FIFO; a `get` that finds nothing ready waits
on a condition variable until the earliest due time through `Clock.wait_until`, so a real
clock times the wait out and `FakeClock.advance` notifies it. Tests therefore never sleep
to test a delay. (Idle getters all wait for the same due time; the first to wake takes the
key and the rest wait again: cheap for the handful of workers a controller runs.)

Departures from client-go: `add` cancels a pending delayed add of the key (client-go would
run it twice); a second `done` is ignored instead of queueing the key twice; no rate limiter
inside the queue (the backoff is the worker loop's, jittered).

One key type per queue: the ExternalSecret controller's syncs `(namespace, name)` and its KMS
polls (`SecretPoll`) have a queue each, as do the ClusterExternalSecret controller's
`(name, namespace or "")` passes and the SecretStore status checks (`StoreKey`).

Fairness between tenants (an addition of ours): a queue made with `group` (the manager's
ExternalSecret queue groups by namespace) keeps a FIFO per group and hands keys out round-robin
across the groups that have ready keys, and with `group_limit` no group holds more than that
many workers at once (the manager leaves one worker for the other namespaces). One namespace
with thousands of ready keys therefore never makes another namespace's change wait behind
them, and a namespace whose syncs are slow (hostile templates, a slow endpoint) cannot occupy
every worker; a cluster with one namespace still uses all but one worker. Without `group`
the queue is one FIFO, as client-go's.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
from collections import deque
from collections.abc import Callable, Hashable
from enum import StrEnum
from typing import Generic, NamedTuple, TypeVar

from controller.runtime.clock import Clock, RealClock

__all__ = [
    "ExponentialBackoff",
    "Jitter",
    "WorkQueue",
]

_log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

# 2.0 ** 1024 overflows a float; past this many failures every backoff is at its cap anyway.
_MAX_EXPONENT = 1000


class Jitter(StrEnum):
    """How a backoff delay `d` is spread so that keys failing together retry apart."""

    NONE = "none"  # exactly d
    FULL = "full"  # uniform in [0, d): widest spread, may retry almost at once
    EQUAL = "equal"  # d/2 + uniform in [0, d/2): keeps at least half of the backoff


class ExponentialBackoff:
    """Per-key backoff: `base * 2**failures`, capped at `cap`, then jittered.

    `rng` returns floats in [0, 1); tests pass a fixed one to make jitter deterministic.
    Failures are remembered until `forget(key)`: call it on success and on deletion.
    """

    def __init__(
        self,
        *,
        base: float = 0.005,
        cap: float = 1000.0,
        jitter: Jitter = Jitter.EQUAL,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"ExponentialBackoff: need 0 < base <= cap, got {base=} {cap=}")
        self._base = base
        self._cap = cap
        self._jitter = jitter
        self._rng = rng
        self._lock = threading.Lock()
        self._failures: dict[Hashable, int] = {}

    def when(self, key: Hashable) -> float:
        with self._lock:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        return _apply_jitter(self._backoff(failures), self._jitter, self._rng)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _backoff(self, failures: int) -> float:
        return min(self._cap, self._base * 2.0 ** min(failures, _MAX_EXPONENT))


def _apply_jitter(delay: float, jitter: Jitter, rng: Callable[[], float]) -> float:
    if jitter is Jitter.FULL:
        return delay * rng()
    if jitter is Jitter.EQUAL:
        return delay / 2 + delay / 2 * rng()
    return delay


class _Due(NamedTuple):
    at: float  # clock.now() seconds
    seq: int  # tells the live heap entry of a key from superseded ones


class WorkQueue(Generic[K]):
    """A thread-safe queue of keys to work on; see the module docstring for guarantees.

    A worker loops: `key = get()`; work; on a retryable failure `add_after(key, delay)`
    with the delay of its backoff; and always `done(key)`.

    `on_wait(seconds)` is called (outside the lock) each time `get` hands out a key, with
    how long the key was ready but not started: since `add`, since its due time for delayed
    adds, or since the re-add for keys that were added while being processed.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        on_wait: Callable[[float], None] | None = None,
        group: Callable[[K], Hashable] | None = None,
        group_limit: int | None = None,
    ) -> None:
        if group_limit is not None and group_limit < 1:
            raise ValueError(f"group_limit must be at least 1 (got {group_limit})")
        self._clock: Clock = clock or RealClock()
        self._on_wait = on_wait
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)  # getters wait here
        self._ready: _FairReady[K] = _FairReady(group, group_limit)
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._dirty_since: dict[K, float] = {}
        self._waiting: dict[K, _Due] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._shutting_down = False

    # -- immediate adds and the worker cycle ---------------------------------------------

    def add(self, key: K) -> None:
        """Queue `key` to run now; cancels a delayed add of it. Ignored after shutdown."""
        with self._lock:
            if self._shutting_down:
                return
            if self._waiting.pop(key, None) is not None:
                self._compact_heap_if_sparse()
            self._mark_dirty(key, self._clock.now())

    def get(self, timeout: float | None = None) -> K | None:
        """Block until a key is ready and hand it to the caller, who must call `done(key)`.

        Returns None once the queue is shut down and has no ready keys left, or when
        `timeout` seconds (on the queue's clock) pass first.
        """
        deadline = None if timeout is None else self._clock.now() + timeout
        with self._lock:
            key = self._wait_for_ready(deadline)
            if key is None:
                return None
            waited = self._start_processing(key)
        self._report_wait(waited)
        return key

    def done(self, key: K) -> None:
        """The worker finished `key`: re-queue it if it was added meanwhile."""
        with self._lock:
            if key not in self._processing:
                return  # a second done() must not queue the key twice
            self._processing.remove(key)
            capped = self._ready.finished(key)
            if key in self._dirty:
                self._ready.append(key)
                self._has_work.notify()
            elif capped:
                self._has_work.notify()  # a key of this group waiting for a worker may go

    # -- delays and retries --------------------------------------------------------------

    def add_after(self, key: K, delay: float) -> None:
        """Queue `key` once `delay` seconds have passed; an earlier pending add wins."""
        if delay <= 0:
            self.add(key)
            return
        with self._lock:
            if self._shutting_down:
                return
            due = _Due(self._clock.now() + delay, next(self._seq))
            current = self._waiting.get(key)
            if current is not None and current.at <= due.at:
                return
            self._waiting[key] = due
            heapq.heappush(self._heap, (due.at, due.seq, key))
            self._compact_heap_if_sparse()
            if self._heap[0][1] == due.seq:
                self._has_work.notify_all()  # a new earliest due time: re-arm timed waits

    # -- shutdown ------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop accepting adds and drop delayed adds.

        Keys already ready are still handed out by `get`, which returns None after them.
        """
        with self._lock:
            self._shutting_down = True
            self._waiting.clear()
            self._heap.clear()
            self._has_work.notify_all()

    def shutting_down(self) -> bool:
        with self._lock:
            return self._shutting_down

    # -- metrics -------------------------------------------------------------------------

    def __len__(self) -> int:
        """Keys ready to be handed out (the queue depth)."""
        with self._lock:
            self._promote_due()
            return len(self._ready)

    def depth(self) -> int:
        """Keys ready to be handed out; same as `len(queue)`."""
        return len(self)

    def waiting_count(self) -> int:
        """Keys waiting for a delayed add to come due."""
        with self._lock:
            self._promote_due()
            return len(self._waiting)

    def processing_count(self) -> int:
        """Keys handed to workers and not yet done."""
        with self._lock:
            return len(self._processing)

    # -- internals, called with the lock held --------------------------------------------

    def _mark_dirty(self, key: K, since: float) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        self._dirty_since[key] = since
        if key not in self._processing:  # else done() queues it
            self._ready.append(key)
            self._has_work.notify()

    def _wait_for_ready(self, deadline: float | None) -> K | None:
        while True:
            self._promote_due()
            key = self._ready.pop(ignore_limit=self._shutting_down)
            if key is not None:
                return key
            if self._shutting_down:
                return None
            if deadline is not None and self._clock.now() >= deadline:
                return None
            self._clock.wait_until(self._has_work, _earliest(deadline, self._next_due()))

    def _start_processing(self, key: K) -> float:
        self._ready.started(key)
        self._dirty.discard(key)
        self._processing.add(key)
        since = self._dirty_since.pop(key)
        return max(0.0, self._clock.now() - since)

    def _promote_due(self) -> None:
        """Move due waiting keys to the ready FIFO, earliest first; drop stale heap tops."""
        now = self._clock.now()
        while self._heap:
            at, seq, key = self._heap[0]
            live = self._waiting.get(key)
            if live is not None and live.seq == seq and at > now:
                return
            heapq.heappop(self._heap)
            if live is not None and live.seq == seq:
                del self._waiting[key]
                self._mark_dirty(key, at)

    def _next_due(self) -> float | None:
        """The earliest due time; valid right after `_promote_due` (heap top is live)."""
        return self._heap[0][0] if self._heap else None

    def _compact_heap_if_sparse(self) -> None:
        # Cancelled and superseded entries stay in the heap until they surface; rebuild it
        # when they dominate, so keys re-added often with long delays cannot pile up.
        if len(self._heap) > 2 * len(self._waiting) + 64:
            self._heap = [(due.at, due.seq, key) for key, due in self._waiting.items()]
            heapq.heapify(self._heap)

    def _report_wait(self, seconds: float) -> None:
        if self._on_wait is None:
            return
        try:
            self._on_wait(seconds)
        except Exception:  # noqa: BLE001 - a metrics callback must not lose the key
            _log.exception("work queue: on_wait callback failed")


class _FairReady(Generic[K]):
    """The ready keys: a FIFO per group, taken round-robin across groups, skipping groups
    that already hold `limit` workers. With no `group` function: one FIFO. Lock held by the
    queue around every call."""

    def __init__(self, group: Callable[[K], Hashable] | None, limit: int | None) -> None:
        self._group = group or (lambda _key: None)
        self._limit = limit
        self._fifos: dict[Hashable, deque[K]] = {}  # insertion order is the round-robin turn
        self._busy: dict[Hashable, int] = {}  # workers per group
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, key: K) -> None:
        name = self._group(key)
        fifo = self._fifos.get(name)
        if fifo is None:
            fifo = self._fifos[name] = deque()
        fifo.append(key)
        self._size += 1

    def pop(self, *, ignore_limit: bool = False) -> K | None:
        """The next key of the first group (in turn) that may take another worker."""
        for name, fifo in self._fifos.items():
            if not ignore_limit and self._limit is not None and \
                    self._busy.get(name, 0) >= self._limit:
                continue
            key = fifo.popleft()
            del self._fifos[name]
            if fifo:
                self._fifos[name] = fifo  # to the back: the next group goes first
            self._size -= 1
            return key
        return None

    def started(self, key: K) -> None:
        name = self._group(key)
        self._busy[name] = self._busy.get(name, 0) + 1

    def finished(self, key: K) -> bool:
        """Count `key`'s worker free; True if its group was at its limit (a waiting key of
        the group may now be handed out)."""
        name = self._group(key)
        busy = self._busy.get(name, 0)
        if busy <= 1:
            self._busy.pop(name, None)
        else:
            self._busy[name] = busy - 1
        return self._limit is not None and busy >= self._limit and name in self._fifos


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
