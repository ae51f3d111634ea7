"""The Alibaba Cloud sources behind the seam: KMS secrets, the secrets of a KMS instance
(dedicatedKMSAuth: a client key) and OOS encryption parameters, as one `Provider` serving the
ExternalSecret providers "kms" and "oos" (its API shape: shape.py; installed by
controller/providers/installed.py).

It owns what is Alibaba's: the identities and their credentials (one `IdentityPool` the
readers share), endpoints and CAs (`stores.AlibabaStores`), the SDK clients (`kms.Kms`,
`oos.Oos`, `dedicated.DedicatedReader`) and the error mapping (`errors.classify`: whatever a
reader raises becomes a `FetchError`). The minted ServiceAccount tokens an RRSA identity reads
(`tokens`, controller/kube/tokens.py) are let go with the last identity that reads them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Hashable
from typing import Protocol

from controller import api
from controller.providers.alibaba.dedicated import DedicatedReader
from controller.providers.alibaba.errors import classify
from controller.providers.alibaba.identity import Identity, IdentityPool
from controller.providers.alibaba.kms import Endpoint, Kms
from controller.providers.alibaba.kms_instance import KmsInstance
from controller.providers.alibaba.oos import Oos
from controller.providers.alibaba.pool import CallPolicy
from controller.providers.alibaba.shape import SHAPE
from controller.providers.alibaba.stores import DKMS, KMS, OOS, AlibabaStores, Source, private_ca
from controller.providers.base import (
    FetchError,
    Kind,
    PrivateCa,
    RemoteRef,
    SecretValue,
    StoreRules,
    Wiring,
)
from controller.settings import Settings

NAMES = SHAPE.names  # the ExternalSecret providers it serves (blocks.py: its API shape)
# (API action, endpoint host, result code, seconds) of each call made
CallHook = Callable[[str, str, str, float], None]


class Reader(Protocol):
    """One Alibaba reader (KMS, OOS, a KMS instance): raises whatever its SDK raises."""

    def get_secret_value(self, identity: Identity, endpoint: Endpoint, name: str,
                         version_id: str = "", version_stage: str = "") -> SecretValue: ...


class Tokens(Protocol):
    """The ServiceAccount tokens RRSA identities read (kube.tokens.ServiceAccountTokens)."""

    def __call__(self, ref: api.ServiceAccountRef, store_namespace: str) -> tuple[str, str]: ...
    def release(self, paths: set[str]) -> int: ...
    def close(self, timeout: float = ...) -> None: ...


class Alibaba:
    """`providers.base.Provider` for KMS, KMS instances and OOS."""

    def __init__(
        self,
        settings: Settings,
        *,
        kms: Reader | None = None,
        oos: Reader | None = None,
        dedicated: Reader | None = None,
        identities: IdentityPool | None = None,
        tokens: Tokens | None = None,
        check_client_key: Callable[[Identity], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.readers: dict[str, Reader] = {
            name: r for name, r in ((KMS, kms), (OOS, oos), (DKMS, dedicated)) if r is not None}
        self.identities = identities  # the credentials every reader shares
        self.tokens = tokens
        self.stores = AlibabaStores(settings, sa_token_file=tokens, clock=clock,
                                    check_client_key=check_client_key)

    # ------------------------------------------------------------- resolve
    def client_for(self, es: api.ExternalSecret, entry: api.DataEntry,
                   store: api.SecretStore | None, rules: StoreRules) -> Source:
        return self.stores.resolve(es, entry, store, rules)

    def check_store(self, store: api.SecretStore, rules: StoreRules) -> bool:
        return self.stores.check(store, rules)

    def private_ca(self, store: api.SecretStore) -> PrivateCa | None:
        return private_ca(store, self.settings)

    # ---------------------------------------------------------------- read
    def read(self, client: Hashable, ref: RemoteRef) -> SecretValue:
        if not isinstance(client, Source):
            raise FetchError(Kind.CONFIG, "UnsupportedProvider",
                             "UnsupportedProvider: not a client of the Alibaba Cloud provider")
        reader = self.readers.get(client.provider)
        if reader is None:
            raise FetchError(Kind.CONFIG, "UnsupportedProvider",
                             f"UnsupportedProvider: no client for provider {client.provider}")
        try:
            return reader.get_secret_value(client.identity, client.endpoint, ref.name,
                                           ref.version_id, ref.version_stage)
        except FetchError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a classified error
            raise classify(exc) from None

    # ----------------------------------------------------------- lifecycle
    def release(self, clients: Collection[Hashable],
                credentials: Collection[Hashable]) -> None:
        """The readers drop the clients now (KMS instances: the decoded client key and the
        endpoint's connections and TLS context); the identity pool drops the credentials, and
        the ServiceAccount tokens they read go."""
        for client in clients:
            if not isinstance(client, Source):
                continue
            release = getattr(self.readers.get(client.provider), "release", None)
            if release is not None:
                release(client.identity, client.endpoint)
        identities = [i for i in credentials if isinstance(i, Identity)]
        if self.identities is not None:
            for identity in identities:
                self.identities.discard(identity)
        paths = {i.oidc_token_file for i in identities if i.oidc_token_file}
        if paths and self.tokens is not None:
            self.tokens.release(paths)

    def cancel(self) -> None:
        for reader in self.readers.values():
            cancel = getattr(reader, "cancel", None)
            if cancel is not None:
                cancel()

    def close(self) -> None:
        """The readers' clients, and the minted ServiceAccount tokens' files (now, not at
        interpreter exit: the command exits without waiting for exit handlers)."""
        for reader in self.readers.values():
            close = getattr(reader, "close", None)
            if close is not None:
                close()
        if self.tokens is not None:
            self.tokens.close(timeout=1.0)


def from_settings(settings: Settings, *, on_call: CallHook,
                  on_identity: Callable[[str], None],
                  tokens: Callable[[Callable[[str], bool]], Tokens]) -> Alibaba:
    """The provider as the controller runs it: one identity pool the readers share (one
    credential per identity), KMS, OOS and KMS-instance readers at the operator's rates.
    `on_call` is told each call, `on_identity` the kind of each credential built; `tokens`
    builds the ServiceAccount token source (kube/tokens.py), given which token files live
    identities read (a token no live identity reads is not renewed)."""
    def hook(action: str) -> Callable[[str, str, float], None]:
        return lambda endpoint, code, seconds: on_call(action, endpoint, code, seconds)

    identities = IdentityPool(on_build=lambda identity: on_identity(identity.kind))
    kms_calls = CallPolicy(rate_per_endpoint=settings.max_concurrent_kms_secret_pulls,
                           on_call=hook("GetSecretValue"))
    oos_calls = CallPolicy(rate_per_endpoint=settings.max_concurrent_oos_secret_pulls,
                           on_call=hook("GetSecretParameter"))
    kms = Kms(identities, region=settings.region, policy=kms_calls)
    oos = Oos(identities, region=settings.region, policy=oos_calls)
    dedicated = DedicatedReader(KmsInstance(policy=kms_calls))
    return Alibaba(settings, kms=kms, oos=oos, dedicated=dedicated, identities=identities,
                   tokens=tokens(identities.token_file_in_use),
                   check_client_key=dedicated.check)


def build(wiring: Wiring) -> Alibaba:
    """`from_settings` with what the composition root lends (controller/providers/installed.py)."""
    return from_settings(wiring.settings, on_call=wiring.on_call,
                         on_identity=wiring.on_identity, tokens=wiring.tokens)
