"""dedicatedKMSAuth (ack-secret-manager v0.5): secrets of a KMS instance read with an
application access point's client key, in the provider's reader shape (provider.Reader).

The Alibaba provider's client key is (identity, endpoint) (stores.Source); for these stores the
identity is of kind CLIENT_KEY and carries the client key's content and password (read from
the store's Secrets), the endpoint the instance host, its CA and whether TLS verification is
off. Each client key is decoded once (the password is checked locally, never sent) and kept
while it is used; `kms_instance.KmsInstance` makes the signed calls. A decode that failed
(wrong password, a refused or damaged file) is remembered by the hashes of the content and
the password: the same material fails again at once, without deriving anything, until the
store's Secrets change.
"""

from __future__ import annotations

import hashlib
import threading

from controller.providers import FetchError
from controller.providers.alibaba.identity import Identity
from controller.providers.alibaba.kms import Endpoint, SecretValue
from controller.providers.alibaba.kms_instance import (
    ClientKey,
    InstanceEndpoint,
    KmsInstance,
    load_client_key,
)

MAX_KEYS = 1000  # decoded client keys kept; past that the cache starts over
MAX_FAILURES = 1000  # failed decodes remembered; past that the memory starts over


class DedicatedReader:
    def __init__(self, instance: KmsInstance) -> None:
        self.instance = instance
        self._keys: dict[str, ClientKey] = {}
        # hash of (content, password) -> the error its decode raised
        self._failed: dict[str, FetchError] = {}
        self.decodes = 0  # decodes attempted (tests: a failed one is not tried again)
        self._lock = threading.Lock()

    def get_secret_value(self, identity: Identity, endpoint: Endpoint, name: str,
                         version_id: str = "", version_stage: str = "") -> SecretValue:
        """Read one secret version of the instance; raises FetchError."""
        target = InstanceEndpoint(endpoint.host, endpoint.ca_pem, endpoint.insecure)
        return self.instance.get_secret_value(self._key(identity), target, name, version_id,
                                              version_stage)

    def check(self, identity: Identity) -> None:
        """Open `identity`'s client key as a read would (once per content: a success and a
        failure are both remembered); raises FetchError. For the store's Ready condition."""
        self._key(identity)

    def _key(self, identity: Identity) -> ClientKey:
        fingerprint = identity.fingerprint()
        with self._lock:
            key = self._keys.get(fingerprint)
            failed = self._failed.get(material := _material(identity))
        if key is not None:
            return key
        if failed is not None:  # a new exception each time: a shared one's traceback grows
            raise FetchError(failed.kind, failed.code, failed.reason)
        try:
            with self._lock:
                self.decodes += 1
            key = load_client_key(identity.client_key_content, identity.client_key_password,
                                  source=identity.source)
        except FetchError as exc:
            with self._lock:
                if len(self._failed) >= MAX_FAILURES:
                    self._failed.clear()
                self._failed[material] = exc
            raise
        with self._lock:
            if len(self._keys) >= MAX_KEYS:
                self._keys.clear()
            self._keys[fingerprint] = key
        return key

    def release(self, identity: Identity, endpoint: Endpoint) -> bool:
        """No read uses `endpoint` as `identity` any more: forget the decoded key and close
        the endpoint's connections and TLS context now (another store reading the same
        instance builds them again on its next read). Returns whether a pool was held."""
        with self._lock:
            self._keys.pop(identity.fingerprint(), None)
        target = InstanceEndpoint(endpoint.host, endpoint.ca_pem, endpoint.insecure)
        return self.instance.clients.drop_key(target)

    def cancel(self) -> None:
        self.instance.cancel()

    def close(self) -> None:
        self.instance.close()


def _material(identity: Identity) -> str:
    """The key material's identity: hashes of the content and of the password (the same
    content with another password is another attempt)."""
    digest = hashlib.sha256()
    for part in (identity.client_key_content, identity.client_key_password):
        digest.update(hashlib.sha256(part.encode()).digest())
    return digest.hexdigest()
