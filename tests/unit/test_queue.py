"""The work queue keeps client-go's guarantees; tests ported by name from client-go's
util/workqueue (queue_test.go, delaying_queue_test.go, and the item-exponential cases of
default_rate_limiters_test.go for our backoff), plus the wake-up, wait-metric and shutdown
cases ours adds.

Every delay is driven by FakeClock. Real time is used only by the threaded tests, and only
as a deadline on waiting for a thread or a condition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.runtime.clock import FakeClock, RealClock
from controller.runtime.queue import ExponentialBackoff, Jitter, WorkQueue

T = TypeVar("T")

DEADLINE = 5.0  # real seconds a healthy test never gets near


class Background(Generic[T]):
    """Runs `fn` in a daemon thread (a stuck thread cannot hang the test run)."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._value: list[T] = []
        self._error: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._value.append(fn())
        except BaseException as exc:
            self._error.append(exc)

    def still_running_after(self, seconds: float) -> bool:
        self._thread.join(seconds)
        return self._thread.is_alive()

    def result(self, timeout: float = DEADLINE) -> T:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"still blocked after {timeout}s"
        if self._error:
            raise self._error[0]
        return self._value[0]


def wait_for(predicate: Callable[[], bool], timeout: float = DEADLINE) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached before the deadline"
        time.sleep(0.001)


def join_all(threads: list[threading.Thread], timeout: float = DEADLINE) -> None:
    end = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
        assert not thread.is_alive(), "a worker thread did not finish"


