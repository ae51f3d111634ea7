"""Time for the engine, behind a seam that tests can replace.

Everything in the engine that waits (delayed adds, backoff, token buckets, poll due times)
asks a `Clock` instead of `time`, so unit tests drive time with `FakeClock.advance` and
never sleep for real to test a delay.

Waiting is part of the seam: `Clock.wait_until(condition, deadline)` blocks on a
`threading.Condition` until it is notified or the clock reaches `deadline`. `RealClock`
turns the deadline into a timeout for `Condition.wait`; `FakeClock` records the waiting
condition and notifies it whenever its time moves, so a thread blocked until "50 ms from
now" wakes when a test advances the fake clock by 60 ms. Callers always re-check their own
predicate after waking (wake-ups may be early or spurious), as with any condition variable.

Deadlines are absolute monotonic times (`clock.now() + delay`), not relative timeouts: a
relative timeout computed before the wait would go stale if the fake clock moved between
computing it and starting to wait, and the wake-up would be lost.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FakeClock", "RealClock"]


class Clock(Protocol):
    """Monotonic time for delays, wall time for timestamps, and a way to wait for either."""

    def now(self) -> float:
        """Monotonic seconds; only differences are meaningful."""
        ...

    def wall(self) -> datetime:
        """The current wall-clock time, timezone-aware, in UTC."""
        ...

    def wait_until(self, condition: threading.Condition, deadline: float | None) -> None:
        """Wait on `condition` (whose lock the caller holds) until notified or `deadline`.

        `deadline` is in `now()` seconds; None waits for a notification only. Returns early
        on any notification: the caller re-checks its predicate and waits again if needed.
        """
        ...


class RealClock:
    """The system's clocks: `time.monotonic` and the UTC wall clock."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime:
        return datetime.now(UTC)

    def wait_until(self, condition: threading.Condition, deadline: float | None) -> None:
        if deadline is None:
            condition.wait()
            return
        remaining = deadline - self.now()
        if remaining > 0:
            condition.wait(remaining)


_DEFAULT_WALL = datetime(2024, 1, 1, tzinfo=UTC)


class FakeClock:
    """A clock that moves only when told to, waking timed waiters when it does.

    Starts at monotonic 1000.0 (not 0, so code that treats 0 as "unset" is caught) and at
    2024-01-01T00:00:00Z unless told otherwise.
    """

    def __init__(self, *, now: float = 1000.0, wall: datetime = _DEFAULT_WALL) -> None:
        _require_aware(wall)
        self._lock = threading.Lock()
        self._now = now
        self._wall = wall
        self._waiters: list[threading.Condition] = []

    def now(self) -> float:
        with self._lock:
            return self._now

    def wall(self) -> datetime:
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass on both clocks and wake every timed waiter."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance: seconds must be >= 0, got {seconds}")
        with self._lock:
            self._now += seconds
            self._wall += timedelta(seconds=seconds)
        self._notify_waiters()

    def set(self, *, now: float | None = None, wall: datetime | None = None) -> None:
        """Jump either clock independently, like an NTP step moves only the wall clock.

        Monotonic time cannot go backwards; the wall clock can.
        """
        if wall is not None:
            _require_aware(wall)
        with self._lock:
            if now is not None:
                if now < self._now:
                    raise ValueError(
                        f"FakeClock.set: monotonic time cannot go back ({now} < {self._now})"
                    )
                self._now = now
            if wall is not None:
                self._wall = wall
        self._notify_waiters()

    def waiter_count(self) -> int:
        """How many threads are blocked in `wait_until` with a deadline (for tests)."""
        with self._lock:
            return len(self._waiters)

    def wait_until(self, condition: threading.Condition, deadline: float | None) -> None:
        if deadline is None:
            condition.wait()
            return
        with self._lock:
            if self._now >= deadline:
                return
            # Registered under the clock lock, so an advance() either happened before this
            # check (and we returned above) or will see this waiter and notify it. The
            # notification needs `condition`'s lock, which wait() releases atomically.
            self._waiters.append(condition)
        try:
            condition.wait()
        finally:
            with self._lock:
                self._waiters.remove(condition)

    def _notify_waiters(self) -> None:
        with self._lock:
            waiters = list(dict.fromkeys(self._waiters))
        # Notified outside the clock lock: waiters take the clock lock while holding their
        # condition's lock, so holding both here in the other order could deadlock.
        for condition in waiters:
            with condition:
                condition.notify_all()


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"FakeClock: wall time must be timezone-aware, got {moment!r}")
