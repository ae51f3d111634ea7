"""What a failed KMS (or OOS, or KMS instance) call means for the controller: not found,
denied, throttled, transient, bad credentials or bad configuration.

`product` names the service in the reason ("KMS", "OOS", "KMS instance"), so that each says
what to grant and what to check for the service actually called.

The reason text is built from the error code and our own words, never from the service's
message: that message carries a RequestId (which would churn the status on every retry) and,
for credential errors, may echo request parameters.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from typing import Any

from controller.ops.neterrors import (
    CONNECTION_REFUSED,
    NAME_NOT_RESOLVED,
    TIMEOUT,
    TLS_VERIFY_FAILED,
    network_failure,
)
from controller.providers.base import RETRYABLE, FetchError, Kind

__all__ = ["RETRYABLE", "FetchError", "Kind", "classify", "service_error"]


_CODE_SAFE = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")
_STS_STATUS = re.compile(r"http_code: (\d{3})")
_STS_CODE = re.compile(r'"Code":\s*"([A-Za-z0-9_.:-]{1,80})"')
_METADATA_STATUS = re.compile(r"HttpCode=(\d{3})")

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

# The same for OOS encryption parameters and for a KMS instance reached with a client key.
_PRODUCT_DESCRIPTIONS = {
    "OOS": {
        Kind.NOT_FOUND: "the encryption parameter (or the requested version) does not exist in "
        "OOS",
        Kind.DENIED: "the identity is not allowed to read this parameter "
        "(grant oos:GetSecretParameter, and kms:GetSecretValue on its key)",
        Kind.THROTTLED: "OOS throttled the request (lower --max-concurrent-oos-secret-pulls "
        "or raise the polling interval)",
        Kind.TRANSIENT: "OOS or the network failed; will retry",
        Kind.AUTH: "OOS refused the credentials (check the AccessKey, role or token)",
        Kind.CONFIG: "OOS refused the request",
    },
    "KMS instance": {
        Kind.NOT_FOUND: "the secret (or the requested version) does not exist in the KMS "
        "instance",
        Kind.DENIED: "the client key's application access point may not read this secret "
        "(check its permission policy and network rules)",
        Kind.THROTTLED: "the KMS instance throttled the request (lower "
        "--max-concurrent-kms-secret-pulls or raise the polling interval)",
        Kind.TRANSIENT: "the KMS instance or the network failed; will retry",
        Kind.AUTH: "the KMS instance refused the client key (check clientKeyContent: the key "
        "may be revoked or belong to another instance)",
        Kind.CONFIG: "the KMS instance refused the request",
    },
}
_PERMISSIONS = {
    "KMS": "kms:GetSecretValue and kms:Decrypt on the secret (RAM policy)",
    "OOS": "oos:GetSecretParameter on the parameter and kms:GetSecretValue (RAM policy)",
}

# What to do when STS refuses to issue credentials, by (prefix of) its error code.
_STS_FIXES = (
    ("AuthenticationFail.OIDCToken", "the ServiceAccount token was refused (audience, issuer, "
     "expiry or signature): check the OIDC provider registered in RAM and the token's audience"),
    ("AuthenticationFail.NoPermission", "check the role's trust policy: it must trust this OIDC "
     "provider and ServiceAccount (oidc:sub system:serviceaccount:<namespace>:<name>)"),
    ("NoPermission", "check the role's trust policy: it must trust the account or user that "
     "assumes it"),
    ("EntityNotExist", "the role does not exist: fix the role ARN"),
    ("InvalidParameter", "fix the parameter named by the code"),
    ("InvalidAccessKeyId", "the AccessKey used to assume the role is wrong or disabled"),
    ("SignatureDoesNotMatch", "the AccessKey secret used to assume the role is wrong"),
)


def _safe_code(code: object) -> str:
    text = str(code or "")
    return text if _CODE_SAFE.match(text) else "Unknown"


def _kind_for(code: str, status: int | None) -> Kind:
    # Credentials first: an unknown AccessKey is "InvalidAccessKeyId.NotFound" with HTTP 404,
    # which is not a missing secret.
    if code.startswith(("InvalidSecurityToken", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                        "IncompleteSignature", "InvalidTimeStamp", "SignatureNonceUsed",
                        "RequestTimeTooSkewed")) or status == 401:
        return Kind.AUTH
    if code == "Forbidden.ResourceNotFound" or status == 404 or code.endswith("NotFound"):
        return Kind.NOT_FOUND
    if "Throttling" in code or status == 429:
        return Kind.THROTTLED
    if code.startswith("Forbidden") or status == 403:
        return Kind.DENIED
    if status is not None and status >= 500:
        return Kind.TRANSIENT
    return Kind.CONFIG


def describe(kind: Kind, code: str, product: str = "KMS") -> str:
    text = _PRODUCT_DESCRIPTIONS.get(product, _DESCRIPTIONS)[kind]
    return f"{code}: {text}" if code else text


def classify(exc: BaseException, *, who: str = "", endpoint: str = "",
             product: str = "KMS", ca_pem: str = "") -> FetchError:
    """Map any exception from the SDK (or the network under it) to a FetchError.

    `who` (a log-safe description of the identity, naming its SecretStore) and `endpoint`
    (the service host) make the reason say whose problem it is and where; `product` which
    service it is; `ca_pem` the private CA the call trusted ("" : the system's), named by
    its fingerprint when TLS verification fails. The exception's own text is never copied:
    it can carry request URLs with tokens and signatures in them."""
    if isinstance(exc, FetchError):
        return exc
    from alibabacloud_tea_openapi import exceptions as api_exc

    if isinstance(exc, api_exc.AlibabaCloudException):
        return _from_service(exc, who, product)
    inner = getattr(exc, "inner_exception", None)  # the SDK wraps what failed under it
    if isinstance(inner, BaseException) and inner is not exc:
        return classify(inner, who=who, endpoint=endpoint, product=product, ca_pem=ca_pem)
    network = _network_failure(exc, who, endpoint, product, ca_pem)
    return network or _from_local(exc, who, endpoint, product)


def _network_failure(exc: BaseException, who: str, endpoint: str, product: str,
                     ca_pem: str) -> FetchError | None:
    """DNS, refused, timed out or TLS verification, each with what to check; None when the
    failure is none of these (or was on the way to STS or the metadata service, which
    _from_local words for credentials)."""
    text = str(exc)
    if "Action=AssumeRole" in text or "100.100.100.200" in text or "/latest/" in text:
        return None
    where = f"{product} endpoint {endpoint}" if endpoint else f"the {product} endpoint"
    failure = network_failure(exc)
    if failure == TLS_VERIFY_FAILED:
        return _tls_failure(where, who, product, ca_pem)
    if failure == NAME_NOT_RESOLVED:
        return FetchError(Kind.TRANSIENT, failure,
                          f"{failure}: the name of {where} does not resolve (DNS); "
                          f"{_dns_hint(endpoint)}; will retry")
    if failure == CONNECTION_REFUSED:
        return FetchError(Kind.TRANSIENT, failure,
                          f"{failure}: {where} refused the connection (nothing listens on that "
                          "host and port); check the endpoint's port and any proxy or firewall "
                          "between; will retry")
    if failure == TIMEOUT:
        return FetchError(Kind.TRANSIENT, failure,
                          f"{failure}: {where} did not answer in time (connect or read "
                          "timeout); a firewall or security group may drop the traffic, or "
                          "the service is slow; will retry")
    return None


def _dns_hint(endpoint: str) -> str:
    host = endpoint.split(":", 1)[0]
    if "-vpc." in host:
        return ("a VPC endpoint resolves only inside Alibaba Cloud VPCs of its region: from "
                "outside, start the controller with --kms-endpoint-type public (or name the "
                "public endpoint with --kms-endpoint)")
    return "check the endpoint's spelling and region, and the cluster's DNS"


def _tls_failure(where: str, who: str, product: str, ca_pem: str) -> FetchError:
    if ca_pem:
        digest = hashlib.sha256(ca_pem.strip().encode()).hexdigest()[:16]
        trusted = f"the private CA given for it (sha256 {digest}... of the PEM)"
    else:
        trusted = "the system's trusted CAs (no private CA given)"
    field = ("spec.KMS.dedicatedKMSAuth.ca" if product == "KMS instance"
             else "spec.KMS.ca (or caSecretRef)")
    return FetchError(Kind.CONFIG, "TLSVerifyFailed",
                      f"TLSVerifyFailed: the certificate of {where} is not signed by "
                      f"{trusted}; for a KMS instance endpoint set {field} of "
                      f"{who or 'the SecretStore'} to the instance's CA")


def _from_service(exc: Any, who: str, product: str) -> FetchError:
    from alibabacloud_tea_openapi import exceptions as api_exc

    raw_status = exc.status_code
    retry_after = None
    if getattr(exc, "retry_after", None):
        retry_after = float(exc.retry_after) / 1000.0
    return service_error(exc.code, raw_status if isinstance(raw_status, int) else None,
                         who=who, product=product, retry_after=retry_after,
                         throttled=isinstance(exc, api_exc.ThrottlingException))


def service_error(code: object, status: int | None, *, who: str = "", product: str = "KMS",
                  retry_after: float | None = None, throttled: bool = False) -> FetchError:
    """The FetchError for an error answer of the service (`code` as sent, HTTP `status`)."""
    safe = _safe_code(code)
    kind = Kind.THROTTLED if throttled else _kind_for(safe, status)
    reason = describe(kind, safe, product)
    if who and kind == Kind.DENIED and product in _PERMISSIONS:
        thing = "parameter" if product == "OOS" else "secret"
        reason = f"{safe}: {who} may not read this {thing}; grant it {_PERMISSIONS[product]}"
    elif who and kind == Kind.AUTH:
        fix = ("check the client key (clientKeyContent) and that it belongs to this instance"
               if product == "KMS instance" else "check the AccessKey, or the role and its token")
        reason = f"{safe}: {product} refused the credentials of {who}; {fix}"
    return FetchError(kind, safe, reason, retry_after=retry_after,
                      token_expired=safe.startswith("InvalidSecurityToken"))


def _from_local(exc: BaseException, who: str, endpoint: str, product: str) -> FetchError:
    name = type(exc).__name__
    text = str(exc)  # inspected for shape only, never copied into the reason
    subject = who or "the identity"
    if name == "CredentialException":
        return _credential_failure(text, subject)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        path = str(getattr(exc, "filename", "") or "")
        return FetchError(Kind.CONFIG, "TokenFileUnreadable",
                          f"TokenFileUnreadable: cannot read the OIDC token file {path} of "
                          f"{subject}; enable RRSA for the controller (rrsa.enable) or fix "
                          "oidcTokenFilePath")
    if isinstance(exc, ValueError) and not isinstance(exc, ssl.SSLError):
        # The credentials library refused the configuration; its messages are fixed texts.
        detail = text.splitlines()[0][:200] if text else name
        return FetchError(Kind.CONFIG, "InvalidCredentialConfig",
                          f"InvalidCredentialConfig: the credentials of {subject} cannot be "
                          f"built: {detail}")
    at_sts = "Action=AssumeRole" in text
    at_metadata = "100.100.100.200" in text or "/latest/" in text
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSLCertVerificationError" in text:
        if at_sts:
            return FetchError(Kind.CONFIG, "TLSVerifyFailed",
                              "TLSVerifyFailed: the STS endpoint's certificate is not trusted; "
                              "check --sts-endpoint (ALIBABA_CLOUD_STS_ENDPOINT)")
        where = f"{product} endpoint {endpoint}" if endpoint else f"the {product} endpoint"
        return _tls_failure(where, who, product, "")
    if isinstance(exc, (OSError, TimeoutError)) or name in (
        "UnretryableException", "RetryError", "TeaUnretryableException"
    ):
        if at_sts:
            return FetchError(Kind.TRANSIENT, "NetworkError",
                              f"NetworkError: could not reach STS to get credentials for "
                              f"{subject} ({name}); will retry")
        if at_metadata:
            return FetchError(Kind.TRANSIENT, "NetworkError",
                              f"NetworkError: could not reach the ECS metadata service for "
                              f"{subject} ({name}); will retry")
        where = f"{product} endpoint {endpoint}" if endpoint else product
        return FetchError(Kind.TRANSIENT, "NetworkError",
                          f"NetworkError: could not reach {where} ({name}); will retry")
    return FetchError(Kind.TRANSIENT, "UnexpectedError",
                      f"UnexpectedError: {name} while calling {product}; will retry")


def _credential_failure(text: str, subject: str) -> FetchError:
    """STS or the metadata service refused (or failed) to give credentials."""
    if "ECS metadata" in text or "Metadata Service" in text:
        match = _METADATA_STATUS.search(text)
        status = int(match.group(1)) if match else 0
        if status >= 500 or not status:
            return FetchError(Kind.TRANSIENT, "WorkerRoleUnavailable",
                              f"WorkerRoleUnavailable: the ECS metadata service failed to give "
                              f"credentials for {subject}; will retry", own_identity=True)
        return FetchError(Kind.AUTH, "WorkerRoleUnavailable",
                          f"WorkerRoleUnavailable: the ECS metadata service has no RAM role "
                          f"credentials for {subject} (HTTP {status}); attach a RAM role to "
                          "the node's ECS instance, or configure another identity",
                          own_identity=True)
    match = _STS_STATUS.search(text)
    status = int(match.group(1)) if match else 0
    code_match = _STS_CODE.search(text)
    code = code_match.group(1) if code_match else "CredentialError"
    if status >= 500 or code.startswith(("Throttling", "ServiceUnavailable", "InternalError")):
        return FetchError(Kind.TRANSIENT, code,
                          f"{code}: STS failed to issue credentials for {subject}; will retry")
    fix = next((f for prefix, f in _STS_FIXES if code.startswith(prefix)),
               "check the role ARN, its trust policy and the token")
    return FetchError(Kind.AUTH, code,
                      f"{code}: STS refused to issue credentials for {subject}; {fix}")
