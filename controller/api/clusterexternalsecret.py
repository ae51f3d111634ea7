"""The ClusterExternalSecret: its typed, validated view, parsed once from the raw object with
the API's shared toolkit (fields.py). Field names are ack-secret-manager v0.6's, with External
Secrets Operator's older spellings (namespaceSelector, refreshTime) read as well.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.api.fields import (
    DNS_SUBDOMAIN_PATTERN,
    MAX_NAME_LENGTH,
    Problems,
    as_items,
    as_mapping,
    as_string_map,
    as_strings,
    compile_go_regexp,
    parse_duration,
    read_text,
)
from controller.api.secretstore import NamespaceCondition, SelectorRequirement

OWNER_LABEL = "alibabacloud.com/cluster-external-secret"  # value: the ClusterExternalSecret

# hack/gen_crds.py puts these bounds into the CRD (tests/unit/test_crd_schema.py checks them).
MAX_NAMESPACES = 1000  # ExternalSecrets one ClusterExternalSecret provisions
MAX_CONDITIONS = 50  # spec.conditions / spec.namespaceSelectors items
MAX_METADATA_ITEMS = 64  # externalSecretMetadata labels / annotations

_NAME = re.compile(DNS_SUBDOMAIN_PATTERN)
_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class ClusterExternalSecret:
    """One ClusterExternalSecret, parsed once. `conditions` empty means every namespace
    (ack-secret-manager's rule when no selector is given)."""

    name: str
    uid: str
    generation: int
    es_name: str
    es_spec: Mapping[str, Any] = field(hash=False)
    labels: Mapping[str, str] = field(hash=False)
    annotations: Mapping[str, str] = field(hash=False)
    conditions: tuple[NamespaceCondition, ...]
    refresh: float | None  # seconds between re-checks of every namespace; None: on change only

    def selects(self, namespace: str, labels: Mapping[str, str]) -> bool:
        return not self.conditions or any(c.admits(namespace, labels) for c in self.conditions)


def parse_cluster_external_secret(raw: Mapping[str, Any]) -> ClusterExternalSecret:
    """Parse a raw ClusterExternalSecret; raises SpecError naming every bad field."""
    meta = raw.get("metadata") or {}
    name = str(meta.get("name", ""))
    p = Problems(f"ClusterExternalSecret {name}")
    spec = as_mapping(raw.get("spec"), "spec", p)
    es_spec = as_mapping(spec.get("externalSecretSpec"), "spec.externalSecretSpec", p)
    if not es_spec.get("data") and not es_spec.get("dataProcess"):
        p.add("spec.externalSecretSpec", "has no entry in data or dataProcess",
              "give the ExternalSecret spec to stamp into each namespace")
    es_name = read_text(spec, "externalSecretName", "spec", p) or name
    if len(es_name) > MAX_NAME_LENGTH or not _NAME.match(es_name):
        p.add("spec.externalSecretName", f"{es_name[:63]!r} is not a valid object name",
              "use lower-case letters, digits, '-' and '.'")
    metadata = as_mapping(spec.get("externalSecretMetadata"), "spec.externalSecretMetadata", p)
    labels = _string_map(metadata.get("labels"), "spec.externalSecretMetadata.labels", p)
    annotations = _string_map(metadata.get("annotations"),
                              "spec.externalSecretMetadata.annotations", p)
    if OWNER_LABEL in labels:
        p.add(f"spec.externalSecretMetadata.labels.{OWNER_LABEL}", "is the controller's own "
              "label", "remove it: the controller sets it")
    conditions = _conditions(spec, p)
    refresh = _refresh(spec, p)
    p.raise_if_any()
    return ClusterExternalSecret(
        name=name, uid=str(meta.get("uid", "")), generation=int(meta.get("generation") or 0),
        es_name=es_name, es_spec=es_spec, labels=labels, annotations=annotations,
        conditions=conditions, refresh=refresh)


def _conditions(spec: Mapping[str, Any], p: Problems) -> tuple[NamespaceCondition, ...]:
    """spec.conditions (ack v0.6), spec.namespaceSelectors (ack, deprecated) and
    spec.namespaceSelector (External Secrets Operator's older spelling), all ORed."""
    found: list[NamespaceCondition] = []
    for i, item in enumerate(_items(spec.get("conditions"), "spec.conditions", p)):
        where = f"spec.conditions[{i}]"
        m = as_mapping(item, where, p)
        regexes = _strings(m.get("namespaceRegexes"), f"{where}.namespaceRegexes", p)
        for j, regex in enumerate(regexes):
            try:
                compile_go_regexp(regex)
            except ValueError as exc:
                p.add(f"{where}.namespaceRegexes[{j}]", f"is not a usable regular expression "
                      f"({exc})", "fix the pattern (Go RE2 syntax)")
        names = _strings(m.get("namespaces"), f"{where}.namespaces", p)
        selector = m.get("namespaceSelector")
        found.append(_selector(selector, f"{where}.namespaceSelector", p, names=names,
                               regexes=regexes))
    for i, item in enumerate(_items(spec.get("namespaceSelectors"), "spec.namespaceSelectors",
                                    p)):
        found.append(_selector(item if item is not None else {},
                               f"spec.namespaceSelectors[{i}]", p))
    if spec.get("namespaceSelector") is not None:
        found.append(_selector(spec.get("namespaceSelector"), "spec.namespaceSelector", p))
    return tuple(found)


def _selector(raw: object, where: str, p: Problems, *, names: Sequence[str] = (),
              regexes: Sequence[str] = ()) -> NamespaceCondition:
    m = as_mapping(raw, where, p)
    labels = _string_map(m.get("matchLabels"), f"{where}.matchLabels", p)
    requirements: list[SelectorRequirement] = []
    for i, item in enumerate(_items(m.get("matchExpressions"), f"{where}.matchExpressions", p)):
        at = f"{where}.matchExpressions[{i}]"
        r = as_mapping(item, at, p)
        req = SelectorRequirement(read_text(r, "key", at, p), read_text(r, "operator", at, p),
                                  _strings(r.get("values"), f"{at}.values", p))
        if req.operator not in _OPERATORS:
            p.add(f"{at}.operator", f"must be one of {', '.join(_OPERATORS)}",
                  "use a Kubernetes label selector operator")
        elif (req.operator in ("In", "NotIn")) != bool(req.values):
            p.add(f"{at}.values", f"does not fit operator {req.operator}",
                  "give values with In/NotIn and none with Exists/DoesNotExist")
        requirements.append(req)
    return NamespaceCondition(
        namespaces=tuple(names), namespace_regexes=tuple(regexes),
        match_labels=labels if raw is not None else None, match_expressions=tuple(requirements))


def _refresh(spec: Mapping[str, Any], p: Problems) -> float | None:
    """spec.rotationInterval (ack v0.6) or spec.refreshTime (External Secrets Operator)."""
    for key in ("rotationInterval", "refreshTime"):
        text = read_text(spec, key, "spec", p)
        if not text:
            continue
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            p.add(f"spec.{key}", f"is not a duration ({exc})", 'write a Go duration, e.g. "1h"')
            return None
        return seconds if seconds > 0 else None
    return None


def _items(raw: object, where: str, p: Problems) -> list[object]:
    return as_items(raw, where, p, MAX_CONDITIONS, "combine them into fewer selectors")


def _strings(raw: object, where: str, p: Problems) -> tuple[str, ...]:
    return as_strings(raw, where, p, limit=MAX_NAMESPACES,
                      fix="use a label selector or a regular expression instead")


def _string_map(raw: object, where: str, p: Problems) -> dict[str, str]:
    return as_string_map(raw, where, p, MAX_METADATA_ITEMS)
