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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller import api
from controller.api.clusterexternalsecret import (
    MAX_NAMESPACES,
    OWNER_LABEL,
    ClusterExternalSecret,
)

GROUP_VERSION = "alibabacloud.com/v1alpha1"
KIND = "ClusterExternalSecret"
FIELD_MANAGER = "ack-secret-manager/cluster-external-secret"

# hack/gen_crds.py names these status bounds in its descriptions.
MAX_FAILED_LISTED = 100  # failedNamespaces entries written to status
MAX_REASON = 512  # characters of one failure reason in status


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
