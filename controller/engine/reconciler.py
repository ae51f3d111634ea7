"""One ExternalSecret, end to end: read it, resolve its stores, fetch its values, render the
Secret, write it only if it changed, and report in status and Events.

The sync converges on the current state and is safe to repeat. It reads top to bottom with
early returns; each way it can end is an `Outcome` that tells the controller when to come back.
Safety rules: a Secret this controller did not create is never taken over unless the user says
so; a failed entry keeps its last good keys; nothing here ever logs or reports a secret value.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from controller import model, render
from controller.alicloud.errors import FetchError, Kind
from controller.engine import status as status_mod
from controller.engine.fetcher import Fetcher, FetchRequest
from controller.engine.stores import StoreProblem, StoreResolver
from controller.names import (
    ACK_FINALIZER,
    ADOPT,
    HASH,
    KEYS,
    MANAGED_BY,
    MANAGER,
    SOURCE,
)

log = logging.getLogger(__name__)

# A value read by a poll is reused by syncs while younger than this many intervals: the
# per-secret poll refreshes it every interval, the margin absorbs scheduling delays.
MAX_AGE_FACTOR = 1.5

# Condition reasons
SYNCED = "Synced"
INVALID_SPEC = "InvalidSpec"
SECRET_CONFLICT = "SecretConflict"
FETCH_FAILED = "FetchFailed"
ACCESS_DENIED = "AccessDenied"
INVALID_SECRET = "InvalidSecret"
SECRET_MISSING = "TargetSecretMissing"
WRITE_FAILED = "SecretWriteFailed"


class Kube(Protocol):
    """What the reconciler needs from Kubernetes (implemented over the informers and REST)."""

    def external_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def apply_secret(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def apply_status(self, es: dict[str, Any], status: dict[str, Any]) -> None: ...
    def remove_finalizer(self, es: dict[str, Any], finalizer: str) -> None: ...
    def event(self, es: dict[str, Any], kind: str, reason: str, message: str) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """How a sync ended. `retry`: come back with backoff; `interval`: the poll interval
    (seconds; 0 = no polling); `result` for metrics and logs."""

    result: str  # synced | unchanged | failed | conflict | invalid | gone
    interval: float = 0.0
    retry: bool = False
    ready: bool = False
    reason: str = ""
    requests: frozenset[FetchRequest] = frozenset()  # the KMS reads this object depends on


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        resolver: StoreResolver,
        fetcher: Fetcher,
        *,
        default_interval: float,
        disable_polling: bool,
        on_value: Callable[[bytes], None] | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.kube = kube
        self.resolver = resolver
        self.fetcher = fetcher
        self.default_interval = default_interval
        self.disable_polling = disable_polling
        self.on_value = on_value or (lambda _v: None)
        self.now = now or (lambda: datetime.now(UTC))

    # ---------------------------------------------------------------- entry
    def interval_of(self, es: model.ExternalSecret) -> float:
        if es.spec.refresh_interval is not None:
            return es.spec.refresh_interval
        return 0.0 if self.disable_polling else self.default_interval

    def reconcile(self, namespace: str, name: str, *, fresh: bool = False) -> Outcome:
        raw = self.kube.external_secret(namespace, name)
        if raw is None:
            return Outcome("gone")
        meta = raw.get("metadata", {})
        ack_managed = ACK_FINALIZER in (meta.get("finalizers") or [])
        if ack_managed:
            # ack-secret-manager's finalizer would block deletion forever now that it is gone.
            self.kube.remove_finalizer(raw, ACK_FINALIZER)
        if meta.get("deletionTimestamp"):
            return Outcome("gone")
        try:
            es = model.parse_external_secret(raw)
        except model.SpecError as exc:
            return self._invalid(raw, str(exc))
        used: set[FetchRequest] = set()
        outcome = self._sync(raw, es, fresh=fresh, ack_managed=ack_managed, used=used)
        return dataclasses.replace(outcome, requests=frozenset(used))

    # ----------------------------------------------------------------- sync
    def _sync(self, raw: dict[str, Any], es: model.ExternalSecret, *, fresh: bool,
              ack_managed: bool, used: set[FetchRequest]) -> Outcome:
        interval = self.interval_of(es)
        target = es.spec.target
        existing = self.kube.secret(es.namespace, target.name)
        merge = target.creation_policy == model.CreationPolicy.MERGE
        adopt = ack_managed or (raw.get("metadata", {}).get("annotations") or {}).get(
            ADOPT) == "true"
        if existing is not None and not merge and not adopt and not _is_ours(existing, es):
            return self._conflict(raw, es, interval)
        if existing is None and merge:
            message = (f"spec.target.creationPolicy is Merge but Secret {es.namespace}/"
                       f"{target.name} does not exist; create it or use creationPolicy Owner")
            return self._finish(raw, es, False, SECRET_MISSING, message, [], False, interval,
                                "failed", retry=True)
        fetched = self._fetch(es, interval, fresh, used)
        previous, ownership = _previous(existing)
        result = render.render(es, fetched, previous, ownership)
        entries = [status_mod.EntryStatus(e.entry_id, e.secret_name, e.version_id,
                                          e.state.value, e.reason) for e in result.entries]
        if result.problems:
            message = "; ".join(str(p) for p in result.problems)
            return self._finish(raw, es, False, INVALID_SECRET, message, entries, False,
                                interval, "invalid", retry=bool(result.failed_entries))
        if existing is None and not result.data and result.failed_entries:
            reason, message = self._failure_summary(result)
            return self._finish(raw, es, False, reason, message, entries, False, interval,
                                "failed", retry=True)
        try:
            wrote, changed_keys = self._write(es, existing, result, merge)
        except WriteError as exc:
            return self._finish(raw, es, False, WRITE_FAILED, str(exc), entries, False,
                                interval, "failed", retry=exc.retry)
        if wrote:
            verb = "Created" if existing is None else "Updated"
            keys = ", ".join(changed_keys) if changed_keys else "metadata"
            self.kube.event(raw, "Normal", verb,
                            f"{verb} Secret {target.name} (keys: {keys})"[:1000])
        if result.failed_entries:
            reason, message = self._failure_summary(result)
            return self._finish(raw, es, False, reason, message, entries, wrote, interval,
                                "failed", retry=True)
        message = f"Secret {target.name} is in sync with KMS"
        return self._finish(raw, es, True, SYNCED, message, entries, wrote, interval,
                            "synced" if wrote else "unchanged")

    def _fetch(self, es: model.ExternalSecret, interval: float, fresh: bool,
               requests: set[FetchRequest]) -> dict[model.FetchKey, render.FetchResult]:
        """Values for every entry, from the fetcher's cache when younger than the interval
        (the manager's per-secret polls keep them fresh), else from KMS."""
        out: dict[model.FetchKey, render.FetchResult] = {}
        max_age = interval * MAX_AGE_FACTOR if interval > 0 else 0.0
        for entry in es.spec.entries:
            key = entry.fetch_key
            if key in out:
                continue
            try:
                source = self.resolver.resolve(es, entry)
            except StoreProblem as problem:
                out[key] = render.FetchFailure(problem.reason, str(problem))
                continue
            request = FetchRequest(source.identity, source.endpoint, entry.key,
                                   entry.version_id, entry.version_stage)
            requests.add(request)
            value = self.fetcher.fetch(request, max_age, fresh=fresh)
            if isinstance(value, FetchError):
                out[key] = render.FetchFailure(value.kind.value, value.reason)
                continue
            self.on_value(value.data)
            if value.data_type == "binary":
                out[key] = render.FetchedValue(base64.b64encode(value.data).decode(),
                                               render.DataType.BINARY, value.version_id)
            else:
                out[key] = render.FetchedValue(value.data, render.DataType.TEXT,
                                               value.version_id)
        return out

    # ---------------------------------------------------------------- write
    def _write(self, es: model.ExternalSecret, existing: dict[str, Any] | None,
               result: render.RenderResult, merge: bool) -> tuple[bool, list[str]]:
        body = _secret_body(es, result, merge)
        current = _data_of(existing)
        ours = result.data
        data_same = all(current.get(k) == v for k, v in ours.items()) and (
            merge or set(current) == set(ours))
        annotations = (existing or {}).get("metadata", {}).get("annotations") or {}
        if existing is not None and data_same and \
                annotations.get(HASH) == body["metadata"]["annotations"][HASH]:
            return False, []
        changed = sorted(k for k in set(ours) | set(current)
                         if current.get(k) != ours.get(k) and (k in ours or not merge))
        try:
            self.kube.apply_secret(body)
        except Exception as exc:  # noqa: BLE001 - reported in status, retried
            raise WriteError.from_exception(es, exc) from None
        return True, changed

    # --------------------------------------------------------------- endings
    def _failure_summary(self, result: render.RenderResult) -> tuple[str, str]:
        failed = result.failed_entries
        reasons = {e.reason for e in failed}
        if reasons & {Kind.DENIED.value}:
            reason = ACCESS_DENIED
        elif len(reasons) == 1 and next(iter(reasons)) in (
                "StoreNotFound", "CrossNamespaceRefused", "InvalidStore", "NoCredentials",
                "CredentialsNotFound", "StoreNotAllowed"):
            reason = next(iter(reasons))
        else:
            reason = FETCH_FAILED
        parts = [f"{e.entry_id} (KMS secret {e.secret_name}): {e.message or e.reason}"
                 for e in failed]
        kept = sum(len(e.keys) for e in failed)
        message = (f"{len(failed)} of {len(result.entries)} entries failed; "
                   f"{kept} key(s) keep their last synced value. " + " | ".join(parts))
        return reason, message[:2000]

    def _invalid(self, raw: dict[str, Any], message: str) -> Outcome:
        meta = raw.get("metadata", {})
        generation = int(meta.get("generation") or 0)
        old = raw.get("status")
        new = status_mod.build(old, ready=False, reason=INVALID_SPEC, message=message,
                               generation=generation,
                               secret_name=str((old or {}).get("secretName", "")),
                               entries=[], wrote=False, now=self.now())
        if status_mod.changed(old, new):
            self.kube.apply_status(raw, new)
        self.kube.event(raw, "Warning", INVALID_SPEC, message)
        return Outcome("invalid", interval=0.0, retry=False, reason=INVALID_SPEC)

    def _conflict(self, raw: dict[str, Any], es: model.ExternalSecret,
                  interval: float) -> Outcome:
        name = es.spec.target.name
        message = (f"Secret {es.namespace}/{name} exists and was not created by this "
                   f"ExternalSecret; it is left untouched. Set spec.target.creationPolicy: "
                   f"Merge to add keys to it, annotate the ExternalSecret with {ADOPT}: "
                   f"\"true\" to take it over, or choose another spec.target.name")
        # Come back (with backoff, at least once per interval): the Secret may go away.
        return self._finish(raw, es, False, SECRET_CONFLICT, message, [], False, interval,
                            "conflict", retry=True)

    def _finish(self, raw: dict[str, Any], es: model.ExternalSecret, ready: bool,
                reason: str, message: str, entries: list[status_mod.EntryStatus],
                wrote: bool, interval: float, result: str, *, retry: bool = False) -> Outcome:
        old = raw.get("status")
        new = status_mod.build(old, ready=ready, reason=reason, message=message,
                               generation=es.generation, secret_name=es.spec.target.name,
                               entries=entries, wrote=wrote, now=self.now())
        if status_mod.changed(old, new):
            self.kube.apply_status(raw, new)
        if not ready:
            self.kube.event(raw, "Warning", reason, message)
        return Outcome(result, interval=interval, retry=retry, ready=ready, reason=reason)


class WriteError(Exception):
    def __init__(self, message: str, retry: bool) -> None:
        self.retry = retry
        super().__init__(message)

    @classmethod
    def from_exception(cls, es: model.ExternalSecret, exc: Exception) -> WriteError:
        status = int(getattr(exc, "status", 0) or 0)
        name = f"{es.namespace}/{es.spec.target.name}"
        if status == 422:
            detail = str(getattr(exc, "message", ""))[:300]
            return cls(f"the apiserver refused Secret {name} (422): {detail}. If the Secret "
                       "type changed, delete the Secret so it can be recreated", retry=False)
        if status == 403:
            return cls(f"the controller may not write Secret {name} (403); check its RBAC",
                       retry=True)
        return cls(f"writing Secret {name} failed ({status or type(exc).__name__}); "
                   "will retry", retry=True)


# ------------------------------------------------------------------- helpers
def _is_ours(secret: dict[str, Any], es: model.ExternalSecret) -> bool:
    meta = secret.get("metadata", {})
    if any(ref.get("uid") == es.uid for ref in meta.get("ownerReferences") or []):
        return True
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return labels.get(MANAGED_BY) == MANAGER and annotations.get(SOURCE) == es.name


def _data_of(secret: dict[str, Any] | None) -> dict[str, bytes]:
    if secret is None:
        return {}
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


def _previous(existing: dict[str, Any] | None,
              ) -> tuple[dict[str, bytes], Mapping[str, list[str]] | None]:
    """The data this controller wrote last time, and its ownership record."""
    if existing is None:
        return {}, None
    annotations = existing.get("metadata", {}).get("annotations") or {}
    ownership = render.ownership_from_json(annotations.get(KEYS))
    data = _data_of(existing)
    if ownership is not None:
        owned = {k for keys in ownership.values() for k in keys}
        data = {k: v for k, v in data.items() if k in owned}
    return data, ownership


def _secret_body(es: model.ExternalSecret, result: render.RenderResult,
                 merge: bool) -> dict[str, Any]:
    target = es.spec.target
    owner = target.creation_policy == model.CreationPolicy.OWNER and \
        target.deletion_policy == model.DeletionPolicy.DELETE
    labels = {**target.template.labels, MANAGED_BY: MANAGER}
    annotations = {**target.template.annotations, SOURCE: es.name,
                   KEYS: render.ownership_to_json(result.ownership)}
    secret_type = "" if merge else es.spec.secret_type
    marker = {**annotations, "owner-reference": es.uid if owner else ""}
    annotations[HASH] = render.content_hash(result.data, secret_type, labels, marker)
    metadata: dict[str, Any] = {"name": target.name, "namespace": es.namespace,
                                "labels": labels, "annotations": annotations}
    if owner:
        metadata["ownerReferences"] = [{
            "apiVersion": "alibabacloud.com/v1alpha1", "kind": "ExternalSecret",
            "name": es.name, "uid": es.uid, "controller": True,
            "blockOwnerDeletion": False}]
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata,
                            "data": {k: base64.b64encode(v).decode()
                                     for k, v in result.data.items()}}
    if secret_type:
        body["type"] = secret_type
    return body
