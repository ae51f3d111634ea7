"""Typed, validated views of the custom resources this controller reads.

Why this module exists: the Kubernetes API hands us raw dicts, and the rest of the
controller should never have to guess whether a field is present, defaulted or
well formed. Parsing happens once, here, into frozen dataclasses; every problem a
user can fix becomes a ``SpecError`` that names the object, the field and the fix,
never a crash. The models describe specifications only: they never hold secret values.

The field names and defaults are those of ack-secret-manager (group alibabacloud.com,
v1alpha1), so objects users already have parse unchanged. Notable rules:

* Errors: parsing collects every problem (in a fixed order: provider, type, data,
  dataProcess, target, intervals) and raises the first one; its ``errors`` attribute
  lists all of them (the first included), so a status can show one message while a
  log or Event shows everything.
* ``provider: oos`` reads OOS encryption parameters (``key`` is the parameter name,
  ``versionId`` its version; OOS has no version stages) through stores with ``spec.OOS``.
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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

import jmespath
import re2
from jmespath.exceptions import JMESPathError

from controller import gotemplate

__all__ = [
    "DEFAULT_BOUNDS",
    "DNS_SUBDOMAIN_PATTERN",
    "INTERVAL_PATTERN",
    "KEY_NAME_PATTERN",
    "KMS_PROVIDER",
    "MANAGED_BY_LABEL",
    "MANAGED_BY_VALUE",
    "MAX_DATA",
    "MAX_DATA_PROCESS",
    "MAX_FIELD_LENGTH",
    "MAX_JMES_PATHS",
    "MAX_NAME_LENGTH",
    "MAX_PEM_LENGTH",
    "MAX_REPLACE_RULES",
    "MAX_TEMPLATE_FROM",
    "MAX_TEMPLATE_ITEMS",
    "OOS_PROVIDER",
    "PROVIDER_PATTERN",
    "ClusterSecretStore",
    "CreationPolicy",
    "DataEntry",
    "DataProcess",
    "DedicatedKMSAuth",
    "DeletionPolicy",
    "ExternalSecret",
    "ExternalSecretSpec",
    "FetchKey",
    "IntervalBounds",
    "JMESPathItem",
    "KMSAuth",
    "KMSProvider",
    "NamespaceCondition",
    "OOSAuth",
    "OOSProvider",
    "ReplaceRule",
    "SecretRef",
    "SecretStore",
    "SelectorRequirement",
    "ServiceAccountRef",
    "SpecError",
    "StoreKind",
    "StoreRef",
    "Target",
    "Template",
    "TemplateFrom",
    "UnsupportedSpecError",
    "compile_go_regexp",
    "format_duration",
    "key_name_problem",
    "parse_cluster_secret_store",
    "parse_duration",
    "parse_external_secret",
    "parse_secret_store",
    "parse_store",
    "reserved_metadata_key",
]

KMS_PROVIDER = "kms"
OOS_PROVIDER = "oos"
# spec.provider as _parse_provider reads it: either name in any case, or empty (kms).
PROVIDER_PATTERN = rf"^(?i:{KMS_PROVIDER}|{OOS_PROVIDER})?$"
DEFAULT_SECRET_TYPE = "Opaque"

# Bounds on one object. hack/gen_crds.py puts these same constants (and the patterns below)
# into the CRD schema; tests/unit/test_crd_schema.py checks each one is on the fields it governs.
MAX_FIELD_LENGTH = 4096  # any string field (PEM CAs excepted: MAX_PEM_LENGTH)
MAX_PEM_LENGTH = 65536
MAX_DATA = 100  # spec.data items
MAX_DATA_PROCESS = 20  # spec.dataProcess items
MAX_JMES_PATHS = 100  # jmesPath items of one entry
MAX_REPLACE_RULES = 50  # replaceRule items of one dataProcess
MAX_TEMPLATE_ITEMS = 64  # labels, annotations, data templates, templateFrom items
MAX_TEMPLATE_FROM = 16  # spec.target.template.templateFrom


@dataclass(frozen=True, slots=True)
class IntervalBounds:
    """The refreshInterval range the operator allows (seconds); 0 (never poll) is always
    allowed."""

    minimum: float = 10.0
    maximum: float = 30 * 24 * 3600.0


DEFAULT_BOUNDS = IntervalBounds()


# ---------------------------------------------------------------- errors


class SpecError(Exception):
    """A problem in a user's spec: which object, which field, what is wrong, the fix.

    ``message`` is a predicate that reads after the field name ("is required"), and
    ``fix`` an instruction ("set it to ..."). ``errors`` holds every problem found in
    the same object when this one is raised by a parse function.
    """

    def __init__(self, field: str, message: str, fix: str, obj: str = "") -> None:
        self.field = field
        self.message = message
        self.fix = fix
        self.obj = obj
        self.errors: tuple[SpecError, ...] = (self,)
        super().__init__(field, message, fix, obj)

    def sentence(self) -> str:
        """This problem alone, as one sentence."""
        where = f"{self.obj}: " if self.obj else ""
        return f"{where}{self.field} {self.message}; {self.fix.rstrip('.')}."

    def __str__(self) -> str:
        others = [e.field for e in self.errors if e is not self]
        if not others:
            return self.sentence()
        return f"{self.sentence()} ({len(others)} more: {', '.join(others)})"


class UnsupportedSpecError(SpecError):
    """A valid ack-secret-manager setting that this release does not implement."""


# ---------------------------------------------------------------- durations

_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6,
    "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_MAX_DURATION_SECONDS = (2**63 - 1) / 1e9
# The intervals a spec may give (what the CRD accepts): a Go duration parse_duration reads
# that is not negative, in ASCII digits; "0" (never poll) included, and "" (the default).
INTERVAL_PATTERN = (r"^(\+?(0|(([0-9]+\.?[0-9]*|\.[0-9]+)("
                    + "|".join(sorted(_DURATION_UNITS, key=len, reverse=True)) + r"))+))?$")


def parse_duration(text: str) -> float:
    """Seconds in a Go ``time.ParseDuration`` string ("1h30m", "500ms", "-2s", "0").

    Raises ValueError for anything Go would reject (including "", "10" and "1d").
    """
    rest = text
    sign = 1.0
    if rest and rest[0] in "+-":
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total, pos = 0.0, 0
    while pos < len(rest):
        part = _DURATION_PART.match(rest, pos)
        if part is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(part.group(1)) * _DURATION_UNITS[part.group(2)]
        pos = part.end()
    if total > _MAX_DURATION_SECONDS:
        raise ValueError(f"duration {text!r} is out of range")
    return sign * total


# ---------------------------------------------------------------- key names

KEY_NAME_PATTERN = r"^[-._a-zA-Z0-9]+$"  # a Secret data key (with the rules below)
_KEY_NAME = re.compile(KEY_NAME_PATTERN)
MAX_NAME_LENGTH = 253  # a Secret data key, and an object name (DNS subdomain)


def key_name_problem(key: str) -> str | None:
    """Why ``key`` cannot be a Kubernetes Secret data key, or None if it can.

    Same rules as the apiserver's IsConfigMapKey.
    """
    if not key:
        return "is empty"
    if len(key) > MAX_NAME_LENGTH:
        return f"is {len(key)} characters long (at most {MAX_NAME_LENGTH} allowed)"
    if not _KEY_NAME.fullmatch(key):
        return "may contain only letters, digits, '-', '_' and '.'"
    if key in (".", "..") or key.startswith(".."):
        return "must not be '.' or '..' or start with '..'"
    return None


DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_DNS_SUBDOMAIN = re.compile(DNS_SUBDOMAIN_PATTERN)


def _dns_name_problem(name: str) -> str | None:
    if len(name) > MAX_NAME_LENGTH or not _DNS_SUBDOMAIN.fullmatch(name):
        return "is not a valid Secret name (lower-case letters, digits, '-' and '.')"
    return None


# ---------------------------------------------------------------- Go regexps

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a tenant's bad pattern is reported in its status instead

GoRegexp = Any  # a compiled google-re2 pattern (search, sub, finditer, groups, groupindex)


def compile_go_regexp(source: str) -> GoRegexp:
    """Compile a pattern written for Go's RE2 with RE2 itself (google-re2): the same syntax
    (POSIX classes, \\Q..\\E, \\z, (?<name>...), Unicode classes, (?U)) and matching in
    linear time, so no tenant's pattern can backtrack a worker into a stall.
    ValueError with a readable reason when it does not compile."""
    if len(source) > MAX_FIELD_LENGTH:
        raise ValueError(f"the pattern is {len(source)} characters long")
    try:
        return re2.compile(source, options=_RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise ValueError(text[:200]) from None


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


# ---------------------------------------------------------------- reading raw dicts


class _Problems:
    """Collects SpecErrors for one object while parsing continues."""

    def __init__(self, obj: str) -> None:
        self.obj = obj
        self.found: list[SpecError] = []
        self.notices: list[str] = []

    def add(self, field: str, message: str, fix: str, kind: type[SpecError] = SpecError) -> None:
        self.found.append(kind(field, message, fix, self.obj))

    def raise_if_any(self) -> None:
        if self.found:
            first = self.found[0]
            first.errors = tuple(self.found)
            raise first


def _mapping(raw: object, field: str, p: _Problems) -> Mapping[str, object]:
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return raw
    p.add(field, "must be an object", "write it as a mapping of fields (name: value)")
    return {}


def _items(raw: object, field: str, p: _Problems, limit: int = 0) -> list[object]:
    if raw is None:
        return []
    if isinstance(raw, list):
        if limit and len(raw) > limit:
            p.add(field, f"has {len(raw)} items (at most {limit} allowed)",
                  "split the work over several ExternalSecrets")
            return raw[:limit]
        return raw
    p.add(field, "must be a list", "write it as a YAML list (lines starting with '- ')")
    return []


def _text(m: Mapping[str, object], key: str, field: str, p: _Problems,
          limit: int = MAX_FIELD_LENGTH) -> str:
    value = m.get(key)
    if value is None or isinstance(value, str):
        if value and len(value) > limit:
            p.add(f"{field}.{key}", f"is {len(value)} characters long (at most {limit} "
                  "allowed)", "shorten it")
            return ""
        return value or ""
    p.add(f"{field}.{key}", "must be a string", f'quote the value: {key}: "{str(value)[:40]}"')
    return ""


def _flag(m: Mapping[str, object], key: str, field: str, p: _Problems) -> bool:
    value = m.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    p.add(f"{field}.{key}", "must be true or false", "write true or false without quotes")
    return False


def _strings(raw: object, field: str, p: _Problems) -> tuple[str, ...]:
    values = _items(raw, field, p)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            p.add(f"{field}[{i}]", "must be a string", "quote the value")
    return tuple(v for v in values if isinstance(v, str))


def _string_map(raw: object, field: str, p: _Problems, limit: int = 0) -> dict[str, str]:
    m = _mapping(raw, field, p)
    if limit and len(m) > limit:
        p.add(field, f"has {len(m)} entries (at most {limit} allowed)", "remove some")
        return {}
    for key, value in m.items():
        if not isinstance(value, str):
            p.add(f"{field}.{key}", "must be a string", "quote the value")
        elif limit and (len(value) > MAX_FIELD_LENGTH or len(str(key)) > MAX_FIELD_LENGTH):
            p.add(f"{field}.{str(key)[:63]}", f"is longer than {MAX_FIELD_LENGTH} characters",
                  "shorten it")
            return {}
    return {str(k): v for k, v in m.items() if isinstance(v, str)}


_E = TypeVar("_E", bound=StrEnum)


def _choice(enum: type[_E], text: str, default: _E, field: str, p: _Problems) -> _E:
    if not text:
        return default
    try:
        return enum(text)
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        p.add(field, f"must be one of {allowed} (got {text!r})",
              f"use one of {allowed}, or leave it out for {default.value}")
        return default


def _meta(obj: Mapping[str, object]) -> Mapping[str, object]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _meta_text(meta: Mapping[str, object], key: str) -> str:
    value = meta.get(key)
    return value if isinstance(value, str) else ""


def _meta_int(meta: Mapping[str, object], key: str) -> int:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# ---------------------------------------------------------------- ExternalSecret parsing


def parse_external_secret(obj: Mapping[str, object],
                          bounds: IntervalBounds = DEFAULT_BOUNDS) -> ExternalSecret:
    """Parse an ExternalSecret as returned by the API. Raises SpecError (see module doc)."""
    meta = _meta(obj)
    namespace, name = _meta_text(meta, "namespace"), _meta_text(meta, "name")
    p = _Problems(f"ExternalSecret {namespace}/{name}")
    spec = _parse_es_spec(_mapping(obj.get("spec"), "spec", p), namespace, name, p, bounds)
    annotations = meta.get("annotations")
    labels = meta.get("labels")
    result = ExternalSecret(
        namespace=namespace,
        name=name,
        uid=_meta_text(meta, "uid"),
        generation=_meta_int(meta, "generation"),
        resource_version=_meta_text(meta, "resourceVersion"),
        annotations=_string_map(annotations, "metadata.annotations", p),
        labels=_string_map(labels, "metadata.labels", p),
        spec=spec,
        notices=tuple(p.notices),
    )
    p.raise_if_any()
    return result


def _parse_es_spec(
    spec: Mapping[str, object], namespace: str, name: str, p: _Problems,
    bounds: IntervalBounds,
) -> ExternalSecretSpec:
    provider = _parse_provider(spec, p)
    secret_type = _text(spec, "type", "spec", p) or DEFAULT_SECRET_TYPE
    data = tuple(
        _parse_entry(raw, f"spec.data[{i}]", f"data[{i}]", namespace, p, extract=False)
        for i, raw in enumerate(_items(spec.get("data"), "spec.data", p, MAX_DATA))
    )
    processes = tuple(
        _parse_data_process(raw, i, namespace, p)
        for i, raw in enumerate(_items(spec.get("dataProcess"), "spec.dataProcess", p,
                                       MAX_DATA_PROCESS))
    )
    if provider == OOS_PROVIDER:
        for entry in (*data, *(d.extract for d in processes if d.extract is not None)):
            if entry.version_stage:
                p.add(f"{entry.spec_field}.versionStage", "is set, but OOS parameters have no "
                      "version stages", "remove it, or give versionId (a parameter version)")
            if entry.kms_endpoint:
                p.add(f"{entry.spec_field}.kmsEndpoint", "is a KMS endpoint, but provider is "
                      "oos", "remove it (the controller's --oos-endpoint is used)")
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


def _parse_provider(spec: Mapping[str, object], p: _Problems) -> str:
    provider = _text(spec, "provider", "spec", p).lower() or KMS_PROVIDER
    if provider not in (KMS_PROVIDER, OOS_PROVIDER):
        p.add("spec.provider", f"must be kms or oos (got {provider!r})",
              "set provider: kms, or leave it out")
    return provider


def _parse_interval(spec: Mapping[str, object], p: _Problems,
                    bounds: IntervalBounds) -> float | None:
    for key in ("refreshInterval", "rotationInterval"):  # rotationInterval: v0.6 name
        text = _text(spec, key, "spec", p)
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


def format_duration(seconds: float) -> str:
    """A short Go-style duration for messages: 10s, 1m30s, 720h, 500ms."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             f"{secs}s" if secs or whole == 0 else ""]
    return "".join(parts) or "0s"


