"""SecretStore and ClusterSecretStore: their typed, validated views, parsed once from the raw
objects, and the namespace conditions a ClusterSecretStore (and a ClusterExternalSecret)
admits namespaces by.

A store's provider block (spec.KMS, spec.OOS, ...) belongs to the source that owns it: the
parser is given the installed sources' `Shape` (api/shape.py), calls the owner's parser on
the one block set, and keeps the result in `SecretStore.blocks` by field name (the Alibaba
blocks: controller/providers/alibaba/blocks.py). The references a block names are the API's
(`SecretRef`, `ServiceAccountRef`, parsed by `parse_secret_ref` and `parse_service_account_ref`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from controller.api.externalsecret import StoreKind, StoreRef
from controller.api.fields import (
    Problems,
    as_items,
    as_mapping,
    as_string_map,
    as_strings,
    compile_go_regexp,
    meta_int,
    meta_text,
    metadata_of,
    read_text,
)
from controller.api.shape import Shape, one_of

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
    # the provider block set (normally one), by its spec field ("KMS"): the owning source's
    # own frozen view of it
    blocks: Mapping[str, object] = dataclasses.field(default_factory=dict, hash=False)
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


def parse_store(obj: Mapping[str, object], shape: Shape) -> SecretStore:
    """Parse a SecretStore or ClusterSecretStore, chosen by ``kind``."""
    if obj.get("kind") == StoreKind.CLUSTER_SECRET_STORE.value:
        return parse_cluster_secret_store(obj, shape)
    return parse_secret_store(obj, shape)


def parse_secret_store(obj: Mapping[str, object], shape: Shape) -> SecretStore:
    """Parse a namespaced SecretStore, its provider block by the source of `shape` that owns
    it. Raises SpecError (see module doc)."""
    meta = metadata_of(obj)
    namespace, name = meta_text(meta, "namespace"), meta_text(meta, "name")
    p = Problems(f"SecretStore {namespace}/{name}")
    spec = as_mapping(obj.get("spec"), "spec", p)
    blocks = _parse_blocks(spec, namespace, shape, p)
    p.raise_if_any()
    return SecretStore(StoreKind.SECRET_STORE, namespace, name, meta_text(meta, "uid"),
                       meta_int(meta, "generation"), meta_text(meta, "resourceVersion"),
                       blocks, created=meta_text(meta, "creationTimestamp"))


def parse_cluster_secret_store(obj: Mapping[str, object], shape: Shape) -> ClusterSecretStore:
    """Parse a ClusterSecretStore. Secret references must name their namespace."""
    meta = metadata_of(obj)
    name = meta_text(meta, "name")
    p = Problems(f"ClusterSecretStore {name}")
    spec = as_mapping(obj.get("spec"), "spec", p)
    blocks = _parse_blocks(spec, "", shape, p)
    conditions = tuple(
        parse_condition(raw, f"spec.conditions[{i}]", p)
        for i, raw in enumerate(as_items(spec.get("conditions"), "spec.conditions", p))
    )
    p.raise_if_any()
    return ClusterSecretStore(StoreKind.CLUSTER_SECRET_STORE, "", name,
                              meta_text(meta, "uid"), meta_int(meta, "generation"),
                              meta_text(meta, "resourceVersion"), blocks,
                              created=meta_text(meta, "creationTimestamp"),
                              conditions=conditions)


def _parse_blocks(spec: Mapping[str, object], namespace: str, shape: Shape,
                  p: Problems) -> dict[str, object]:
    """The provider block set (exactly one of the installed sources' blocks), parsed by its
    owner."""
    fields = [b.field for b in shape.blocks]
    present = [b for b in shape.blocks if spec.get(b.field) is not None]
    if len(present) != 1:
        p.add("spec", f"must set exactly one provider, {one_of(fields)}",
              f"keep one of {one_of([f'spec.{f}' for f in fields], 'and')}")
    return {b.field: b.parse(spec.get(b.field), f"spec.{b.field}", namespace, p)
            for b in present}


def parse_secret_ref(raw: object, field: str, namespace: str, p: Problems) -> SecretRef | None:
    """A reference to one key of a Secret, at `field`; `namespace` is the default (the
    store's; "" in a ClusterSecretStore, where it must be given)."""
    if raw is None:
        return None
    m = as_mapping(raw, field, p)
    ref = SecretRef(read_text(m, "name", field, p),
                    read_text(m, "namespace", field, p) or namespace, read_text(m, "key", field, p))
    for part in ("name", "namespace", "key"):
        if not getattr(ref, part):
            p.add(f"{field}.{part}", "is required", f"set the Secret {part} to read")
    return ref


def parse_service_account_ref(
    raw: object, field: str, namespace: str, p: Problems
) -> ServiceAccountRef | None:
    """A reference to a ServiceAccount, at `field` (the namespace rule of parse_secret_ref)."""
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


_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class ConditionLimits:
    """Bounds on a namespace condition's lists (0: none), and the fix each names when passed:
    a ClusterExternalSecret bounds them (api/clusterexternalsecret.py), a store does not."""

    items: int = 0  # matchExpressions items
    items_fix: str = "split the work over several ExternalSecrets"
    names: int = 0  # namespaces, namespaceRegexes and values items
    names_fix: str = "split the work over several ExternalSecrets"
    labels: int = 0  # matchLabels entries


NO_LIMITS = ConditionLimits()


def parse_condition(raw: object, field: str, p: Problems,
                    limits: ConditionLimits = NO_LIMITS) -> NamespaceCondition:
    """One condition: namespaces, namespaceRegexes (Go RE2) and a namespaceSelector."""
    m = as_mapping(raw, field, p)
    regexes = _names(m.get("namespaceRegexes"), f"{field}.namespaceRegexes", p, limits)
    for i, regex in enumerate(regexes):
        try:
            compile_go_regexp(regex)
        except ValueError as exc:
            p.add(f"{field}.namespaceRegexes[{i}]", f"is not a usable regular expression "
                  f"({exc})", "fix the pattern (Go RE2 syntax)")
    names = _names(m.get("namespaces"), f"{field}.namespaces", p, limits)
    return parse_selector(m.get("namespaceSelector"), f"{field}.namespaceSelector", p, limits,
                          names=names, regexes=regexes)


def parse_selector(raw: object, field: str, p: Problems, limits: ConditionLimits = NO_LIMITS,
                   *, names: tuple[str, ...] = (), regexes: tuple[str, ...] = (),
                   ) -> NamespaceCondition:
    """A Kubernetes label selector (matchLabels, matchExpressions) as a condition, with the
    `names` and `regexes` of the condition it belongs to; no selector (None) matches by those
    alone."""
    selector = as_mapping(raw, field, p)
    labels = as_string_map(selector.get("matchLabels"), f"{field}.matchLabels", p,
                           limits.labels)
    return NamespaceCondition(
        namespaces=names, namespace_regexes=regexes,
        match_labels=labels if raw is not None else None,
        match_expressions=_parse_requirements(selector.get("matchExpressions"),
                                              f"{field}.matchExpressions", p, limits),
    )


def _names(raw: object, field: str, p: Problems, limits: ConditionLimits) -> tuple[str, ...]:
    return as_strings(raw, field, p, limit=limits.names, fix=limits.names_fix)


def _parse_requirements(raw: object, field: str, p: Problems,
                        limits: ConditionLimits) -> tuple[SelectorRequirement, ...]:
    found: list[SelectorRequirement] = []
    for i, item in enumerate(as_items(raw, field, p, limits.items, limits.items_fix)):
        item_field = f"{field}[{i}]"
        m = as_mapping(item, item_field, p)
        req = SelectorRequirement(read_text(m, "key", item_field, p),
                                  read_text(m, "operator", item_field, p),
                                  _names(m.get("values"), f"{item_field}.values", p, limits))
        if req.operator not in _OPERATORS:
            p.add(f"{item_field}.operator", f"must be one of {', '.join(_OPERATORS)}",
                  "use a Kubernetes label selector operator")
        elif (req.operator in ("In", "NotIn")) != bool(req.values):
            p.add(f"{item_field}.values", f"does not fit operator {req.operator}",
                  "give values with In/NotIn and none with Exists/DoesNotExist")
        found.append(req)
    return tuple(found)
