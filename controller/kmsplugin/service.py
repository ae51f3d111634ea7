"""Status, Encrypt and Decrypt of the KMS v2 API, and the gRPC handlers that serve them.

Why the checks here: the kube-apiserver stores what Encrypt returns (ciphertext, key_id,
annotations) next to every object and hands it back to Decrypt, possibly after a restart
and for data wrapped under any earlier key version. So:
- Status answers from `KeyStateCache` (no KMS call).
- Encrypt's key_id comes from the KeyVersionId that KMS says it used, not from the cache;
  when they differ (a rotation between two refreshes) the cache moves at once, so Status and
  Encrypt agree again (the apiserver drops a DEK whose key_id differs from Status's).
- Decrypt refuses, before asking KMS, a key_id this plugin never issued (it must equal the
  hash of the annotated key and version), a blob of another KMS key, and a blob made for
  another cluster; KMS then enforces the EncryptionContext itself, and the answer must come
  from the annotated key version.
Error texts name the problem and the fix; no plaintext, DEK or ciphertext ever reaches a
message or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc

from controller.alicloud.errors import Kind
from controller.alicloud.kms_crypto import CryptoError, Unwrapped, Wrapped
from controller.kmsplugin import keyids
from controller.kmsplugin.keystate import KeyStateCache
from controller.kmsplugin.metrics import PluginMetrics
from controller.kmsplugin.proto import api_pb2

log = logging.getLogger(__name__)

API_VERSION = "v2"
MAX_CIPHERTEXT = 1024
SERVICE = "v2.KeyManagementService"
T = TypeVar("T")


class Crypto(Protocol):
    def encrypt(self, key_id: str, plaintext: bytes, context: dict[str, str]) -> Wrapped: ...
    def decrypt(self, key_id: str, ciphertext: str, context: dict[str, str]) -> Unwrapped: ...


class PluginError(Exception):
    """A refused call: the gRPC status code and a safe message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class EncryptResult:
    ciphertext: bytes
    key_id: str
    annotations: dict[str, bytes]


_GRPC_BY_KIND = {
    Kind.THROTTLED: grpc.StatusCode.UNAVAILABLE,
    Kind.TRANSIENT: grpc.StatusCode.UNAVAILABLE,
    Kind.DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Kind.AUTH: grpc.StatusCode.UNAUTHENTICATED,
    Kind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Kind.CONFIG: grpc.StatusCode.FAILED_PRECONDITION,
}


