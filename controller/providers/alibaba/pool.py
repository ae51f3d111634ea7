"""The bookkeeping that every reader of a cloud product shares (`kms.Kms`, `oos.Oos`,
`kms_instance.KmsInstance`): how they call (`CallPolicy`: rate, retries, timeouts, the call
hook, the idle bound, the clock, built once by `provider.from_settings`), their maps of
clients and limiters, the idle sweep and the cancel flag live here once.

Why it exists: each reader keeps clients (an SDK client per endpoint and identity, or a
connection pool per KMS instance endpoint) and a rate limiter per endpoint host, drops both
when unused for `idle` seconds (an amortized `identity.IdleSweep`), and stops at once on
shutdown (`cancel`). `ClientPool` owns those maps, their last-use times, the sweep and the
cancel flag; `SdkClients` adds what the SDK readers share on top: entries keyed by
(endpoint, identity) that hold the credentials client they sign with, so that an identity or
an expired credential can be forgotten. Building a client, the request, the response and the
error classes stay with each reader.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_when_event_set,
    wait_random_exponential,
)

from controller.gates import KeyedGates
from controller.providers import FetchError, Kind
from controller.providers.alibaba.identity import Identity, IdentityPool, IdleSweep

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
C = TypeVar("C")
SdkKey = tuple[Any, Identity]  # (endpoint, identity)
SdkEntry = tuple[Any, Any]  # (SDK client, the credentials client it signs with)


CallHook = Callable[[str, str, float], None]  # (endpoint host, result code, seconds)


@dataclass(frozen=True)
class CallPolicy:
    """How a reader calls its service: at most `rate_per_endpoint` calls a second to one
    endpoint; a read makes at most `max_attempts` calls within `max_retry_seconds`; each call
    connects within `connect_timeout_ms` and reads within `read_timeout_ms`; `on_call` is told
    each call's endpoint, result code and seconds; clients and limiters unused for `idle`
    seconds are dropped (None: kept); `clock` is monotonic time (tests pass a fake)."""

    rate_per_endpoint: float = 10.0
    max_attempts: int = 4
    max_retry_seconds: float = 20.0
    connect_timeout_ms: int = 5000
    read_timeout_ms: int = 10000
    on_call: CallHook | None = None
    idle: float | None = None
    clock: Callable[[], float] = time.monotonic

    def observe(self, host: str, code: str, start: float) -> None:
        """Tell `on_call` of one call that started at `start` (time.monotonic)."""
        if self.on_call is not None:
            self.on_call(host, code, time.monotonic() - start)

    def retrying(self, cancelled: threading.Event, *, token_refresh: bool = False) -> Retrying:
        """The retry policy of one read: at most `max_attempts` calls and
        `max_retry_seconds`; waits for the service's retry-after when it sends one, else
        exponential back-off with jitter; stops at once when `cancelled` is set. Retries a
        retryable FetchError, and with `token_refresh` an expired security token once (the
        call rebuilt the identity: the retry has new credentials)."""
        refreshed = False
        cap = self.max_retry_seconds

        def should_retry(exc: BaseException) -> bool:
            nonlocal refreshed
            if not isinstance(exc, FetchError):
                return False
            if token_refresh and exc.token_expired and not refreshed:
                refreshed = True
                return True
            return exc.retryable

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, FetchError) and exc.retry_after:
                return min(exc.retry_after, cap)
            return float(wait_random_exponential(multiplier=0.2, max=5.0)(state))

        def sleep(seconds: float) -> None:
            cancelled.wait(seconds)

        return Retrying(
            stop=(stop_after_attempt(self.max_attempts) | stop_after_delay(cap)
                  | stop_when_event_set(cancelled)),
            wait=wait,
            sleep=sleep,
            retry=retry_if_exception(should_retry),
            reraise=True,
        )


DEFAULT_CALLS = CallPolicy()  # what a reader built without a policy uses (tests, tools)

# Calls of one identity that may wait for an endpoint's start times at once: what one tenth of
# a second of the endpoint's rate allows (1 at the default 10/s), so another caller's call
# starts within about 0.1 s plus one period.
PER_CALLER_SECONDS = 0.1


class RateLimiter:
    """At most `rate` calls per second to one endpoint, and at most `rate` at once; at most
    `per_caller` of one identity's calls waiting for a start time (`turn`).

    Calls start evenly spaced, one every `(1 + guard) / rate` seconds (a token bucket that holds
    a single token), so no one-second window ever holds more than `rate` of them: a bucket with
    a burst of `rate` would let through up to `2 * rate - 1` in some window. `rate + 1`
    consecutive starts span `1 + guard` seconds, so `guard` (0.1: 100 ms, 10% of throughput) is
    how late a call may reach the service (network jitter, a new connection, a busy CPU)
    before the service could count `rate + 1` in one second. Take a slot (`slots`) first, get
    everything ready (client, credentials), then `acquire()` the start time right before
    sending. Readers take `turn(caller)` instead of `slots`: fair between callers, the
    namespace a read is made for (`providers.tenant()`) or, when none, its identity.

    Start times are not reserved in arrival order: each one goes, when it comes, to the
    waiting call whose caller was served least recently (then the earliest arrival). A
    caller that has not been served for a while starts at the next start time, ahead of a
    busy caller's waiting call: within one period, not two. The next start time counts from
    when a call actually took its start, so starts are never closer than a period even when
    a thread wakes late (at 400/s: 351 calls/s against 364 on a fixed grid; 16 threads
    cost 0.06 ms of CPU per call, only the first in line waiting for the clock).
    """

    CANCEL_POLL = 0.05  # seconds between two looks at `cancel` while waiting
    SERVED_HORIZON = 10  # periods after which a caller's last start no longer counts

    def __init__(self, rate: float, guard: float = 0.1, per_caller: int | None = None) -> None:
        self.rate = max(rate, 0.001)
        self.period = (1.0 + guard) / self.rate
        self._next = 0.0
        self._lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(max(1, int(rate)))
        self.per_caller = max(1, per_caller if per_caller is not None
                              else int(self.rate * PER_CALLER_SECONDS))
        self._callers: KeyedGates[threading.Semaphore] = KeyedGates(
            lambda: threading.Semaphore(self.per_caller))
        self._local = threading.local()  # the current thread's caller and place (turn)
        # The calls waiting for a start time, by (their caller's last start, arrival), each
        # with the event that wakes it when it becomes the first in line.
        self._waiting: dict[tuple[float, int], threading.Event] = {}
        self._served: dict[Hashable, float] = {}  # each caller's last start
        self._arrivals = itertools.count()

    @contextlib.contextmanager
    def turn(self, caller: Hashable) -> Iterator[None]:
        """A place for one call of `caller` (a namespace, or an identity when no namespace
        asks), then a slot (`slots`), held for the whole call. At most `per_caller` of one
        caller's calls wait for a start time at once (the place is given back by `acquire`
        once the start time has come); the
        caller's other calls wait here, behind the other callers' reservations, not in the
        endpoint's queue. Without this one tenant's hundreds of polls filled the queue of
        start times and every other tenant's read waited behind them (4.4 s at 10 calls/s,
        a black-box attempt, 2026-12-07); with it, and start times going to the caller served
        least recently (`acquire`), another caller's call starts within one period (0.11 s at
        10/s). Calls in flight are not limited per caller: one caller alone still uses every
        slot when the service is slow."""
        with self._callers.entry(caller) as gate:
            held = [False]

            def give_back() -> None:
                if held[0]:
                    held[0] = False
                    gate.release()

            try:
                gate.acquire()
                held[0] = True
                self._local.give_back = give_back
                self._local.caller = caller
                with self.slots:
                    yield
            finally:
                self._local.give_back = None
                self._local.caller = None
                give_back()

    def acquire(self, cancel: threading.Event | None = None) -> None:
        """Wait for this call's start time: the next one that no caller served less recently
        is waiting for (see the class docstring); returns early when `cancel` is set. Only
        the first in line waits for the clock; the others sleep until they are first."""
        caller = getattr(self._local, "caller", None)
        woken = threading.Event()
        with self._lock:
            rank = (self._served.get(caller, -math.inf), next(self._arrivals))
            self._waiting[rank] = woken
        try:
            while not (cancel is not None and cancel.is_set()):
                with self._lock:
                    now = time.monotonic()
                    first = min(self._waiting) == rank
                    if first and now >= self._next:
                        self._next = now + self.period
                        self._served[caller] = now
                        self._forget_served(now)
                        break
                    wait = self._next - now if first else None
                    woken.clear()
                if cancel is not None:
                    wait = min(wait or self.CANCEL_POLL, self.CANCEL_POLL)
                woken.wait(wait)
        finally:
            with self._lock:
                del self._waiting[rank]
                if self._waiting:  # the next in line now waits for the clock
                    self._waiting[min(self._waiting)].set()
        give_back = getattr(self._local, "give_back", None)
        if give_back is not None:  # started: the caller's place goes to its next call
            give_back()

    def _forget_served(self, now: float) -> None:
        """Drop last-start times older than `SERVED_HORIZON` periods (the lock held): such a
        caller ranks as one never served anyway. Amortized: only when the map has grown."""
        if len(self._served) <= 2 * len(self._callers) + 16:
            return
        horizon = now - self.SERVED_HORIZON * self.period
        for caller in [c for c, at in self._served.items() if at < horizon]:
            del self._served[caller]


class ClientPool(Generic[K, C]):
    """Clients by key and rate limiters by host, each with its last use; both dropped by the
    amortized sweep once unused for `idle` seconds. `on_drop` is told every client dropped
    (outside the lock: closing may block), `on_sweep` every sweep's cut-off (to prune a
    reader's own maps with it). `label` names the clients in `sizes()`."""

    def __init__(self, rate: float, *, idle: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_drop: Callable[[C], None] | None = None,
                 on_sweep: Callable[[float], None] | None = None,
                 label: str = "clients") -> None:
        self.rate = rate
        self.clock = clock
        self.on_drop = on_drop
        self.on_sweep = on_sweep
        self.label = label
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self._clients: dict[K, C] = {}
        self._client_used: dict[K, float] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._limiter_used: dict[str, float] = {}
        self._sweep = IdleSweep(idle, clock=clock)

    def client(self, key: K, build: Callable[[], C]) -> C:
        """The client of `key`, built (outside the lock) on first use; runs the sweep when due.
        Two callers building at once keep the first one stored."""
        with self._lock:
            found = self._clients.get(key)
            if found is not None:
                self._client_used[key] = self.clock()
            dropped, cutoff = self._prune_locked()
        self._after_sweep(dropped, cutoff)
        if found is not None:
            return found
        built = build()
        with self._lock:
            self._client_used[key] = self.clock()
            kept = self._clients.setdefault(key, built)
        if kept is not built and self.on_drop is not None:
            self.on_drop(built)  # lost the race: release what the spare one holds
        return kept

    def limiter(self, host: str) -> RateLimiter:
        """The rate limiter of one endpoint host (shared by all identities using it)."""
        with self._lock:
            limiter = self._limiters.get(host)
            if limiter is None:
                limiter = self._limiters[host] = RateLimiter(self.rate)
            self._limiter_used[host] = self.clock()
            return limiter

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise FetchError(Kind.TRANSIENT, "Cancelled",
                             "Cancelled: the controller is shutting down")

    def cancel(self) -> None:
        """Stop retrying: waiting calls end at once with a transient error, new calls fail."""
        self.cancelled.set()

    def drop(self, match: Callable[[K, C], bool]) -> int:
        """Drop the clients for which `match(key, client)` holds now; returns how many."""
        with self._lock:
            keys = [key for key, value in self._clients.items() if match(key, value)]
            dropped = [self._drop_locked(key) for key in keys]
        self._after_sweep(dropped, None)
        return len(keys)

    def drop_key(self, key: K) -> bool:
        """Drop the client of `key` now (its last user is gone); returns whether one was held."""
        with self._lock:
            dropped = [self._drop_locked(key)] if key in self._clients else []
        self._after_sweep(dropped, None)
        return bool(dropped)

    def close(self) -> None:
        """Drop every client (told to `on_drop`); limiters stay."""
        self.drop(lambda _key, _client: True)

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {self.label: len(self._clients), "limiters": len(self._limiters)}

    def _prune_locked(self) -> tuple[list[C], float | None]:
        """The amortized sweep: clients and limiters unused for longer than the idle bound. A
        limiter is only ever idle with no call in flight (a call is far shorter than the
        bound), so no two limiters of one host are ever in use at once."""
        cutoff = self._sweep.due()
        if cutoff is None:
            return [], None
        dropped = [self._drop_locked(key) for key in IdleSweep.stale(self._client_used, cutoff)]
        for host in IdleSweep.stale(self._limiter_used, cutoff):
            del self._limiter_used[host]
            self._limiters.pop(host, None)
        return dropped, cutoff

    def _drop_locked(self, key: K) -> C:
        self._client_used.pop(key, None)
        return self._clients.pop(key)

    def _after_sweep(self, dropped: list[C], cutoff: float | None) -> None:
        if self.on_drop is not None:
            for client in dropped:
                self.on_drop(client)
        if cutoff is not None and self.on_sweep is not None:
            self.on_sweep(cutoff)


