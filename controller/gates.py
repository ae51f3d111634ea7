"""A gate per key: a lock or a semaphore made when a key's first user comes and dropped with
its last, so keys that come and go (a namespace per tenant, an identity per store) leave
nothing behind.

Two users today: the ExternalSecret reconciler renders one object at a time per namespace
(a lock per namespace, `hold`), and the Alibaba readers' rate limiter (providers/alibaba/
pool.py) lets a bounded number of one caller's calls wait for a start time (a semaphore per
caller, `entry`: it gives its place back before the call ends). It imports nothing of ours,
so the engine, the providers and the kms-plugin may all use it (.importlinter: "stands alone").
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["Gate", "KeyedGates"]


class Gate(Protocol):
    """What a gate is: threading.Lock, Semaphore and BoundedSemaphore all are."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...


G = TypeVar("G", bound=Gate)


class KeyedGates(Generic[G]):
    """Gates made by `make()`, one per key while it has users (see the module docstring)."""

    def __init__(self, make: Callable[[], G]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._gates: dict[Hashable, tuple[G, int]] = {}

    @contextlib.contextmanager
    def entry(self, key: Hashable) -> Iterator[G]:
        """Count a user of `key`'s gate for the block and hand the gate over, not taken: the
        caller acquires and releases it as it needs."""
        with self._lock:
            gate, users = self._gates.get(key) or (self._make(), 0)
            self._gates[key] = (gate, users + 1)
        try:
            yield gate
        finally:
            with self._lock:
                gate, users = self._gates[key]
                if users <= 1:
                    del self._gates[key]
                else:
                    self._gates[key] = (gate, users - 1)

    @contextlib.contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        """Hold `key`'s gate for the block (waiting for it first)."""
        with self.entry(key) as gate:
            gate.acquire()
            try:
                yield
            finally:
                gate.release()

    def __len__(self) -> int:
        """Keys with a gate right now (0 when nobody holds or waits for one)."""
        with self._lock:
            return len(self._gates)
