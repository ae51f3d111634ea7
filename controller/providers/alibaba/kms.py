"""Reading secrets from KMS: one SDK client per (endpoint, CA, identity), a rate limit and a
concurrency cap per endpoint, and the retry policy (the SDK retries nothing by itself).

Retries (tenacity): throttling waits for `x-acs-retry-after` when the service sends it;
5xx, timeouts and dropped connections back off exponentially with jitter; not found and
access denied are final for this attempt; an expired security token rebuilds the identity and
is retried once.

A KMS instance endpoint's private CA is given as PEM (the store's `ca` or `caSecretRef`). The
SDK wants a path: the PEM goes into a memory-only file (memfd, close-on-exec; nothing in
$TMPDIR, which other tenants' token files share). The SDK (darabonba 1.0.9) keeps one https
session per protocol, `host:port` and pool size per process, and every CA file used with a
session is added to its trust store; so each distinct CA of a host is given its own pool size
(`CaSessions`), hence its own session: one store's CA never widens another store's trust.

Pruning: SDK clients (per endpoint and identity), rate limiters (per host) and cool-downs
(per identity and host) unused for `idle` seconds are dropped by the amortized sweep of
`pool.SdkClients`, and `forget_identity` and `release` drop theirs at once. A private CA is
held while an SDK client uses it: when the last one is dropped, its memory file is closed and
the SDK's session for it (its TLS context and connections) is closed and removed from the
SDK's session table, and only then may its pool size serve another CA. A call still in flight
on that session fails as a dropped connection and is retried on a new client.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from controller.ops.memory import release_free_memory
from controller.providers import tenant
from controller.providers.alibaba.errors import FetchError, Kind, classify
from controller.providers.alibaba.identity import Identity, IdentityPool
from controller.providers.alibaba.pool import DEFAULT_CALLS, CallPolicy, SdkClients
from controller.providers.alibaba.pool import (
    RateLimiter as RateLimiter,  # re-exported: kms.RateLimiter
)
from controller.providers.base import SecretValue as SecretValue  # re-exported: kms.SecretValue

COOLDOWN_BASE, COOLDOWN_CAP = 5.0, 60.0  # seconds an identity waits after sustained throttling
SDK_DEFAULT_POOL = 40  # darabonba's DEFAULT_POOL_MAXSIZE: the session of endpoints without a CA


@dataclass(frozen=True)
class Endpoint:
    host: str
    protocol: str = "https"
    ca_pem: str = field(default="", repr=False)  # private CA of a KMS instance endpoint
    insecure: bool = False  # KMS instance with TLS verification off (ignoreSSL, if allowed)


class Kms:
    def __init__(
        self,
        identities: IdentityPool,
        *,
        region: str,
        policy: CallPolicy = DEFAULT_CALLS,
    ) -> None:
        self.identities = identities
        self.region = region
        self.policy = policy
        self.clock = policy.clock
        # Clients and limiters; cool-downs over for longer than `idle` go in the same sweep.
        self.clients = SdkClients(identities, policy.rate_per_endpoint, idle=policy.idle,
                                  clock=policy.clock, on_sweep=self._prune_cooldowns,
                                  on_drop=self._dropped)
        self._lock = threading.Lock()  # guards the maps below
        self.cas = CaSessions()
        self._ca_users: dict[int, Endpoint] = {}  # id(SDK client) -> the endpoint it holds
        # (identity fingerprint, endpoint host) -> (monotonic end of its cool-down, strikes)
        self._cooldowns: dict[tuple[str, str], tuple[float, int]] = {}
        self.calls = 0

    def cancel(self) -> None:
        """Stop retrying: calls in back-off or waiting for their start time end at once with a
        transient error, new calls fail fast. Used by shutdown, so that no KMS retry outlives
        the stop deadline (a call already on the wire ends within its read timeout)."""
        self.clients.cancel()

    def close(self) -> None:
        """Drop every client (which releases every CA session)."""
        self.clients.close()

    def client(self, identity: Identity, endpoint: Endpoint) -> tuple[Any, Any]:
        """(SDK client, the credentials client it signs with) for `endpoint` as `identity`,
        built once with this pool's timeouts and CA handling (shared with kms_crypto)."""
        return self.clients.entry(identity, endpoint, lambda: self._build(identity, endpoint))

    def forget(self, identity: Identity, credential: Any) -> None:
        """Drop `identity`'s credentials and clients after an expired security token."""
        self.clients.forget_credential(identity, credential)

    def release(self, identity: Identity, endpoint: Endpoint) -> bool:
        """No read uses `endpoint` as `identity` any more: drop that client and its
        cool-down now (the credentials are the caller's: they may serve other endpoints)."""
        with self._lock:
            self._cooldowns.pop((identity.fingerprint(), endpoint.host), None)
        return self.clients.drop_key((endpoint, identity))

    def forget_identity(self, identity: Identity) -> int:
        """Drop everything held for `identity` now (its clients, cool-downs and credentials):
        for the owner of the reads, when the last read that uses it goes away. Returns the
        number of clients dropped; a later call builds them again."""
        fingerprint = identity.fingerprint()
        with self._lock:
            for cooling in [k for k in self._cooldowns if k[0] == fingerprint]:
                del self._cooldowns[cooling]
        return self.clients.forget_identity(identity)

    def sizes(self) -> dict[str, int]:
        """How many entries each map holds (for tests and the churn benchmark)."""
        sizes = self.clients.sizes()
        with self._lock:
            sizes.update(cooldowns=len(self._cooldowns), ca_sessions=len(self.cas))
        return {**sizes, "identities": len(self.identities)}

    # ------------------------------------------------------------------ public
    def get_secret_value(
        self, identity: Identity, endpoint: Endpoint, name: str,
        version_id: str = "", version_stage: str = "",
    ) -> SecretValue:
        """Read one secret version; raises FetchError (already retried where that helps)."""
        policy = self.policy.retrying(self.clients.cancelled, token_refresh=True)
        key = (identity.fingerprint(), endpoint.host)
        self._check_cooldown(key, identity, endpoint)
        try:
            result: SecretValue = policy(self._call, identity, endpoint, name, version_id,
                                         version_stage)
        except FetchError as exc:
            if exc.kind == Kind.THROTTLED:
                self._cool_down(key, exc.retry_after)
            raise
        with self._lock:
            self._cooldowns.pop(key, None)
        return result

    def _check_cooldown(self, key: tuple[str, str], identity: Identity,
                        endpoint: Endpoint) -> None:
        """Fairness: an identity that KMS keeps throttling on an endpoint (after the retries
        of a whole call) gets no call there until its cool-down ends. Its reads fail at once
        instead of each holding a worker for the whole retry budget, so one tenant's quota
        never starves another tenant's syncs."""
        with self._lock:
            until, _strikes = self._cooldowns.get(key, (0.0, 0))
        left = until - self.clock()
        if left > 0:
            raise FetchError(
                Kind.THROTTLED, "Throttled",
                f"Throttled: KMS kept throttling {identity.describe()} on {endpoint.host}; its "
                f"reads there wait {left:.0f}s (lower its call rate or raise its intervals)",
                retry_after=left)

    def _cool_down(self, key: tuple[str, str], retry_after: float | None) -> None:
        with self._lock:
            _until, strikes = self._cooldowns.get(key, (0.0, 0))
            seconds = retry_after or min(COOLDOWN_BASE * 2 ** min(strikes, 8), COOLDOWN_CAP)
            self._cooldowns[key] = (self.clock() + seconds, strikes + 1)

    def _prune_cooldowns(self, cutoff: float) -> None:
        """The pool's sweep: cool-downs over for longer than the idle bound go too."""
        with self._lock:
            for key in [k for k, (until, _s) in self._cooldowns.items() if until < cutoff]:
                del self._cooldowns[key]

    # ----------------------------------------------------------------- private
    def _call(self, identity: Identity, endpoint: Endpoint, name: str, version_id: str,
              version_stage: str) -> SecretValue:
        from alibabacloud_kms20160120 import models

        self.clients.check_cancelled()
        limiter = self._limiter(endpoint.host)
        credential = None
        start = time.monotonic()
        code = "Success"
        try:
            with limiter.turn(tenant() or identity.fingerprint()):
                client, credential = self.client(identity, endpoint)
                credential.get_credential()  # a due STS refresh happens now, not after the start
                request = models.GetSecretValueRequest(
                    secret_name=name, version_id=version_id or None,
                    version_stage=version_stage or None)
                limiter.acquire(self.clients.cancelled)
                self.clients.check_cancelled()
                start = time.monotonic()
                self.calls += 1
                resp = client.get_secret_value(request)
        except Exception as exc:  # noqa: BLE001 - classified, re-raised as FetchError
            error = classify(exc, who=identity.describe(), endpoint=endpoint.host,
                             ca_pem=endpoint.ca_pem)
            code = error.code
            if error.token_expired and credential is not None:
                self.forget(identity, credential)
            raise error from None
        finally:
            self.policy.observe(endpoint.host, code, start)
        return _value(name, resp.body)

    def _limiter(self, host: str) -> RateLimiter:
        return self.clients.limiter(host)

    def _build(self, identity: Identity, endpoint: Endpoint) -> tuple[Any, Any]:
        from alibabacloud_kms20160120.client import Client
        from alibabacloud_tea_openapi.models import Config

        try:
            credential = self.identities.credential(identity)
        except ValueError as exc:  # the credentials library refused the configuration
            raise classify(exc, who=identity.describe()) from None
        ca_path, pool_size = self.cas.acquire(endpoint)
        try:
            config = Config(
                credential=credential,
                endpoint=endpoint.host,
                protocol=endpoint.protocol,
                region_id=self.region,
                connect_timeout=self.policy.connect_timeout_ms,
                read_timeout=self.policy.read_timeout_ms,
                ca=ca_path,
                max_idle_conns=pool_size,
            )
            client = Client(config)
        except BaseException:
            self.cas.release(endpoint)
            raise
        with self._lock:
            self._ca_users[id(client)] = endpoint
        return client, credential

    def _dropped(self, entry: tuple[Any, Any]) -> None:
        """An SDK client was dropped: release the SDK session it held."""
        with self._lock:
            endpoint = self._ca_users.pop(id(entry[0]), None)
        if endpoint is not None:
            self.cas.release(endpoint)


