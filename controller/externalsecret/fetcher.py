"""Deduplicated reads of the secret sources: the latest value of each (client, secret,
version) is kept, and reads of the same one at the same time wait for a single call (single
flight). A client is a provider's `ClientKey` (Alibaba's: an identity and an endpoint); the
provider that reads it is found by the ExternalSecret's provider name (`providers.registry`).

Who reads KMS when: the controller polls each distinct secret once per interval (see
`manager`), so an ExternalSecret's own sync finds a value younger than its interval here and
costs no call; ten ExternalSecrets reading one KMS secret cost one call per interval, not ten.
Failures back off per distinct read, shared by every ExternalSecret that uses it: a failed
read is answered from the cache for 2 s after the first failure, then 4, 8, ... up to the
readers' interval (or 5 minutes), so a throttled or broken secret costs one call per back-off
step, not one per ExternalSecret retry; a success resets it.

What stays is bounded (--value-cache-bytes): values held together take at most that many
bytes. Past it, the least recently used value of the tenant that holds the most is let go
first (the namespace that read it, `providers.tenant()`, else its client's credential), so a
tenant reading many large values evicts its own before anyone else's, however many
identities it spreads them over; a value let go costs its next reader one call (polls
compare digests, not values).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from controller.providers import FetchError, Kind, tenant
from controller.providers.base import ClientKey, RemoteRef, SecretValue
from controller.providers.registry import Providers
from controller.runtime.clock import Clock, RealClock

FAILURE_TTL = 2.0  # the first back-off step of a failed read
FAILURE_TTL_CAP = 300.0
DEFAULT_VALUE_BYTES = 32 << 20  # --value-cache-bytes
VALUE_OVERHEAD = 256  # what a cached value costs besides its bytes (the entry, the request)


@dataclass(frozen=True)
class FetchRequest:
    """One distinct read: through which client (a provider's key), of which remote secret,
    by the provider the ExternalSecret names ("kms", "oos", ...)."""

    client: ClientKey
    name: str
    version_id: str = ""
    version_stage: str = ""
    provider: str = "kms"

    @property
    def ref(self) -> RemoteRef:
        return RemoteRef(self.name, self.version_id, self.version_stage)

    def describe(self) -> str:
        return self.client.describe(self.ref)


Result = SecretValue | FetchError


@dataclass
class _Entry:
    at: float
    result: Result


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Result | None = None


class Fetcher:
    def __init__(self, providers: Providers, clock: Clock | None = None,
                 max_bytes: int = DEFAULT_VALUE_BYTES) -> None:
        self.providers = providers  # who reads each request, by its provider name
        self.clock = clock or RealClock()
        self.max_bytes = max_bytes
        self._cache: dict[FetchRequest, _Entry] = {}
        # The values held, per identity, least recently used first, with their sizes.
        self._held: dict[Hashable, collections.OrderedDict[FetchRequest, int]] = {}
        self._held_bytes: dict[Hashable, int] = {}
        self._owners: dict[FetchRequest, Hashable] = {}  # who holds each value held
        self.value_bytes = 0
        self.evictions = 0
        self._flights: dict[FetchRequest, _Flight] = {}
        self._failures: dict[FetchRequest, int] = {}  # consecutive failures of each read
        self._last_ok: dict[FetchRequest, float] = {}  # when each read last succeeded
        self._lock = threading.Lock()
        self.reads = 0

    def fetch(self, request: FetchRequest, max_age: float, *, fresh: bool = False) -> Result:
        """The value for `request`: cached if read less than `max_age` seconds ago (and not
        `fresh`), else read from its source once however many callers ask at the same time."""
        with self._lock:
            entry = self._cache.get(request)
            if not fresh and entry is not None and self._usable(request, entry, max_age):
                self._touch(request)
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
            with self._lock:
                self._cache[request] = _Entry(self.clock.now(), result)
                self._account(request, result)
                if isinstance(result, FetchError):
                    self._failures[request] = self._failures.get(request, 0) + 1
                else:
                    self._failures.pop(request, None)
                    self._last_ok[request] = self.clock.now()
            flight.result = result
        finally:
            with self._lock:
                del self._flights[request]
            if flight.result is None:
                flight.result = FetchError(Kind.TRANSIENT, "InternalError",
                                           "InternalError: the read was interrupted")
            flight.done.set()
        return result

    def peek(self, request: FetchRequest) -> Result | None:
        """The last result for `request`, however old; None when never read."""
        with self._lock:
            entry = self._cache.get(request)
            return entry.result if entry else None

    def release(self, clients: Iterable[tuple[str, ClientKey]],
                credentials: Iterable[Hashable]) -> None:
        """No read goes through these (provider name, client) any more, nor uses these
        credentials: every provider is told (`Provider.release`), each of its own clients
        and of every credential, and drops them now."""
        clients, credentials = list(clients), list(credentials)
        for provider in self.providers:
            own = [client for name, client in clients if self.providers.get(name) is provider]
            if own or credentials:
                provider.release(own, credentials)

    def drop(self, request: FetchRequest) -> None:
        """Forget a value nobody uses any more."""
        with self._lock:
            self._cache.pop(request, None)
            self._unaccount(request)
            self._failures.pop(request, None)
            self._last_ok.pop(request, None)

    def success_age(self, request: FetchRequest) -> float | None:
        """Seconds since `request` last read successfully in this process; None if never."""
        with self._lock:
            at = self._last_ok.get(request)
        return None if at is None else self.clock.now() - at

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    # ------------------------------------------------------------ the bound
    def _account(self, request: FetchRequest, result: Result) -> None:
        """`request` now holds `result` (the lock held): count a value's bytes, then let go of
        values past the bound, the largest holder's least recently used first."""
        self._unaccount(request)
        if isinstance(result, FetchError):
            return
        size = len(result.data) + VALUE_OVERHEAD
        owner = tenant() or request.client.credential  # the namespace that read it, else whose
        self._owners[request] = owner
        self._held.setdefault(owner, collections.OrderedDict())[request] = size
        self._held_bytes[owner] = self._held_bytes.get(owner, 0) + size
        self.value_bytes += size
        while self.value_bytes > self.max_bytes:
            largest = max(self._held_bytes, key=self._held_bytes.__getitem__)
            victim = next(iter(self._held[largest]))
            if victim == request and len(self._held[largest]) == 1 and \
                    len(self._held_bytes) == 1:
                break  # the only value held: over the bound alone, kept for its readers
            self._unaccount(victim)
            self._cache.pop(victim, None)
            self.evictions += 1

    def _unaccount(self, request: FetchRequest) -> None:
        owner = self._owners.pop(request, None)
        held = self._held.get(owner) if owner is not None else None
        size = held.pop(request, None) if held is not None else None
        if size is None:
            return
        self.value_bytes -= size
        left = self._held_bytes[owner] - size
        if held:
            self._held_bytes[owner] = left
        else:
            del self._held[owner]
            del self._held_bytes[owner]

    def _touch(self, request: FetchRequest) -> None:
        held = self._held.get(self._owners.get(request))
        if held is not None and request in held:
            held.move_to_end(request)

    def _usable(self, request: FetchRequest, entry: _Entry, max_age: float) -> bool:
        age = self.clock.now() - entry.at
        if isinstance(entry.result, FetchError):
            return age < self.failure_ttl(request, max_age)
        return age < max_age

    def failure_ttl(self, request: FetchRequest, max_age: float) -> float:
        """How long the last failure of `request` answers for it (call with the lock held)."""
        failures = self._failures.get(request, 1)
        cap = max_age if max_age > 0 else FAILURE_TTL_CAP
        return float(min(FAILURE_TTL * 2.0 ** min(failures - 1, 16), cap, FAILURE_TTL_CAP))

    def _read(self, request: FetchRequest) -> Result:
        self.reads += 1
        provider = self.providers.get(request.provider)
        if provider is None:
            return FetchError(Kind.CONFIG, "UnsupportedProvider",
                              f"UnsupportedProvider: no client for provider {request.provider}")
        try:
            return provider.read(request.client, request.ref)
        except FetchError as exc:
            return exc.with_traceback(None)  # cached: its frames need not stay
        except Exception as exc:  # noqa: BLE001 - a provider broke its contract: still a result
            # Only the type: a message might quote what the provider was handed.
            return FetchError(Kind.TRANSIENT, "InternalError",
                              f"InternalError: the {request.provider} provider failed "
                              f"({type(exc).__name__})")

