"""Deduplicated KMS reads: within one poll window, one GetSecretValue per identity, endpoint,
secret and version, however many ExternalSecrets (or entries) ask for it.

Windows are aligned to the clock: window w of length T is [w*T, (w+1)*T). The scheduler puts
each ExternalSecret's polls on its own fixed offset inside the window, so each object syncs once
per window and each distinct secret is read once per window; a value changed in KMS is seen by
every object's next poll, within one interval. Concurrent identical reads wait for the first
(single flight). Failures are remembered only briefly, so a throttled secret is not hammered by
every ExternalSecret that uses it, but is retried soon.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Protocol

from controller.alicloud.errors import FetchError, classify
from controller.alicloud.identity import Identity
from controller.alicloud.kms import Endpoint, SecretValue
from controller.engine.clock import Clock, RealClock

FAILURE_TTL = 2.0


@dataclass(frozen=True)
class FetchRequest:
    identity: Identity
    endpoint: Endpoint
    name: str
    version_id: str = ""
    version_stage: str = ""


class SecretReader(Protocol):
    def get_secret_value(
        self, identity: Identity, endpoint: Endpoint, name: str,
        version_id: str = "", version_stage: str = "",
    ) -> SecretValue: ...


Result = SecretValue | FetchError


@dataclass
class _Entry:
    window: int
    at: float
    result: Result


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Result | None = None


class Fetcher:
    def __init__(self, reader: SecretReader, clock: Clock | None = None) -> None:
        self.reader = reader
        self.clock = clock or RealClock()
        self._cache: dict[tuple[FetchRequest, float], _Entry] = {}
        self._flights: dict[FetchRequest, _Flight] = {}
        self._lock = threading.Lock()
        self._puts = 0
        self.reads = 0

    def window_of(self, interval: float) -> int:
        if interval <= 0 or math.isinf(interval):
            return -1
        return int(self.clock.now() // interval)

    def fetch(self, request: FetchRequest, interval: float, *, fresh: bool = False) -> Result:
        """The value for `request` as of this poll window (`interval` seconds long).

        `interval` <= 0 (polling off) or `fresh` always reads KMS (still single-flight).
        """
        window = self.window_of(interval)
        key = (request, interval)
        with self._lock:
            entry = self._cache.get(key)
            if not fresh and window >= 0 and entry is not None and self._usable(entry, window):
                return entry.result
            flight = self._flights.get(request)
            leader = flight is None
            if flight is None:
                flight = self._flights[request] = _Flight()
        if not leader:
            flight.done.wait()
            assert flight.result is not None
            return flight.result
        try:
            result = self._read(request)
        finally:
            with self._lock:
                del self._flights[request]
        with self._lock:
            self._cache[key] = _Entry(window, self.clock.now(), result)
            self._puts += 1
            if self._puts % 1024 == 0:
                self._evict()
        flight.result = result
        flight.done.set()
        return result

    def _usable(self, entry: _Entry, window: int) -> bool:
        if entry.window != window:
            return False
        if isinstance(entry.result, FetchError):
            return self.clock.now() - entry.at < FAILURE_TTL
        return True

    def _read(self, request: FetchRequest) -> Result:
        self.reads += 1
        try:
            return self.reader.get_secret_value(
                request.identity, request.endpoint, request.name,
                request.version_id, request.version_stage)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a classified result
            return classify(exc)

    def _evict(self) -> None:
        """Drop entries from windows before the previous one (caller holds the lock)."""
        now = self.clock.now()
        stale = [k for k, e in self._cache.items()
                 if k[1] > 0 and e.window < int(now // k[1]) - 1]
        for k in stale:
            del self._cache[k]

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()
