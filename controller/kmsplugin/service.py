"""Status, Encrypt and Decrypt of the KMS v2 API, and the gRPC handlers that serve them.

Why the checks here: the kube-apiserver stores what Encrypt returns (ciphertext, key_id,
annotations) next to every object and hands it back to Decrypt, possibly after a restart
and for data wrapped under any earlier key version. So:
- Status answers from `KeyStateCache` (no KMS call).
- Encrypt's key_id comes from the KeyVersionId that KMS says it used, not from the cache;
  when they differ (a rotation between two refreshes) the cache moves at once, so Status and
  Encrypt agree again (the apiserver drops a DEK whose key_id differs from Status's).
- Encrypt asks KMS with the KeyId the key-state cache resolved (an alias is resolved there),
  and builds key_id and annotations from the KeyId KMS answered with, never the alias text.
  Its input is bounded (MAX_PLAINTEXT) before KMS is called.
- Decrypt refuses, before asking KMS, an over-long ciphertext, a key_id that does not belong
  to its annotations (it must equal the hash of the annotated key and version), a blob of
  another KMS key (unless --key-id is an alias: a re-pointed alias leaves data under its
  earlier keys, which must stay readable), and a blob made for another cluster; KMS then
  enforces the EncryptionContext itself, and the answer must come from the annotated key
  version.
Error texts name the problem and the fix; no plaintext, DEK or ciphertext ever reaches a
message or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc

from controller.kmsplugin import keyids
from controller.kmsplugin.keystate import KeyStateCache
from controller.kmsplugin.metrics import PluginMetrics
from controller.kmsplugin.proto import api_pb2
from controller.providers import Kind
from controller.providers.alibaba.kms_crypto import CryptoError, Unwrapped, Wrapped

log = logging.getLogger(__name__)

API_VERSION = "v2"
MAX_CIPHERTEXT = 1024  # the KMS v2 API's limit on Encrypt's ciphertext
SEED_BYTES = 32  # what the kube-apiserver asks Encrypt to wrap
# Encrypt's input ceiling, checked before KMS is called: 8x a seed, and a 256-byte plaintext's
# KMS CiphertextBlob still fits the 1024-byte limit (KMS itself would take 6 KB).
MAX_PLAINTEXT = 256
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
        if len(plaintext) > MAX_PLAINTEXT:  # before KMS is asked
            raise PluginError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Encrypt: plaintext of {len(plaintext)} bytes exceeds this "
                              f"plugin's {MAX_PLAINTEXT}-byte limit (the kube-apiserver sends "
                              f"{SEED_BYTES}-byte DEK seeds); nothing was sent to KMS")
        target = self.keys.resolved_key_id() or self.kms_key_id
        wrapped = self._kms("Encrypt", lambda: self.crypto.encrypt(
            target, plaintext, self.context))
        if not wrapped.version_id or not wrapped.ciphertext or not wrapped.key_id:
            raise PluginError(grpc.StatusCode.INTERNAL,
                              f"Encrypt with KMS key {target}: KMS returned no KeyId, no key "
                              "version or no ciphertext")
        ciphertext = wrapped.ciphertext.encode()
        if len(ciphertext) > MAX_CIPHERTEXT:
            raise PluginError(grpc.StatusCode.INTERNAL,
                              f"Encrypt with KMS key {wrapped.key_id}: KMS returned a ciphertext "
                              f"of {len(ciphertext)} bytes, over the KMS v2 API's "
                              f"{MAX_CIPHERTEXT}")
        # The KeyId KMS answered with (never the alias text): Status moves with it at once.
        self.keys.observe(wrapped.key_id, wrapped.version_id)
        key_id = keyids.key_id_for(wrapped.key_id, wrapped.version_id)
        return EncryptResult(ciphertext, key_id,
                             keyids.annotations_for(wrapped.key_id, wrapped.version_id,
                                                    self.cluster))

    def decrypt(self, ciphertext: bytes, key_id: str, annotations: Mapping[str, bytes]) -> bytes:
        if len(ciphertext) > MAX_CIPHERTEXT:
            raise PluginError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Decrypt of key_id {key_id}: ciphertext of {len(ciphertext)} "
                              f"bytes is over the KMS v2 API's {MAX_CIPHERTEXT}; no Encrypt "
                              "answer of a KMS v2 plugin is that long (damaged or not a KMS v2 "
                              "ciphertext); nothing was sent to KMS")
        kms_key, version = self._check_origin(key_id, annotations)
        try:
            blob = ciphertext.decode("ascii")
        except UnicodeDecodeError:
            raise PluginError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Decrypt of key_id {key_id}: the ciphertext is not a KMS "
                              "CiphertextBlob") from None
        result = self._kms("Decrypt", lambda: self.crypto.decrypt(kms_key, blob, self.context))
        if (result.key_id, result.version_id) != (kms_key, version):
            raise PluginError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"Decrypt of key_id {key_id}: KMS answered with key "
                              f"{result.key_id} version {result.version_id}, not the annotated "
                              f"{kms_key} version {version}; the stored data was "
                              "tampered with")
        return result.plaintext

    # ---------------------------------------------------------------------------- private
    def _check_origin(self, key_id: str, annotations: Mapping[str, bytes]) -> tuple[str, str]:
        """(KMS KeyId, version) the ciphertext claims, once they are believable."""
        def text(name: str) -> str:
            return annotations.get(name, b"").decode("utf-8", "replace")

        kms_key, version, cluster = (text(keyids.KEY_ANNOTATION),
                                     text(keyids.VERSION_ANNOTATION),
                                     text(keyids.CLUSTER_ANNOTATION))
        issued = self.keys.issued_key_ids().get(key_id)
        if not kms_key or not version:
            origin = (f"key_id {key_id} is one this plugin issued (KMS key {issued[0]} "
                      f"version {issued[1]}), but " if issued else f"key_id {key_id}: ")
            raise PluginError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Decrypt: {origin}the annotations {keyids.KEY_ANNOTATION} and "
                              f"{keyids.VERSION_ANNOTATION} are missing, which the "
                              "kube-apiserver always sends back with data this plugin "
                              "encrypted: a KMS v1 ciphertext or a hand-made request?")
        if key_id != keyids.key_id_for(kms_key, version):
            raise PluginError(grpc.StatusCode.INVALID_ARGUMENT,
                              _mismatch(key_id, kms_key, version, issued))
        current = self.keys.resolved_key_id() or self.kms_key_id
        if kms_key != current and not self.keys.configured_alias:
            raise PluginError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"Decrypt of key_id {key_id}: wrapped with KMS key {kms_key}, but "
                              f"this plugin uses {current} (--key-id); run a plugin "
                              "with the old key until reencrypt has moved every object")
        if cluster and cluster != self.cluster:
            raise PluginError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"Decrypt of key_id {key_id}: made for cluster {cluster!r}, this "
                              f"plugin runs for {self.cluster!r} (--cluster-name); a ciphertext "
                              "of another cluster never decrypts here")
        return kms_key, version

    def _kms(self, operation: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except CryptoError as err:
            log.warning("%s failed: %s", operation, err.reason)
            raise PluginError(_GRPC_BY_KIND.get(err.kind, grpc.StatusCode.INTERNAL),
                              err.reason) from None


def _mismatch(key_id: str, kms_key: str, version: str,
              issued: tuple[str, str] | None) -> str:
    """Why a key_id and its annotations disagree, saying which of them is believable."""
    expected = keyids.key_id_for(kms_key, version)
    if issued is not None:
        return (f"Decrypt: key_id {key_id} was issued by this plugin for KMS key {issued[0]} "
                f"version {issued[1]}, but the annotations name KMS key {kms_key} version "
                f"{version} (whose key_id is {expected}): the key_id and annotations come from "
                "different Encrypt answers (a KMS v1 ciphertext or data copied between objects?)")
    return (f"Decrypt: key_id {key_id!r} was never issued by this plugin for the annotated KMS "
            f"key {kms_key} version {version} (that would be {expected}); the key_id or the "
            "annotations were changed")


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