def start(target: Callable[..., None], *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fq(clock: FakeClock) -> WorkQueue[str]:
    return WorkQueue(clock=clock)


SHUTDOWNS: dict[str, Callable[[WorkQueue[object]], object]] = {
    "shutdown": WorkQueue.shutdown,
}


class Workers:
    """Consumers that record every run and fail loudly if a key is held by two at once."""

    def __init__(self, q: WorkQueue[object], count: int, on_item: Callable[[object], None]):
        self.q = q
        self.runs: dict[object, int] = {}
        self.overlaps: list[object] = []
        self._held: set[object] = set()
        self._lock = threading.Lock()
        self._on_item = on_item
        self.threads = [start(self._loop) for _ in range(count)]

    def _loop(self) -> None:
        while (key := self.q.get()) is not None:
            with self._lock:
                if key in self._held:
                    self.overlaps.append(key)
                self._held.add(key)
                self.runs[key] = self.runs.get(key, 0) + 1
            self._on_item(key)
            with self._lock:
                self._held.discard(key)
            self.q.done(key)

    def run_count(self, key: object) -> int:
        with self._lock:
            return self.runs.get(key, 0)


# -- queue.go ------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", SHUTDOWNS.values(), ids=SHUTDOWNS.keys())
def test_basic(stop: Callable[[WorkQueue[object]], object]) -> None:
    q: WorkQueue[object] = WorkQueue()
    workers = Workers(q, count=5, on_item=lambda _key: time.sleep(0.0005))

    def produce(i: int) -> None:
        for _ in range(20):
            q.add(i)
            time.sleep(0.0002)

    producers = [start(produce, i) for i in range(10)]
    join_all(producers)
    stop(q)
    q.add("added after shutdown!")
    join_all(workers.threads)

    assert "added after shutdown!" not in workers.runs
    assert workers.overlaps == []
    assert set(workers.runs) == set(range(10))
    assert len(q) == 0


@pytest.mark.parametrize("stop", SHUTDOWNS.values(), ids=SHUTDOWNS.keys())
def test_add_while_processing(stop: Callable[[WorkQueue[object]], object]) -> None:
    q: WorkQueue[object] = WorkQueue()
    seen: dict[tuple[int, object], int] = {}

    def readd_twice_per_worker(key: object) -> None:
        me = (threading.get_ident(), key)
        seen[me] = seen.get(me, 0) + 1  # only this worker touches its own entries
        if seen[me] < 2:
            q.add(key)  # while processing: must become exactly one re-run, later

    workers = Workers(q, count=10, on_item=readd_twice_per_worker)
    for i in range(50):
        q.add(i)
    wait_for(lambda: all(workers.run_count(i) >= 2 for i in range(50)))
    stop(q)
    join_all(workers.threads)

    assert workers.overlaps == []
    assert len(q) == 0


def test_len() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("foo")
    assert len(q) == 1
    q.add("bar")
    assert len(q) == 2
    q.add("foo")  # should not increase the queue length
    assert len(q) == 2
    assert q.depth() == 2


def test_reinsert() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("foo")
    assert q.get() == "foo"
    q.add("foo")  # add it back while processing
    assert len(q) == 0, "a key being processed must not be handed out again"
    q.done("foo")
    assert q.get(timeout=0) == "foo"  # it is back on the queue
    q.done("foo")
    assert len(q) == 0


def test_collapse_while_processing() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("foo")
    assert q.get() == "foo"
    for _ in range(3):
        q.add("foo")
    q.done("foo")
    assert len(q) == 1, "three adds while processing collapse into one re-run"
    assert q.get(timeout=0) == "foo"
    q.done("foo")
    assert q.get(timeout=0) is None


def test_done_twice_does_not_queue_twice() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("foo")
    assert q.get() == "foo"
    q.add("foo")
    q.done("foo")
    q.done("foo")
    assert len(q) == 1


def test_get_hands_out_ready_keys_after_shutdown_then_none(fq: WorkQueue[str]) -> None:
    fq.add("foo")
    fq.add_after("bar", 1)
    fq.shutdown()
    fq.add("baz")
    fq.add_after("qux", 1)
    assert fq.waiting_count() == 0, "delayed adds are dropped at shutdown"
    assert fq.get() == "foo"
    assert fq.get() is None
    assert fq.shutting_down()


def test_shutdown_wakes_blocked_getters() -> None:
    q: WorkQueue[str] = WorkQueue()
    getters = [Background(q.get) for _ in range(3)]
    assert getters[0].still_running_after(0.02)
    q.shutdown()
    assert [g.result() for g in getters] == [None, None, None]


def test_get_times_out_on_the_queue_clock(clock: FakeClock, fq: WorkQueue[str]) -> None:
    assert fq.get(timeout=0) is None
    getter = Background(lambda: fq.get(timeout=5))
    wait_for(lambda: clock.waiter_count() == 1)
    clock.advance(4.9)
    assert getter.still_running_after(0.02), "get returned before its timeout"
    clock.advance(0.1)
    assert getter.result() is None


# -- delaying_queue.go ---------------------------------------------------------------------


def test_simple_queue(clock: FakeClock, fq: WorkQueue[str]) -> None:
    fq.add_after("foo", 0.050)
    assert fq.waiting_count() == 1
    assert len(fq) == 0, "should not have added"

    clock.advance(0.060)
    assert len(fq) == 1, "should have added"
    assert fq.get(timeout=0) == "foo"
    fq.done("foo")

    clock.advance(10)  # step well past the due time: nothing comes back
    assert len(fq) == 0
    assert fq.waiting_count() == 0


def test_deduping(clock: FakeClock, fq: WorkQueue[str]) -> None:
    fq.add_after("foo", 0.050)
    fq.add_after("foo", 0.070)  # later than the pending one: ignored
    assert fq.waiting_count() == 1
    assert len(fq) == 0

    clock.advance(0.060)  # past the first due time: we should receive now
    assert fq.get(timeout=0) == "foo"
    fq.done("foo")
    clock.advance(0.020)  # past the second add: it must not fire
    assert len(fq) == 0

    fq.add_after("foo", 0.050)
    fq.add_after("foo", 0.030)  # this time the earlier one overrides
    assert len(fq) == 0
    clock.advance(0.040)
    assert fq.get(timeout=0) == "foo"
    fq.done("foo")
    clock.advance(0.020)  # past the first add: it must not fire
    assert len(fq) == 0

    fq.add("foo")  # this time the key is being processed when the delayed add is made
    assert fq.get(timeout=0) == "foo"
    fq.add_after("foo", 0.005)
    assert fq.waiting_count() == 1
    fq.done("foo")


def test_add_two_fire_early(clock: FakeClock, fq: WorkQueue[str]) -> None:
    fq.add_after("foo", 1)
    fq.add_after("bar", 0.050)
    assert len(fq) == 0

    clock.advance(0.060)
    assert len(fq) == 1
    assert fq.get(timeout=0) == "bar"

    fq.add_after("baz", 2)
    clock.advance(1)
    assert len(fq) == 1
    assert fq.get(timeout=0) == "foo"

    clock.advance(2)
    assert len(fq) == 1
    assert fq.get(timeout=0) == "baz"


def test_copy_shifting(clock: FakeClock, fq: WorkQueue[str]) -> None:
    fq.add_after("foo", 1)
    fq.add_after("bar", 0.5)
    fq.add_after("baz", 0.25)
    assert len(fq) == 0

    clock.advance(2)
    assert len(fq) == 3
    assert [fq.get(timeout=0) for _ in range(3)] == ["baz", "bar", "foo"]


def test_add_cancels_a_waiting_add(clock: FakeClock, fq: WorkQueue[str]) -> None:
    fq.add_after("foo", 0.050)
    fq.add("foo")
    assert fq.waiting_count() == 0
    assert fq.get(timeout=0) == "foo"
    fq.done("foo")
    clock.advance(0.060)
    assert len(fq) == 0, "the cancelled delayed add ran anyway: a double run"


def test_add_after_zero_is_an_add(fq: WorkQueue[str]) -> None:
    fq.add_after("foo", 0)
    fq.add_after("bar", -1)
    assert len(fq) == 2
    assert fq.waiting_count() == 0


def test_delayed_add_while_processing_reruns_after_done(
    clock: FakeClock, fq: WorkQueue[str]
) -> None:
    fq.add("foo")
    assert fq.get(timeout=0) == "foo"
    fq.add_after("foo", 1)
    clock.advance(1)
    assert len(fq) == 0, "due while processing: must wait for done()"
    fq.done("foo")
    assert fq.get(timeout=0) == "foo"


def test_blocked_get_wakes_when_the_fake_clock_advances(
    clock: FakeClock, fq: WorkQueue[str]
) -> None:
    fq.add_after("foo", 0.050)
    getter = Background(fq.get)
    wait_for(lambda: clock.waiter_count() == 1)
    clock.advance(0.040)
    assert getter.still_running_after(0.02), "get returned before the key was due"
    clock.advance(0.020)
    assert getter.result() == "foo"


def test_earlier_add_after_rearms_a_blocked_get() -> None:
    q: WorkQueue[str] = WorkQueue(clock=RealClock())
    q.add_after("foo", 60)
    getter = Background(q.get)
    assert getter.still_running_after(0.02)
    q.add_after("bar", 0.010)  # the getter sleeps until foo's due time unless re-armed
    assert getter.result(timeout=2) == "bar"
    q.shutdown()


def test_stale_heap_entries_are_compacted(fq: WorkQueue[str]) -> None:
    fq.add_after("anchor", 60)  # a live earliest entry keeps stale ones from surfacing
    for _ in range(1000):
        fq.add_after("foo", 3600)
        fq.add("foo")  # cancels the wait, leaving a stale heap entry behind
        assert fq.get(timeout=0) == "foo"
        fq.done("foo")
    assert len(fq._heap) <= 2 * len(fq._waiting) + 64


# -- default_rate_limiters.go (item exponential: our backoff) ------------------------------


def test_item_exponential_failure_rate_limiter() -> None:
    limiter = ExponentialBackoff(base=0.001, cap=1, jitter=Jitter.NONE)
    assert [limiter.when("one") for _ in range(5)] == [0.001, 0.002, 0.004, 0.008, 0.016]
    assert [limiter.when("two") for _ in range(2)] == [0.001, 0.002]

    limiter.forget("one")  # "one" starts again; "two" keeps its count
    assert limiter.when("one") == 0.001
    assert limiter.when("two") == 0.004


def test_item_exponential_failure_rate_limiter_overflow() -> None:
    limiter = ExponentialBackoff(base=0.001, cap=1000, jitter=Jitter.NONE)
    for _ in range(5):
        limiter.when("one")
    assert limiter.when("one") == 0.032
    for _ in range(2000):  # 2.0 ** 2000 would overflow a float
        limiter.when("one")
    assert limiter.when("one") == 1000

    huge = ExponentialBackoff(base=3600, cap=3600 * 1000, jitter=Jitter.NONE)
    for _ in range(2000):
        huge.when("two")
    assert huge.when("two") == 3600 * 1000


@pytest.mark.parametrize(
    ("jitter", "draw", "expected"),
    [
        (Jitter.EQUAL, 0.0, 0.5),
        (Jitter.EQUAL, 0.5, 0.75),
        (Jitter.FULL, 0.0, 0.0),
        (Jitter.FULL, 0.25, 0.25),
        (Jitter.NONE, 0.9, 1.0),
    ],
)
def test_exponential_backoff_jitter(jitter: Jitter, draw: float, expected: float) -> None:
    limiter = ExponentialBackoff(base=1, cap=8, jitter=jitter, rng=lambda: draw)
    assert limiter.when("one") == pytest.approx(expected * 1)
    assert limiter.when("one") == pytest.approx(expected * 2)
    for _ in range(10):
        limiter.when("one")
    assert limiter.when("one") == pytest.approx(expected * 8), "jitter applies below the cap"


# -- queue-wait metric ---------------------------------------------------------------------


def test_on_wait_reports_time_from_add_to_get(clock: FakeClock) -> None:
    waits: list[float] = []
    q: WorkQueue[str] = WorkQueue(clock=clock, on_wait=waits.append)
    q.add("foo")
    clock.advance(2)
    assert q.get() == "foo"
    assert waits == [2]


def test_on_wait_counts_delayed_keys_from_their_due_time(clock: FakeClock) -> None:
    waits: list[float] = []
    q: WorkQueue[str] = WorkQueue(clock=clock, on_wait=waits.append)
    q.add_after("foo", 5)
    clock.advance(7)
    assert q.get() == "foo"
    assert waits == [2]


def test_on_wait_counts_a_rerun_from_its_add(clock: FakeClock) -> None:
    waits: list[float] = []
    q: WorkQueue[str] = WorkQueue(clock=clock, on_wait=waits.append)
    q.add("foo")
    q.get()
    clock.advance(1)
    q.add("foo")
    clock.advance(3)
    q.done("foo")
    assert q.get() == "foo"
    assert waits == [0, 3]


def test_failing_on_wait_does_not_lose_the_key(clock: FakeClock) -> None:
    def broken(_seconds: float) -> None:
        raise RuntimeError("metrics backend down")

    q: WorkQueue[str] = WorkQueue(clock=clock, on_wait=broken)
    q.add("foo")
    assert q.get() == "foo"
    assert q.processing_count() == 1


# -- clock ---------------------------------------------------------------------------------


def test_fake_clock_moves_only_when_told(clock: FakeClock) -> None:
    start_now, start_wall = clock.now(), clock.wall()
    assert start_wall.tzinfo is not None
    clock.advance(1.5)
    assert clock.now() == start_now + 1.5
    assert clock.wall() == start_wall + timedelta(seconds=1.5)


def test_fake_clock_set_moves_each_clock_separately(clock: FakeClock) -> None:
    start_now = clock.now()
    clock.set(wall=datetime(2020, 1, 1, tzinfo=UTC))  # a wall-clock step back
    assert clock.now() == start_now
    assert clock.wall() == datetime(2020, 1, 1, tzinfo=UTC)
    clock.set(now=start_now + 10)
    assert clock.now() == start_now + 10


@pytest.mark.parametrize(
    "bad",
    [
        lambda c: c.advance(-1),
        lambda c: c.set(now=c.now() - 1),
        lambda c: c.set(wall=datetime(2024, 1, 1)),  # naive
    ],
    ids=["advance-back", "set-now-back", "naive-wall"],
)
def test_fake_clock_refuses_impossible_times(
    clock: FakeClock, bad: Callable[[FakeClock], None]
) -> None:
    with pytest.raises(ValueError):
        bad(clock)


def test_fake_clock_wait_until_a_past_deadline_returns_at_once(clock: FakeClock) -> None:
    condition = threading.Condition()

    def wait() -> None:
        with condition:
            clock.wait_until(condition, clock.now())

    Background(wait).result()
    assert clock.waiter_count() == 0


def test_fake_clock_advance_wakes_a_timed_waiter(clock: FakeClock) -> None:
    condition = threading.Condition()

    def wait() -> None:
        with condition:
            clock.wait_until(condition, clock.now() + 1)

    waiter = Background(wait)
    wait_for(lambda: clock.waiter_count() == 1)
    clock.advance(1)
    waiter.result()
    assert clock.waiter_count() == 0


def test_real_clock_is_monotonic_and_utc() -> None:
    real = RealClock()
    assert real.now() <= real.now()
    assert real.wall().utcoffset() == timedelta(0)


def test_tuple_keys_dedupe() -> None:
    q: WorkQueue[tuple[str, str, str]] = WorkQueue()
    for i in [0, 1, 2, 0, 1, 2]:
        q.add(("ExternalSecret", "default", f"es-{i}"))
    assert len(q) == 3
    assert q.get(timeout=0) == ("ExternalSecret", "default", "es-0")


# -- fairness between groups (ours: the manager groups ExternalSecrets by namespace) -------

def _grouped(limit: int | None = None) -> WorkQueue[tuple[str, str]]:
    return WorkQueue(clock=FakeClock(), group=lambda key: key[0], group_limit=limit)


def test_groups_take_turns_instead_of_one_fifo() -> None:
    q = _grouped()
    for i in range(3):
        q.add(("busy", f"k{i}"))
    q.add(("quiet", "k"))
    # One FIFO would hand out busy/k0..k2 before quiet/k.
    order = [q.get(timeout=0) for _ in range(4)]
    assert order == [("busy", "k0"), ("quiet", "k"), ("busy", "k1"), ("busy", "k2")]


def test_a_group_at_its_limit_leaves_the_worker_to_others() -> None:
    q = _grouped(limit=2)
    for i in range(4):
        q.add(("busy", f"k{i}"))
    assert q.get(timeout=0) == ("busy", "k0")
    assert q.get(timeout=0) == ("busy", "k1")
    assert q.get(timeout=0) is None  # busy holds 2 workers: its keys wait
    assert len(q) == 2
    q.add(("quiet", "k"))
    assert q.get(timeout=0) == ("quiet", "k")
    q.done(("busy", "k0"))
    assert q.get(timeout=0) == ("busy", "k2")


def test_done_in_a_capped_group_wakes_a_blocked_getter() -> None:
    q: WorkQueue[tuple[str, str]] = WorkQueue(group=lambda key: key[0], group_limit=1)
    q.add(("busy", "a"))
    q.add(("busy", "b"))
    assert q.get(timeout=0) == ("busy", "a")
    waiter = Background(lambda: q.get())  # blocks: "busy" holds its one worker
    q.done(("busy", "a"))
    assert waiter.result() == ("busy", "b")


def test_a_capped_group_still_drains_after_shutdown() -> None:
    q = _grouped(limit=1)
    q.add(("busy", "a"))
    q.add(("busy", "b"))
    assert q.get(timeout=0) == ("busy", "a")
    q.shutdown()
    assert q.get(timeout=0) == ("busy", "b")  # stopping: the limit no longer holds it back
    assert q.get(timeout=0) is None


def test_group_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="group_limit"):
        _grouped(limit=0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["get", "done", "add"]),
                          st.sampled_from(["a", "b", "c"]), st.integers(0, 3)),
                max_size=60),
       st.integers(1, 3))
