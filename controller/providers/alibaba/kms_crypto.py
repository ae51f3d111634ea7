"""Encrypt, Decrypt and DescribeKey with a KMS key (2016-01-20 API), for the KMS v2 plugin.

Why a module of its own: the kube-apiserver gives a KMS plugin 3 seconds per call, so these
calls have a time budget, not an attempt count. Every attempt's connect and read timeouts are
cut to what is left of the budget, and throttling, 5xx, timeouts and dropped connections are
retried inside it (waiting `x-acs-retry-after` when KMS sends it, else a short jittered
back-off). Clients, identities, endpoints and KMS instance CAs come from `kms.Kms` and
`identity.IdentityPool`: there is one credential stack.

Plaintexts never appear in errors or logs; `CryptoError`'s text names the key, the operation,
the error code and the fix, never data.
"""

from __future__ import annotations

import base64
import binascii
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.ops.neterrors import root_causes
from controller.providers.alibaba.errors import FetchError, Kind, classify
from controller.providers.alibaba.identity import Identity
from controller.providers.alibaba.kms import Endpoint, Kms

# (operation, result code, seconds) for every attempt that reached (or tried to reach) KMS.
CallHook = Callable[[str, str, float], None]

ENABLED = "Enabled"
DEFAULT_BUDGET_SECONDS = 2.5  # under the apiserver's default 3 s KMS timeout
MIN_ATTEMPT_SECONDS = 0.2

_FIXES = {
    "Forbidden.KeyNotFound": "the key does not exist in this region/account: fix --key-id "
    "(or --region / --kms-endpoint)",
    "Forbidden.NoPermission": "grant kms:Encrypt, kms:Decrypt and kms:DescribeKey on this key "
    "to the plugin's identity (RAM policy)",
    "Rejected.Disabled": "the key is Disabled: enable it in KMS (EnableKey)",
    "Rejected.PendingDeletion": "the key is PendingDeletion: cancel the deletion in KMS "
    "(CancelKeyDeletion)",
    "Forbidden.AliasNotFound": "the alias does not exist in this region/account: create it "
    "(CreateAlias) or fix --key-id",
}
# InvalidParameter means different things per operation: only Decrypt's is about a ciphertext.
_FIXES_BY_OPERATION = {
    ("Decrypt", "InvalidParameter"): "KMS refused the ciphertext: it was made by another key, "
    "with another EncryptionContext (--cluster-name), or it is damaged",
    ("Encrypt", "InvalidParameter"): "KMS refused the request's parameters (Plaintext is at "
    "most 6 KB of base64 text; EncryptionContext a JSON object of strings)",
}


@dataclass(frozen=True)
class KeyInfo:
    """What DescribeKey says about the key (nothing secret)."""

    key_id: str
    state: str
    primary_version: str

    @property
    def usable(self) -> bool:
        return self.state == ENABLED


@dataclass(frozen=True)
class Wrapped:
    ciphertext: str = field(repr=False)  # KMS's CiphertextBlob (base64 text)
    key_id: str
    version_id: str


@dataclass(frozen=True)
class Unwrapped:
    plaintext: bytes = field(repr=False)
    key_id: str
    version_id: str


class CryptoError(Exception):
    """A failed key operation; `str()` is safe for logs and gRPC error messages."""

    def __init__(self, kind: Kind, code: str, reason: str, *,
                 retry_after: float | None = None) -> None:
        self.kind = kind
        self.code = code
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(reason)

    @property
    def retryable(self) -> bool:
        return self.kind in (Kind.THROTTLED, Kind.TRANSIENT)


def _timed_out(exc: BaseException) -> bool:
    """Whether KMS was reached but did not answer in time (a read timeout somewhere in the
    chain the SDK wraps), as opposed to not being reachable at all."""
    for cause in root_causes(exc):
        name = type(cause).__name__
        if name in ("ReadTimeout", "ReadTimeoutError") or (
                isinstance(cause, TimeoutError) and "connect" not in str(cause).lower()
                and name != "ConnectTimeout"):
            return True
    return False