class SdkClients(ClientPool[SdkKey, SdkEntry]):
    """SDK clients per (endpoint, identity), each with the credentials client of `identities`
    that it signs with."""

    def __init__(self, identities: IdentityPool, rate: float, **options: Any) -> None:
        super().__init__(rate, **options)
        self.identities = identities

    def entry(self, identity: Identity, endpoint: Any,
              build: Callable[[], SdkEntry]) -> SdkEntry:
        """(SDK client, credentials client) of `endpoint` as `identity`; keeps the identity's
        credentials alive while it is used."""
        found = self.client((endpoint, identity), build)
        self.identities.touch(identity)
        return found

    def forget_identity(self, identity: Identity) -> int:
        """Drop `identity`'s clients and credentials now; returns the clients dropped (a later
        call builds them again)."""
        dropped = self.drop(lambda key, _entry: key[1] == identity)
        self.identities.discard(identity)
        return dropped

    def forget_credential(self, identity: Identity, credential: Any) -> None:
        """After the service said `identity`'s security token expired: drop its credentials
        and the clients that sign with them, unless a call that failed at the same moment
        already did (then they are new and good)."""
        if self.identities.invalidate(identity, credential):
            log.info("security token of %s expired; getting new credentials",
                     identity.describe())
        self.drop(lambda _key, entry: entry[1] is credential)
