"""The generic worker loop (runtime/controller.py): what a reconcile's Result makes of a key
(backoff growth and cap, forget on success, requeue after), what an exception does, stop while
a reconcile runs, and a key added while in flight running again once, never twice at once.

Delays are driven by FakeClock and read from the queue; the threaded tests await conditions
(events, or a predicate polled until a deadline), never a moment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from controller.runtime.clock import FakeClock
from controller.runtime.controller import Controller, Result
from controller.runtime.queue import ExponentialBackoff, Jitter
from tests.waiting import wait_for

DEADLINE = 5.0  # real seconds a healthy test never gets near


def _controller(reconcile: Callable[[str], Result], clock: FakeClock, *, base: float = 1.0,
                cap: float = 8.0, **kwargs: Any) -> Controller[str]:
    backoff = ExponentialBackoff(base=base, cap=cap, jitter=Jitter.NONE)
    return Controller(reconcile, backoff=backoff, clock=clock, **kwargs)


def _run_once(ctl: Controller[str]) -> str | None:
    """What one worker does with the next ready key, on the test's thread."""
    key = ctl.queue.get(timeout=0)
    if key is not None:
        try:
            ctl.process(key)
        finally:
            ctl.queue.done(key)
    return key


def _next_run(ctl: Controller[str], clock: FakeClock) -> float:
    """Seconds until the one waiting key is due: not a moment before, exactly then."""
    assert ctl.queue.get(timeout=0) is None
    assert ctl.queue.waiting_count() == 1
    due = min(d.at for d in ctl.queue._waiting.values()) - clock.now()
    clock.advance(due - 0.001)
    assert ctl.queue.get(timeout=0) is None
    clock.advance(0.001)
    assert len(ctl.queue) == 1
    return due


def _results(*results: Result) -> Callable[[str], Result]:
    it: Iterator[Result] = iter(results)
    return lambda _key: next(it)


def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    clock = FakeClock()
    ctl = _controller(_results(*[Result.retry()] * 6), clock)
    ctl.queue.add("a")
    delays = []
    for _ in range(6):
        assert _run_once(ctl) == "a"
        delays.append(_next_run(ctl, clock))
    assert delays == pytest.approx([1, 2, 4, 8, 8, 8])


def test_a_retry_cap_of_the_result_bounds_the_backoff() -> None:
    clock = FakeClock()
    ctl = _controller(_results(*[Result.retry(cap=3.0)] * 4), clock)
    ctl.queue.add("a")
    delays = []
    for _ in range(4):
        _run_once(ctl)
        delays.append(_next_run(ctl, clock))
    assert delays == pytest.approx([1, 2, 3, 3])


def test_success_forgets_the_failures() -> None:
    clock = FakeClock()
    ctl = _controller(_results(Result.retry(), Result.retry(), Result.retry(), Result(),
                               Result.retry()), clock)
    ctl.queue.add("a")
    for _ in range(3):
        _run_once(ctl)
        _next_run(ctl, clock)
    _run_once(ctl)  # success: nothing scheduled
    assert ctl.queue.waiting_count() == 0 and len(ctl.queue) == 0
    ctl.queue.add("a")  # an event
    _run_once(ctl)
    assert _next_run(ctl, clock) == pytest.approx(1.0)  # the backoff starts again


def test_requeue_after_comes_back_then_and_forgets_the_failures() -> None:
    clock = FakeClock()
    ctl = _controller(_results(Result.retry(), Result.retry(), Result.after(30.0),
                               Result.retry()), clock)
    ctl.queue.add("a")
    for _ in range(2):
        _run_once(ctl)
        _next_run(ctl, clock)
    _run_once(ctl)
    assert _next_run(ctl, clock) == pytest.approx(30.0)
    _run_once(ctl)
    assert _next_run(ctl, clock) == pytest.approx(1.0)


def test_an_exception_is_logged_and_retried_with_backoff(caplog: Any) -> None:
    clock = FakeClock()
    calls = []

    def reconcile(key: str) -> Result:
        calls.append(key)
        raise RuntimeError("boom")

    ctl = _controller(reconcile, clock, describe=lambda key: f"thing {key}")
    ctl.queue.add("a")
    with caplog.at_level(logging.ERROR, logger="controller.runtime.controller"):
        _run_once(ctl)
    assert [r.getMessage() for r in caplog.records] == ["thing a failed unexpectedly"]
    assert caplog.records[0].levelname == "ERROR"
    assert _next_run(ctl, clock) == pytest.approx(1.0)
    _run_once(ctl)
    assert _next_run(ctl, clock) == pytest.approx(2.0)
    assert calls == ["a", "a"]


