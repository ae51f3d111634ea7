"""The per-read poll schedule: which ExternalSecrets use which distinct KMS read, how often
each read is polled, and whether a poll saw a change.

Polling is per read, not per ExternalSecret: every distinct (client, secret, version) that
some ExternalSecret uses is read once per interval (the shortest interval among
its users), at a fixed offset inside the interval so polls spread; when the value (or the
error) changes, every user syncs at once. The manager turns these answers into queue work.

Not thread-safe on its own: the caller holds one lock around every call, the same lock that
guards whether an object still exists, so a DELETED event and a sync that ends at the same
moment cannot leave a deleted object's polls registered.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

from controller.externalsecret.fetcher import FetchRequest, Result
from controller.providers import FetchError
from controller.providers.base import ClientKey

Key = tuple[str, str]  # an ExternalSecret: (namespace, name)
T = TypeVar("T")


@dataclass(frozen=True)
class Due:
    """A poll to make now: the users to sync if it changed, and its interval."""

    users: frozenset[Key]
    interval: float


class PollSchedule:
    def __init__(self, peek: Callable[[FetchRequest], Result | None]) -> None:
        self._peek = peek  # the last value read for a request, however old
        self._uses: dict[Key, frozenset[FetchRequest]] = {}
        self._users: dict[FetchRequest, set[Key]] = {}
        self._intervals: dict[Key, float] = {}
        self._digests: dict[FetchRequest, tuple[str, str]] = {}
        self._polled: set[FetchRequest] = set()
        self._every: dict[FetchRequest, float] = {}  # the interval its next poll was set for
        # How many used reads go through each client (provider, client key) and use each
        # credential: when the last goes, the client and the credentials are released at once
        # (`take_released`), not after an idle bound.
        self._via: dict[Client, int] = {}
        self._as: dict[Hashable, int] = {}
        self._released: set[Client] = set()

    def track(self, key: Key, requests: frozenset[FetchRequest],
              interval: float) -> list[tuple[FetchRequest, float]]:
        """`key` now depends on `requests`, polled every `interval` (0: not polled). Returns
        the reads the caller must schedule, each with its interval: reads new to polling, and
        reads polled so far at a longer interval than `key` asks for (a poll set for an hour
        from now must not keep a new one-minute user waiting; the queue keeps the earlier
        of two due times)."""
        start: list[tuple[FetchRequest, float]] = []
        before = self._uses.pop(key, frozenset())
        for request in before - requests:
            users = self._users.get(request)
            if users is not None:
                users.discard(key)
                if not users:
                    del self._users[request]
                    self._unuse(request)
        if requests:
            self._uses[key] = requests
            self._intervals[key] = interval
        else:
            self._intervals.pop(key, None)
        for request in requests:
            if request not in self._users:
                self._use(request)
            self._users.setdefault(request, set()).add(key)
            if interval <= 0:
                continue
            if request not in self._polled:
                self._polled.add(request)
                self._digests[request] = digest(self._peek(request))
            elif interval >= self._every.get(request, math.inf):
                continue
            self._every[request] = interval
            start.append((request, interval))
        return start

    def forget(self, key: Key) -> None:
        self.track(key, frozenset(), 0.0)

    def due(self, request: FetchRequest) -> Due | None:
        """The poll of `request` is due: None when nobody polls it any more (it is dropped:
        the caller forgets its value), else its users and interval."""
        users = frozenset(self._users.get(request, ()))
        interval = min((i for i in (self._intervals.get(k, 0.0) for k in users) if i > 0),
                       default=0.0)
        if not users or interval <= 0:
            self._polled.discard(request)
            if self._users.pop(request, None) is not None:
                self._unuse(request)
            self._digests.pop(request, None)
            self._every.pop(request, None)
            return None
        self._every[request] = interval  # the caller sets the next poll at this interval
        return Due(users, interval)

    def record(self, request: FetchRequest, result: Result) -> bool:
        """A poll read `result`: True when it differs from what the users last saw."""
        new = digest(result)
        changed = new != self._digests.get(request)
        self._digests[request] = new
        return changed

    def take_released(self) -> tuple[set[Client], set[Hashable]]:
        """The clients (provider, client key) and the credentials that no used read
        goes through any more, since the last call: the caller drops them now."""
        clients, self._released = self._released, set()
        clients = {c for c in clients if c not in self._via}  # used again meanwhile
        credentials = {c[1].credential for c in clients if c[1].credential not in self._as}
        return clients, credentials

    def _use(self, request: FetchRequest) -> None:
        _count(self._via, _client(request), +1)
        _count(self._as, request.client.credential, +1)

    def _unuse(self, request: FetchRequest) -> None:
        if not _count(self._via, _client(request), -1):
            self._released.add(_client(request))
        _count(self._as, request.client.credential, -1)

    def users(self, request: FetchRequest) -> frozenset[Key]:
        return frozenset(self._users.get(request, ()))

    def uses(self, key: Key) -> frozenset[FetchRequest]:
        return self._uses.get(key, frozenset())

    def sizes(self) -> dict[str, int]:
        """How many entries each map holds (for tests and the churn benchmark)."""
        return {"uses": len(self._uses), "users": len(self._users),
                "intervals": len(self._intervals), "digests": len(self._digests),
                "polled": len(self._polled), "every": len(self._every),
                "via": len(self._via), "as": len(self._as), "released": len(self._released)}


Client = tuple[str, ClientKey]  # (provider name, the provider's client key)


def _client(request: FetchRequest) -> Client:
    return (request.provider, request.client)


def _count(counts: dict[T, int], key: T, step: int) -> int:
    """Add `step` to the count of `key`, forgetting it at 0; returns the new count."""
    left = counts.get(key, 0) + step
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
    return max(left, 0)


def digest(result: Result | None) -> tuple[str, str]:
    """What a poll compares: the version and a hash of the value, or the error class."""
    if result is None:
        return ("", "")
    if isinstance(result, FetchError):
        return ("error", f"{result.kind}:{result.code}")
    return (result.version_id, hashlib.sha256(result.data).hexdigest())


def until_slot(seed: str, interval: float, now: float) -> float:
    """Seconds until the next slot of `seed`: a fixed offset within each interval, so the
    polls (and a restart's re-checks) of many objects spread evenly."""
    offset = (zlib.crc32(seed.encode()) / 2**32) * interval
    due = (math.floor((now - offset) / interval) + 1) * interval + offset
    return max(due - now, 0.001)


def poll_seed(request: FetchRequest) -> str:
    return (f"{request.client.seed}/{request.name}/"
            f"{request.version_id}/{request.version_stage}")
