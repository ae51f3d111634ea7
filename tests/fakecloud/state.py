"""The fake cloud's whole state and its thread-safe public API.

``FakeCloud`` (servers) and the admin HTTP API both drive this one object, so
a test in-process and a benchmark in another process see the same behaviour.
One lock guards secrets, IAM and faults; the request log has its own.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from .auth import NonceCache
from .dkms import ClientKeyRing
from .faults import Fault, FaultBook
from .iam import DEFAULT_AUDIENCE, EcsRole, Iam, JwksSource, KeyRecord, OidcProvider, Role, Trust
from .keys import KeyRing
from .observe import RequestLog
from .oos import SecretParameterStore
from .store import CURRENT, SecretStore, SecretVersion
from .wire import Request

DEFAULT_ACCOUNT_ID = "1234567890123456"


class CloudState:
    def __init__(
        self,
        *,
        account_id: str = DEFAULT_ACCOUNT_ID,
        max_log: int = 200_000,
        nonce_window: float = 900.0,
    ) -> None:
        """``max_log`` bounds the request log; ``nonce_window`` is how long used
        nonces are remembered (900 s like the real gateway; lower it for long
        benchmarks at thousands of calls/s to bound memory)."""
        self.lock = threading.RLock()
        self.account_id = account_id
        self.store = SecretStore()
        self.keys = KeyRing(account_id)  # KMS keys (Encrypt/Decrypt/DescribeKey); own lock
        self.oos = SecretParameterStore()  # OOS encryption parameters; own lock
        self.dkms = ClientKeyRing()  # KMS instance client keys; own lock
        self.iam = Iam(account_id)
        self.faults = FaultBook()
        self.log = RequestLog(max_log=max_log)
        self.nonces = NonceCache(nonce_window)
        self._latency = 0.0
        self.metadata_require_token = True
        self._recent: deque[Request] = deque(maxlen=50)

    # --- secrets ------------------------------------------------------------

    def put_secret(
        self,
        name: str,
        data: str | bytes,
        *,
        version_id: str | None = None,
        stages: Iterable[str] = (CURRENT,),
        data_type: str | None = None,
    ) -> str:
        """Add a version (str -> text, bytes -> binary); returns the VersionId.
        A new ACSCurrent version demotes the old current one to ACSPrevious."""
        with self.lock:
            return self.store.put(
                name, data, version_id=version_id, stages=stages, data_type=data_type
            )

    def delete_secret(self, name: str) -> bool:
        with self.lock:
            return self.store.delete(name)

    def secret_names(self) -> list[str]:
        with self.lock:
            return self.store.names()

    def lookup_secret(
        self, name: str, version_id: str | None = None, version_stage: str | None = None
    ) -> tuple[str, SecretVersion, float, str] | None:
        """(name, a copy of the version, secret create time, secret type) or None."""
        with self.lock:
            found = self.store.lookup(name, version_id, version_stage)
            if found is None:
                return None
            secret, version = found
            copy = dataclasses.replace(version, stages=set(version.stages))
            return secret.name, copy, secret.created, secret.secret_type

    # --- identities -----------------------------------------------------------

    def add_access_key(self, ak_id: str, ak_secret: str, identity: str) -> None:
        with self.lock:
            self.iam.add_access_key(ak_id, ak_secret, identity)

    def add_role(
        self,
        role_arn: str,
        *,
        trust: Trust | Sequence[Trust] = (),
        lifetime_seconds: float = 3600,
    ) -> None:
        """Register a role. Issued credentials live ``min(DurationSeconds,
        lifetime_seconds)``, so a test can ask for 2 s credentials even though
        the SDK refuses DurationSeconds below 900. Their identity is the ARN."""
        trusts = (trust,) if isinstance(trust, Trust) else tuple(trust)
        with self.lock:
            self.iam.add_role(role_arn, trusts, lifetime_seconds)

    def role(self, role_arn: str) -> Role | None:
        with self.lock:
            return self.iam.roles.get(role_arn)

    def set_oidc_jwks(
        self,
        provider_arn: str,
        jwks_source: JwksSource,
        *,
        audience: str = DEFAULT_AUDIENCE,
        issuer: str | None = None,
    ) -> None:
        """Register an OIDC provider: a JWKS dict, or a callable returning one
        (called on every AssumeRoleWithOIDC). ``issuer`` None skips the iss check."""
        with self.lock:
            self.iam.providers[provider_arn] = OidcProvider(
                provider_arn, jwks_source, audience, issuer
            )

    def oidc_provider(self, provider_arn: str) -> OidcProvider | None:
        with self.lock:
            return self.iam.providers.get(provider_arn)

    def set_ecs_role(
        self, role_name: str, *, lifetime_seconds: float = 3600, identity: str | None = None
    ) -> None:
        """The RAM role the ECS metadata server hands out (identity defaults to its ARN)."""
        with self.lock:
            self.iam.ecs_role = EcsRole(
                role_name, lifetime_seconds, identity or self.iam.role_arn(role_name)
            )

    def ecs_role(self) -> EcsRole | None:
        with self.lock:
            return self.iam.ecs_role

    def issue_credentials(
        self, identity: str, lifetime: float, session_name: str | None = None
    ) -> KeyRecord:
        with self.lock:
            return dataclasses.replace(self.iam.issue(identity, lifetime, session_name))

    def lookup_key(self, ak_id: str) -> KeyRecord | None:
        with self.lock:
            record = self.iam.keys.get(ak_id)
            return None if record is None else dataclasses.replace(record)

    def expire_all_tokens(self) -> int:
        """Expire every STS credential issued so far (server side); returns how many."""
        with self.lock:
            return self.iam.expire_all_tokens()

    # --- access rules ---------------------------------------------------------

    def allow(self, identity: str, secret_pattern: str) -> None:
        with self.lock:
            self.iam.add_rule(identity, secret_pattern, allow=True)

    def deny(self, identity: str, secret_pattern: str) -> None:
        with self.lock:
            self.iam.add_rule(identity, secret_pattern, allow=False)

    def clear_rules(self, identity: str) -> None:
        """Back to no rules: the identity may read everything again."""
        with self.lock:
            self.iam.clear_rules(identity)

    def may_read(self, identity: str, secret_name: str) -> bool:
        with self.lock:
            return self.iam.may_read(identity, secret_name)

    # --- faults and latency ---------------------------------------------------

    def inject(
        self,
        action: str | None = "GetSecretValue",
        secret: str | None = None,
        fault: str = "throttling",
        times: int | None = 1,
        *,
        retry_after_ms: int | None = None,
        seconds: float = 0.0,
        status: int | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> int:
        """Make the next ``times`` matching calls fail (None = until cleared).
        Returns an id for ``clear_faults``. See ``faults.py`` for the kinds."""
        with self.lock:
            added = self.faults.add(
                fault,
                action=action,
                secret=secret,
                times=times,
                retry_after_ms=retry_after_ms,
                seconds=seconds,
                status=status,
                code=code,
                message=message,
            )
            return added.id

    def clear_faults(self, fault_id: int | None = None) -> None:
        with self.lock:
            self.faults.remove(fault_id)

    def take_fault(self, action: str | None, secret: str | None) -> Fault | None:
        with self.lock:
            return self.faults.take(action, secret)

    @property
    def latency(self) -> float:
        """Seconds added to every KMS call (requests still run concurrently)."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self._latency = float(seconds)

    # --- observability --------------------------------------------------------

    def calls(
        self,
        action: str | None = None,
        secret: str | None = None,
        identity: str | None = None,
        *,
        service: str | None = None,
    ) -> int:
        return self.log.calls(action, secret, identity, service)

    @property
    def request_log(self) -> list[dict[str, Any]]:
        """Copies of the log entries: time, service, action, secret, identity,
        status, code, duration."""
        return self.log.entries()

    def peak_rate(self, window: float = 1.0, action: str | None = None, *,
                  arrival: bool = False) -> float:
        return self.log.peak_rate(window, action, arrival=arrival)

    @property
    def peak_concurrency(self) -> int:
        """Most KMS calls in flight at once since the last reset."""
        return self.log.peak_concurrency

    def reset_counters(self) -> None:
        self.log.reset()

    def capture(self, req: Request) -> None:
        with self.lock:
            self._recent.append(req)

    def recent_requests(self) -> list[Request]:
        """The last 50 KMS requests exactly as received (to replay or tamper with)."""
        with self.lock:
            return list(self._recent)
