"""Who the controller is to Alibaba Cloud: one credential provider per identity, built
explicitly (never the library's implicit default chain) and cached, so STS is called about
once per credential lifetime per identity rather than once per KMS call.

An `Identity` is a value: two SecretStores that carry the same credentials are the same
identity (and share KMS reads). Secret material is excluded from repr and never logged.

Why `CachedCredentials` wraps every provider: the library refreshes synchronously on the first
call after `Expiration - 15 min`, so credentials that live 15 minutes or less (a 900 s
`roleSessionExpiration`, a short-lived role) cost one STS call per KMS call. The wrapper keeps
each set until a quarter of its lifetime (at most 15 minutes) is left and asks the library
only then; at that moment the library's own cache is stale too, so it really refreshes.

Who prunes what (issue 10): `IdentityPool` drops the credentials client of an identity that
no caller used for `idle` seconds (default `IDLE_SECONDS`), in an amortized sweep
(`IdleSweep`) that the clients of `kms`, `oos` and `kms_instance` share as well. Dropping
costs at most one credentials rebuild (one STS call for a role; nothing for an AccessKey)
when the identity comes back, so only identities used less often than every `idle` seconds
pay, and at most once per use. The credentials it obtained are redacted from logs for as long
as the identity is held (`hold_secret`, owned by the identity: its last `HELD_VALUES`
values) and forgotten with it (`release_secrets`), so that identities that come and go do
not fill the redactor.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from controller.ops.redact import hold_secret, release_secrets

ACCESS_KEY = "access_key"
RAM_ROLE_ARN = "ram_role_arn"
OIDC_ROLE_ARN = "oidc_role_arn"
ECS_RAM_ROLE = "ecs_ram_role"
CLIENT_KEY = "client_key"  # a KMS instance's application access point (dedicatedKMSAuth)

# Credentials and SDK clients unused for this long are dropped (read when an owner is built,
# so a benchmark can shorten it). Ten minutes: five times the default polling interval.
IDLE_SECONDS = 600.0

_KIND_WORDS = {
    ACCESS_KEY: "AccessKey",
    RAM_ROLE_ARN: "AccessKey + AssumeRole",
    OIDC_ROLE_ARN: "RRSA",
    ECS_RAM_ROLE: "worker role",
    CLIENT_KEY: "KMS instance client key",
}


@dataclass(frozen=True)
class Identity:
    kind: str
    access_key_id: str = ""
    access_key_secret: str = field(default="", repr=False)
    role_arn: str = ""
    role_session_name: str = "ack-secret-manager"
    session_seconds: int = 3600
    oidc_provider_arn: str = ""
    oidc_token_file: str = ""
    remote_role_arn: str = ""
    remote_role_session_name: str = ""
    sts_endpoint: str = ""
    ecs_role_name: str = ""
    metadata_proxy: str = ""
    # Where it came from, for messages ("SecretStore default/scdemo"); not part of equality.
    source: str = field(default="", compare=False)
    # The controller's own identity (its environment, its projected token, the node's role),
    # lent to a namespace: subject to --controller-identity-namespaces. Not part of equality.
    borrowed: bool = field(default=False, compare=False)
    # CLIENT_KEY: the clientKeyContent (JSON) and its password, from the store's Secrets.
    client_key_content: str = field(default="", repr=False)
    client_key_password: str = field(default="", repr=False)

    def describe(self) -> str:
        """A log-safe description for messages: how, which role, from where; no key material.

        "RRSA role acs:ram::1:role/app (SecretStore default/scdemo)"."""
        text = _KIND_WORDS.get(self.kind, self.kind)
        if self.role_arn:
            text += f" role {self.role_arn}"
        if self.remote_role_arn:
            text = f"cross-account role {self.remote_role_arn} assumed with {text}"
        if self.source:
            text += f" ({self.source})"
        return text

    def fingerprint(self) -> str:
        """A short stable id (hash) for metrics and cache keys; reveals nothing."""
        raw = repr((self.kind, self.access_key_id, self.access_key_secret, self.role_arn,
                    self.oidc_provider_arn, self.oidc_token_file, self.remote_role_arn,
                    self.ecs_role_name, self.client_key_content, self.client_key_password))
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


class CachedCredentials:
    """An `ICredentialsProvider` that holds the credentials of `inner` until a quarter of their
    lifetime (at most 15 minutes, at least `min_gap` seconds after the last refresh) is left.

    One refresh at a time per identity. While it runs, other callers keep using the held
    credentials if they are still valid, and wait for it if not. If a refresh fails while the
    held credentials are still valid, they are used on and the refresh is tried again
    `retry_after_failure` seconds later.
    """

    MAX_MARGIN = 900.0
    FRACTION = 0.25

    def __init__(self, inner: Any, *, on_secret: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time, min_gap: float = 1.0,
                 retry_after_failure: float = 5.0) -> None:
        self.inner = inner
        self.on_secret = on_secret or (lambda _value: None)
        self.clock = clock
        self.min_gap = min_gap
        self.retry_after_failure = retry_after_failure
        self._value: Any = None
        self._refresh_at = 0.0
        self._expires_at = math.inf
        self._lock = threading.Lock()  # guards the fields above
        self._refreshing = threading.Lock()  # held by the one caller that refreshes
        self.refreshes = 0

    def get_credentials(self) -> Any:
        with self._lock:
            value, usable = self._held(self.clock())
            if value is not None:
                return value
        # Due for a refresh. Valid ones in hand: refresh only if nobody else is.
        if not self._refreshing.acquire(blocking=usable is None):
            return usable
        try:
            with self._lock:
                now = self.clock()
                value, usable = self._held(now)
                if value is not None:
                    return value  # another caller refreshed meanwhile
            try:
                fresh = self.inner.get_credentials()
            except Exception:
                with self._lock:
                    if usable is not None:
                        self._refresh_at = now + self.retry_after_failure
                        return usable
                raise
            with self._lock:
                self._accept(fresh, now)
            return fresh
        finally:
            self._refreshing.release()

    async def get_credentials_async(self) -> Any:
        return self.get_credentials()

    def get_provider_name(self) -> str:
        return str(self.inner.get_provider_name())

    def _held(self, now: float) -> tuple[Any, Any]:
        """(credentials to use as they are, or None; credentials still valid, or None)."""
        if self._value is None:
            return None, None
        if now < self._refresh_at:
            return self._value, self._value
        return None, (self._value if now < self._expires_at - 1 else None)

    def _accept(self, value: Any, now: float) -> None:
        self.refreshes += 1
        for secret in (value.get_access_key_secret(), value.get_security_token()):
            if secret:
                self.on_secret(secret)
        expiration = value.get_expiration() if hasattr(value, "get_expiration") else None
        self._value = value
        if not expiration:
            self._expires_at = self._refresh_at = math.inf  # long-term AccessKey
            return
        self._expires_at = float(expiration)
        lifetime = max(0.0, self._expires_at - now)
        margin = min(self.MAX_MARGIN, lifetime * self.FRACTION)
        self._refresh_at = max(now + self.min_gap, self._expires_at - margin)


def _http_options(proxy: str = "") -> Any:
    from alibabacloud_credentials.http import HttpOptions

    return HttpOptions(proxy=proxy or None, connect_timeout=5000, read_timeout=10000)


# What each kind must carry. The credentials library takes an empty argument as "not given"
# and reads the process environment instead (ALIBABA_CLOUD_ACCESS_KEY_ID, ..._ROLE_ARN,
# ..._OIDC_TOKEN_FILE): a tenant's empty AccessKey would sign with the controller's own.
_REQUIRED = {
    ACCESS_KEY: ("access_key_id", "access_key_secret"),
    RAM_ROLE_ARN: ("access_key_id", "access_key_secret", "role_arn"),
    OIDC_ROLE_ARN: ("role_arn", "oidc_provider_arn", "oidc_token_file"),
}


def _base_provider(identity: Identity) -> Any:
    from alibabacloud_credentials import provider as p

    empty = [name for name in _REQUIRED.get(identity.kind, ())
             if not str(getattr(identity, name) or "").strip()]
    if empty:
        raise ValueError(f"{', '.join(empty)} of the {_KIND_WORDS.get(identity.kind, 'identity')} "
                         "credentials is empty")
    sts = identity.sts_endpoint or None
    if identity.kind == ACCESS_KEY:
        return p.StaticAKCredentialsProvider(
            access_key_id=identity.access_key_id, access_key_secret=identity.access_key_secret)
    if identity.kind == RAM_ROLE_ARN:
        return p.RamRoleArnCredentialsProvider(
            access_key_id=identity.access_key_id, access_key_secret=identity.access_key_secret,
            role_arn=identity.role_arn, role_session_name=identity.role_session_name,
            duration_seconds=identity.session_seconds, sts_endpoint=sts,
            http_options=_http_options())
    if identity.kind == OIDC_ROLE_ARN:
        return p.OIDCRoleArnCredentialsProvider(
            role_arn=identity.role_arn, oidc_provider_arn=identity.oidc_provider_arn,
            oidc_token_file_path=identity.oidc_token_file,
            role_session_name=identity.role_session_name,
            duration_seconds=identity.session_seconds, sts_endpoint=sts,
            http_options=_http_options())
    if identity.kind == ECS_RAM_ROLE:
        # No background scheduler thread: CachedCredentials decides when to refresh.
        return p.EcsRamRoleCredentialsProvider(
            role_name=identity.ecs_role_name or None, disable_imds_v1=True,
            http_options=_http_options(identity.metadata_proxy), async_update_enabled=False)
    raise ValueError(f"unknown identity kind {identity.kind!r}")


def build_provider(identity: Identity,
                   on_secret: Callable[[str], None] | None = None) -> CachedCredentials:
    """The credential provider for `identity`, with a cross-account role on top if set.

    Raises ValueError when the library refuses the configuration (e.g. the worker role while
    ALIBABA_CLOUD_ECS_METADATA_DISABLED=true)."""
    from alibabacloud_credentials import provider as p

    base = CachedCredentials(_base_provider(identity), on_secret=on_secret)
    if not identity.remote_role_arn:
        return base
    remote = p.RamRoleArnCredentialsProvider(
        credentials_provider=base, role_arn=identity.remote_role_arn,
        role_session_name=identity.remote_role_session_name or identity.role_session_name,
        duration_seconds=identity.session_seconds, sts_endpoint=identity.sts_endpoint or None,
        http_options=_http_options())
    return CachedCredentials(remote, on_secret=on_secret)


class IdleSweep:
    """The amortized sweep of a map of last-use times: `due()` answers, at most once per
    `every` seconds (default a quarter of `idle`; `idle` defaults to `IDLE_SECONDS`), the
    cut-off time before which an entry counts as unused; otherwise None. So a map costs one
    pass per `every` seconds, not one per access, and an entry outlives its last use by
    between `idle` and `idle + every` (swept on the next access after that)."""

    def __init__(self, idle: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 every: float | None = None) -> None:
        self.idle = IDLE_SECONDS if idle is None else idle  # read now: a benchmark may set it
        self.every = every if every is not None else max(self.idle / 4, 0.0)
        self.clock = clock
        self._next = clock() + self.every

    def due(self) -> float | None:
        now = self.clock()
        if now < self._next:
            return None
        self._next = now + self.every
        return now - self.idle

    @staticmethod
    def stale(used: dict[Any, float], cutoff: float) -> list[Any]:
        """The keys of `used` last used before `cutoff`."""
        return [key for key, at in used.items() if at < cutoff]


HELD_VALUES = 8  # per identity: two refreshes of (secret, token), of a role on top as well


def _hold_credential(owner: Hashable, value: str) -> None:
    hold_secret(owner, value, keep=HELD_VALUES)


class IdentityPool:
    """One credentials client per identity, built on first use; `invalidate` rebuilds it
    (after the service said the security token expired).

    Every AccessKeySecret and security token obtained is held for redaction in the
    identity's name (`hold(("identity", identity), value)`, default: the process-wide
    redactor, its last HELD_VALUES values) and released when the identity is dropped
    (`release`); `on_secret`, if given, is told each one as well. Callers `touch` an identity
    on every call they make with it; an identity neither asked for nor touched for `idle`
    seconds is dropped (see the module docstring)."""

    def __init__(self, on_build: Callable[[Identity], None] | None = None,
                 on_secret: Callable[[str], None] | None = None, *,
                 idle: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 hold: Callable[[Hashable, str], None] | None = _hold_credential,
                 release: Callable[[Hashable], object] | None = release_secrets) -> None:
        self._clients: dict[Identity, Any] = {}
        self._used: dict[Identity, float] = {}
        self._token_files: dict[str, int] = {}  # OIDC token file -> identities reading it
        self._lock = threading.Lock()
        self.builds = 0
        self.on_build = on_build
        self.on_secret = on_secret
        self.hold, self.release = hold, release
        self.clock = clock
        self._sweep = IdleSweep(idle, clock=clock)

    def credential(self, identity: Identity) -> Any:
        with self._lock:
            client = self._clients.get(identity)
            if client is None:
                from alibabacloud_credentials.client import Client

                client = Client(provider=build_provider(identity, self._sink(identity)))
                self._clients[identity] = client
                if identity.oidc_token_file:
                    files = self._token_files
                    files[identity.oidc_token_file] = files.get(identity.oidc_token_file, 0) + 1
                self.builds += 1
                if self.on_build is not None:
                    self.on_build(identity)
            self._used[identity] = self.clock()
            self._prune_locked()
            return client

    def _sink(self, identity: Identity) -> Callable[[str], None] | None:
        """What `identity`'s providers tell each secret they obtain."""
        hold, tell = self.hold, self.on_secret
        if hold is None:
            return tell
        owner = ("identity", identity)

        def sink(value: str) -> None:
            # A refresh that ends after the identity was dropped holds nothing: no owner
            # would ever release it.
            if identity in self._clients:
                hold(owner, value)
            if tell is not None:
                tell(value)
        return sink

    def touch(self, identity: Identity) -> None:
        """`identity` was used for a call (its client is held by the caller): keep it."""
        with self._lock:
            if identity in self._clients:
                self._used[identity] = self.clock()
            self._prune_locked()

    def token_file_in_use(self, path: str) -> bool:
        """Whether a live identity reads its OIDC token from `path` (for
        `kube.tokens.ServiceAccountTokens(in_use=...)`: a token nobody reads is not renewed)."""
        with self._lock:
            return self._token_files.get(path, 0) > 0

    def discard(self, identity: Identity) -> bool:
        """Drop `identity`'s credentials now (its last user is gone); returns whether it was
        held. A later `credential()` builds it again."""
        with self._lock:
            return self._drop_locked(identity)

    def _prune_locked(self) -> None:
        cutoff = self._sweep.due()
        if cutoff is None:
            return
        for identity in IdleSweep.stale(self._used, cutoff):
            self._drop_locked(identity)

    def _drop_locked(self, identity: Identity) -> bool:
        self._used.pop(identity, None)
        if self._clients.pop(identity, None) is None:
            return False
        if self.release is not None:  # nothing holds its credentials any more
            self.release(("identity", identity))
        path = identity.oidc_token_file
        if path:
            left = self._token_files.get(path, 0) - 1
            if left > 0:
                self._token_files[path] = left
            else:
                self._token_files.pop(path, None)
        return True

    def invalidate(self, identity: Identity, credential: Any = None) -> bool:
        """Forget the client of `identity` (only if it is still `credential`, when given, so
        that many calls failing at once rebuild it once). Returns whether it was dropped."""
        with self._lock:
            current = self._clients.get(identity)
            if current is None or (credential is not None and current is not credential):
                return False
            return self._drop_locked(identity)

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)
