"""The ExternalSecret: its typed, validated view, parsed once from the raw object.

Why this module exists: the Kubernetes API hands us raw dicts, and the rest of the
controller should never have to guess whether a field is present, defaulted or
well formed. Parsing happens once, here, into frozen dataclasses; every problem a
user can fix becomes a ``SpecError`` that names the object, the field and the fix,
never a crash. The models describe specifications only: they never hold secret values.

The field names and defaults are those of ack-secret-manager (group alibabacloud.com,
v1alpha1), so objects users already have parse unchanged. Notable rules:

* Errors: parsing collects every problem (in a fixed order: provider, type, data,
  dataProcess, the source's entry rules, target, intervals) and raises the first one; its
  ``errors`` attribute lists all of them (the first included), so a status can show one
  message while a log or Event shows everything.
* ``spec.provider`` is one of the names the installed sources serve (the ``Shape`` the
  parser is given, api/shape.py; empty: the first, kms); the source of that name may add
  rules over the entries (``provider: oos``: no version stages, no kmsEndpoint;
  controller/providers/alibaba/blocks.py).
* Regular expressions were written for Go's RE2; ``compile_go_regexp`` compiles them with
  RE2 itself (google-re2): the same syntax, and linear-time matching (no backtracking stall).
* Bounds: every string of a spec is at most ``MAX_FIELD_LENGTH`` characters and every list
  at most its ``MAX_*`` count (the CRD schema says the same; these hold for objects stored
  before it did). ``refreshInterval`` is kept within ``IntervalBounds`` (flags of the
  operator): a shorter or longer one is raised or lowered, never refused, and the adjustment
  is kept in ``ExternalSecret.notices`` for the status to report.
* Entries are identified by position (``data[0]``, ``dataProcess[1].extract``):
  readable in status, stable while the spec is not reordered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import jmespath
import re2
from jmespath.exceptions import JMESPathError

from controller import gotemplate
from controller.api.fields import (
    DEFAULT_BOUNDS,
    MAX_DATA,
    MAX_DATA_PROCESS,
    MAX_JMES_PATHS,
    MAX_REPLACE_RULES,
    MAX_TEMPLATE_FROM,
    MAX_TEMPLATE_ITEMS,
    GoRegexp,
    IntervalBounds,
    Problems,
    as_items,
    as_mapping,
    as_string_map,
    compile_go_regexp,
    dns_name_problem,
    format_duration,
    key_name_problem,
    meta_int,
    meta_text,
    metadata_of,
    parse_duration,
    read_choice,
    read_text,
)
from controller.api.shape import Shape, one_of

DEFAULT_SECRET_TYPE = "Opaque"

# ---------------------------------------------------------------- ExternalSecret model


class StoreKind(StrEnum):
    SECRET_STORE = "SecretStore"
    CLUSTER_SECRET_STORE = "ClusterSecretStore"


class CreationPolicy(StrEnum):
    OWNER = "Owner"
    MERGE = "Merge"
    ORPHAN = "Orphan"


class DeletionPolicy(StrEnum):
    DELETE = "Delete"
    RETAIN = "Retain"


@dataclass(frozen=True, slots=True)
class StoreRef:
    """Which store's identity reads a secret. ``namespace`` is "" for cluster stores."""

    kind: StoreKind
    namespace: str
    name: str


class FetchKey(NamedTuple):
    """Everything that decides what a KMS GetSecretValue call returns.

    Entries with equal fetch keys share one call. The store fields are "" when the
    entry uses the controller's own identity.
    """

    store_kind: str
    store_namespace: str
    store_name: str
    kms_endpoint: str
    secret_name: str
    version_id: str
    version_stage: str


@dataclass(frozen=True, slots=True)
class JMESPathItem:
    path: str
    object_alias: str  # the Secret key; defaults to the entry's KMS secret name