@dataclass
class _CaSession:
    size: int  # the SDK pool size that keys its session
    fd: int  # the memory-only file holding the PEM (-1: no private CA)
    users: int = 0


class CaSessions:
    """The SDK sessions in use, each held by the SDK clients that use it and released with the
    last: the session closed and removed from the SDK's table (the SDK keeps one per host it
    ever saw, and tenants choose hosts). Each distinct (protocol, host, private CA) also gets a
    pool size of its own (so a session of its own; sizes of private-CA sessions are unique
    across hosts) and its PEM in a memory-only file, closed with it; the pool size is free
    again after that.

    The SDK builds every session's TLS context with the system's and certifi's trust stores
    (~1 MiB). A private-CA session's context trusts its CA only (`_private_ca_adapter`): a
    store that names its endpoint's CA trusts nothing else for it, and a live store with a CA
    of its own costs kilobytes, not a megabyte (400 live stores once held 500 MiB)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str, str], _CaSession] = {}
        _hook_sdk_adapter()

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def acquire(self, endpoint: Endpoint) -> tuple[str | None, int | None]:
        """(CA file path, pool size) for `endpoint` (None, None: no private CA, the SDK's
        defaults); one more user."""
        key = _ca_key(endpoint)
        with self._lock:
            held = self._held.get(key)
            if held is None and not endpoint.ca_pem:
                held = self._held[key] = _CaSession(SDK_DEFAULT_POOL, -1)
            elif held is None:
                with _PRIVATE_LOCK:
                    size = next(n for n in itertools.count(SDK_DEFAULT_POOL + 1)
                                if n not in _PRIVATE_CA_PATHS)
                    held = self._held[key] = _CaSession(size, _memory_file(endpoint.ca_pem))
                    _PRIVATE_CA_PATHS[size] = f"/proc/self/fd/{held.fd}"
            held.users += 1
            if held.fd < 0:
                return None, None
            return f"/proc/self/fd/{held.fd}", held.size

    def release(self, endpoint: Endpoint) -> None:
        """One user fewer; the last one closes the file and the SDK's session."""
        key = _ca_key(endpoint)
        with self._lock:
            held = self._held.get(key)
            if held is None:
                return
            held.users -= 1
            if held.users > 0:
                return
            # Closed under the lock: the size is not handed out again before its session is
            # gone from the SDK's table (a new session, a new trust store).
            del self._held[key]
            _close_sdk_sessions(endpoint.protocol, endpoint.host, held.size)
            if held.fd >= 0:
                os.close(held.fd)
                with _PRIVATE_LOCK:
                    _PRIVATE_CA_PATHS.pop(held.size, None)
        release_free_memory()