def test_grouped_queue_keeps_the_guarantees(ops: list[tuple[str, str, int]],
                                            limit: int) -> None:
    """Whatever the interleaving: a key is never out twice, no group exceeds its limit, no
    added key is lost (everything ready drains once the workers are done), and a getter is
    refused only when every ready key's group is at its limit."""
    q = _grouped(limit=limit)
    out: list[tuple[str, str]] = []
    for op, group, n in ops:
        key = (group, f"k{n}")
        if op == "add":
            q.add(key)
        elif op == "get":
            got = q.get(timeout=0)
            if got is None:
                assert len(q) == 0 or all(
                    sum(1 for k in out if k[0] == g) >= limit for g in ("a", "b", "c")
                    if g in {k[0] for k in _ready_keys(q)})
            else:
                assert got not in out
                out.append(got)
                assert sum(1 for k in out if k[0] == got[0]) <= limit
        elif out:
            q.done(out.pop(0))
    for key in out:
        q.done(key)
    drained = []
    while (key := q.get(timeout=0)) is not None:
        drained.append(key)
        q.done(key)
    assert len(drained) == len(set(drained))
    assert len(q) == 0


def _ready_keys(q: WorkQueue[tuple[str, str]]) -> list[tuple[str, str]]:
    return [k for fifo in q._ready._fifos.values() for k in fifo]