def test_an_error_handler_says_it_instead_and_the_key_is_retried(caplog: Any) -> None:
    clock = FakeClock()
    said = []

    def reconcile(_key: str) -> Result:
        raise OSError("unreachable")

    ctl = _controller(reconcile, clock, on_error=lambda key, exc: said.append((key, str(exc))))
    ctl.queue.add("a")
    with caplog.at_level(logging.DEBUG, logger="controller.runtime.controller"):
        _run_once(ctl)
    assert said == [("a", "unreachable")]
    assert not caplog.records
    assert _next_run(ctl, clock) == pytest.approx(1.0)


def test_a_failure_retried_as_another_key_uses_that_keys_backoff() -> None:
    """retry_as: the ClusterExternalSecret controller retries a failed namespace pass as a
    full pass; a namespace pass that succeeds does not forget the full pass's failures."""
    clock = FakeClock()
    outcomes = {"x/ns": iter([Result.retry(), Result()]), "x/": iter([Result.retry()] * 2)}
    ctl = _controller(lambda key: next(outcomes[key]), clock,
                      retry_as=lambda key: key.split("/")[0] + "/")
    ctl.queue.add("x/ns")
    _run_once(ctl)
    assert _next_run(ctl, clock) == pytest.approx(1.0)
    assert _run_once(ctl) == "x/"  # the full pass comes back, with the next backoff step
    assert _next_run(ctl, clock) == pytest.approx(2.0)
    ctl.queue.get(timeout=0)
    ctl.queue.done("x/")
    ctl.queue.add("x/ns")
    assert _run_once(ctl) == "x/ns"  # succeeds: nothing scheduled, "x/" remembers
    assert ctl.queue.waiting_count() == 0
    ctl.queue.add("x/")
    _run_once(ctl)
    assert _next_run(ctl, clock) == pytest.approx(4.0)


def test_forget_drops_a_deleted_keys_failures() -> None:
    clock = FakeClock()
    ctl = _controller(_results(Result.retry(), Result.retry()), clock)
    ctl.queue.add("a")
    _run_once(ctl)
    _next_run(ctl, clock)
    ctl.forget("a")
    _run_once(ctl)
    assert _next_run(ctl, clock) == pytest.approx(1.0)


# ------------------------------------------------------------------ threads


class Blocking:
    """A reconcile that holds each call until the test lets it go, counting how many run at
    once."""

    def __init__(self, result: Result | None = None) -> None:
        self.result = result or Result()
        self.lock = threading.Lock()
        self.calls: list[str] = []
        self.running = 0
        self.most_at_once = 0
        self.entered = threading.Semaphore(0)
        self.leave = threading.Semaphore(0)

    def __call__(self, key: str) -> Result:
        with self.lock:
            self.calls.append(key)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.entered.release()
        try:
            assert self.leave.acquire(timeout=DEADLINE), "never let go"
        finally:
            with self.lock:
                self.running -= 1
        return self.result


def test_stop_while_a_reconcile_runs_waits_for_it_and_starts_nothing_new() -> None:
    reconcile = Blocking(Result.after(1.0))
    ctl = _controller(reconcile, FakeClock())
    ctl.queue.add("a")
    [worker] = ctl.start("test-0")
    assert worker.name == "test-0"
    try:
        assert reconcile.entered.acquire(timeout=DEADLINE)
        ctl.queue.add("b")  # ready: handed back unprocessed once the stop has begun
        ctl.shutdown()
        ctl.queue.add("c")  # ignored
        assert ctl.join(time.monotonic() + 0.05) == ["test-0"]  # still inside "a"
    finally:
        reconcile.leave.release(3)
    assert ctl.join(time.monotonic() + DEADLINE) == []
    assert reconcile.calls == ["a"]
    assert ctl.queue.waiting_count() == 0  # its requeue-after came after the stop: dropped


def test_a_key_added_while_in_flight_runs_again_once_not_twice_at_once() -> None:
    reconcile = Blocking()
    ctl = _controller(reconcile, FakeClock())
    ctl.start("w-0", "w-1", "w-2")
    try:
        ctl.queue.add("a")
        assert reconcile.entered.acquire(timeout=DEADLINE)
        for _ in range(3):
            ctl.queue.add("a")  # in flight: one re-run after it, whatever the count
        assert ctl.queue.processing_count() == 1 and len(ctl.queue) == 0  # not ready
        reconcile.leave.release()
        assert reconcile.entered.acquire(timeout=DEADLINE)  # the one re-run
        reconcile.leave.release()
        wait_for(lambda: ctl.queue.processing_count() == 0, timeout=DEADLINE,
                 what="the re-run done", interval=0.001)
        assert len(ctl.queue) == 0 and ctl.queue.waiting_count() == 0
    finally:
        reconcile.leave.release(3)
        assert ctl.join(time.monotonic() + DEADLINE) == []
    assert reconcile.calls == ["a", "a"]
    assert reconcile.most_at_once == 1