class KmsCrypto:
    """Key operations for one identity at one endpoint, each within `budget` seconds."""

    def __init__(
        self,
        kms: Kms,
        identity: Identity,
        endpoint: Endpoint,
        *,
        budget: float = DEFAULT_BUDGET_SECONDS,
        on_call: CallHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.kms = kms
        self.identity = identity
        self.endpoint = endpoint
        self.budget = budget
        self.on_call = on_call
        self.clock = clock
        self.sleep = sleep

    # ----------------------------------------------------------------------------- public
    def describe_key(self, key_id: str) -> KeyInfo:
        from alibabacloud_kms20160120 import models

        body = self._run("DescribeKey", key_id,
                         lambda c, rt: c.describe_key_with_options(
                             models.DescribeKeyRequest(key_id=key_id), rt))
        meta = body.key_metadata
        return KeyInfo(key_id=str(meta.key_id or key_id), state=str(meta.key_state or ""),
                       primary_version=str(meta.primary_key_version or ""))

    def encrypt(self, key_id: str, plaintext: bytes, context: dict[str, str]) -> Wrapped:
        """Wrap `plaintext` (sent base64-encoded) with the key's primary version."""
        from alibabacloud_kms20160120 import models

        request = models.EncryptRequest(
            key_id=key_id, plaintext=base64.b64encode(plaintext).decode(),
            encryption_context=dict(context) or None)
        body = self._run("Encrypt", key_id, lambda c, rt: c.encrypt_with_options(request, rt))
        return Wrapped(ciphertext=str(body.ciphertext_blob or ""), key_id=str(body.key_id or ""),
                       version_id=str(body.key_version_id or ""))

    def decrypt(self, key_id: str, ciphertext: str, context: dict[str, str]) -> Unwrapped:
        """Unwrap a blob of `key_id` (named for errors; KMS finds the key from the blob)."""
        from alibabacloud_kms20160120 import models

        request = models.DecryptRequest(ciphertext_blob=ciphertext,
                                        encryption_context=dict(context) or None)
        body = self._run("Decrypt", key_id, lambda c, rt: c.decrypt_with_options(request, rt))
        try:
            plaintext = base64.b64decode(str(body.plaintext or ""), validate=True)
        except (binascii.Error, ValueError):
            raise CryptoError(Kind.CONFIG, "NotOurPlaintext",
                              f"NotOurPlaintext: Decrypt with KMS key {key_id} returned data "
                              "this plugin did not encrypt (not base64)") from None
        return Unwrapped(plaintext=plaintext, key_id=str(body.key_id or ""),
                         version_id=str(body.key_version_id or ""))

    # ---------------------------------------------------------------------------- private
    def _run(self, operation: str, key_id: str, send: Callable[[Any, Any], Any]) -> Any:
        deadline = self.clock() + self.budget
        attempt = 0
        while True:
            attempt += 1
            left = deadline - self.clock()
            try:
                return self._attempt(operation, key_id, send, left)
            except CryptoError as err:
                wait = err.retry_after or _backoff(attempt)
                if not err.retryable or self.clock() + wait + MIN_ATTEMPT_SECONDS > deadline:
                    raise
                self.sleep(wait)

    def _attempt(self, operation: str, key_id: str, send: Callable[[Any, Any], Any],
                 seconds: float) -> Any:
        from darabonba.runtime import RuntimeOptions

        millis = max(int(seconds * 1000), int(MIN_ATTEMPT_SECONDS * 1000))
        runtime = RuntimeOptions(connect_timeout=min(millis, 1000), read_timeout=millis)
        credential = None
        start = self.clock()
        code = "Success"
        try:
            client, credential = self.kms.client(self.identity, self.endpoint)
            return send(client, runtime).body
        except Exception as exc:  # noqa: BLE001 - classified, re-raised as CryptoError
            fetch = classify(exc, who=self.identity.describe(), endpoint=self.endpoint.host)
            if fetch.code in ("NetworkError", "Timeout") and _timed_out(exc):
                fetch = FetchError(Kind.TRANSIENT, "Timeout",
                                   f"Timeout: KMS endpoint {self.endpoint.host} was reached but "
                                   f"did not answer within {millis / 1000:.2f}s (what was "
                                   "left of --kms-timeout); KMS is slow or overloaded")
            code = fetch.code
            if fetch.token_expired and credential is not None:
                self.kms.forget(self.identity, credential)
                fetch = FetchError(Kind.TRANSIENT, fetch.code, fetch.reason)
            raise _crypto_error(operation, key_id, fetch) from None
        finally:
            if self.on_call is not None:
                self.on_call(operation, code, self.clock() - start)


def _backoff(attempt: int) -> float:
    return float(min(0.8, 0.05 * (2 ** attempt)) * (0.5 + random.random() / 2))


def _crypto_error(operation: str, key_id: str, fetch: FetchError) -> CryptoError:
    fix = _FIXES_BY_OPERATION.get((operation, fetch.code)) or _FIXES.get(fetch.code)
    if fix is None:
        fix = fetch.reason.split(": ", 1)[-1] if fetch.reason else "see the KMS error code"
    return CryptoError(fetch.kind, fetch.code,
                       f"{fetch.code}: {operation} with KMS key {key_id} failed: {fix}",
                       retry_after=fetch.retry_after)
