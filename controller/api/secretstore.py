"""SecretStore and ClusterSecretStore: their typed, validated views, parsed once from the raw
objects (ack-secret-manager's field names: spec.KMS, spec.OOS, their auth blocks), and the
namespace conditions a ClusterSecretStore (and a ClusterExternalSecret) admits namespaces by.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from controller.api.externalsecret import StoreKind, StoreRef
from controller.api.fields import (
    MAX_PEM_LENGTH,
    Problems,
    as_items,
    as_mapping,
    as_string_map,
    as_strings,
    compile_go_regexp,
    meta_int,
    meta_text,
    metadata_of,
    read_flag,
    read_text,
)

# ---------------------------------------------------------------- SecretStore model


@dataclass(frozen=True, slots=True)
class SecretRef:
    name: str
    namespace: str
    key: str


@dataclass(frozen=True, slots=True)
class ServiceAccountRef:
    name: str
    namespace: str
    audiences: tuple[str, ...]  # empty: the controller's default audience


@dataclass(frozen=True, slots=True)
class KMSAuth:
    access_key: SecretRef | None = None
    access_key_secret: SecretRef | None = None
    ram_role_arn: str = ""
    ram_role_session_name: str = ""
    oidc_provider_arn: str = ""
    oidc_token_file_path: str = ""
    role_session_expiration: str = ""
    remote_ram_role_arn: str = ""
    remote_ram_role_session_name: str = ""
    service_account_ref: ServiceAccountRef | None = None


OOSAuth = KMSAuth  # ack-secret-manager gives both the same fields


@dataclass(frozen=True, slots=True)
class DedicatedKMSAuth:
    """v0.5 dedicated KMS instance access (kept so old stores parse)."""

    protocol: str
    endpoint: str
    ca: str
    ignore_ssl: bool
    client_key_content: SecretRef | None
    password: SecretRef | None


@dataclass(frozen=True, slots=True)
class KMSProvider:
    auth: KMSAuth | None  # None: the controller's own identity
    dedicated: DedicatedKMSAuth | None
    endpoint: str = ""
    ca: str = ""  # inline PEM
    ca_secret_ref: SecretRef | None = None


@dataclass(frozen=True, slots=True)
class OOSProvider:
    auth: KMSAuth | None


@dataclass(frozen=True, slots=True)
class SelectorRequirement:
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values


@dataclass(frozen=True, slots=True)
class NamespaceCondition:
    """One ClusterSecretStore condition; any one of its criteria admits a namespace."""

    namespaces: tuple[str, ...] = ()
    namespace_regexes: tuple[str, ...] = ()
    # None: no selector. An empty selector matches every namespace (Kubernetes rule).
    match_labels: Mapping[str, str] | None = dataclasses.field(default=None, hash=False)
    match_expressions: tuple[SelectorRequirement, ...] = ()

    def admits(self, namespace: str, labels: Mapping[str, str]) -> bool:
        if namespace in self.namespaces:
            return True
        if any(compile_go_regexp(r).search(namespace) for r in self.namespace_regexes):
            return True
        if self.match_labels is None and not self.match_expressions:
            return False
        wanted = self.match_labels or {}
        return all(labels.get(k) == v for k, v in wanted.items()) and all(
            r.matches(labels) for r in self.match_expressions
        )


@dataclass(frozen=True, slots=True)
class SecretStore:
    kind: StoreKind
    namespace: str  # "" for a ClusterSecretStore
    name: str
    uid: str
    generation: int
    resource_version: str
    kms: KMSProvider | None
    oos: OOSProvider | None
    # metadata.creationTimestamp as written (RFC 3339, UTC, whole seconds: sorts as time);
    # with the name, the order in which a namespace's stores get private-CA places
    created: str = ""

    @property
    def ref(self) -> StoreRef:
        return StoreRef(self.kind, self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class ClusterSecretStore(SecretStore):
    conditions: tuple[NamespaceCondition, ...] = ()

    def allows_namespace(self, namespace: str, namespace_labels: Mapping[str, str]) -> bool:
        """Whether ExternalSecrets in ``namespace`` may use this store (no conditions: all)."""
        if not self.conditions:
            return True
        return any(c.admits(namespace, namespace_labels) for c in self.conditions)


# ---------------------------------------------------------------- SecretStore parsing


def parse_store(obj: Mapping[str, object]) -> SecretStore:
    """Parse a SecretStore or ClusterSecretStore, chosen by ``kind``."""
    if obj.get("kind") == StoreKind.CLUSTER_SECRET_STORE.value:
        return parse_cluster_secret_store(obj)
    return parse_secret_store(obj)


def parse_secret_store(obj: Mapping[str, object]) -> SecretStore:
    """Parse a namespaced SecretStore. Raises SpecError (see module doc)."""
    meta = metadata_of(obj)
    namespace, name = meta_text(meta, "namespace"), meta_text(meta, "name")
    p = Problems(f"SecretStore {namespace}/{name}")
    spec = as_mapping(obj.get("spec"), "spec", p)
    kms, oos = _parse_providers(spec, namespace, p)
    p.raise_if_any()
    return SecretStore(StoreKind.SECRET_STORE, namespace, name, meta_text(meta, "uid"),
                       meta_int(meta, "generation"), meta_text(meta, "resourceVersion"),
                       kms, oos, created=meta_text(meta, "creationTimestamp"))


def parse_cluster_secret_store(obj: Mapping[str, object]) -> ClusterSecretStore:
    """Parse a ClusterSecretStore. Secret references must name their namespace."""
    meta = metadata_of(obj)
    name = meta_text(meta, "name")
    p = Problems(f"ClusterSecretStore {name}")
    spec = as_mapping(obj.get("spec"), "spec", p)
    kms, oos = _parse_providers(spec, "", p)
    conditions = tuple(
        _parse_condition(raw, f"spec.conditions[{i}]", p)
        for i, raw in enumerate(as_items(spec.get("conditions"), "spec.conditions", p))
    )
    p.raise_if_any()
    return ClusterSecretStore(StoreKind.CLUSTER_SECRET_STORE, "", name,
                              meta_text(meta, "uid"), meta_int(meta, "generation"),
                              meta_text(meta, "resourceVersion"), kms, oos,
                              created=meta_text(meta, "creationTimestamp"),
                              conditions=conditions)


def _parse_providers(
    spec: Mapping[str, object], namespace: str, p: Problems
) -> tuple[KMSProvider | None, OOSProvider | None]:
    has_kms, has_oos = spec.get("KMS") is not None, spec.get("OOS") is not None
    if has_kms == has_oos:
        p.add("spec", "must set exactly one provider, KMS or OOS",
              "keep one of spec.KMS and spec.OOS")
    kms = _parse_kms(as_mapping(spec.get("KMS"), "spec.KMS", p), namespace, p) if has_kms else None
    oos = None
    if has_oos:
        m = as_mapping(spec.get("OOS"), "spec.OOS", p)
        oos = OOSProvider(_parse_auth(m.get("OOSAuth"), "spec.OOS.OOSAuth", namespace, p))
    return kms, oos


def _parse_kms(m: Mapping[str, object], namespace: str, p: Problems) -> KMSProvider:
    field = "spec.KMS"
    ca_ref = _parse_secret_ref(m.get("caSecretRef"), f"{field}.caSecretRef", namespace, p)
    ca = read_text(m, "ca", field, p, MAX_PEM_LENGTH)
    if ca and ca_ref:
        p.add(f"{field}.caSecretRef", "is set together with spec.KMS.ca",
              "keep only one of ca (inline PEM) and caSecretRef")
    return KMSProvider(
        auth=_parse_auth(m.get("KMSAuth"), f"{field}.KMSAuth", namespace, p),
        dedicated=_parse_dedicated(m.get("dedicatedKMSAuth"), namespace, p),
        endpoint=read_text(m, "endpoint", field, p),
        ca=ca,
        ca_secret_ref=ca_ref,
    )


def _parse_auth(raw: object, field: str, namespace: str, p: Problems) -> KMSAuth | None:
    if raw is None:
        return None
    m = as_mapping(raw, field, p)
    ak = _parse_secret_ref(m.get("accessKey"), f"{field}.accessKey", namespace, p)
    sk = _parse_secret_ref(m.get("accessKeySecret"), f"{field}.accessKeySecret", namespace, p)
    if (ak is None) != (sk is None):
        missing = "accessKeySecret" if sk is None else "accessKey"
        p.add(f"{field}.{missing}", "is required when the other half of the AccessKey "
              "pair is set", "set both accessKey and accessKeySecret, or neither")
    auth = KMSAuth(
        access_key=ak,
        access_key_secret=sk,
        ram_role_arn=read_text(m, "ramRoleARN", field, p),
        ram_role_session_name=read_text(m, "ramRoleSessionName", field, p),
        oidc_provider_arn=read_text(m, "oidcProviderARN", field, p),
        oidc_token_file_path=read_text(m, "oidcTokenFilePath", field, p),
        role_session_expiration=read_text(m, "roleSessionExpiration", field, p),
        remote_ram_role_arn=read_text(m, "remoteRamRoleARN", field, p),
        remote_ram_role_session_name=read_text(m, "remoteRamRoleSessionName", field, p),
        service_account_ref=_parse_sa_ref(m.get("serviceAccountRef"),
                                          f"{field}.serviceAccountRef", namespace, p),
    )
    # With serviceAccountRef the role comes from the ServiceAccount's annotation.
    if auth.oidc_provider_arn and not auth.ram_role_arn and auth.service_account_ref is None:
        p.add(f"{field}.ramRoleARN", "is required with oidcProviderARN (RRSA)",
              "set ramRoleARN to the role the ServiceAccount token may assume")
    return auth


def _parse_secret_ref(raw: object, field: str, namespace: str, p: Problems) -> SecretRef | None:
    if raw is None:
        return None
    m = as_mapping(raw, field, p)
    ref = SecretRef(read_text(m, "name", field, p),
                    read_text(m, "namespace", field, p) or namespace, read_text(m, "key", field, p))
    for part in ("name", "namespace", "key"):
        if not getattr(ref, part):
            p.add(f"{field}.{part}", "is required", f"set the Secret {part} to read")
    return ref


def _parse_sa_ref(
    raw: object, field: str, namespace: str, p: Problems
) -> ServiceAccountRef | None:
    if raw is None:
        return None
    m = as_mapping(raw, field, p)
    ref = ServiceAccountRef(read_text(m, "name", field, p),
                            read_text(m, "namespace", field, p) or namespace,
                            as_strings(m.get("audiences"), f"{field}.audiences", p))
    if not ref.name:
        p.add(f"{field}.name", "is required", "set it to the ServiceAccount to use")
    if not ref.namespace:
        p.add(f"{field}.namespace", "is required in a ClusterSecretStore",
              "set the ServiceAccount's namespace")
    return ref


def _parse_dedicated(raw: object, namespace: str, p: Problems) -> DedicatedKMSAuth | None:
    if raw is None:
        return None
    field = "spec.KMS.dedicatedKMSAuth"
    m = as_mapping(raw, field, p)
    auth = DedicatedKMSAuth(
        protocol=read_text(m, "protocol", field, p) or "https",
        endpoint=read_text(m, "endpoint", field, p),
        ca=read_text(m, "ca", field, p, MAX_PEM_LENGTH),
        ignore_ssl=read_flag(m, "ignoreSSL", field, p),
        client_key_content=_parse_secret_ref(m.get("clientKeyContent"),
                                             f"{field}.clientKeyContent", namespace, p),
        password=_parse_secret_ref(m.get("password"), f"{field}.password", namespace, p),
    )
    for part, value in (("endpoint", auth.endpoint), ("clientKeyContent",
                        auth.client_key_content), ("password", auth.password)):
        if not value:
            p.add(f"{field}.{part}", "is required", f"set {part} for the dedicated KMS instance")
    return auth


_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def _parse_condition(raw: object, field: str, p: Problems) -> NamespaceCondition:
    m = as_mapping(raw, field, p)
    regexes = as_strings(m.get("namespaceRegexes"), f"{field}.namespaceRegexes", p)
    for i, regex in enumerate(regexes):
        try:
            compile_go_regexp(regex)
        except ValueError as exc:
            p.add(f"{field}.namespaceRegexes[{i}]", f"is not a usable regular expression "
                  f"({exc})", "fix the pattern (Go RE2 syntax)")
    selector_raw = m.get("namespaceSelector")
    selector = as_mapping(selector_raw, f"{field}.namespaceSelector", p)
    labels = as_string_map(selector.get("matchLabels"), f"{field}.namespaceSelector.matchLabels", p)
    return NamespaceCondition(
        namespaces=as_strings(m.get("namespaces"), f"{field}.namespaces", p),
        namespace_regexes=regexes,
        match_labels=labels if selector_raw is not None else None,
        match_expressions=_parse_requirements(selector.get("matchExpressions"),
                                              f"{field}.namespaceSelector.matchExpressions", p),
    )


def _parse_requirements(raw: object, field: str, p: Problems) -> tuple[SelectorRequirement, ...]:
    found: list[SelectorRequirement] = []
    for i, item in enumerate(as_items(raw, field, p)):
        item_field = f"{field}[{i}]"
        m = as_mapping(item, item_field, p)
        req = SelectorRequirement(read_text(m, "key", item_field, p),
                                  read_text(m, "operator", item_field, p),
                                  as_strings(m.get("values"), f"{item_field}.values", p))
        if req.operator not in _OPERATORS:
            p.add(f"{item_field}.operator", f"must be one of {', '.join(_OPERATORS)}",
                  "use a Kubernetes label selector operator")
        elif (req.operator in ("In", "NotIn")) != bool(req.values):
            p.add(f"{item_field}.values", f"does not fit operator {req.operator}",
                  "give values with In/NotIn and none with Exists/DoesNotExist")
        found.append(req)
    return tuple(found)
