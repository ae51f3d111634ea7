"""Reading secrets from a KMS instance with an application access point's client key
(ack-secret-manager v0.5's `SecretStore.spec.KMS.dedicatedKMSAuth`: clientKeyContent,
password, endpoint, ca, ignoreSSL).

Why this speaks the protocol itself instead of calling `alibabacloud-dkms-gcs` (Alibaba's KMS
instance SDK, 1.0.2, the latest): that package cannot live in this project's environment. It
pins protobuf<4 (the kms-plugin's generated gRPC code needs protobuf 6+; its own generated
code fails to import under protobuf 4+ unless the whole process switches to pure-Python
protobuf), pins pyOpenSSL<23.3 and so cryptography<42, and its client-key path calls
`OpenSSL.crypto.load_pkcs12`, removed in pyOpenSSL 23.3; it also installs top-level packages
named `sdk`, `openapi`, `openapi_util`. The wire format below is the SDK's behaviour, read
from it (facts, not its code), and `tests/testbed/test_fakecloud_dkms.py` checks the fake
against the real SDK and this client against the fake.

The protocol: `POST https://<endpoint>/`, a protobuf body, headers `date` (RFC 1123),
`x-kms-apiversion: dkms-gcs-0.2`, `x-kms-apiname`, `x-kms-signaturemethod:
RSA_PKCS1_SHA_256`, `x-kms-acccesskeyid` (sic) = the client key's KeyId, `content-sha256`
(upper-case hex), `authorization: Bearer <base64 RSA PKCS#1 v1.5 SHA-256 signature of
"METHOD\\nsha\\ntype\\ndate\\n" + sorted x-kms-* "name:value\\n" lines + "/">`. Errors are a
protobuf `Error{StatusCode, ErrorCode, ErrorMessage, RequestId}`; the SDK retries
`Rejected.Throttling`.

The client key file is JSON `{KeyId, PrivateKeyData}`, PrivateKeyData the base64 of a PKCS#12
opened with the password; both are decoded here, once, so a wrong password or a damaged key
is a configuration error before any call. The PKCS#12's key-derivation parameters are read
first (`pfx.check`) and a file asking for more than the iteration ceiling is refused before
anything is derived. TLS: the instance CA (PEM) is trusted for that
endpoint only (an `ssl` context per endpoint, no CA files); `ignore_ssl=True` disables
verification and exists only because the caller (the lead's policy: an operator flag) asked.
Retries, the per-endpoint rate limit and the error classes are the KMS path's
(`pool.CallPolicy`, `pool.RateLimiter`, `errors.service_error(product="KMS instance")`).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import http.client
import json
import queue
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from controller.ops.redact import register_secret
from controller.providers import tenant
from controller.providers.alibaba import pfx
from controller.providers.alibaba.errors import FetchError, Kind, classify, service_error
from controller.providers.alibaba.kms import SecretValue
from controller.providers.alibaba.pool import DEFAULT_CALLS, CallPolicy, ClientPool, RateLimiter

PRODUCT = "KMS instance"
API_VERSION = "dkms-gcs-0.2"
SIGNATURE_METHOD = "RSA_PKCS1_SHA_256"
PROTOBUF = "application/x-protobuf"
USER_AGENT = "ack-secret-manager"
MAX_RESPONSE_BYTES = 1 << 20  # a secret value is at most 64 KB; refuse anything far bigger
_POOL_SIZE = 8


@dataclass(frozen=True)
class ClientKey:
    """A decoded client key. Equal keys (same KeyId and key pair) share reads."""

    key_id: str
    fingerprint: str  # sha256 of the public key: identifies the pair, reveals nothing
    private_key: rsa.RSAPrivateKey = field(repr=False, compare=False)
    source: str = field(default="", compare=False)  # "SecretStore default/dkms", for messages

    def describe(self) -> str:
        text = f"client key {self.key_id}"
        return f"{text} ({self.source})" if self.source else text

    def sign(self, message: str) -> str:
        signature = self.private_key.sign(message.encode("utf-8"), padding.PKCS1v15(),
                                          hashes.SHA256())
        return base64.b64encode(signature).decode("ascii")


@dataclass(frozen=True)
class InstanceEndpoint:
    """Where the KMS instance is: `host` (`<instanceId>.cryptoservice.kms.aliyuncs.com` or
    host:port), its private CA (PEM), and whether TLS verification is off."""

    host: str
    ca_pem: str = field(default="", repr=False)
    ignore_ssl: bool = False


def load_client_key(content: str, password: str, *, source: str = "",
                    on_secret: Callable[[str], None] | None = register_secret) -> ClientKey:
    """Decode `clientKeyContent` with `password`; raises FetchError (CONFIG or AUTH) naming
    the field and the fix, never the content."""
    where = source or "the SecretStore"
    key_id, blob = _parse_content(content, where)
    if on_secret is not None:
        for value in (password, content):
            on_secret(value)
    try:
        pfx.check(blob, password.encode())
    except pfx.Refused as exc:
        raise FetchError(Kind.CONFIG, "ClientKeyRefused",
                         f"ClientKeyRefused: dedicatedKMSAuth.clientKeyContent of {where} "
                         f"(client key {key_id}) is refused: {exc}; create a new client key "
                         "for the application access point (KMS writes its files within "
                         "the ceiling)") from None
    try:
        private_key, _cert, _extra = pkcs12.load_key_and_certificates(blob, password.encode())
    except ValueError:
        raise FetchError(Kind.AUTH, "ClientKeyPasswordWrong",
                         f"ClientKeyPasswordWrong: the password of client key {key_id} "
                         f"({where}) does not open it; set dedicatedKMSAuth.password to the "
                         "password shown when the client key was created") from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise FetchError(Kind.CONFIG, "InvalidClientKey",
                         f"InvalidClientKey: client key {key_id} ({where}) holds no RSA key; "
                         "create a new client key for the application access point")
    public = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return ClientKey(key_id, hashlib.sha256(public).hexdigest()[:16], private_key, source)


def _parse_content(content: str, where: str) -> tuple[str, bytes]:
    bad = FetchError(Kind.CONFIG, "InvalidClientKey",
                     f"InvalidClientKey: dedicatedKMSAuth.clientKeyContent of {where} is not a "
                     "KMS client key file (JSON with KeyId and PrivateKeyData); paste the whole "
                     "clientKey_*.json downloaded when the client key was created")
    try:
        document = json.loads(content)
        key_id, data = str(document["KeyId"]), str(document["PrivateKeyData"])
        blob = base64.b64decode(data, validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise bad from None
    if not key_id or not blob:
        raise bad
    return key_id, blob


class KmsInstance:
    """`get_secret_value` against KMS instances, signed with client keys."""

    def __init__(
        self,
        policy: CallPolicy = DEFAULT_CALLS,
    ) -> None:
        self.policy = policy
        self.timeouts = (policy.connect_timeout_ms / 1000.0, policy.read_timeout_ms / 1000.0)
        # Connection pools (keep-alive connections) unused for `idle` seconds are closed.
        self.clients: ClientPool[InstanceEndpoint, _Pool] = ClientPool(
            policy.rate_per_endpoint, idle=policy.idle, clock=policy.clock,
            on_drop=lambda pool: pool.close(), label="pools")
        self.calls = 0

    def cancel(self) -> None:
        """Stop retrying (shutdown): waiting calls end at once with a transient error."""
        self.clients.cancel()

    def close(self) -> None:
        self.clients.close()

    def sizes(self) -> dict[str, int]:
        return self.clients.sizes()

    def get_secret_value(self, key: ClientKey, endpoint: InstanceEndpoint, name: str,
                         version_id: str = "", version_stage: str = "") -> SecretValue:
        """Read one secret version; raises FetchError (already retried where that helps)."""
        policy = self.policy.retrying(self.clients.cancelled)
        body = encode([(1, name), (2, version_stage), (3, version_id)])
        result: SecretValue = policy(self._call, key, endpoint, name, body)
        return result

    # ----------------------------------------------------------------- private
    def _call(self, key: ClientKey, endpoint: InstanceEndpoint, name: str,
              body: bytes) -> SecretValue:
        self.clients.check_cancelled()
        limiter = self._limiter(endpoint.host)
        start = time.monotonic()
        code = "Success"
        try:
            with limiter.turn(tenant() or key.fingerprint):
                pool = self._pool(endpoint)
                limiter.acquire(self.clients.cancelled)
                self.clients.check_cancelled()
                start = time.monotonic()
                self.calls += 1
                status, data = pool.post(signed_headers(key, endpoint.host, body), body)
            if status >= 400:
                raise _error_answer(status, data, key)
            return _value(name, data)
        except Exception as exc:  # noqa: BLE001 - classified, re-raised as FetchError
            error = classify(exc, who=key.describe(), endpoint=endpoint.host, product=PRODUCT,
                             ca_pem=endpoint.ca_pem)
            code = error.code
            raise error from None
        finally:
            self.policy.observe(endpoint.host, code, start)

    def _limiter(self, host: str) -> RateLimiter:
        return self.clients.limiter(host)

    def _pool(self, endpoint: InstanceEndpoint) -> _Pool:
        return self.clients.client(endpoint, lambda: _Pool(endpoint, *self.timeouts))


def signed_headers(key: ClientKey, host: str, body: bytes) -> dict[str, str]:
    """The headers of one GetSecretValue request, signed with `key`."""
    headers = {
        "accept": PROTOBUF,
        "content-type": PROTOBUF,
        "content-length": str(len(body)),
        "content-sha256": hashlib.sha256(body).hexdigest().upper(),
        "date": email.utils.formatdate(usegmt=True),
        "host": host,
        "user-agent": USER_AGENT,
        "x-kms-apiversion": API_VERSION,
        "x-kms-apiname": "GetSecretValue",
        "x-kms-signaturemethod": SIGNATURE_METHOD,
        "x-kms-acccesskeyid": key.key_id,
    }
    headers["authorization"] = "Bearer " + key.sign(string_to_sign("POST", headers))
    return headers


def string_to_sign(method: str, headers: dict[str, str]) -> str:
    head = "\n".join([method, headers.get("content-sha256", ""),
                      headers.get("content-type", ""), headers.get("date", "")])
    kms = "".join(f"{k}:{headers[k].strip()}\n" for k in sorted(headers) if k.startswith("x-kms-"))
    return f"{head}\n{kms}/"


class _Pool:
    """Keep-alive https connections to one endpoint (http.client connections are not
    thread-safe: each call takes one, and gives it back if it is still usable)."""

    def __init__(self, endpoint: InstanceEndpoint, connect_timeout: float,
                 read_timeout: float) -> None:
        self.endpoint = endpoint
        self.timeouts = (connect_timeout, read_timeout)
        self.context = _tls_context(endpoint)
        self._idle: queue.LifoQueue[http.client.HTTPSConnection] = queue.LifoQueue(_POOL_SIZE)

    def post(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            return self._send(self._new(), headers, body)
        try:
            return self._send(conn, headers, body)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closed the idle connection while it waited here: once, on a new one.
            return self._send(self._new(), headers, body)

    def _new(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.endpoint.host, timeout=self.timeouts[0],
                                           context=self.context)

    def _send(self, conn: http.client.HTTPSConnection, headers: dict[str, str],
              body: bytes) -> tuple[int, bytes]:
        try:
            if conn.sock is None:
                conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(self.timeouts[1])
            conn.request("POST", "/", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read(MAX_RESPONSE_BYTES + 1)
        except BaseException:
            conn.close()
            raise
        if len(data) > MAX_RESPONSE_BYTES or resp.will_close:
            conn.close()
        else:
            try:
                self._idle.put_nowait(conn)
            except queue.Full:
                conn.close()
        return resp.status, data

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def _tls_context(endpoint: InstanceEndpoint) -> ssl.SSLContext:
    if endpoint.ignore_ssl:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if not endpoint.ca_pem:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cadata=endpoint.ca_pem)
    except (ssl.SSLError, ValueError):
        raise FetchError(Kind.CONFIG, "InvalidCA",
                         f"InvalidCA: dedicatedKMSAuth.ca for {endpoint.host} is not a PEM "
                         "certificate; paste the KMS instance's CA certificate") from None


def _error_answer(status: int, data: bytes, key: ClientKey) -> FetchError:
    try:
        fields = decode(data)
        code = _text(fields, 2)
    except (ValueError, UnicodeDecodeError):
        code = ""
    if not code:
        kind = Kind.TRANSIENT if status >= 500 else Kind.CONFIG
        return FetchError(kind, "UnexpectedResponse",
                          f"UnexpectedResponse: the KMS instance answered HTTP {status} "
                          "without an error body (a proxy or a wrong endpoint?)")
    return service_error(code, status, who=key.describe(), product=PRODUCT,
                         throttled=code == "Rejected.Throttling" or status == 429)


def _value(name: str, data: bytes) -> SecretValue:
    try:
        fields = decode(data)
        data_type = _text(fields, 4) or "text"
        raw = _text(fields, 3)
        value = base64.b64decode(raw) if data_type == "binary" else raw.encode()
        stages = tuple(v.decode() for v in fields.get(5, []) if isinstance(v, bytes))
        version_id = _text(fields, 6)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise FetchError(Kind.TRANSIENT, "UnexpectedResponse",
                         f"UnexpectedResponse: the KMS instance's answer for {name} is not a "
                         "GetSecretValue response; will retry") from None
    return SecretValue(name=name, data=value, data_type=data_type, version_id=version_id,
                       stages=stages)


# --- protobuf wire format: only what these messages use (strings, varints) -------------

def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode(fields: Iterable[tuple[int, str]]) -> bytes:
    """Length-delimited string fields; empty strings are left out (proto3 defaults)."""
    out = bytearray()
    for number, value in fields:
        if value:
            raw = value.encode("utf-8")
            out += _varint(number << 3 | 2) + _varint(len(raw)) + raw
    return bytes(out)


def decode(data: bytes) -> dict[int, list[Any]]:
    """Field number -> values (int for varints, bytes otherwise); ValueError when malformed."""
    fields: dict[int, list[Any]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            value, pos = data[pos:pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos:pos + size], pos + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _text(fields: dict[int, list[Any]], number: int) -> str:
    values = fields.get(number)
    if not values:
        return ""
    last = values[-1]
    if not isinstance(last, bytes):
        raise ValueError(f"field {number} is not a string")
    return last.decode("utf-8")
