"""What the fake saw: call counters, a request log, peak rate and peak concurrency.

Tests and benchmarks assert on these ("one KMS call per secret per poll",
"never more than 8 calls in flight", "at most 100 calls/s"). Counters are
exact and unbounded; the log keeps the most recent ``max_log`` entries (enough
for benchmarks, bounded so a long soak does not eat memory).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CounterKey = tuple[str, str | None, str | None, str | None]  # service, action, secret, identity


class RequestLog:
    def __init__(self, max_log: int = 200_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=max_log)
        self._counts: Counter[CounterKey] = Counter()
        self._in_flight = 0
        self._peak = 0

    def record(
        self,
        *,
        service: str,
        action: str | None,
        secret: str | None,
        identity: str | None,
        status: int,
        code: str | None,
        started: float,
    ) -> None:
        now = time.time()
        entry = {
            "time": now,
            "service": service,
            "action": action,
            "secret": secret,
            "identity": identity,
            "status": status,
            "code": code,
            "duration": max(0.0, now - started),
        }
        with self._lock:
            self._entries.append(entry)
            self._counts[(service, action, secret, identity)] += 1

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def calls(
        self,
        action: str | None = None,
        secret: str | None = None,
        identity: str | None = None,
        service: str | None = None,
    ) -> int:
        with self._lock:
            return sum(
                n
                for (svc, act, sec, ident), n in self._counts.items()
                if (action is None or act == action)
                and (secret is None or sec == secret)
                and (identity is None or ident == identity)
                and (service is None or svc == service)
            )

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._entries]

    @property
    def peak_concurrency(self) -> int:
        with self._lock:
            return self._peak

    @property
    def current_concurrency(self) -> int:
        with self._lock:
            return self._in_flight

    def peak_rate(self, window: float = 1.0, action: str | None = None, *,
                  arrival: bool = False) -> float:
        """Most calls seen in any sliding ``window`` seconds, per second: by when they were
        done, or with ``arrival`` by when the fake began handling them (what a service's rate
        limit counts; completions add the handler's own scheduling jitter)."""
        if window <= 0:
            raise ValueError("window must be positive")
        with self._lock:
            times = [e["time"] - (e["duration"] if arrival else 0.0) for e in self._entries
                     if action is None or e["action"] == action]
        times.sort()
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best / window

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()
            self._counts.clear()
            self._peak = self._in_flight
