"""The ClusterExternalSecret: its typed, validated view, parsed once from the raw object with
the API's shared toolkit (fields.py). Field names are ack-secret-manager v0.6's, with External
Secrets Operator's older spellings (namespaceSelector, refreshTime) read as well.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.api.fields import (
    DNS_SUBDOMAIN_PATTERN,
    MAX_NAME_LENGTH,
    Problems,
    as_items,
    as_mapping,
    as_string_map,
    parse_duration,
    read_text,
)
from controller.api.secretstore import (
    ConditionLimits,
    NamespaceCondition,
    parse_condition,
    parse_selector,
)

OWNER_LABEL = "alibabacloud.com/cluster-external-secret"  # value: the ClusterExternalSecret

# hack/gen_crds.py puts these bounds into the CRD (tests/unit/test_crd_schema.py checks them).
MAX_NAMESPACES = 1000  # ExternalSecrets one ClusterExternalSecret provisions
MAX_CONDITIONS = 50  # spec.conditions / spec.namespaceSelectors items
MAX_METADATA_ITEMS = 64  # externalSecretMetadata labels / annotations

_NAME = re.compile(DNS_SUBDOMAIN_PATTERN)
_LIMITS = ConditionLimits(
    items=MAX_CONDITIONS, items_fix="combine them into fewer selectors",
    names=MAX_NAMESPACES, names_fix="use a label selector or a regular expression instead",
    labels=MAX_METADATA_ITEMS)


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
    found = [parse_condition(item, f"spec.conditions[{i}]", p, _LIMITS)
             for i, item in enumerate(_items(spec.get("conditions"), "spec.conditions", p))]
    for i, item in enumerate(_items(spec.get("namespaceSelectors"), "spec.namespaceSelectors",
                                    p)):
        found.append(parse_selector(item if item is not None else {},
                                    f"spec.namespaceSelectors[{i}]", p, _LIMITS))
    if spec.get("namespaceSelector") is not None:
        found.append(parse_selector(spec.get("namespaceSelector"), "spec.namespaceSelector", p,
                                    _LIMITS))
    return tuple(found)


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
    return as_items(raw, where, p, MAX_CONDITIONS, _LIMITS.items_fix)


def _string_map(raw: object, where: str, p: Problems) -> dict[str, str]:
    return as_string_map(raw, where, p, MAX_METADATA_ITEMS)