@dataclass(frozen=True, slots=True)
class DataEntry:
    """One KMS secret to read: a ``spec.data[]`` item or a ``dataProcess[].extract``."""

    entry_id: str  # "data[0]" or "dataProcess[1].extract"
    spec_field: str  # "spec.data[0]": where to point users in messages
    key: str  # the KMS secret name
    name: str  # the Secret key for a plain data entry; unused by extract
    version_stage: str
    version_id: str
    store_ref: StoreRef | None  # None: the controller's own identity
    jmes_path: tuple[JMESPathItem, ...]
    kms_endpoint: str
    is_extract: bool = False

    @property
    def fetch_key(self) -> FetchKey:
        ref = self.store_ref
        return FetchKey(
            ref.kind.value if ref else "",
            ref.namespace if ref else "",
            ref.name if ref else "",
            self.kms_endpoint,
            self.key,
            self.version_id,
            self.version_stage,
        )


@dataclass(frozen=True, slots=True)
class ReplaceRule:
    """Rename extracted keys: Go ``regexp.ReplaceAllString(key, target)`` semantics."""

    source: str
    target: str
    pattern: GoRegexp = dataclasses.field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class DataProcess:
    extract: DataEntry | None  # None: nothing to do (ack-secret-manager skips it too)
    replace_rules: tuple[ReplaceRule, ...]


@dataclass(frozen=True, slots=True)
class TemplateFrom:
    """One ``spec.target.template.templateFrom`` item: templates kept in a ConfigMap or a
    Secret of the ExternalSecret's namespace (``items``: (key, templateAs)), or a literal."""

    kind: str  # configMap | secret | literal
    name: str = ""
    items: tuple[tuple[str, str], ...] = ()  # (key, Values | KeysAndValues)
    literal: str = ""
    target: str = "Data"  # Data | Labels | Annotations


@dataclass(frozen=True, slots=True)
class Template:
    """``spec.target.template``: the Secret's type, its metadata (Go templates over the
    fetched values; a text without ``{{`` is itself), ``data`` templates, ``templateFrom``
    sources and ``mergePolicy`` (Replace: the Secret holds only the templates' output;
    Merge: the fetched keys too). Keys this release does not use are kept in ``extra``."""

    type: str = ""
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)
    extra: Mapping[str, object] = dataclasses.field(default_factory=dict, hash=False)
    data: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)
    template_from: tuple[TemplateFrom, ...] = ()
    merge_policy: str = "Replace"

    @property
    def renders_data(self) -> bool:
        return bool(self.data) or any(t.target == "Data" for t in self.template_from)

    @property
    def templated(self) -> bool:
        """Whether anything here is a template (else the fetched data is used as is)."""
        return self.renders_data or bool(self.template_from) or any(
            "{{" in v for v in (*self.labels.values(), *self.annotations.values()))


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    creation_policy: CreationPolicy = CreationPolicy.OWNER
    deletion_policy: DeletionPolicy = DeletionPolicy.DELETE
    template: Template = dataclasses.field(default_factory=Template)


@dataclass(frozen=True, slots=True)
class ExternalSecretSpec:
    provider: str
    type: str
    data: tuple[DataEntry, ...]
    data_process: tuple[DataProcess, ...]
    refresh_interval: float | None  # seconds; None: the controller default; 0: never poll
    target: Target

    @property
    def secret_type(self) -> str:
        return self.target.template.type or self.type

    @property
    def entries(self) -> tuple[DataEntry, ...]:
        """Data entries, then extracts, in spec order: the order later-wins applies in."""
        extracts = tuple(p.extract for p in self.data_process if p.extract is not None)
        return self.data + extracts

    @property
    def fetch_keys(self) -> tuple[FetchKey, ...]:
        """Distinct fetch keys, in first-use order."""
        return tuple(dict.fromkeys(e.fetch_key for e in self.entries))


@dataclass(frozen=True, slots=True)
class ExternalSecret:
    namespace: str
    name: str
    uid: str
    generation: int
    resource_version: str
    annotations: Mapping[str, str] = dataclasses.field(hash=False)
    labels: Mapping[str, str] = dataclasses.field(hash=False)
    spec: ExternalSecretSpec
    notices: tuple[str, ...] = ()  # adjustments made to the spec (bounds), for the status

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}/{self.name}"


# ---------------------------------------------------------------- ExternalSecret parsing


