"""ClusterExternalSecret, decided without I/O: which namespaces get an ExternalSecret, what that
ExternalSecret says, which existing ones are ours to update or delete, and the status.

A ClusterExternalSecret (cluster-scoped, ack-secret-manager v0.6 field names) stamps
`spec.externalSecretSpec` into every namespace its selectors choose. The loop in
clusterexternalsecret/controller.py feeds this module the cached objects and does the writes.

Ownership follows docs/security.md: an ExternalSecret belongs to a ClusterExternalSecret only
by an ownerReference to its uid. The label OWNER_LABEL only lets the loop watch its objects; it
proves nothing. An ExternalSecret of the same name that is not ours is a conflict, reported in
status, never updated or deleted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller import api

GROUP_VERSION = "alibabacloud.com/v1alpha1"
KIND = "ClusterExternalSecret"
OWNER_LABEL = "alibabacloud.com/cluster-external-secret"  # value: the ClusterExternalSecret
FIELD_MANAGER = "ack-secret-manager/cluster-external-secret"

# hack/gen_crds.py puts the spec bounds into the CRD and names the status ones in its
# descriptions (tests/unit/test_crd_schema.py checks them).
MAX_NAMESPACES = 1000  # ExternalSecrets one ClusterExternalSecret provisions
MAX_FAILED_LISTED = 100  # failedNamespaces entries written to status
MAX_CONDITIONS = 50  # spec.conditions / spec.namespaceSelectors items
MAX_METADATA_ITEMS = 64  # externalSecretMetadata labels / annotations
MAX_REASON = 512  # characters of one failure reason in status

_NAME = re.compile(api.DNS_SUBDOMAIN_PATTERN)
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
    conditions: tuple[api.NamespaceCondition, ...]
    refresh: float | None  # seconds between re-checks of every namespace; None: on change only

    def selects(self, namespace: str, labels: Mapping[str, str]) -> bool:
        return not self.conditions or any(c.admits(namespace, labels) for c in self.conditions)


class _Problems:
    def __init__(self, obj: str) -> None:
        self.obj = obj
        self.found: list[api.SpecError] = []

    def add(self, where: str, message: str, fix: str) -> None:
        self.found.append(api.SpecError(where, message, fix, self.obj))

    def raise_if_any(self) -> None:
        if self.found:
            first = self.found[0]
            first.errors = tuple(self.found)
            raise first


def parse(raw: Mapping[str, Any]) -> ClusterExternalSecret:
    """Parse a raw ClusterExternalSecret; raises api.SpecError naming every bad field."""
    meta = raw.get("metadata") or {}
    name = str(meta.get("name", ""))
    p = _Problems(f"ClusterExternalSecret {name}")
    spec = _mapping(raw.get("spec"), "spec", p)
    es_spec = _mapping(spec.get("externalSecretSpec"), "spec.externalSecretSpec", p)
    if not es_spec.get("data") and not es_spec.get("dataProcess"):
        p.add("spec.externalSecretSpec", "has no entry in data or dataProcess",
              "give the ExternalSecret spec to stamp into each namespace")
    es_name = _text(spec, "externalSecretName", "spec", p) or name
    if len(es_name) > api.MAX_NAME_LENGTH or not _NAME.match(es_name):
        p.add("spec.externalSecretName", f"{es_name[:63]!r} is not a valid object name",
              "use lower-case letters, digits, '-' and '.'")
    metadata = _mapping(spec.get("externalSecretMetadata"), "spec.externalSecretMetadata", p)
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


def _conditions(spec: Mapping[str, Any], p: _Problems) -> tuple[api.NamespaceCondition, ...]:
    """spec.conditions (ack v0.6), spec.namespaceSelectors (ack, deprecated) and
    spec.namespaceSelector (External Secrets Operator's older spelling), all ORed."""
    found: list[api.NamespaceCondition] = []
    for i, item in enumerate(_items(spec.get("conditions"), "spec.conditions", p)):
        where = f"spec.conditions[{i}]"
        m = _mapping(item, where, p)
        regexes = _strings(m.get("namespaceRegexes"), f"{where}.namespaceRegexes", p)
        for j, regex in enumerate(regexes):
            try:
                api.compile_go_regexp(regex)
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


def _selector(raw: object, where: str, p: _Problems, *, names: Sequence[str] = (),
              regexes: Sequence[str] = ()) -> api.NamespaceCondition:
    m = _mapping(raw, where, p)
    labels = _string_map(m.get("matchLabels"), f"{where}.matchLabels", p)
    requirements: list[api.SelectorRequirement] = []
    for i, item in enumerate(_items(m.get("matchExpressions"), f"{where}.matchExpressions", p)):
        at = f"{where}.matchExpressions[{i}]"
        r = _mapping(item, at, p)
        req = api.SelectorRequirement(_text(r, "key", at, p), _text(r, "operator", at, p),
                                        _strings(r.get("values"), f"{at}.values", p))
        if req.operator not in _OPERATORS:
            p.add(f"{at}.operator", f"must be one of {', '.join(_OPERATORS)}",
                  "use a Kubernetes label selector operator")
        elif (req.operator in ("In", "NotIn")) != bool(req.values):
            p.add(f"{at}.values", f"does not fit operator {req.operator}",
                  "give values with In/NotIn and none with Exists/DoesNotExist")
        requirements.append(req)
    return api.NamespaceCondition(
        namespaces=tuple(names), namespace_regexes=tuple(regexes),
        match_labels=labels if raw is not None else None, match_expressions=tuple(requirements))


def _refresh(spec: Mapping[str, Any], p: _Problems) -> float | None:
    """spec.rotationInterval (ack v0.6) or spec.refreshTime (External Secrets Operator)."""
    for key in ("rotationInterval", "refreshTime"):
        text = _text(spec, key, "spec", p)
        if not text:
            continue
        try:
            seconds = api.parse_duration(text)
        except ValueError as exc:
            p.add(f"spec.{key}", f"is not a duration ({exc})", 'write a Go duration, e.g. "1h"')
            return None
        return seconds if seconds > 0 else None
    return None


# ------------------------------------------------------------------ raw dict readers


def _mapping(raw: object, where: str, p: _Problems) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return raw
    p.add(where, "must be an object", "write it as a mapping of fields (name: value)")
    return {}


def _items(raw: object, where: str, p: _Problems) -> list[object]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        p.add(where, "must be a list", "write it as a YAML list")
        return []
    if len(raw) > MAX_CONDITIONS:
        p.add(where, f"has {len(raw)} items (at most {MAX_CONDITIONS} allowed)",
              "combine them into fewer selectors")
        return raw[:MAX_CONDITIONS]
    return raw


def _text(m: Mapping[str, Any], key: str, where: str, p: _Problems) -> str:
    value = m.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > api.MAX_FIELD_LENGTH:
        p.add(f"{where}.{key}", f"must be a string of at most {api.MAX_FIELD_LENGTH} "
              "characters", "quote the value and keep it short")
        return ""
    return value


def _strings(raw: object, where: str, p: _Problems) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        p.add(where, "must be a list", "write it as a YAML list")
        return ()
    if len(raw) > MAX_NAMESPACES:
        p.add(where, f"has {len(raw)} items (at most {MAX_NAMESPACES} allowed)",
              "use a label selector or a regular expression instead")
    out = []
    for i, value in enumerate(raw[:MAX_NAMESPACES]):
        if isinstance(value, str) and len(value) <= api.MAX_FIELD_LENGTH:
            out.append(value)
        else:
            p.add(f"{where}[{i}]", "must be a short string", "quote the value")
    return tuple(out)


def _string_map(raw: object, where: str, p: _Problems) -> dict[str, str]:
    m = _mapping(raw, where, p)
    if len(m) > MAX_METADATA_ITEMS:
        p.add(where, f"has {len(m)} entries (at most {MAX_METADATA_ITEMS} allowed)",
              "remove some")
        return {}
    out: dict[str, str] = {}
    for key, value in m.items():
        if isinstance(value, str) and len(value) <= api.MAX_FIELD_LENGTH:
            out[str(key)] = value
        else:
            p.add(f"{where}.{str(key)[:63]}", "must be a short string", "quote the value")
    return out


# ------------------------------------------------------------------ namespaces


@dataclass(frozen=True)
class Selection:
    """The namespaces a ClusterExternalSecret provisions (at most MAX_NAMESPACES, by name),
    and the ones it selects beyond that bound."""

    namespaces: tuple[str, ...]
    over_limit: tuple[str, ...]

    @property
    def matching(self) -> frozenset[str]:
        return frozenset(self.namespaces) | frozenset(self.over_limit)


def select(ces: ClusterExternalSecret, namespaces: Iterable[Mapping[str, Any]],
           allowed: Callable[[str], bool], limit: int = MAX_NAMESPACES) -> Selection:
    """The live namespaces (not terminating) that `ces` selects and the controller may write
    in (`allowed`: --watch-namespaces / --exclude-namespaces)."""
    chosen = []
    for ns in namespaces:
        meta = ns.get("metadata") or {}
        name = str(meta.get("name", ""))
        if not name or meta.get("deletionTimestamp") or \
                (ns.get("status") or {}).get("phase") == "Terminating":
            continue
        if allowed(name) and ces.selects(name, meta.get("labels") or {}):
            chosen.append(name)
    chosen.sort()
    return Selection(tuple(chosen[:limit]), tuple(chosen[limit:]))


# ------------------------------------------------------------------ ExternalSecrets


def owner_reference(ces: ClusterExternalSecret) -> dict[str, Any]:
    return {"apiVersion": GROUP_VERSION, "kind": KIND, "name": ces.name, "uid": ces.uid,
            "controller": True}


def desired(ces: ClusterExternalSecret, namespace: str) -> dict[str, Any]:
    """The ExternalSecret `ces` applies in `namespace` (a server-side apply body)."""
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "ExternalSecret",
        "metadata": {
            "name": ces.es_name,
            "namespace": namespace,
            "labels": {**ces.labels, OWNER_LABEL: _label_value(ces.name)},
            "annotations": dict(ces.annotations),
            "ownerReferences": [owner_reference(ces)],
        },
        "spec": dict(ces.es_spec),
    }