def _parse_entry(
    raw: object, field: str, entry_id: str, namespace: str, p: _Problems, *, extract: bool
) -> DataEntry:
    m = _mapping(raw, field, p)
    key = _text(m, "key", field, p)
    if not key:
        p.add(f"{field}.key", "is required", "set it to the name of the KMS secret to read")
    name = _text(m, "name", field, p) or key
    jmes = _parse_jmes_path(m.get("jmesPath"), f"{field}.jmesPath", key, p)
    if key and not jmes and not extract:
        _check_key_name(name, f"{field}.name", "set name to a valid Secret key", p)
    return DataEntry(
        entry_id=entry_id,
        spec_field=field,
        key=key,
        name=name,
        version_stage=_text(m, "versionStage", field, p),
        version_id=_text(m, "versionId", field, p),
        store_ref=_parse_store_ref(m.get("secretStoreRef"), f"{field}.secretStoreRef",
                                   namespace, p),
        jmes_path=jmes,
        kms_endpoint=_text(m, "kmsEndpoint", field, p),
        is_extract=extract,
    )


def _check_key_name(key: str, field: str, fix: str, p: _Problems) -> None:
    problem = key_name_problem(key)
    if problem:
        p.add(field, f"gives the Secret key {key!r}, which {problem}", fix)


