"""Reading secrets from KMS: one SDK client per (endpoint, CA, identity), a rate limit and a
concurrency cap per endpoint, and the retry policy (the SDK retries nothing by itself).

Retries (tenacity): throttling waits for `x-acs-retry-after` when the service sends it;
5xx, timeouts and dropped connections back off exponentially with jitter; not found and
access denied are final for this attempt; an expired security token rebuilds the identity and
is retried once.

A KMS instance endpoint's private CA is given as PEM (the store's `ca` or `caSecretRef`) and
written to a file, as the SDK wants a path. Known limit of the SDK (darabonba 1.0.9): it keeps
one https session per `host:port` per process and every CA file used with it is added to that
session's trust store, so once a client with the right CA has connected, a client for the same
host:port with a wrong CA (or none) succeeds too. A wrong CA fails closed only while no client
of this process has used the right one for that host:port.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from controller.alicloud.errors import FetchError, classify
from controller.alicloud.identity import Identity, IdentityPool

log = logging.getLogger(__name__)

CallHook = Callable[[str, str, float], None]  # (endpoint host, result code, seconds)


@dataclass(frozen=True)
class Endpoint:
    host: str
    protocol: str = "https"
    ca_pem: str = field(default="", repr=False)  # private CA of a KMS instance endpoint


@dataclass(frozen=True)
class SecretValue:
    name: str
    data: bytes = field(repr=False)
    data_type: str
    version_id: str
    stages: tuple[str, ...] = ()


class RateLimiter:
    """At most `rate` calls per second to one endpoint, and at most `rate` at once.

    Calls start evenly spaced, one every `(1 + guard) / rate` seconds (a token bucket that holds
    a single token), so no one-second window ever holds more than `rate` of them: a bucket with
    a burst of `rate` would let through up to `2 * rate - 1` in some window. `rate + 1`
    consecutive starts span `1 + guard` seconds, so `guard` (0.1: 100 ms, 10% of throughput) is
    how late a call may reach the service (network jitter, a new connection, a busy CPU)
    before the service could count `rate + 1` in one second. Take a slot (`slots`) first, get
    everything ready (client, credentials), then `acquire()` the start time right before
    sending.
    """

    def __init__(self, rate: float, guard: float = 0.1) -> None:
        self.rate = max(rate, 0.001)
        self.period = (1.0 + guard) / self.rate
        self._next = 0.0
        self._lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(max(1, int(rate)))

    def acquire(self) -> None:
        """Wait for this call's start time (reserved in arrival order)."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.period
        if start > now:
            time.sleep(start - now)