def parse_external_secret(obj: Mapping[str, object],
                          bounds: IntervalBounds = DEFAULT_BOUNDS, *,
                          shape: Shape) -> ExternalSecret:
    """Parse an ExternalSecret as returned by the API, with the provider names (and their
    entry rules) of the installed sources' `shape`. Raises SpecError (see module doc)."""
    meta = metadata_of(obj)
    namespace, name = meta_text(meta, "namespace"), meta_text(meta, "name")
    p = Problems(f"ExternalSecret {namespace}/{name}")
    spec = _parse_es_spec(as_mapping(obj.get("spec"), "spec", p), namespace, name, p, bounds,
                          shape)
    annotations = meta.get("annotations")
    labels = meta.get("labels")
    result = ExternalSecret(
        namespace=namespace,
        name=name,
        uid=meta_text(meta, "uid"),
        generation=meta_int(meta, "generation"),
        resource_version=meta_text(meta, "resourceVersion"),
        annotations=as_string_map(annotations, "metadata.annotations", p),
        labels=as_string_map(labels, "metadata.labels", p),
        spec=spec,
        notices=tuple(p.notices),
    )
    p.raise_if_any()
    return result


def _parse_es_spec(
    spec: Mapping[str, object], namespace: str, name: str, p: Problems,
    bounds: IntervalBounds, shape: Shape,
) -> ExternalSecretSpec:
    provider = _parse_provider(spec, p, shape)
    secret_type = read_text(spec, "type", "spec", p) or DEFAULT_SECRET_TYPE
    data = tuple(
        _parse_entry(raw, f"spec.data[{i}]", f"data[{i}]", namespace, p, extract=False)
        for i, raw in enumerate(as_items(spec.get("data"), "spec.data", p, MAX_DATA))
    )
    processes = tuple(
        _parse_data_process(raw, i, namespace, p)
        for i, raw in enumerate(as_items(spec.get("dataProcess"), "spec.dataProcess", p,
                                       MAX_DATA_PROCESS))
    )
    rule = shape.entry_rule(provider)
    if rule is not None:
        for entry in (*data, *(d.extract for d in processes if d.extract is not None)):
            rule(provider, entry, p)
    target = _parse_target(spec.get("target"), name, p)
    template_type = target.template.type
    if template_type and spec.get("type") and template_type != secret_type:
        p.add("spec.target.template.type", f"({template_type}) conflicts with spec.type "
              f"({secret_type})", "set the Secret type in one place only")
    return ExternalSecretSpec(
        provider=provider,
        type=secret_type,
        data=data,
        data_process=processes,
        refresh_interval=_parse_interval(spec, p, bounds),
        target=target,
    )


def _parse_provider(spec: Mapping[str, object], p: Problems, shape: Shape) -> str:
    provider = read_text(spec, "provider", "spec", p).lower() or shape.default_provider
    if provider not in shape.names:
        p.add("spec.provider", f"must be {one_of(list(shape.names))} (got {provider!r})",
              f"set provider: {shape.default_provider}, or leave it out")
    return provider


def _parse_interval(spec: Mapping[str, object], p: Problems,
                    bounds: IntervalBounds) -> float | None:
    for key in ("refreshInterval", "rotationInterval"):  # rotationInterval: v0.6 name
        text = read_text(spec, key, "spec", p)
        if not text:
            continue
        try:
            seconds = parse_duration(text)
        except ValueError:
            seconds = -1.0
        if seconds < 0:
            p.add(f"spec.{key}", f"is not a valid interval ({text[:40]!r})",
                  "use a Go duration such as 30s, 5m, 1h or 1h30m, at most "
                  f"{format_duration(bounds.maximum)}; 0 turns polling off")
            return None
        if 0 < seconds < bounds.minimum:
            p.notices.append(f"spec.{key} ({text}) is shorter than the minimum "
                             f"{format_duration(bounds.minimum)} (--min-refresh-interval); "
                             f"polling every {format_duration(bounds.minimum)}")
            return bounds.minimum
        if seconds > bounds.maximum:
            p.notices.append(f"spec.{key} ({text[:40]}) is longer than the maximum "
                             f"{format_duration(bounds.maximum)} (--max-refresh-interval); "
                             f"polling every {format_duration(bounds.maximum)}")
            return bounds.maximum
        return seconds
    return None