def _parse_jmes_path(
    raw: object, field: str, key: str, p: _Problems
) -> tuple[JMESPathItem, ...]:
    items: list[JMESPathItem] = []
    for i, item_raw in enumerate(_items(raw, field, p, MAX_JMES_PATHS)):
        item_field = f"{field}[{i}]"
        m = _mapping(item_raw, item_field, p)
        path = _text(m, "path", item_field, p)
        alias = _text(m, "objectAlias", item_field, p) or key
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
    raw: object, field: str, namespace: str, p: _Problems
) -> StoreRef | None:
    if raw is None:
        return None
    m = _mapping(raw, field, p)
    name = _text(m, "name", field, p)
    ref_namespace = _text(m, "namespace", field, p)
    kind_text = _text(m, "kind", field, p)
    if not (name or ref_namespace or kind_text):
        return None  # an empty reference means no reference
    if not name:
        p.add(f"{field}.name", "is required", "set it to the store's name, or remove "
              "secretStoreRef to use the controller's own identity")
    kind = _choice(StoreKind, kind_text, StoreKind.SECRET_STORE, f"{field}.kind", p)
    if kind is StoreKind.CLUSTER_SECRET_STORE:
        return StoreRef(kind, "", name)
    return StoreRef(kind, ref_namespace or namespace, name)


