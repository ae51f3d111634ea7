"""Authenticating a signed call: AccessKey, security token, timestamp, signature, nonce.

The checks run in the order a caller can act on: the key must exist, a
temporary key needs its own unexpired security token, the timestamp must be
within 15 minutes, the signature must match, and only then is the nonce
spent (so a tampered request cannot burn a nonce). Error codes and HTTP
statuses are the POP gateway's public ones (Alibaba Cloud error center
"Public" product: InvalidAccessKeyId.NotFound 404, SignatureDoesNotMatch 400,
SignatureNonceUsed 400, InvalidTimeStamp.Expired 400, InvalidSecurityToken.*
400, MissingSecurityToken 400, IncompleteSignature 400).
"""

from __future__ import annotations

import calendar
import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from . import signing
from .iam import KeyRecord
from .wire import ApiError, Request

MAX_CLOCK_SKEW_SECONDS = 15 * 60
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Caller:
    access_key_id: str
    identity: str
    style: str  # "v3" | "v1"


class NonceCache:
    """Nonces seen within the last ``window`` seconds (replays older than the
    clock-skew window are refused by the timestamp check anyway)."""

    def __init__(self, window: float = MAX_CLOCK_SKEW_SECONDS) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._order: deque[tuple[float, str]] = deque()

    def use(self, nonce: str, now: float) -> bool:
        """Record ``nonce``; False if it was already used."""
        with self._lock:
            while self._order and now - self._order[0][0] > self.window:
                self._seen.discard(self._order.popleft()[1])
            if nonce in self._seen:
                return False
            self._seen.add(nonce)
            self._order.append((now, nonce))
            return True


def authenticate(
    req: Request,
    lookup_key: Callable[[str], KeyRecord | None],
    nonces: NonceCache,
) -> Caller:
    """Verify an ACS3 or RPC V1 signed request; raise ApiError when refused."""
    authorization = req.header("authorization") or ""
    if authorization.startswith("ACS3-"):
        return _authenticate_v3(req, authorization, lookup_key, nonces)
    if "Signature" in req.params():
        return _authenticate_v1(req, lookup_key, nonces)
    raise ApiError(
        400, "IncompleteSignature", "The request signature does not conform to Aliyun standards."
    )


def _authenticate_v3(
    req: Request,
    authorization: str,
    lookup_key: Callable[[str], KeyRecord | None],
    nonces: NonceCache,
) -> Caller:
    try:
        auth = signing.parse_acs3_authorization(authorization)
    except ValueError as exc:
        raise ApiError(
            400, "IncompleteSignature", f"Malformed Authorization header: {exc}."
        ) from exc
    if auth.algorithm != signing.ACS3_ALGORITHM:
        raise ApiError(
            400,
            "InvalidSignatureMethod",
            f"Specified signature method {auth.algorithm} is not supported.",
        )
    record = _key(lookup_key, auth.access_key_id)
    _check_token(record, req.header("x-acs-security-token"))
    _check_timestamp(req.header("x-acs-date"))
    required = {"host"} | {
        name.lower() for name in req.headers if name.lower().startswith("x-acs-")
    }
    unsigned = sorted(required - set(auth.signed_headers))
    if unsigned:
        raise ApiError(
            400, "IncompleteSignature", f"Headers must be signed: {', '.join(unsigned)}."
        )
    header_values = {name: req.headers.get_all(name) or [] for name in auth.signed_headers}
    canonical = signing.acs3_canonical_request(
        req.method,
        req.path,
        req.query_params(),
        {k: [str(v) for v in vs] for k, vs in header_values.items()},
        auth.signed_headers,
        hashlib.sha256(req.body).hexdigest(),
    )
    string_to_sign = signing.acs3_string_to_sign(canonical)
    expected = signing.acs3_signature(record.secret, string_to_sign)
    if not signing.signatures_equal(expected, auth.signature):
        raise ApiError(
            400,
            "SignatureDoesNotMatch",
            "The request signature does not conform to Aliyun standards. "
            f"server string to sign is:{string_to_sign}",
        )
    _spend_nonce(nonces, req.header("x-acs-signature-nonce"))
    return Caller(record.access_key_id, record.identity, "v3")


def _authenticate_v1(
    req: Request,
    lookup_key: Callable[[str], KeyRecord | None],
    nonces: NonceCache,
) -> Caller:
    params = req.params()
    method = params.get("SignatureMethod", "")
    if method != "HMAC-SHA1":
        raise ApiError(
            400, "InvalidSignatureMethod", f"Specified signature method {method} is not supported."
        )
    if params.get("SignatureVersion") != "1.0":
        raise ApiError(
            400, "InvalidSignatureVersion", "Specified signature version is not supported."
        )
    record = _key(lookup_key, params.get("AccessKeyId", ""))
    _check_token(record, params.get("SecurityToken"))
    _check_timestamp(params.get("Timestamp"))
    string_to_sign = signing.rpc_string_to_sign(req.method, params)
    expected = signing.rpc_signature(record.secret, string_to_sign)
    if not signing.signatures_equal(expected, params.get("Signature", "")):
        raise ApiError(
            400,
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation. "
            f"server string to sign is:{string_to_sign}",
        )
    _spend_nonce(nonces, params.get("SignatureNonce"))
    return Caller(record.access_key_id, record.identity, "v1")


def _key(lookup_key: Callable[[str], KeyRecord | None], ak_id: str) -> KeyRecord:
    if not ak_id:
        raise ApiError(400, "MissingAccessKeyId", "AccessKeyId is mandatory for this action.")
    record = lookup_key(ak_id)
    if record is None:
        raise ApiError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    return record


def _check_token(record: KeyRecord, token: str | None) -> None:
    if record.security_token is None:
        if token:
            raise ApiError(
                400,
                "InvalidSecurityToken.MismatchWithAccessKey",
                "Specified SecurityToken mismatch with the AccessKey.",
            )
        return
    if not token:
        raise ApiError(400, "MissingSecurityToken", "SecurityToken is mandatory for this action.")
    if not signing.signatures_equal(token, record.security_token):
        raise ApiError(
            400,
            "InvalidSecurityToken.MismatchWithAccessKey",
            "Specified SecurityToken mismatch with the AccessKey.",
        )
    if record.expired(time.time()):
        raise ApiError(400, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired.")


def _check_timestamp(value: str | None) -> None:
    if not value:
        raise ApiError(400, "MissingTimestamp", "Timestamp is mandatory for this action.")
    try:
        stamp = calendar.timegm(time.strptime(value, TIMESTAMP_FORMAT))
    except ValueError as exc:
        raise ApiError(
            400,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        ) from exc
    if abs(time.time() - stamp) > MAX_CLOCK_SKEW_SECONDS:
        raise ApiError(
            400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."
        )


def _spend_nonce(nonces: NonceCache, nonce: str | None) -> None:
    if not nonce:
        raise ApiError(400, "MissingSignatureNonce", "SignatureNonce is mandatory for this action.")
    if not nonces.use(nonce, time.time()):
        raise ApiError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