class KeyService:
    """The plugin's behaviour, independent of gRPC plumbing (unit-testable)."""

    def __init__(self, *, kms_key_id: str, cluster: str, context: dict[str, str],
                 crypto: Crypto, keys: KeyStateCache, metrics: PluginMetrics) -> None:
        self.kms_key_id = kms_key_id
        self.cluster = cluster
        self.context = dict(context)
        self.crypto = crypto
        self.keys = keys
        self.metrics = metrics

    def status(self) -> tuple[str, str]:
        """(healthz, key_id)."""
        health = self.keys.health()
        self.metrics.key_healthy.set(1 if health.ok else 0)
        if health.key_id:
            self.metrics.set_key_id(health.key_id)
        return health.healthz, health.key_id

    def encrypt(self, plaintext: bytes) -> EncryptResult:
        if not plaintext:
            raise PluginError(grpc.StatusCode.INVALID_ARGUMENT, "Encrypt: empty plaintext")
        wrapped = self._kms("Encrypt", lambda: self.crypto.encrypt(
            self.kms_key_id, plaintext, self.context))
        if not wrapped.version_id or not wrapped.ciphertext:
            raise PluginError(grpc.StatusCode.INTERNAL,
                              f"Encrypt with KMS key {self.kms_key_id}: KMS returned no key "
                              "version or no ciphertext")
        ciphertext = wrapped.ciphertext.encode()
        if len(ciphertext) > MAX_CIPHERTEXT:
            raise PluginError(grpc.StatusCode.INTERNAL,
                              f"Encrypt with KMS key {self.kms_key_id}: ciphertext of "
                              f"{len(ciphertext)} bytes exceeds the API's {MAX_CIPHERTEXT}")
        self.keys.observe_version(wrapped.version_id)
        key_id = keyids.key_id_for(self.kms_key_id, wrapped.version_id)
        return EncryptResult(ciphertext, key_id,
                             keyids.annotations_for(self.kms_key_id, wrapped.version_id,
                                                self.cluster))

    def decrypt(self, ciphertext: bytes, key_id: str, annotations: Mapping[str, bytes]) -> bytes:
        version = self._check_origin(key_id, annotations)
        try:
            blob = ciphertext.decode("ascii")
        except UnicodeDecodeError:
            raise PluginError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Decrypt of key_id {key_id}: the ciphertext is not a KMS "
                              "CiphertextBlob") from None
        result = self._kms("Decrypt", lambda: self.crypto.decrypt(
            self.kms_key_id, blob, self.context))
        if (result.key_id, result.version_id) != (self.kms_key_id, version):
            raise PluginError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"Decrypt of key_id {key_id}: KMS answered with key "
                              f"{result.key_id} version {result.version_id}, not the annotated "
                              f"{self.kms_key_id} version {version}; the stored data was "
                              "tampered with")
        return result.plaintext

    # ---------------------------------------------------------------------------- private
    def _check_origin(self, key_id: str, annotations: Mapping[str, bytes]) -> str:
        def text(name: str) -> str:
            return annotations.get(name, b"").decode("utf-8", "replace")

        kms_key, version, cluster = (text(keyids.KEY_ANNOTATION),
                                     text(keyids.VERSION_ANNOTATION),
                                     text(keyids.CLUSTER_ANNOTATION))
        if not kms_key or not version:
            raise PluginError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Decrypt of key_id {key_id}: annotations "
                              f"{keyids.KEY_ANNOTATION} and {keyids.VERSION_ANNOTATION} are "
                              "missing: this ciphertext was not made by this plugin")
        if kms_key != self.kms_key_id:
            raise PluginError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"Decrypt of key_id {key_id}: wrapped with KMS key {kms_key}, but "
                              f"this plugin uses {self.kms_key_id} (--key-id); run a plugin "
                              "with the old key until reencrypt has moved every object")
        if key_id != keyids.key_id_for(kms_key, version):
            raise PluginError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Decrypt: key_id {key_id!r} was never issued by this plugin "
                              f"for KMS key {kms_key}")
        if cluster and cluster != self.cluster:
            raise PluginError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"Decrypt of key_id {key_id}: made for cluster {cluster!r}, this "
                              f"plugin runs for {self.cluster!r} (--cluster-name); a ciphertext "
                              "of another cluster never decrypts here")
        return version

    def _kms(self, operation: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except CryptoError as err:
            log.warning("%s failed: %s", operation, err.reason)
            raise PluginError(_GRPC_BY_KIND.get(err.kind, grpc.StatusCode.INTERNAL),
                              err.reason) from None


def _handler(method: str, metrics: PluginMetrics, run: Callable[[Any], Any],
             request_type: Any, response_type: Any) -> Any:
    def serve(request: Any, context: Any) -> Any:
        try:
            response = run(request)
        except PluginError as err:
            metrics.count(method, ok=False)
            context.abort(err.code, err.message)
        except Exception:
            metrics.count(method, ok=False)
            log.exception("%s: unexpected failure", method)  # our code: no request data
            context.abort(grpc.StatusCode.INTERNAL, f"{method}: internal error (see plugin log)")
        metrics.count(method, ok=True)
        return response

    return grpc.unary_unary_rpc_method_handler(
        serve, request_deserializer=request_type.FromString,
        response_serializer=response_type.SerializeToString)


def generic_handler(service: KeyService) -> Any:
    """The `v2.KeyManagementService` handlers for `grpc.Server.add_generic_rpc_handlers`."""
    m = service.metrics

    def status(_request: Any) -> Any:
        healthz, key_id = service.status()
        return api_pb2.StatusResponse(version=API_VERSION, healthz=healthz, key_id=key_id)

    def encrypt(request: Any) -> Any:
        result = service.encrypt(request.plaintext)
        return api_pb2.EncryptResponse(ciphertext=result.ciphertext, key_id=result.key_id,
                                       annotations=result.annotations)

    def decrypt(request: Any) -> Any:
        plaintext = service.decrypt(request.ciphertext, request.key_id,
                                    dict(request.annotations))
        return api_pb2.DecryptResponse(plaintext=plaintext)

    handlers = {
        "Status": _handler("Status", m, status, api_pb2.StatusRequest, api_pb2.StatusResponse),
        "Encrypt": _handler("Encrypt", m, encrypt, api_pb2.EncryptRequest,
                            api_pb2.EncryptResponse),
        "Decrypt": _handler("Decrypt", m, decrypt, api_pb2.DecryptRequest,
                            api_pb2.DecryptResponse),
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)
