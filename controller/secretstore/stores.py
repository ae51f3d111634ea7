"""From a data entry's secretStoreRef to the client its read goes through, by the rules every
provider shares; what a client is (an identity, an endpoint, ...) is the provider's business
(`Provider.client_for`: controller/providers).

The rules here: a store in another namespace only with --enable-cross-namespace-secret-store,
ClusterSecretStores only with --process-cluster-secret-store, and only for the namespaces
their conditions admit (with --require-cluster-store-conditions one without conditions admits
none); a SecretStore's private CA must be among the first --max-cas-per-namespace of its
namespace (secretstore/cas.py), checked before anything of the store is read or built
(`PrivateCARefused`). A provider asks, through `StoreRules` (this resolver), for the
credential Secrets a store names (same namespace unless --enable-cross-namespace-auth-ref; a
403 is the store's problem) and whether a namespace may use the controller's own identity
(--controller-identity-namespaces). Anything wrong becomes a `StoreProblem` that names the
object, the field and the fix; it never becomes a crash, and never carries key material.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from controller import api
from controller.kube.informer import NAMESPACE_CACHE_FULL, overflow_message
from controller.providers.base import ClientKey, PrivateCa, Provider, StoreProblem
from controller.providers.registry import Providers
from controller.secretstore.cas import FLAG as CA_FLAG
from controller.secretstore.cas import CaIdentity, PrivateCas
from controller.settings import Settings

__all__ = ["StoreProblem", "StoreResolver", "ca_identities"]


class SecretReader(Protocol):
    def read_secret_key(self, namespace: str, name: str, key: str) -> bytes | None:
        """The value of one key of a Secret; None when the Secret or key is missing."""


StoreGetter = Callable[[api.StoreKind, str, str], dict[str, Any] | None]
NamespaceLabels = Callable[[str], Mapping[str, str]]


class StoreResolver:
    """Finds and admits stores, and lends the providers its rules (`StoreRules`)."""

    def __init__(
        self,
        settings: Settings,
        stores: StoreGetter,
        secrets: SecretReader,
        namespace_labels: NamespaceLabels,
        providers: Providers,
        *,
        on_credential: Callable[[str], None] | None = None,
        cas: PrivateCas | None = None,
    ) -> None:
        self.settings = settings
        self.providers = providers
        # The namespaces' private CAs (--max-cas-per-namespace); None: not bounded.
        self.cas = cas
        self.stores = stores
        self.secrets = secrets
        self.namespace_labels = namespace_labels
        # Told every credential value read, so logs can redact it.
        self.on_credential = on_credential or (lambda _value: None)

    # ------------------------------------------------------------------ public
    def resolve(self, es: api.ExternalSecret, entry: api.DataEntry) -> ClientKey:
        """The client `entry` of `es` reads through; raises StoreProblem."""
        provider = self._provider(es)
        ref = entry.store_ref
        if ref is None:
            return provider.client_for(es, entry, None, self)
        raw = self._store_object(es, entry, ref)
        store = self._parse(raw, ref)
        if isinstance(store, api.ClusterSecretStore):
            self._cluster_store_admits(store, es, entry)
        self._ca_place(store)
        return provider.client_for(es, entry, store, self)

    def check_store(self, raw: dict[str, Any]) -> api.SecretStore:
        """Whether a store can work as written (`check`); returns the parsed store."""
        return self.check(raw)[0]

    def check(self, raw: dict[str, Any]) -> tuple[api.SecretStore, bool]:
        """Whether a store can work as written, without an ExternalSecret and without a
        remote call: it parses, its private CA has a place (--max-cas-per-namespace), and
        every provider's check passes (`Provider.check_store`: its credential Secrets and
        keys exist, its endpoint is allowed, ...). Raises StoreProblem with the reason and
        message an ExternalSecret using the store would get; returns the parsed store and
        whether the check read Secrets (not watched: the store is checked again)."""
        meta = raw.get("metadata") or {}
        kind = api.StoreKind.CLUSTER_SECRET_STORE if raw.get("kind") == \
            api.StoreKind.CLUSTER_SECRET_STORE.value else api.StoreKind.SECRET_STORE
        ref = api.StoreRef(kind, "" if kind == api.StoreKind.CLUSTER_SECRET_STORE
                           else str(meta.get("namespace", "")), str(meta.get("name", "")))
        store = self._parse(raw, ref)
        self._ca_place(store)
        read_secrets = False
        for provider in self.providers:
            read_secrets = provider.check_store(store, self) or read_secrets
        return store, read_secrets

    # --------------------------------------------------------- StoreRules
    def credential(self, store: api.SecretStore, ref: api.SecretRef, path: str) -> str:
        where = _store_name(store.ref)
        namespace = ref.namespace or store.namespace
        value = self.secret_key(store, ref, path)
        if value is None:
            raise StoreProblem(
                "CredentialsNotFound",
                f"{where}: {path} refers to key {ref.key} of Secret "
                f"{namespace}/{ref.name}, which does not exist; create it or fix the reference")
        text = value.decode("utf-8", "replace").strip()
        if not text:
            # Never pass an empty credential on: a provider's library might read the
            # controller's own from its environment instead (docs/security.md, section 3).
            raise StoreProblem(
                "CredentialsNotFound",
                f"{where}: {path} refers to key {ref.key} of Secret {namespace}/{ref.name}, "
                "which is empty; put the value there")
        self.on_credential(text)
        return text

    def secret_key(self, store: api.SecretStore, ref: api.SecretRef, path: str,
                   ) -> bytes | None:
        namespace = ref.namespace or store.namespace
        self.same_namespace(store, namespace, f"{path} refers to Secret "
                            f"{namespace}/{ref.name}", "move it")
        return self._read_key(store, namespace, ref, path)

    def same_namespace(self, store: api.SecretStore, namespace: str, what: str,
                       fix: str) -> None:
        """A SecretStore may only use objects of its own namespace, unless the operator
        allowed otherwise (a ClusterSecretStore names namespaces by design)."""
        allowed = (self.settings.enable_cross_namespace_auth_ref
                   or self.settings.enable_cross_namespace_secret_store)
        if (store.kind == api.StoreKind.SECRET_STORE and namespace != store.namespace
                and not allowed):
            raise StoreProblem(
                "CrossNamespaceRefused",
                f"{_store_name(store.ref)}: {what} in another namespace; {fix}, or start the "
                "controller with --enable-cross-namespace-auth-ref")

    def may_use_controller_identity(self, namespace: str, what: str) -> None:
        if self.settings.controller_identity_allowed(namespace):
            return
        raise StoreProblem(
            "ControllerIdentityRefused",
            f"{what} would use the controller's own identity, which namespace {namespace} may "
            "not use (--controller-identity-namespaces); give it a SecretStore with its own "
            "credentials (serviceAccountRef, or accessKey and accessKeySecret from a Secret), "
            f"or ask the operator to add {namespace} to --controller-identity-namespaces")

    # ------------------------------------------------------------- the store
    def _provider(self, es: api.ExternalSecret) -> Provider:
        provider = self.providers.get(es.spec.provider)
        if provider is None:
            raise StoreProblem(
                "UnsupportedProvider",
                f"spec.provider {es.spec.provider} is not served by this controller "
                f"(it serves {', '.join(self.providers.names()) or 'none'})")
        return provider

    def _store_object(
        self, es: api.ExternalSecret, entry: api.DataEntry, ref: api.StoreRef
    ) -> dict[str, Any]:
        if (ref.kind == api.StoreKind.SECRET_STORE and ref.namespace != es.namespace
                and not self.settings.enable_cross_namespace_secret_store):
            raise StoreProblem(
                "CrossNamespaceRefused",
                f"{entry.spec_field}.secretStoreRef: SecretStore {ref.namespace}/{ref.name} is "
                f"in another namespace; use a store in {es.namespace}, a ClusterSecretStore, "
                "or start the controller with --enable-cross-namespace-secret-store",
            )
        if (ref.kind == api.StoreKind.CLUSTER_SECRET_STORE
                and not self.settings.process_cluster_secret_store):
            raise StoreProblem(
                "ClusterSecretStoreDisabled",
                f"{entry.spec_field}.secretStoreRef: ClusterSecretStore {ref.name} is not "
                "served: the controller runs with --process-cluster-secret-store=false; use a "
                f"SecretStore in {es.namespace}, or ask the operator to enable the flag",
            )
        raw = self.stores(ref.kind, ref.namespace, ref.name)
        if raw is None:
            raise StoreProblem(
                "StoreNotFound",
                f"{entry.spec_field}.secretStoreRef: {_store_name(ref)} does not exist; "
                "create it or fix the reference",
            )
        return raw

    def _parse(self, raw: dict[str, Any], ref: api.StoreRef) -> api.SecretStore:
        full = overflow_message(raw)
        if full is not None:  # over its namespace's cache budget: only a stub is held
            raise StoreProblem(NAMESPACE_CACHE_FULL, full)
        try:
            return api.parse_store(raw, self.providers.shape)
        except api.SpecError as exc:
            raise StoreProblem("InvalidStore", str(exc)) from None

    def _cluster_store_admits(self, store: api.ClusterSecretStore,
                              es: api.ExternalSecret, entry: api.DataEntry) -> None:
        field = f"{entry.spec_field}.secretStoreRef"
        if not store.conditions and self.settings.require_cluster_store_conditions:
            raise StoreProblem(
                "StoreNotAllowed",
                f"{field}: ClusterSecretStore {store.name} has no spec.conditions and the "
                "controller runs with --require-cluster-store-conditions; its admin must list "
                f"the namespaces (e.g. {es.namespace}) in spec.conditions")
        if not store.allows_namespace(es.namespace, self.namespace_labels(es.namespace)):
            raise StoreProblem(
                "StoreNotAllowed",
                f"{field}: ClusterSecretStore {store.name} does not admit namespace "
                f"{es.namespace}; add it to the store's spec.conditions")

    def _ca_place(self, store: api.SecretStore) -> None:
        """A SecretStore whose private CA is not among the first --max-cas-per-namespace of
        its namespace (secretstore/cas.py) is refused, before its CA is read or a session made."""
        if self.cas is None or not self.cas.bounded or \
                store.kind != api.StoreKind.SECRET_STORE:
            return
        found = private_ca(self.providers, store)
        if found is None or not self.cas.refused(store, found.identity):
            return
        limit = self.cas.limit
        raise StoreProblem(
            "PrivateCARefused",
            f"{_store_name(store.ref)}: its private CA ({found.field}) is refused: namespace "
            f"{store.namespace} already uses {limit} distinct private CAs through older "
            f"SecretStores (a CA counts once per endpoint host), the most the controller keeps "
            f"per namespace ({CA_FLAG}={limit}); use the CA of one of those stores, delete a "
            "store whose CA is no longer needed (its place goes to the next store by creation "
            f"time), or ask the operator to raise {CA_FLAG}")

    def _read_key(self, store: api.SecretStore, namespace: str, ref: api.SecretRef,
                  path: str) -> bytes | None:
        """One key of a credential Secret; a Secret the controller may not read (403: its
        namespace is not in the chart's rbac.credentialNamespaces) is the store's problem,
        said so, not an unexpected error."""
        try:
            return self.secrets.read_secret_key(namespace, ref.name, ref.key)
        except Exception as exc:
            if getattr(exc, "status", None) != 403:
                raise
            raise StoreProblem(
                "CredentialsNotReadable",
                f"{_store_name(store.ref)}: {path} refers to Secret {namespace}/{ref.name}, "
                "which the controller may not read (403); the operator must grant it "
                f"(Helm: add {namespace} to rbac.credentialNamespaces), or move the "
                "Secret") from None


def private_ca(providers: Providers, store: api.SecretStore) -> PrivateCa | None:
    """The private CA a store's reads use, as its provider names it; None for none."""
    for provider in providers:
        found = provider.private_ca(store)
        if found is not None:
            return found
    return None


def ca_identities(providers: Providers) -> Callable[[api.SecretStore], CaIdentity | None]:
    """`private_ca`'s identity alone: what secretstore/cas.py indexes (PrivateCas's `identify`)."""
    def identify(store: api.SecretStore) -> CaIdentity | None:
        found = private_ca(providers, store)
        return None if found is None else found.identity
    return identify


def _store_name(ref: api.StoreRef) -> str:
    if ref.kind == api.StoreKind.CLUSTER_SECRET_STORE:
        return f"ClusterSecretStore {ref.name}"
    return f"SecretStore {ref.namespace}/{ref.name}"