def _parse_data_process(raw: object, index: int, namespace: str, p: _Problems) -> DataProcess:
    field = f"spec.dataProcess[{index}]"
    m = _mapping(raw, field, p)
    extract = None
    if m.get("extract") is not None:
        extract = _parse_entry(m.get("extract"), f"{field}.extract",
                               f"dataProcess[{index}].extract", namespace, p, extract=True)
    rules: list[ReplaceRule] = []
    for i, rule_raw in enumerate(_items(m.get("replaceRule"), f"{field}.replaceRule", p,
                                        MAX_REPLACE_RULES)):
        rule_field = f"{field}.replaceRule[{i}]"
        rule = _mapping(rule_raw, rule_field, p)
        source = _text(rule, "source", rule_field, p)
        target = _text(rule, "target", rule_field, p)
        try:
            pattern = compile_go_regexp(source)
        except ValueError as exc:
            p.add(f"{rule_field}.source", f"is not a usable regular expression ({exc})",
                  "fix the pattern; it is matched against key names with Go RE2 syntax")
            pattern = compile_go_regexp(re2.escape(source))
        rules.append(ReplaceRule(source, target, pattern))
    return DataProcess(extract, tuple(rules))


def _parse_target(raw: object, default_name: str, p: _Problems) -> Target:
    m = _mapping(raw, "spec.target", p)
    name = _text(m, "name", "spec.target", p) or default_name
    if raw is not None and m.get("name"):
        problem = _dns_name_problem(name)
        if problem:
            p.add("spec.target.name", f"({name!r}) {problem}", "use a DNS subdomain name")
    target = Target(
        name=name,
        creation_policy=_choice(CreationPolicy, _text(m, "creationPolicy", "spec.target", p),
                                CreationPolicy.OWNER, "spec.target.creationPolicy", p),
        deletion_policy=_choice(DeletionPolicy, _text(m, "deletionPolicy", "spec.target", p),
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


def _parse_template(raw: object, p: _Problems) -> Template:
    field = "spec.target.template"
    m = _mapping(raw, field, p)
    meta = _mapping(m.get("metadata"), f"{field}.metadata", p)
    labels = _string_map(meta.get("labels"), f"{field}.metadata.labels", p, MAX_TEMPLATE_ITEMS)
    annotations = _string_map(meta.get("annotations"), f"{field}.metadata.annotations", p,
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
    data = _string_map(m.get("data"), f"{field}.data", p, MAX_TEMPLATE_ITEMS)
    for key, text in data.items():
        _check_key_name(key, f"{field}.data.{key[:100]}", "use a valid Secret key", p)
        _check_template(text, f"{field}.data.{key}", p)
    for kind, items in (("labels", labels), ("annotations", annotations)):
        for key, text in items.items():
            _check_template(text, f"{field}.metadata.{kind}.{key}", p)
    policy = _text(m, "mergePolicy", field, p) or "Replace"
    if policy not in ("Replace", "Merge"):
        p.add(f"{field}.mergePolicy", f"must be Replace or Merge (got {policy[:20]!r})",
              "use Replace (only the templates' output) or Merge (the fetched keys too)")
    engine = m.get("engineVersion")
    if engine not in (None, "", "v2"):
        p.add(f"{field}.engineVersion", f"is {str(engine)[:20]!r}; only v2 (Go text/template "
              "with sprig functions) is supported", "remove it or set v2")
    known = ("type", "metadata", "data", "templateFrom", "mergePolicy", "engineVersion")
    return Template(
        type=_text(m, "type", field, p),
        labels=labels,
        annotations=annotations,
        extra={k: v for k, v in m.items() if k not in known},
        data=data,
        template_from=tuple(
            _parse_template_from(raw_item, f"{field}.templateFrom[{i}]", p)
            for i, raw_item in enumerate(_items(m.get("templateFrom"), f"{field}.templateFrom",
                                                p, MAX_TEMPLATE_FROM))),
        merge_policy=policy,
    )


def _check_template(text: str, field: str, p: _Problems) -> None:
    """A template that does not parse is a spec error (naming the field, line and column)."""
    if "{{" not in text:
        return
    try:
        gotemplate.parse(text, field)
    except gotemplate.TemplateError as exc:
        p.add(field, f"is not a valid template ({exc.message}, line {exc.line} column "
              f"{exc.column})", "fix the template (Go text/template with sprig functions; "
              "see docs/templates.md)")


def _parse_template_from(raw: object, field: str, p: _Problems) -> TemplateFrom:
    m = _mapping(raw, field, p)
    target = _text(m, "target", field, p) or "Data"
    if target not in ("Data", "Labels", "Annotations"):
        p.add(f"{field}.target", f"must be Data, Labels or Annotations (got {target[:20]!r})",
              "use one of them, or leave it out for Data")
    sources = [k for k in ("configMap", "secret", "literal") if m.get(k) is not None]
    if len(sources) != 1:
        p.add(field, "must set exactly one of configMap, secret and literal", "keep one")
        return TemplateFrom("literal", target=target)
    kind = sources[0]
    if kind == "literal":
        literal = _text(m, "literal", field, p)
        _check_template(literal, f"{field}.literal", p)
        return TemplateFrom("literal", literal=literal, target=target)
    ref = _mapping(m.get(kind), f"{field}.{kind}", p)
    name = _text(ref, "name", f"{field}.{kind}", p)
    if not name or _dns_name_problem(name):
        p.add(f"{field}.{kind}.name", "must name a ConfigMap or Secret (a DNS subdomain)",
              "set the name of the object in the ExternalSecret's namespace")
    items: list[tuple[str, str]] = []
    for i, item_raw in enumerate(_items(ref.get("items"), f"{field}.{kind}.items", p,
                                        MAX_TEMPLATE_ITEMS)):
        item_field = f"{field}.{kind}.items[{i}]"
        item = _mapping(item_raw, item_field, p)
        key = _text(item, "key", item_field, p)
        scope = _text(item, "templateAs", item_field, p) or "Values"
        _check_key_name(key, f"{item_field}.key", "name a key of the ConfigMap or Secret", p)
        if scope not in ("Values", "KeysAndValues"):
            p.add(f"{item_field}.templateAs", f"must be Values or KeysAndValues (got "
                  f"{scope[:20]!r})", "use Values (one key) or KeysAndValues (key=value lines)")
        items.append((key, scope))
    if not items:
        p.add(f"{field}.{kind}.items", "is empty", "list the keys that hold templates")
    return TemplateFrom(kind, name=name, items=tuple(items), target=target)


# ---------------------------------------------------------------- SecretStore parsing


def parse_store(obj: Mapping[str, object]) -> SecretStore:
    """Parse a SecretStore or ClusterSecretStore, chosen by ``kind``."""
    if obj.get("kind") == StoreKind.CLUSTER_SECRET_STORE.value:
        return parse_cluster_secret_store(obj)
    return parse_secret_store(obj)


def parse_secret_store(obj: Mapping[str, object]) -> SecretStore:
    """Parse a namespaced SecretStore. Raises SpecError (see module doc)."""
    meta = _meta(obj)
    namespace, name = _meta_text(meta, "namespace"), _meta_text(meta, "name")
    p = _Problems(f"SecretStore {namespace}/{name}")
    spec = _mapping(obj.get("spec"), "spec", p)
    kms, oos = _parse_providers(spec, namespace, p)
    p.raise_if_any()
    return SecretStore(StoreKind.SECRET_STORE, namespace, name, _meta_text(meta, "uid"),
                       _meta_int(meta, "generation"), _meta_text(meta, "resourceVersion"),
                       kms, oos, created=_meta_text(meta, "creationTimestamp"))


def parse_cluster_secret_store(obj: Mapping[str, object]) -> ClusterSecretStore:
    """Parse a ClusterSecretStore. Secret references must name their namespace."""
    meta = _meta(obj)
    name = _meta_text(meta, "name")
    p = _Problems(f"ClusterSecretStore {name}")
    spec = _mapping(obj.get("spec"), "spec", p)
    kms, oos = _parse_providers(spec, "", p)
    conditions = tuple(
        _parse_condition(raw, f"spec.conditions[{i}]", p)
        for i, raw in enumerate(_items(spec.get("conditions"), "spec.conditions", p))
    )
    p.raise_if_any()
    return ClusterSecretStore(StoreKind.CLUSTER_SECRET_STORE, "", name,
                              _meta_text(meta, "uid"), _meta_int(meta, "generation"),
                              _meta_text(meta, "resourceVersion"), kms, oos,
                              created=_meta_text(meta, "creationTimestamp"),
                              conditions=conditions)


def _parse_providers(
    spec: Mapping[str, object], namespace: str, p: _Problems
) -> tuple[KMSProvider | None, OOSProvider | None]:
    has_kms, has_oos = spec.get("KMS") is not None, spec.get("OOS") is not None
    if has_kms == has_oos:
        p.add("spec", "must set exactly one provider, KMS or OOS",
              "keep one of spec.KMS and spec.OOS")
    kms = _parse_kms(_mapping(spec.get("KMS"), "spec.KMS", p), namespace, p) if has_kms else None
    oos = None
    if has_oos:
        m = _mapping(spec.get("OOS"), "spec.OOS", p)
        oos = OOSProvider(_parse_auth(m.get("OOSAuth"), "spec.OOS.OOSAuth", namespace, p))
    return kms, oos


def _parse_kms(m: Mapping[str, object], namespace: str, p: _Problems) -> KMSProvider:
    field = "spec.KMS"
    ca_ref = _parse_secret_ref(m.get("caSecretRef"), f"{field}.caSecretRef", namespace, p)
    ca = _text(m, "ca", field, p, MAX_PEM_LENGTH)
    if ca and ca_ref:
        p.add(f"{field}.caSecretRef", "is set together with spec.KMS.ca",
              "keep only one of ca (inline PEM) and caSecretRef")
    return KMSProvider(
        auth=_parse_auth(m.get("KMSAuth"), f"{field}.KMSAuth", namespace, p),
        dedicated=_parse_dedicated(m.get("dedicatedKMSAuth"), namespace, p),
        endpoint=_text(m, "endpoint", field, p),
        ca=ca,
        ca_secret_ref=ca_ref,
    )


def _parse_auth(raw: object, field: str, namespace: str, p: _Problems) -> KMSAuth | None:
    if raw is None:
        return None
    m = _mapping(raw, field, p)
    ak = _parse_secret_ref(m.get("accessKey"), f"{field}.accessKey", namespace, p)
    sk = _parse_secret_ref(m.get("accessKeySecret"), f"{field}.accessKeySecret", namespace, p)
    if (ak is None) != (sk is None):
        missing = "accessKeySecret" if sk is None else "accessKey"
        p.add(f"{field}.{missing}", "is required when the other half of the AccessKey "
              "pair is set", "set both accessKey and accessKeySecret, or neither")
    auth = KMSAuth(
        access_key=ak,
        access_key_secret=sk,
        ram_role_arn=_text(m, "ramRoleARN", field, p),
        ram_role_session_name=_text(m, "ramRoleSessionName", field, p),
        oidc_provider_arn=_text(m, "oidcProviderARN", field, p),
        oidc_token_file_path=_text(m, "oidcTokenFilePath", field, p),
        role_session_expiration=_text(m, "roleSessionExpiration", field, p),
        remote_ram_role_arn=_text(m, "remoteRamRoleARN", field, p),
        remote_ram_role_session_name=_text(m, "remoteRamRoleSessionName", field, p),
        service_account_ref=_parse_sa_ref(m.get("serviceAccountRef"),
                                          f"{field}.serviceAccountRef", namespace, p),
    )
    # With serviceAccountRef the role comes from the ServiceAccount's annotation.
    if auth.oidc_provider_arn and not auth.ram_role_arn and auth.service_account_ref is None:
        p.add(f"{field}.ramRoleARN", "is required with oidcProviderARN (RRSA)",
              "set ramRoleARN to the role the ServiceAccount token may assume")
    return auth


def _parse_secret_ref(raw: object, field: str, namespace: str, p: _Problems) -> SecretRef | None:
    if raw is None:
        return None
    m = _mapping(raw, field, p)
    ref = SecretRef(_text(m, "name", field, p), _text(m, "namespace", field, p) or namespace,
                    _text(m, "key", field, p))
    for part in ("name", "namespace", "key"):
        if not getattr(ref, part):
            p.add(f"{field}.{part}", "is required", f"set the Secret {part} to read")
    return ref


def _parse_sa_ref(
    raw: object, field: str, namespace: str, p: _Problems
) -> ServiceAccountRef | None:
    if raw is None:
        return None
    m = _mapping(raw, field, p)
    ref = ServiceAccountRef(_text(m, "name", field, p),
                            _text(m, "namespace", field, p) or namespace,
                            _strings(m.get("audiences"), f"{field}.audiences", p))
    if not ref.name:
        p.add(f"{field}.name", "is required", "set it to the ServiceAccount to use")
    if not ref.namespace:
        p.add(f"{field}.namespace", "is required in a ClusterSecretStore",
              "set the ServiceAccount's namespace")
    return ref


def _parse_dedicated(raw: object, namespace: str, p: _Problems) -> DedicatedKMSAuth | None:
    if raw is None:
        return None
    field = "spec.KMS.dedicatedKMSAuth"
    m = _mapping(raw, field, p)
    auth = DedicatedKMSAuth(
        protocol=_text(m, "protocol", field, p) or "https",
        endpoint=_text(m, "endpoint", field, p),
        ca=_text(m, "ca", field, p, MAX_PEM_LENGTH),
        ignore_ssl=_flag(m, "ignoreSSL", field, p),
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


def _parse_condition(raw: object, field: str, p: _Problems) -> NamespaceCondition:
    m = _mapping(raw, field, p)
    regexes = _strings(m.get("namespaceRegexes"), f"{field}.namespaceRegexes", p)
    for i, regex in enumerate(regexes):
        try:
            compile_go_regexp(regex)
        except ValueError as exc:
            p.add(f"{field}.namespaceRegexes[{i}]", f"is not a usable regular expression "
                  f"({exc})", "fix the pattern (Go RE2 syntax)")
    selector_raw = m.get("namespaceSelector")
    selector = _mapping(selector_raw, f"{field}.namespaceSelector", p)
    labels = _string_map(selector.get("matchLabels"), f"{field}.namespaceSelector.matchLabels", p)
    return NamespaceCondition(
        namespaces=_strings(m.get("namespaces"), f"{field}.namespaces", p),
        namespace_regexes=regexes,
        match_labels=labels if selector_raw is not None else None,
        match_expressions=_parse_requirements(selector.get("matchExpressions"),
                                              f"{field}.namespaceSelector.matchExpressions", p),
    )


def _parse_requirements(raw: object, field: str, p: _Problems) -> tuple[SelectorRequirement, ...]:
    found: list[SelectorRequirement] = []
    for i, item in enumerate(_items(raw, field, p)):
        item_field = f"{field}[{i}]"
        m = _mapping(item, item_field, p)
        req = SelectorRequirement(_text(m, "key", item_field, p),
                                  _text(m, "operator", item_field, p),
                                  _strings(m.get("values"), f"{item_field}.values", p))
        if req.operator not in _OPERATORS:
            p.add(f"{item_field}.operator", f"must be one of {', '.join(_OPERATORS)}",
                  "use a Kubernetes label selector operator")
        elif (req.operator in ("In", "NotIn")) != bool(req.values):
            p.add(f"{item_field}.values", f"does not fit operator {req.operator}",
                  "give values with In/NotIn and none with Exists/DoesNotExist")
        found.append(req)
    return tuple(found)
