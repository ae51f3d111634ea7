"""What a failed KMS call means for the controller: not found, denied, throttled, transient,
bad credentials or bad configuration.

The reason text is built from the error code and our own words, never from the service's
message: that message carries a RequestId (which would churn the status on every retry) and,
for credential errors, may echo request parameters.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Kind(StrEnum):
    NOT_FOUND = "NotFound"
    DENIED = "AccessDenied"
    THROTTLED = "Throttled"
    TRANSIENT = "Transient"
    AUTH = "AuthFailed"
    CONFIG = "InvalidConfig"


RETRYABLE = frozenset({Kind.THROTTLED, Kind.TRANSIENT})


class FetchError(Exception):
    """A KMS read that failed, classified; `str()` is safe for status, Events and logs."""

    def __init__(
        self,
        kind: Kind,
        code: str,
        reason: str,
        *,
        retry_after: float | None = None,
        token_expired: bool = False,
    ) -> None:
        self.kind = kind
        self.code = code
        self.reason = reason
        self.retry_after = retry_after
        self.token_expired = token_expired
        super().__init__(reason)

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


_CODE_SAFE = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")

_DESCRIPTIONS = {
    Kind.NOT_FOUND: "the secret (or the requested version) does not exist in KMS",
    Kind.DENIED: "the identity is not allowed to read this secret "
    "(grant kms:GetSecretValue and kms:Decrypt)",
    Kind.THROTTLED: "KMS throttled the request (lower --max-concurrent-kms-secret-pulls "
    "or raise the polling interval)",
    Kind.TRANSIENT: "KMS or the network failed; will retry",
    Kind.AUTH: "KMS refused the credentials (check the AccessKey, role or token)",
    Kind.CONFIG: "KMS refused the request",
}


def _safe_code(code: object) -> str:
    text = str(code or "")
    return text if _CODE_SAFE.match(text) else "Unknown"


def _kind_for(code: str, status: int | None) -> Kind:
    if code == "Forbidden.ResourceNotFound" or status == 404 or (code.endswith("NotFound") and \
            not code.startswith("InvalidAccessKeyId")):
        return Kind.NOT_FOUND
    if code.startswith(("InvalidSecurityToken", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                        "IncompleteSignature", "InvalidTimeStamp", "SignatureNonceUsed")):
        return Kind.AUTH
    if "Throttling" in code or status == 429:
        return Kind.THROTTLED
    if code.startswith("Forbidden") or status == 403:
        return Kind.DENIED
    if status is not None and status >= 500:
        return Kind.TRANSIENT
    return Kind.CONFIG


def describe(kind: Kind, code: str) -> str:
    return f"{code}: {_DESCRIPTIONS[kind]}" if code else _DESCRIPTIONS[kind]


def classify(exc: BaseException) -> FetchError:
    """Map any exception from the SDK (or the network under it) to a FetchError."""
    if isinstance(exc, FetchError):
        return exc
    from alibabacloud_tea_openapi import exceptions as api_exc

    if isinstance(exc, api_exc.AlibabaCloudException):
        code = _safe_code(exc.code)
        status = exc.status_code if isinstance(exc.status_code, int) else None
        kind = Kind.THROTTLED if isinstance(exc, api_exc.ThrottlingException) else \
            _kind_for(code, status)
        retry_after = None
        if getattr(exc, "retry_after", None):
            retry_after = float(exc.retry_after) / 1000.0
        return FetchError(kind, code, describe(kind, code), retry_after=retry_after,
                          token_expired=code.startswith("InvalidSecurityToken"))
    name = type(exc).__name__
    if name in ("CredentialException",):
        return FetchError(Kind.AUTH, "CredentialError",
                          "could not obtain credentials (STS, OIDC token or instance metadata "
                          "failed; check the role, its trust policy and the token)")
    if isinstance(exc, (OSError, TimeoutError)) or name in (
        "UnretryableException", "RetryError", "TeaUnretryableException"
    ):
        return FetchError(Kind.TRANSIENT, "NetworkError",
                          f"NetworkError: could not reach KMS ({name}); will retry")
    return FetchError(Kind.TRANSIENT, "UnexpectedError",
                      f"UnexpectedError: {name} while calling KMS; will retry")