def _parse_entry(
    raw: object, field: str, entry_id: str, namespace: str, p: Problems, *, extract: bool
) -> DataEntry:
    m = as_mapping(raw, field, p)
    key = read_text(m, "key", field, p)
    if not key:
        p.add(f"{field}.key", "is required", "set it to the name of the KMS secret to read")
    name = read_text(m, "name", field, p) or key
    jmes = _parse_jmes_path(m.get("jmesPath"), f"{field}.jmesPath", key, p)
    if key and not jmes and not extract:
        _check_key_name(name, f"{field}.name", "set name to a valid Secret key", p)
    return DataEntry(
        entry_id=entry_id,
        spec_field=field,
        key=key,
        name=name,
        version_stage=read_text(m, "versionStage", field, p),
        version_id=read_text(m, "versionId", field, p),
        store_ref=_parse_store_ref(m.get("secretStoreRef"), f"{field}.secretStoreRef",
                                   namespace, p),
        jmes_path=jmes,
        kms_endpoint=read_text(m, "kmsEndpoint", field, p),
        is_extract=extract,
    )


def _check_key_name(key: str, field: str, fix: str, p: Problems) -> None:
    problem = key_name_problem(key)
    if problem:
        p.add(field, f"gives the Secret key {key!r}, which {problem}", fix)


def _parse_jmes_path(
    raw: object, field: str, key: str, p: Problems
) -> tuple[JMESPathItem, ...]:
    items: list[JMESPathItem] = []
    for i, item_raw in enumerate(as_items(raw, field, p, MAX_JMES_PATHS)):
        item_field = f"{field}[{i}]"
        m = as_mapping(item_raw, item_field, p)
        path = read_text(m, "path", item_field, p)
        alias = read_text(m, "objectAlias", item_field, p) or key
        if not path:
            p.add(f"{item_field}.path", "is required", "set it to a JMESPath expression, "
                  "e.g. friends[0].name")
        elif not _jmespath_compiles(path):
            p.add(f"{item_field}.path", f"is not a valid JMESPath expression ({path!r})",
                  "check the syntax at jmespath.org, e.g. friends[0].name")
        if alias:
            _check_key_name(alias, f"{item_field}.objectAlias",
                            "set objectAlias to a valid Secret key", p)
        items.append(JMESPathItem(path, alias))
    return tuple(items)


def _jmespath_compiles(path: str) -> bool:
    try:
        jmespath.compile(path)
    except (JMESPathError, ValueError, TypeError, RecursionError):
        return False
    return True


def _parse_store_ref(
    raw: object, field: str, namespace: str, p: Problems
) -> StoreRef | None:
    if raw is None:
        return None
    m = as_mapping(raw, field, p)
    name = read_text(m, "name", field, p)
    ref_namespace = read_text(m, "namespace", field, p)
    kind_text = read_text(m, "kind", field, p)
    if not (name or ref_namespace or kind_text):
        return None  # an empty reference means no reference
    if not name:
        p.add(f"{field}.name", "is required", "set it to the store's name, or remove "
              "secretStoreRef to use the controller's own identity")
    kind = read_choice(StoreKind, kind_text, StoreKind.SECRET_STORE, f"{field}.kind", p)
    if kind is StoreKind.CLUSTER_SECRET_STORE:
        return StoreRef(kind, "", name)
    return StoreRef(kind, ref_namespace or namespace, name)


def _parse_data_process(raw: object, index: int, namespace: str, p: Problems) -> DataProcess:
    field = f"spec.dataProcess[{index}]"
    m = as_mapping(raw, field, p)
    extract = None
    if m.get("extract") is not None:
        extract = _parse_entry(m.get("extract"), f"{field}.extract",
                               f"dataProcess[{index}].extract", namespace, p, extract=True)
    rules: list[ReplaceRule] = []
    for i, rule_raw in enumerate(as_items(m.get("replaceRule"), f"{field}.replaceRule", p,
                                        MAX_REPLACE_RULES)):
        rule_field = f"{field}.replaceRule[{i}]"
        rule = as_mapping(rule_raw, rule_field, p)
        source = read_text(rule, "source", rule_field, p)
        target = read_text(rule, "target", rule_field, p)
        try:
            pattern = compile_go_regexp(source)
        except ValueError as exc:
            p.add(f"{rule_field}.source", f"is not a usable regular expression ({exc})",
                  "fix the pattern; it is matched against key names with Go RE2 syntax")
            pattern = compile_go_regexp(re2.escape(source))
        rules.append(ReplaceRule(source, target, pattern))
    return DataProcess(extract, tuple(rules))