def _label_value(name: str) -> str:
    """A label value is at most 63 characters; longer names are cut (the label proves
    nothing, it only narrows the watch)."""
    return name[:63].rstrip("-.")


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether an ExternalSecret belongs to the ClusterExternalSecret with `uid`: an
    ownerReference to that uid is the only proof."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return bool(uid) and any(r.get("uid") == uid for r in refs if isinstance(r, Mapping))


def up_to_date(obj: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    """Whether an owned ExternalSecret already says what `want` says (no write needed)."""
    meta, wanted = obj.get("metadata") or {}, want["metadata"]
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    return (obj.get("spec") == want["spec"]
            and all(labels.get(k) == v for k, v in wanted["labels"].items())
            and all(annotations.get(k) == v for k, v in wanted["annotations"].items()))


def created_by_others(applied: Mapping[str, Any], manager: str = FIELD_MANAGER) -> list[str]:
    """Field managers other than ours on an object our apply just returned: when there are
    any, the object existed before our 'create' (someone made it in the meantime)."""
    entries = (applied.get("metadata") or {}).get("managedFields") or []
    return sorted({str(e.get("manager", "")) for e in entries
                   if isinstance(e, Mapping) and e.get("manager") != manager})


def stale(ces: ClusterExternalSecret, owned: Iterable[Mapping[str, Any]],
          selection: Selection) -> list[tuple[str, str, str]]:
    """(namespace, name, uid) of ExternalSecrets of `ces` to delete: in namespaces it no
    longer selects, or under a name it no longer uses. Selected namespaces beyond the bound
    keep theirs (they did not stop matching)."""
    matching = selection.matching
    out = []
    for obj in owned:
        meta = obj.get("metadata") or {}
        if not owned_by(obj, ces.uid):
            continue
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        if ns not in matching or name != ces.es_name:
            out.append((ns, name, str(meta.get("uid", ""))))
    return sorted(out)


def conflict_reason(namespace: str, name: str) -> str:
    """Why `namespace` has no ExternalSecret of ours. It names no field manager or other
    text a tenant chose: this status is the cluster admin's."""
    return (f"ExternalSecret {namespace}/{name} exists and was not created by this "
            "ClusterExternalSecret; it is left alone: delete or rename it, or set "
            "spec.externalSecretName to another name")


def recorded(status: Mapping[str, Any] | None, namespace: str) -> str | None:
    """What the last full pass recorded for `namespace`: "" provisioned, the failure reason,
    or None when it is in neither list."""
    status = status or {}
    if namespace in (status.get("provisionedNamespaces") or []):
        return ""
    for item in status.get("failedNamespaces") or []:
        if isinstance(item, Mapping) and item.get("namespace") == namespace:
            return str(item.get("reason", ""))
    return None


# ------------------------------------------------------------------ status


@dataclass
class Outcome:
    """What one pass over the namespaces achieved."""

    provisioned: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # namespace -> reason


def status(outcome: Outcome, selection: Selection | None, *, generation: int, es_name: str,
           now: str, invalid: api.SpecError | None = None,
           previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The status to write: provisioned and failed namespaces and the Ready condition."""
    failed = [{"namespace": ns, "reason": reason[:MAX_REASON]}
              for ns, reason in sorted(outcome.failed.items())]
    over = list(selection.over_limit) if selection else []
    if invalid is not None:
        ready, reason, message = "False", "InvalidSpec", str(invalid)[:MAX_REASON]
    elif selection is not None and over:
        ready, reason = "False", "TooManyNamespaces"
        message = (f"{len(selection.namespaces) + len(over)} namespaces selected, at most "
                   f"{MAX_NAMESPACES} are provisioned (by name); not provisioned: "
                   f"{', '.join(over[:5])}{' ...' if len(over) > 5 else ''}; narrow the "
                   "selectors or split the ClusterExternalSecret")
    elif failed:
        ready, reason = "False", "NamespacesFailed"
        message = (f"{len(failed)} of {len(failed) + len(outcome.provisioned)} namespaces "
                   "failed; see failedNamespaces")
    else:
        ready, reason = "True", "Provisioned"
        message = f"ExternalSecret provisioned in {len(outcome.provisioned)} namespace(s)"
    condition = {"type": "Ready", "status": ready, "reason": reason, "message": message,
                 "lastTransitionTime": _transition(previous, ready, now),
                 "observedGeneration": generation}
    return {
        "externalSecretName": es_name,
        "observedGeneration": generation,
        "provisionedNamespaces": sorted(outcome.provisioned),
        "failedNamespaces": failed[:MAX_FAILED_LISTED],
        "conditions": [condition],
    }


def _transition(previous: Mapping[str, Any] | None, ready: str, now: str) -> str:
    for c in (previous or {}).get("conditions") or []:
        if c.get("type") == "Ready" and c.get("status") == ready and c.get("lastTransitionTime"):
            return str(c["lastTransitionTime"])
    return now


def status_changed(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change any field it sets."""
    old = previous or {}
    return any(old.get(key) != value for key, value in new.items())