# Pool size of a live private-CA session -> the file of its CA (every CaSessions of the
# process: the SDK's session table is one per process too).
_PRIVATE_CA_PATHS: dict[int, str] = {}
_PRIVATE_LOCK = threading.Lock()
_hooked = False


def _hook_sdk_adapter() -> None:
    """Once per process: the SDK builds a private-CA session's adapter with a context that
    trusts that CA only (see CaSessions)."""
    global _hooked
    with _PRIVATE_LOCK:
        if _hooked:
            return
        from darabonba.core import DaraCore

        original = DaraCore.get_adapter

        def get_adapter(prefix: str, tls_min_version: str | None = None,
                        pool_size: int | None = None) -> Any:
            if prefix.upper() != "HTTPS":
                return original(prefix, tls_min_version, pool_size=pool_size)
            with _PRIVATE_LOCK:
                path = _PRIVATE_CA_PATHS.get(pool_size or 0)
            if path is None:
                return _default_trust_adapter(tls_min_version, pool_size)
            return _private_ca_adapter(path, tls_min_version, pool_size or SDK_DEFAULT_POOL)

        DaraCore.get_adapter = staticmethod(get_adapter)
        _hooked = True


def _private_ca_adapter(path: str, tls_min_version: str | None, pool_size: int) -> Any:
    """The SDK's own adapter class, with a TLS context that trusts the CA in `path` only."""
    from darabonba.core import DEFAULT_POOL_SIZE, DaraCore, _TLSAdapter

    context = ssl.create_default_context(cafile=path)
    context = DaraCore._set_tls_minimum_version(context, tls_min_version)
    return _TLSAdapter(ssl_context=context, pool_connections=DEFAULT_POOL_SIZE,
                       pool_maxsize=pool_size)