def _parse_target(raw: object, default_name: str, p: Problems) -> Target:
    m = as_mapping(raw, "spec.target", p)
    name = read_text(m, "name", "spec.target", p) or default_name
    if raw is not None and m.get("name"):
        problem = dns_name_problem(name)
        if problem:
            p.add("spec.target.name", f"({name!r}) {problem}", "use a DNS subdomain name")
    target = Target(
        name=name,
        creation_policy=read_choice(
            CreationPolicy, read_text(m, "creationPolicy", "spec.target", p),
            CreationPolicy.OWNER, "spec.target.creationPolicy", p),
        deletion_policy=read_choice(
            DeletionPolicy, read_text(m, "deletionPolicy", "spec.target", p),
            DeletionPolicy.DELETE, "spec.target.deletionPolicy", p),
        template=_parse_template(m.get("template"), p),
    )
    if target.creation_policy == CreationPolicy.MERGE and \
            MANAGED_BY_LABEL in target.template.labels:
        p.add(f"spec.target.template.metadata.labels.{MANAGED_BY_LABEL}", "cannot be set on a "
              "Secret merged into: the label belongs to whoever created that Secret",
              "remove it")
    return target


# Labels and annotations the controller writes to record ownership: a template may not set
# them (that would let one ExternalSecret forge another's claim on a Secret).
RESERVED_PREFIXES = ("alibabacloud.com/",)
RESERVED_DOMAIN_SUFFIX = ".merge.alibabacloud.com/"
RESERVED_LABELS: tuple[str, ...] = ()
# ack-secret-manager's own template examples set this label to its name, the value this
# controller writes on a Secret it owns anyway (ownership is proven by uid, never by labels):
# allowed with that value on an owned Secret; any other value would be overwritten, and on a
# Secret merged into it would take the label from whoever created that Secret, so both are
# refused.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "ack-secret-manager"


def reserved_metadata_key(key: str, labels: bool) -> bool:
    """Whether a label (or annotation) name is one the controller records ownership in."""
    return key.startswith(RESERVED_PREFIXES) or RESERVED_DOMAIN_SUFFIX in key or (
        labels and key in RESERVED_LABELS)


