"""The fake KMS instance gateway as the KMS instance SDK (``alibabacloud-dkms-gcs``) reaches it:
an application access point's client key signs each request, Protocol Buffers on the wire.

Why: ack-secret-manager v0.5's ``dedicatedKMSAuth`` (clientKeyContent + password + the
instance CA) reads secrets this way, not with RAM AccessKeys; the controller must be tested
against that protocol, with signatures checked, over TLS with the instance's private CA.

Wire facts (read from alibabacloud-dkms-gcs 1.0.2, the behaviour only):
- ``POST https://<instance endpoint>/``, body = a serialized protobuf request message;
  headers ``accept`` and ``content-type: application/x-protobuf``, ``date`` (RFC 1123, GMT),
  ``x-kms-apiversion: dkms-gcs-0.2``, ``x-kms-apiname: GetSecretValue``,
  ``x-kms-signaturemethod: RSA_PKCS1_SHA_256``, ``x-kms-acccesskeyid`` (sic: three c's) = the
  client key's KeyId, ``content-sha256`` = upper-case hex SHA-256 of the body,
  ``authorization: Bearer <base64 RSA PKCS#1 v1.5 SHA-256 signature>``.
- String to sign: ``METHOD\\n<content-sha256>\\n<content-type>\\n<date>\\n`` + one
  ``name:value\\n`` per ``x-kms-*`` header (names sorted, values trimmed) + ``/`` (the SDK
  always signs the resource as ``/``).
- Client key content (the file the console hands out): JSON ``{KeyId, PrivateKeyData}``,
  PrivateKeyData = base64 of a PKCS#12 container protected by the client key password.
  The password never travels: a wrong one fails on the client, before any request.
- GetSecretValueRequest: 1 SecretName, 2 VersionStage, 3 VersionId (strings),
  4 FetchExtendedConfig (bool). GetSecretValueResponse: 1 SecretName, 2 SecretType,
  3 SecretData, 4 SecretDataType, 5 VersionStages (repeated), 6 VersionId, 7 CreateTime,
  8 RequestId, 9 LastRotationDate, 10 NextRotationDate, 11 ExtendedConfig,
  12 AutomaticRotation, 13 RotationInterval (strings). Errors: any 4xx/5xx with body
  ``Error{1 StatusCode int32, 2 ErrorCode, 3 ErrorMessage, 4 RequestId}``.

Error codes: 400 InvalidApiName, InvalidApiVersion, InvalidParam (Date, signature method),
MissingParameter (no x-kms-acccesskeyid), RequestTimeTooSkewed (over 15 minutes) are
documented (KMS "common error codes" for instance APIs); ``Rejected.Throttling`` is what the
SDK treats as retryable (served as 429). Not confirmed from public docs, chosen to look like
the gateway: 401 InvalidAccessKeyId (unknown or revoked client key), 401
SignatureDoesNotMatch (bad signature or body digest), 403 Forbidden.NoPermission (access
rules of the client key's identity), 404 Forbidden.ResourceNotFound (as shared KMS).

Faults (``inject``) match on action ``GetSecretValue`` and the secret name, so a fault meant
for the shared KMS gateway hits the instance too unless it names a secret only one reads;
throttling is served as 429 unless the fault sets a status.

Secrets are the fake KMS's secrets (``put_secret``); client keys are made with
``cloud.dkms.create_client_key(identity, password)``, admin ``POST /_admin/dkms/client-keys``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import email.utils
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from .faults import apply_fault
from .wire import ApiError, Request, Response, new_request_id

if TYPE_CHECKING:
    from .state import CloudState

API_VERSION = "dkms-gcs-0.2"
SIGNATURE_METHOD = "RSA_PKCS1_SHA_256"
KEY_ID_HEADER = "x-kms-acccesskeyid"
MAX_SKEW_SECONDS = 15 * 60
PROTOBUF = "application/x-protobuf"

# --- a minimal protobuf codec (strings, bools, int32, repeated strings) ------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode(fields: Iterable[tuple[int, str | bytes | int | bool]]) -> bytes:
    """Serialize (field number, value) pairs: str/bytes length-delimited, int/bool varint."""
    out = bytearray()
    for number, value in fields:
        if isinstance(value, (bool, int)):
            out += _varint(number << 3) + _varint(int(value))
        else:
            raw = value.encode("utf-8") if isinstance(value, str) else value
            out += _varint(number << 3 | 2) + _varint(len(raw)) + raw
    return bytes(out)


def decode(data: bytes) -> dict[int, list[int | bytes]]:
    """Parse a message into field number -> values (varints as int, the rest as bytes)."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0

    def read_varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= len(data):
                raise ValueError("truncated varint")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while pos < len(data):
        key = read_varint()
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value = read_varint()
        elif wire == 2:
            size = read_varint()
            value, pos = data[pos : pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def text(fields: dict[int, list[int | bytes]], number: int) -> str:
    values = fields.get(number) or [b""]
    last = values[-1]
    return last.decode("utf-8") if isinstance(last, bytes) else str(last)


# --- client keys (application access points) --------------------------------------------


@dataclass(frozen=True)
class ClientKey:
    """What a KMS console hands out for an application access point."""

    key_id: str
    content: str = field(repr=False)  # the client key file: {"KeyId", "PrivateKeyData"}
    password: str = field(repr=False)
    private_key_pem: str = field(repr=False)  # PKCS#1 PEM, for clients that take the raw key
    identity: str = ""


class ClientKeyRing:
    """Client keys of the KMS instance (``cloud.dkms``): KeyId -> public key and identity."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[rsa.RSAPublicKey, str]] = {}
        self._lock = threading.Lock()

    def create_client_key(self, identity: str, password: str | None = None) -> ClientKey:
        """A new RSA 2048 client key for `identity` (its access rules apply); the private key
        leaves only inside the password-protected PKCS#12 of ``content`` (and
        ``private_key_pem``, for tests)."""
        password = password or secrets.token_urlsafe(12)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_id = f"KAAP.{uuid.uuid4()}"
        blob = pkcs12.serialize_key_and_certificates(
            key_id.encode(), key, _self_signed(key, key_id), None,
            serialization.BestAvailableEncryption(password.encode()))
        content = json.dumps({"KeyId": key_id,
                              "PrivateKeyData": base64.b64encode(blob).decode("ascii")})
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode("ascii")
        with self._lock:
            self._keys[key_id] = (key.public_key(), identity)
        return ClientKey(key_id, content, password, pem, identity)

    def revoke(self, key_id: str) -> bool:
        with self._lock:
            return self._keys.pop(key_id, None) is not None

    def lookup(self, key_id: str) -> tuple[rsa.RSAPublicKey, str] | None:
        with self._lock:
            return self._keys.get(key_id)


def _self_signed(key: rsa.RSAPrivateKey, key_id: str) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, key_id)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .sign(key, hashes.SHA256()))


# --- the service --------------------------------------------------------------------------


def string_to_sign(method: str, headers: dict[str, str]) -> str:
    """What the client key signs (see the module docstring)."""
    head = "\n".join([method.upper(), headers.get("content-sha256", ""),
                      headers.get("content-type", ""), headers.get("date", "")])
    kms = "".join(f"{k}:{headers[k].strip()}\n" for k in sorted(headers) if k.startswith("x-kms-"))
    return f"{head}\n{kms}/"


class DkmsService:
    """``handle(Request)`` for the KMS instance endpoint (served over TLS by ``FakeCloud``)."""

    def __init__(self, state: CloudState, *, instance_id: str = "kst-fake") -> None:
        self.state = state
        self.host_id = f"{instance_id}.cryptoservice.kms.aliyuncs.com"

    def handle(self, req: Request) -> Response:
        started = time.time()
        request_id = new_request_id()
        headers = {k.lower(): str(v) for k, v in req.headers.items()}
        action = headers.get("x-kms-apiname")
        identity: str | None = None
        secret: str | None = None
        status, code = 200, None
        with self.state.log.in_flight():
            try:
                if self.state.latency:
                    time.sleep(self.state.latency)
                identity = self._authenticate(req, headers)
                secret = self._secret_name(req.body)
                raw = self._fault(action, secret)
                if raw is not None:
                    status, code = (0 if raw.drop else raw.status), "fault"
                    return raw
                return self._dispatch(action, req.body, identity, request_id)
            except ApiError as err:
                status, code = err.status, err.code
                return _error(err, request_id)
            finally:
                self.state.log.record(service="kms-instance", action=action, secret=secret,
                                      identity=identity, status=status, code=code,
                                      started=started)

    def _fault(self, action: str | None, secret: str | None) -> Response | None:
        fault = self.state.take_fault(action, secret)
        if fault is None:
            return None
        if fault.kind == "throttling" and fault.status is None:
            fault = dataclasses.replace(fault, status=429)
        return apply_fault(fault, throttling_code="Rejected.Throttling")

    def _authenticate(self, req: Request, headers: dict[str, str]) -> str:
        if headers.get("x-kms-apiversion") != API_VERSION:
            raise ApiError(400, "InvalidApiVersion",
                           f'The ApiVersion "{headers.get("x-kms-apiversion", "")}" is invalid.')
        method = headers.get("x-kms-signaturemethod")
        if method != SIGNATURE_METHOD:
            raise ApiError(400, "InvalidParam", "The Param x-kms-signaturemethod is invalid.")
        key_id = headers.get(KEY_ID_HEADER)
        if not key_id:
            raise ApiError(400, "MissingParameter",
                           f"Parameter {KEY_ID_HEADER} does not exist in http header or body.")
        _check_date(headers.get("date", ""))
        found = self.state.dkms.lookup(key_id)
        if found is None:
            raise ApiError(401, "InvalidAccessKeyId", f"The AccessKeyId {key_id} is invalid.")
        public_key, identity = found
        digest = hashlib.sha256(req.body).hexdigest().upper()
        if not hmac.compare_digest(digest, headers.get("content-sha256", "")):
            raise ApiError(401, "SignatureDoesNotMatch", "The content-sha256 does not match.")
        _verify(public_key, headers.get("authorization", ""), string_to_sign(req.method, headers))
        return identity

    def _secret_name(self, body: bytes) -> str:
        try:
            return text(decode(body), 1)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "InvalidParameter", "The specified parameter is not valid.") \
                from exc

    def _dispatch(self, action: str | None, body: bytes, identity: str,
                  request_id: str) -> Response:
        if action != "GetSecretValue":
            raise ApiError(400, "InvalidApiName", f'The ApiName "{action}" is invalid.')
        fields = decode(body)
        name = text(fields, 1)
        if not name:
            raise ApiError(400, "InvalidParameter", "The specified parameter is not valid.")
        if not self.state.may_read(identity, name):
            raise ApiError(403, "Forbidden.NoPermission",
                           f"This operation for {name} is forbidden by permission system.")
        found = self.state.lookup_secret(name, text(fields, 3) or None, text(fields, 2) or None)
        if found is None:
            raise ApiError(404, "Forbidden.ResourceNotFound", "The resource is not found.")
        secret_name, version, created, secret_type = found
        pairs: list[tuple[int, str | bytes | int | bool]] = [
            (1, secret_name), (2, secret_type), (3, version.data), (4, version.data_type)]
        pairs += [(5, stage) for stage in sorted(version.stages)]
        pairs += [(6, version.version_id), (7, iso_utc(created)), (8, request_id),
                  (12, "Disabled")]
        return Response(200, encode(pairs), {"Content-Type": PROTOBUF,
                                             "x-kms-requestid": request_id})


def _check_date(value: str) -> None:
    try:
        stamp = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError) as exc:
        raise ApiError(400, "InvalidParam", "The Param Date is invalid.") from exc
    if abs(time.time() - stamp) > MAX_SKEW_SECONDS:
        raise ApiError(400, "RequestTimeTooSkewed",
                       "Request time exceeds server time more than 15 minutes.")


def _verify(public_key: rsa.RSAPublicKey, authorization: str, message: str) -> None:
    scheme, _, encoded = authorization.partition(" ")
    try:
        signature = base64.b64decode(encoded, validate=True)
        if scheme != "Bearer":
            raise ValueError(scheme)
        public_key.verify(signature, message.encode("utf-8"), padding.PKCS1v15(),
                          hashes.SHA256())
    except (ValueError, InvalidSignature) as exc:
        raise ApiError(401, "SignatureDoesNotMatch",
                       "The request signature does not match.") from exc


def iso_utc(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(err: ApiError, request_id: str) -> Response:
    body = encode([(1, err.status), (2, err.code), (3, err.message), (4, request_id)])
    headers = {"Content-Type": PROTOBUF, "x-kms-requestid": request_id, **err.headers}
    return Response(err.status, body, headers)


def admin_route(ring: ClientKeyRing, method: str, route: str,
                body: dict[str, Any]) -> dict[str, Any] | None:
    """``/_admin/dkms/client-keys`` routes:

      POST   /dkms/client-keys          {identity, password?} -> {key_id, content, password}
      DELETE /dkms/client-keys/<id>     {"revoked": bool}
    """
    parts = route.strip("/").split("/", 2)
    if parts == ["dkms", "client-keys"] and method == "POST":
        key = ring.create_client_key(str(body["identity"]), body.get("password"))
        return {"key_id": key.key_id, "content": key.content, "password": key.password}
    if len(parts) == 3 and parts[:2] == ["dkms", "client-keys"] and method == "DELETE":
        return {"revoked": ring.revoke(parts[2])}
    return None


class ClientKeyAdmin:
    """The client side of ``admin_route``, mixed into ``FakeCloudAdmin``."""

    def _call(self, method: str, route: str, body: Any = None, **query: Any) -> dict[str, Any]:
        raise NotImplementedError

    def create_client_key(self, identity: str, password: str | None = None) -> dict[str, str]:
        """{key_id, content, password}: what a user pastes into dedicatedKMSAuth."""
        body: dict[str, Any] = {"identity": identity}
        if password:
            body["password"] = password
        return {k: str(v) for k, v in self._call("POST", "/dkms/client-keys", body).items()}

    def revoke_client_key(self, key_id: str) -> bool:
        return bool(self._call("DELETE", f"/dkms/client-keys/{key_id}")["revoked"])