_DEFAULT_CONTEXTS: dict[str | None, ssl.SSLContext] = {}


def _default_trust_adapter(tls_min_version: str | None, pool_size: int | None) -> Any:
    """The SDK's own adapter for a session without a private CA, with the TLS context the SDK
    would build (the system's defaults and certifi's roots), built once per minimum TLS version
    and shared by every such session: the SDK built one per host, ~1 MiB each, and tenants
    choose hosts (a store's endpoint, an entry's kmsEndpoint)."""
    import certifi
    from darabonba.core import DEFAULT_POOL_MAXSIZE, DEFAULT_POOL_SIZE, DaraCore, _TLSAdapter

    with _PRIVATE_LOCK:
        context = _DEFAULT_CONTEXTS.get(tls_min_version)
        if context is None:
            context = ssl.create_default_context()
            context = DaraCore._set_tls_minimum_version(context, tls_min_version)
            context.load_verify_locations(certifi.where())
            _DEFAULT_CONTEXTS[tls_min_version] = context
    size = pool_size if pool_size is not None and pool_size > 0 else DEFAULT_POOL_MAXSIZE
    return _TLSAdapter(ssl_context=context, pool_connections=DEFAULT_POOL_SIZE,
                       pool_maxsize=size)


def _ca_key(endpoint: Endpoint) -> tuple[str, str, str]:
    ca = hashlib.sha256(endpoint.ca_pem.encode()).hexdigest() if endpoint.ca_pem else ""
    return (endpoint.protocol, endpoint.host, ca)


def _memory_file(text: str) -> int:
    fd = os.memfd_create("kms-ca", os.MFD_CLOEXEC)
    view = memoryview(text.encode())
    while view:
        view = view[os.write(fd, view):]
    return fd


def _close_sdk_sessions(protocol: str, host: str, size: int) -> None:
    """Close and forget the SDK's sessions of `host` with pool size `size` (darabonba keys
    them "protocol://<host header>:<request port>:pool=size"; its table is a class
    attribute, checked by tests/testbed/test_kms_fairness.py)."""
    from darabonba.core import DaraCore

    sessions: dict[str, Any] = getattr(DaraCore, "_sessions", {})
    prefix, suffix = f"{protocol.lower()}://{host}:", f":pool={size}"
    for session_key in [k for k in list(sessions) if k.startswith(prefix) and k.endswith(suffix)
                        and ":" not in k[len(prefix):-len(suffix)]]:  # the port field only
        session = sessions.pop(session_key, None)
        if session is not None:
            session.close()


def _value(name: str, body: Any) -> SecretValue:
    data_type = str(body.secret_data_type or "text")
    raw = body.secret_data or ""
    data = base64.b64decode(raw) if data_type == "binary" else str(raw).encode()
    stages = tuple(body.version_stages.version_stage or ()) if body.version_stages else ()
    return SecretValue(name=name, data=data, data_type=data_type,
                       version_id=str(body.version_id or ""), stages=stages)