def _parse_template(raw: object, p: Problems) -> Template:
    field = "spec.target.template"
    m = as_mapping(raw, field, p)
    meta = as_mapping(m.get("metadata"), f"{field}.metadata", p)
    labels = as_string_map(meta.get("labels"), f"{field}.metadata.labels", p, MAX_TEMPLATE_ITEMS)
    annotations = as_string_map(meta.get("annotations"), f"{field}.metadata.annotations", p,
                              MAX_TEMPLATE_ITEMS)
    for kind, items in (("labels", labels), ("annotations", annotations)):
        for key in items:
            if reserved_metadata_key(key, kind == "labels"):
                p.add(f"{field}.metadata.{kind}.{key[:100]}", "is reserved for the controller "
                      "(it records which ExternalSecret owns the Secret)", "remove it")
    managed_by = labels.get(MANAGED_BY_LABEL)
    if managed_by is not None and "{{" not in managed_by and managed_by != MANAGED_BY_VALUE:
        p.add(f"{field}.metadata.labels.{MANAGED_BY_LABEL}", f"is {managed_by[:60]!r}, but "
              f"the controller writes {MANAGED_BY_VALUE} there on a Secret it owns",
              f"set it to {MANAGED_BY_VALUE} or remove it")
    data = as_string_map(m.get("data"), f"{field}.data", p, MAX_TEMPLATE_ITEMS)
    for key, text in data.items():
        _check_key_name(key, f"{field}.data.{key[:100]}", "use a valid Secret key", p)
        _check_template(text, f"{field}.data.{key}", p)
    for kind, items in (("labels", labels), ("annotations", annotations)):
        for key, text in items.items():
            _check_template(text, f"{field}.metadata.{kind}.{key}", p)
    policy = read_text(m, "mergePolicy", field, p) or "Replace"
    if policy not in ("Replace", "Merge"):
        p.add(f"{field}.mergePolicy", f"must be Replace or Merge (got {policy[:20]!r})",
              "use Replace (only the templates' output) or Merge (the fetched keys too)")
    engine = m.get("engineVersion")
    if engine not in (None, "", "v2"):
        p.add(f"{field}.engineVersion", f"is {str(engine)[:20]!r}; only v2 (Go text/template "
              "with sprig functions) is supported", "remove it or set v2")
    known = ("type", "metadata", "data", "templateFrom", "mergePolicy", "engineVersion")
    return Template(
        type=read_text(m, "type", field, p),
        labels=labels,
        annotations=annotations,
        extra={k: v for k, v in m.items() if k not in known},
        data=data,
        template_from=tuple(
            _parse_template_from(raw_item, f"{field}.templateFrom[{i}]", p)
            for i, raw_item in enumerate(as_items(m.get("templateFrom"), f"{field}.templateFrom",
                                                p, MAX_TEMPLATE_FROM))),
        merge_policy=policy,
    )


def _check_template(text: str, field: str, p: Problems) -> None:
    """A template that does not parse is a spec error (naming the field, line and column)."""
    if "{{" not in text:
        return
    try:
        gotemplate.parse(text, field)
    except gotemplate.TemplateError as exc:
        p.add(field, f"is not a valid template ({exc.message}, line {exc.line} column "
              f"{exc.column})", "fix the template (Go text/template with sprig functions; "
              "see docs/templates.md)")


def _parse_template_from(raw: object, field: str, p: Problems) -> TemplateFrom:
    m = as_mapping(raw, field, p)
    target = read_text(m, "target", field, p) or "Data"
    if target not in ("Data", "Labels", "Annotations"):
        p.add(f"{field}.target", f"must be Data, Labels or Annotations (got {target[:20]!r})",
              "use one of them, or leave it out for Data")
    sources = [k for k in ("configMap", "secret", "literal") if m.get(k) is not None]
    if len(sources) != 1:
        p.add(field, "must set exactly one of configMap, secret and literal", "keep one")
        return TemplateFrom("literal", target=target)
    kind = sources[0]
    if kind == "literal":
        literal = read_text(m, "literal", field, p)
        _check_template(literal, f"{field}.literal", p)
        return TemplateFrom("literal", literal=literal, target=target)
    ref = as_mapping(m.get(kind), f"{field}.{kind}", p)
    name = read_text(ref, "name", f"{field}.{kind}", p)
    if not name or dns_name_problem(name):
        p.add(f"{field}.{kind}.name", "must name a ConfigMap or Secret (a DNS subdomain)",
              "set the name of the object in the ExternalSecret's namespace")
    items: list[tuple[str, str]] = []
    for i, item_raw in enumerate(as_items(ref.get("items"), f"{field}.{kind}.items", p,
                                        MAX_TEMPLATE_ITEMS)):
        item_field = f"{field}.{kind}.items[{i}]"
        item = as_mapping(item_raw, item_field, p)
        key = read_text(item, "key", item_field, p)
        scope = read_text(item, "templateAs", item_field, p) or "Values"
        _check_key_name(key, f"{item_field}.key", "name a key of the ConfigMap or Secret", p)
        if scope not in ("Values", "KeysAndValues"):
            p.add(f"{item_field}.templateAs", f"must be Values or KeysAndValues (got "
                  f"{scope[:20]!r})", "use Values (one key) or KeysAndValues (key=value lines)")
        items.append((key, scope))
    if not items:
        p.add(f"{field}.{kind}.items", "is empty", "list the keys that hold templates")
    return TemplateFrom(kind, name=name, items=tuple(items), target=target)