class Kms:
    def __init__(
        self,
        identities: IdentityPool,
        *,
        region: str,
        rate_per_endpoint: float = 10.0,
        max_attempts: int = 4,
        max_retry_seconds: float = 20.0,
        connect_timeout_ms: int = 5000,
        read_timeout_ms: int = 10000,
        on_call: CallHook | None = None,
    ) -> None:
        self.identities = identities
        self.region = region
        self.rate = rate_per_endpoint
        self.max_attempts = max_attempts
        self.max_retry_seconds = max_retry_seconds
        self.timeouts = (connect_timeout_ms, read_timeout_ms)
        self.on_call = on_call
        # (endpoint, identity) -> (KMS client, the credentials client it signs with)
        self._clients: dict[tuple[Endpoint, Identity], tuple[Any, Any]] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._lock = threading.Lock()
        self._ca_dir = ""  # made on first use: most installations have no private CA
        self.calls = 0

    def close(self) -> None:
        if self._ca_dir:
            shutil.rmtree(self._ca_dir, ignore_errors=True)

    # ------------------------------------------------------------------ public
    def get_secret_value(
        self, identity: Identity, endpoint: Endpoint, name: str,
        version_id: str = "", version_stage: str = "",
    ) -> SecretValue:
        """Read one secret version; raises FetchError (already retried where that helps)."""
        refreshed = False

        def should_retry(exc: BaseException) -> bool:
            nonlocal refreshed
            if isinstance(exc, FetchError) and exc.token_expired and not refreshed:
                refreshed = True  # `_call` rebuilt the identity; retry once with new credentials
                return True
            return isinstance(exc, FetchError) and exc.retryable

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.max_retry_seconds),
            wait=self._wait,
            retry=retry_if_exception(should_retry),
            reraise=True,
        )
        result: SecretValue = retrying(self._call, identity, endpoint, name, version_id,
                                       version_stage)
        return result

    # ----------------------------------------------------------------- private
    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, FetchError) and exc.retry_after:
            return min(exc.retry_after, self.max_retry_seconds)
        return float(wait_random_exponential(multiplier=0.2, max=5.0)(state))

    def _call(self, identity: Identity, endpoint: Endpoint, name: str, version_id: str,
              version_stage: str) -> SecretValue:
        from alibabacloud_kms20160120 import models

        limiter = self._limiter(endpoint.host)
        credential = None
        start = time.monotonic()
        code = "Success"
        try:
            with limiter.slots:
                client, credential = self._client(identity, endpoint)
                credential.get_credential()  # a due STS refresh happens now, not after the start
                request = models.GetSecretValueRequest(
                    secret_name=name, version_id=version_id or None,
                    version_stage=version_stage or None)
                limiter.acquire()
                start = time.monotonic()
                self.calls += 1
                resp = client.get_secret_value(request)
        except Exception as exc:  # noqa: BLE001 - classified, re-raised as FetchError
            error = classify(exc, who=identity.describe(), endpoint=endpoint.host)
            code = error.code
            if error.token_expired and credential is not None:
                self._forget(identity, credential)
            raise error from None
        finally:
            if self.on_call is not None:
                self.on_call(endpoint.host, code, time.monotonic() - start)
        return _value(name, resp.body)

    def _limiter(self, host: str) -> RateLimiter:
        """The rate limiter of one endpoint host (shared by all identities using it)."""
        with self._lock:
            limiter = self._limiters.get(host)
            if limiter is None:
                limiter = self._limiters[host] = RateLimiter(self.rate)
            return limiter

    def _client(self, identity: Identity, endpoint: Endpoint) -> tuple[Any, Any]:
        key = (endpoint, identity)
        with self._lock:
            entry = self._clients.get(key)
        if entry is not None:
            return entry
        from alibabacloud_kms20160120.client import Client
        from alibabacloud_tea_openapi.models import Config

        try:
            credential = self.identities.credential(identity)
        except ValueError as exc:  # the credentials library refused the configuration
            raise classify(exc, who=identity.describe()) from None
        config = Config(
            credential=credential,
            endpoint=endpoint.host,
            protocol=endpoint.protocol,
            region_id=self.region,
            connect_timeout=self.timeouts[0],
            read_timeout=self.timeouts[1],
            ca=self._ca_file(endpoint.ca_pem) if endpoint.ca_pem else None,
        )
        client = Client(config)
        with self._lock:
            return self._clients.setdefault(key, (client, credential))

    def _ca_file(self, pem: str) -> str:
        """The SDK wants a CA file path, not PEM content: write each CA once."""
        with self._lock:
            if not self._ca_dir:
                self._ca_dir = tempfile.mkdtemp(prefix="asm-kms-ca-")
        path = os.path.join(self._ca_dir, hashlib.sha256(pem.encode()).hexdigest()[:16] + ".pem")
        if not os.path.exists(path):
            tmp = path + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(pem)
            os.replace(tmp, path)
        return path

    def _forget(self, identity: Identity, credential: Any) -> None:
        """Rebuild `identity` after the service said its security token expired: drop its
        credentials and the KMS clients that sign with them, unless a call that failed at the
        same moment already did (then they are new and good)."""
        if self.identities.invalidate(identity, credential):
            log.info("security token of %s expired; getting new credentials",
                     identity.describe())
        with self._lock:
            for key in [k for k, v in self._clients.items() if v[1] is credential]:
                del self._clients[key]


def _value(name: str, body: Any) -> SecretValue:
    data_type = str(body.secret_data_type or "text")
    raw = body.secret_data or ""
    data = base64.b64decode(raw) if data_type == "binary" else str(raw).encode()
    stages = tuple(body.version_stages.version_stage or ()) if body.version_stages else ()
    return SecretValue(name=name, data=data, data_type=data_type,
                       version_id=str(body.version_id or ""), stages=stages)
