"""One ExternalSecret, end to end: read it, resolve its stores, fetch its values, render the
Secret, write it only if it changed, and report in status and Events.

The sync converges on the current state and is safe to repeat. It reads top to bottom with
early returns; each way it can end is an `Outcome` that tells the controller when to come back.
Safety rules: a Secret is an ExternalSecret's only by an ownerReference to its uid or the
uid annotation that only its creator writes (never by labels); a Secret this ExternalSecret did
not create is never taken over unless the user says so (the adopt annotation), and never when
another ExternalSecret owns it; each ExternalSecret writes with its own field manager and forces
fields only on a Secret proven its own, so Merge never removes or steals another writer's keys;
a failed entry keeps its last good keys; an unexpected error in one sync becomes that object's
Ready=False, never a crash; nothing here ever logs or reports a secret value.

Fairness: the CPU-bound part of a sync (parsing fetched values, templates, rendering; on a
budget) runs under its namespace's lock (`render_gate`, controller/gates.py), so one namespace
renders one object at a time. In CPython the renders of all threads share one interpreter
lock anyway, so this costs a namespace no throughput, but a tenant whose templates are heavy
competes with every other tenant as one thread, not as one per worker. Fetches and writes
(I/O) stay parallel.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from controller import api, gotemplate
from controller.externalsecret import render, templates
from controller.externalsecret import status as status_mod
from controller.externalsecret.fetcher import Fetcher, FetchRequest
from controller.gates import KeyedGates
from controller.kube.informer import NAMESPACE_CACHE_FULL, overflow_message
from controller.names import (
    ACK_FINALIZER,
    ADOPT,
    HASH,
    KEYS,
    MANAGED_BY,
    MANAGER,
    MERGE_TARGET,
    OWNER_UID,
    SOURCE,
    field_manager,
    merge_annotation,
)
from controller.ops.memory import release_free_memory
from controller.ops.neterrors import out_of_reach
from controller.providers import FetchError, Kind, on_behalf_of
from controller.runtime.controller import Result
from controller.secretstore.stores import StoreProblem, StoreResolver

log = logging.getLogger(__name__)
# The API server out of reach mid-sync: a logger of its own, folded (ops/lognoise.py).
unreachable = logging.getLogger(__name__ + ".unreachable")

# A value read by a poll is reused by syncs while younger than this many intervals: the
# per-secret poll refreshes it every interval, the margin absorbs scheduling delays.
MAX_AGE_FACTOR = 1.5
# The longest wait before a failed sync of an object that is not polled is tried again.
RETRY_CAP_NO_POLL = 300.0
# A transient KMS fault (throttling, 5xx, timeout) does not flip Ready while the value was read
# successfully less than this many intervals ago: the Secret's data is neither wrong nor old.
GRACE_FACTOR = 2.0
# A sync that read more than this many bytes of values returns the heap's free pages to the
# kernel when it ends (throttled, ops/memory.py): its copies (values, rendered data, the
# request) are freed then, and would otherwise stay resident as the high-water mark of every
# such burst (8 objects of 100 x 60 KB values: +47 MiB RSS that stayed).
HEAVY_SYNC_BYTES = 1 << 20

# Condition reasons
SYNCED = "Synced"
INVALID_SPEC = "InvalidSpec"
SECRET_CONFLICT = "SecretConflict"
FETCH_FAILED = "FetchFailed"
SECRET_DELETED = "SecretDeleted"  # Event of --cleanup-secret-on-failure
ACCESS_DENIED = "AccessDenied"
INVALID_SECRET = "InvalidSecret"
SECRET_MISSING = "TargetSecretMissing"
WRITE_FAILED = "SecretWriteFailed"
INTERNAL_ERROR = "InternalError"
API_UNREACHABLE = "APIServerUnreachable"  # an Outcome's reason only: no status gets through
SPEC_ADJUSTED = "SpecAdjusted"
BUDGET_EXCEEDED = render.BUDGET_EXCEEDED  # the sync's template/parse budget stopped it
# Entry reasons that name the problem better than FetchFailed: when every failed entry has
# the same one, it is the object's reason (the store's problems, and what the value was
# turned into: jmesPath, key names).
_OWN_REASONS = frozenset({
    "StoreNotFound", "CrossNamespaceRefused", "InvalidStore", "NoCredentials",
    "CredentialsNotFound", "CredentialsNotReadable", "StoreNotAllowed",
    "ControllerIdentityRefused", "EndpointRefused", "UnsupportedStore", "InsecureTLSRefused",
    "ClusterSecretStoreDisabled", "PrivateCARefused", BUDGET_EXCEEDED, NAMESPACE_CACHE_FULL,
    INVALID_SECRET, render.JMES_PATH_NO_MATCH, render.JMES_PATH_FAILED})


@dataclass(frozen=True)
class SyncBudgetLimits:
    """What one sync of one ExternalSecret may spend on templates and parsing fetched values
    (--sync-budget-bytes, --sync-budget-steps; docs/security.md, "Budgets")."""

    max_bytes: int = gotemplate.DEFAULT_SYNC_BYTES
    max_steps: int = gotemplate.DEFAULT_SYNC_STEPS

    def new(self) -> gotemplate.SyncBudget:
        return gotemplate.SyncBudget(self.max_bytes, self.max_steps)


class _OverBudget:
    """The syncs that went over their budget, by ExternalSecret uid and a digest of all they
    read (the spec, the fetched values, templateFrom's texts): a retry with the same inputs
    fails at once with the same message instead of spending the budget again (a hostile
    object would otherwise cost its whole budget at every backoff step). Bounded, LRU."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_uid: collections.OrderedDict[
            str, tuple[bytes, str, list[status_mod.EntryStatus]]] = collections.OrderedDict()

    def get(self, uid: str, digest: bytes) -> tuple[str, list[status_mod.EntryStatus]] | None:
        with self._lock:
            found = self._by_uid.get(uid)
            if found is None or found[0] != digest:
                return None
            self._by_uid.move_to_end(uid)
            return found[1], list(found[2])

    def put(self, uid: str, digest: bytes, message: str,
            entries: list[status_mod.EntryStatus]) -> None:
        with self._lock:
            self._by_uid[uid] = (digest, message, list(entries))
            self._by_uid.move_to_end(uid)
            while len(self._by_uid) > self.LIMIT:
                self._by_uid.popitem(last=False)

    def forget(self, uid: str) -> None:
        with self._lock:
            self._by_uid.pop(uid, None)


def _inputs_digest(raw: dict[str, Any], fetched: Mapping[api.FetchKey, render.FetchResult],
                   sources: Mapping[templates.SourceKey, str | None]) -> bytes:
    """sha256 of everything a render reads; never stored with the values themselves."""
    digest = hashlib.sha256(json.dumps(raw.get("spec"), sort_keys=True, default=str).encode())
    for key in sorted(fetched, key=repr):
        result = fetched[key]
        digest.update(repr(key).encode())
        if isinstance(result, render.FetchedValue):
            value = result.value.encode() if isinstance(result.value, str) else result.value
            digest.update(b"v%d:" % len(value) + value + result.data_type.value.encode())
        else:
            digest.update(f"f:{result.reason}".encode())
    for source_key in sorted(sources):
        text = sources[source_key]
        digest.update(repr(source_key).encode())
        digest.update(b"-" if text is None else
                      b"s%d:" % len(text) + text.encode("utf-8", "surrogateescape"))
    return digest.digest()


class Kube(Protocol):
    """What the reconciler needs from Kubernetes (implemented over the informers and REST)."""

    def external_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def apply_secret(self, body: dict[str, Any], *, manager: str,
                     force: bool) -> dict[str, Any]: ...
    def release_fields(self, namespace: str, name: str, manager: str) -> None: ...
    def delete_secret(self, namespace: str, name: str, uid: str) -> None: ...
    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def read_secret_key(self, namespace: str, name: str, key: str) -> bytes | None: ...
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
    degraded: bool = False  # a transient fault while the data is still fresh (Ready stays)
    recheck: bool = False  # sync again after `interval` (templates read ConfigMaps/Secrets)
    message: str = ""  # why not Ready (scrubbed, as in status); "" when Ready

    def requeue(self) -> Result:
        """When the sync loop comes back to this object: with backoff after a failure (at
        most its poll interval, or RETRY_CAP_NO_POLL without polling), after the interval
        when its templates read ConfigMaps or Secrets (nothing else tells of their changes),
        else not (its polls, watch events and triggers do). "gone" is never retried."""
        if self.result == "gone":
            return Result()
        if self.retry:
            return Result.retry(cap=self.interval if self.interval > 0 else RETRY_CAP_NO_POLL)
        if self.recheck:
            return Result.after(self.interval)
        return Result()


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        resolver: StoreResolver,
        fetcher: Fetcher,
        *,
        shape: api.Shape,
        default_interval: float,
        disable_polling: bool,
        on_value: Callable[[bytes], None] | None = None,
        now: Callable[[], datetime] | None = None,
        bounds: api.IntervalBounds = api.DEFAULT_BOUNDS,
        scrub: Callable[[str], str] | None = None,
        cleanup_on_failure: bool = False,
        budget: SyncBudgetLimits | None = None,
    ) -> None:
        self.bounds = bounds
        self.shape = shape  # the provider names the installed sources serve (registry)
        # --cleanup-secret-on-failure: an owned Secret is deleted when EVERY source fails.
        self.cleanup_on_failure = cleanup_on_failure
        self.budget = budget or SyncBudgetLimits()
        self._over_budget = _OverBudget()
        # One lock per namespace, held while that namespace's objects render (the module
        # docstring); a namespace's lock exists only while someone holds or waits for it.
        self.render_gate: KeyedGates[threading.Lock] = KeyedGates(threading.Lock)
        self._read = threading.local()  # bytes of values the current thread's sync read
        # Defence in depth: every status message and Event text passes the log redactor too
        # (messages are built from names, never values, in the first place).
        self.scrub = scrub or (lambda text: text)
        self.kube = kube
        self.resolver = resolver
        self.fetcher = fetcher
        self.default_interval = default_interval
        self.disable_polling = disable_polling
        self.on_value = on_value or (lambda _v: None)
        self.now = now or (lambda: datetime.now(UTC))

    # ---------------------------------------------------------------- entry
    def parse(self, raw: dict[str, Any]) -> api.ExternalSecret:
        """The one way an ExternalSecret is read (raises api.SpecError)."""
        return api.parse_external_secret(raw, self.bounds, shape=self.shape)

    def secret_intact(self, es: api.ExternalSecret) -> bool:
        """Whether the ExternalSecret's Secret still holds exactly what its last write put
        there (its keys, type, labels and annotations, by the content hash that write left).
        At a restart, objects whose Secret drifted while the controller was down (a key edited
        or removed, the Secret deleted) sync at once instead of at their slot."""
        existing = self.kube.secret(es.namespace, es.spec.target.name)
        if existing is None or not _is_ours_or_merged(existing, es):
            return False
        merge = es.spec.target.creation_policy == api.CreationPolicy.MERGE
        previous, ownership = _previous(existing, es, merge)
        if ownership is None:
            return False
        body = _secret_body(es, render.RenderResult(data=previous, ownership=dict(ownership)),
                            merge)
        hash_key = merge_annotation(es.uid, "content-hash") if merge else HASH
        annotations = existing.get("metadata", {}).get("annotations") or {}
        return bool(annotations.get(hash_key)) and \
            annotations.get(hash_key) == body["metadata"]["annotations"][hash_key]

    def interval_of(self, es: api.ExternalSecret) -> float:
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
        full = overflow_message(raw)
        if full is not None:  # over its namespace's cache budget: only a stub is held
            return self._refused(raw, NAMESPACE_CACHE_FULL, full)
        try:
            es = self.parse(raw)
        except api.SpecError as exc:
            return self._invalid(raw, str(exc))
        used: set[FetchRequest] = set()
        self._read.bytes = 0
        try:
            with on_behalf_of(es.namespace):  # sources share their rate between namespaces
                outcome = self._sync(raw, es, fresh=fresh, ack_managed=ack_managed, used=used)
            if templates.source_keys(es.spec.target.template) and outcome.interval > 0:
                outcome = dataclasses.replace(outcome, recheck=True)
        except Exception as exc:
            waiting = self._unreachable(exc, self.interval_of(es))
            if waiting is not None:
                outcome = waiting
            else:
                log.exception("sync of ExternalSecret %s failed unexpectedly", es.qualified_name)
                outcome = self.crashed(raw, exc, interval=self.interval_of(es))
        if self._read.bytes > HEAVY_SYNC_BYTES:  # its copies are garbage now
            release_free_memory()
        return dataclasses.replace(outcome, requests=frozenset(used))

    @staticmethod
    def _unreachable(exc: BaseException, interval: float) -> Outcome | None:
        """The API server out of reach mid-sync (an outage, a restart): one line that names
        no object, folded with its repeats (ops/lognoise.py), and a retry with backoff; no
        status write or Event (they would not get through). None for anything else."""
        what = out_of_reach(exc)
        if what is None:
            return None
        unreachable.warning("syncs wait: the API server cannot be reached (%s); retrying with "
                            "backoff", what)
        return Outcome("failed", interval=interval, retry=True, reason=API_UNREACHABLE,
                       message=f"the API server cannot be reached ({what})")

    def crashed(self, raw: dict[str, Any], exc: BaseException, *,
                interval: float = 0.0) -> Outcome:
        """Report an unexpected error as the object's Ready=False (the Secret keeps its data).
        Only the exception's type is shown: its text could carry anything."""
        message = (f"the sync failed unexpectedly ({type(exc).__name__}); the Secret keeps "
                   "its data and the sync is retried with backoff; the controller's log has "
                   "the details")
        try:
            meta = raw.get("metadata", {})
            old = raw.get("status")
            new = status_mod.build(old, ready=False, reason=INTERNAL_ERROR, message=message,
                                   generation=int(meta.get("generation") or 0),
                                   secret_name=str((old or {}).get("secretName", "")),
                                   entries=[], wrote=False, now=self.now(),
                                   keep_entries=True)
            if status_mod.changed(old, new):
                self.kube.apply_status(raw, new)
            self.kube.event(raw, "Warning", INTERNAL_ERROR, message)
        except Exception:
            log.exception("could not report the failed sync")
        return Outcome("failed", interval=interval, retry=True, reason=INTERNAL_ERROR,
                       message=message)

    # ----------------------------------------------------------------- sync
    def _sync(self, raw: dict[str, Any], es: api.ExternalSecret, *, fresh: bool,
              ack_managed: bool, used: set[FetchRequest]) -> Outcome:
        interval = self.interval_of(es)
        target = es.spec.target
        existing = self.kube.secret(es.namespace, target.name)
        merge = target.creation_policy == api.CreationPolicy.MERGE
        adopt = ack_managed or (raw.get("metadata", {}).get("annotations") or {}).get(
            ADOPT) == "true"
        if existing is not None:
            other = _other_owner(existing, es)
            if other:
                return self._conflict(raw, es, interval, owner=other)
            if not merge and not adopt and not _is_ours(existing, es):
                return self._conflict(raw, es, interval)
        if existing is None and merge:
            message = (f"spec.target.creationPolicy is Merge but Secret {es.namespace}/"
                       f"{target.name} does not exist; create it or use creationPolicy Owner")
            return self._finish(raw, es, False, SECRET_MISSING, message, [], False, interval,
                                "failed", retry=True)
        fresh_enough: set[api.FetchKey] = set()
        fetched = self._fetch(es, interval, fresh, used, fresh_enough)
        self._read.bytes = sum(len(r.value) for r in fetched.values()
                               if isinstance(r, render.FetchedValue))
        previous, ownership = _previous(existing, es, merge)
        sources = self._template_sources(es)
        meta = (existing or {}).get("metadata", {})
        digest = _inputs_digest(raw, fetched, sources) if es.spec.target.template.templated \
            else b""
        known = self._over_budget.get(es.uid, digest) if digest else None
        if known is not None:  # the same inputs went over budget before: not again
            return self._finish(raw, es, False, BUDGET_EXCEEDED, known[0], known[1], False,
                                interval, "failed", retry=True)
        # One budget for this sync: fetched-value parsing and every template charge it. One
        # render at a time per namespace (render_gate).
        with self.render_gate.hold(es.namespace):
            result = render.render(es, fetched, previous, ownership, sources,
                                   (meta.get("labels") or {}, meta.get("annotations") or {}),
                                   self.budget.new())
        for value in result.data.values():  # derived values too (jmesPath, extract): redacted
            self.on_value(value)
        entries = [status_mod.EntryStatus(e.entry_id, e.secret_name, e.version_id,
                                          e.state.value, e.reason) for e in result.entries]
        if digest and result.over_budget is not None:
            self._over_budget.put(es.uid, digest, str(result.over_budget), entries)
        elif digest:
            self._over_budget.forget(es.uid)
        if result.over_budget is not None:
            # Nothing is written: the Secret keeps its data; retried with backoff.
            return self._finish(raw, es, False, BUDGET_EXCEEDED, str(result.over_budget),
                                entries, False, interval, "failed", retry=True)
        if result.problems:
            message = "; ".join(str(p) for p in result.problems)
            # Nothing is written: no entry may say Synced (its value is not in the Secret).
            entries = [e if e.state != render.EntryState.SYNCED.value else
                       dataclasses.replace(e, state=render.EntryState.FAILED.value,
                                           reason=INVALID_SECRET) for e in entries]
            return self._finish(raw, es, False, INVALID_SECRET, message, entries, False,
                                interval, "invalid", retry=bool(result.failed_entries))
        if (self.cleanup_on_failure and existing is not None and not merge and result.entries
                and len(result.failed_entries) == len(result.entries)
                and _is_ours(existing, es)):
            return self._clean_up(raw, es, existing, result, entries, interval)
        if existing is None and not result.data and result.failed_entries:
            reason, message = self._failure_summary(result)
            return self._finish(raw, es, False, reason, message, entries, False, interval,
                                "failed", retry=True)
        try:
            wrote, changed_keys = self._write(es, existing, result, merge)
        except WriteError as exc:
            if exc.conflict:
                return self._finish(raw, es, False, SECRET_CONFLICT, str(exc), entries, False,
                                    interval, "conflict", retry=True)
            return self._finish(raw, es, False, WRITE_FAILED, str(exc), entries, False,
                                interval, "failed", retry=exc.retry)
        if wrote:
            verb = "Created" if existing is None else "Updated"
            keys = ", ".join(changed_keys) if changed_keys else "metadata"
            self.kube.event(raw, "Normal", verb,
                            self.scrub(f"{verb} Secret {target.name} (keys: {keys})"[:1000]))
        if result.failed_entries:
            reason, message = self._failure_summary(result)
            read_of = {e.entry_id: e.fetch_key for e in es.spec.entries}
            if existing is not None and all(read_of.get(e.entry_id) in fresh_enough
                                            for e in result.failed_entries):
                # A transient fault while the data is fresh: not wrong, not too old.
                return self._finish(
                    raw, es, True, SYNCED, f"Secret {target.name} holds data read from KMS "
                    f"less than {GRACE_FACTOR:g} intervals ago; KMS is failing transiently "
                    "(see the Degraded condition)", entries, wrote, interval, "failed",
                    retry=True, degraded=(reason, message))
            return self._finish(raw, es, False, reason, message, entries, wrote, interval,
                                "failed", retry=True)
        message = f"Secret {target.name} is in sync with KMS"
        if es.notices:
            message += " (" + "; ".join(es.notices) + ")"
        return self._finish(raw, es, True, SYNCED, message, entries, wrote, interval,
                            "synced" if wrote else "unchanged")

    def _fetch(self, es: api.ExternalSecret, interval: float, fresh: bool,
               requests: set[FetchRequest], fresh_enough: set[api.FetchKey],
               ) -> dict[api.FetchKey, render.FetchResult]:
        """Values for every entry, from the fetcher's cache when younger than the interval
        (the manager's per-secret polls keep them fresh), else from KMS. `fresh_enough`
        gets the reads that failed transiently but succeeded within the grace window."""
        out: dict[api.FetchKey, render.FetchResult] = {}
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
            # No stage and ACSCurrent are the same read (KMS's default stage): one poll.
            stage = "" if not entry.version_id and entry.version_stage in ("", "ACSCurrent") \
                else entry.version_stage
            request = FetchRequest(source, entry.key, entry.version_id, stage,
                                   provider=es.spec.provider)
            requests.add(request)
            value = self.fetcher.fetch(request, max_age, fresh=fresh)
            if isinstance(value, FetchError):
                out[key] = _no_store(entry, value) or \
                    render.FetchFailure(value.kind.value, value.reason)
                age = self.fetcher.success_age(request)
                if value.retryable and interval > 0 and age is not None and \
                        age < GRACE_FACTOR * interval:
                    fresh_enough.add(key)
                continue
            self.on_value(value.data)
            if value.data_type == "binary":
                out[key] = render.FetchedValue(base64.b64encode(value.data).decode(),
                                               render.DataType.BINARY, value.version_id)
            else:
                out[key] = render.FetchedValue(value.data, render.DataType.TEXT,
                                               value.version_id)
        return out

    def _template_sources(self, es: api.ExternalSecret) -> dict[templates.SourceKey,
                                                                   str | None]:
        """The texts of templateFrom's ConfigMap and Secret keys, in the ExternalSecret's own
        namespace (None: missing). Read at each sync; an ExternalSecret with such sources
        is re-synced every interval (Outcome.recheck), so an edit reaches the Secret."""
        out: dict[templates.SourceKey, str | None] = {}
        for kind, name, key in templates.source_keys(es.spec.target.template):
            if kind == "configMap":
                cm = self.kube.config_map(es.namespace, name)
                value = ((cm or {}).get("data") or {}).get(key)
                out[(kind, name, key)] = value if isinstance(value, str) else None
            else:
                raw = self.kube.read_secret_key(es.namespace, name, key)
                if raw is not None:  # a Secret's value: never in a log, status or Event
                    self.on_value(raw)
                out[(kind, name, key)] = None if raw is None else raw.decode(
                    "utf-8", "surrogateescape")
        return out

    # ---------------------------------------------------------------- write
    def _write(self, es: api.ExternalSecret, existing: dict[str, Any] | None,
               result: render.RenderResult, merge: bool) -> tuple[bool, list[str]]:
        body = _secret_body(es, result, merge)
        current = _data_of(existing)
        ours = result.data
        data_same = all(current.get(k) == v for k, v in ours.items()) and (
            merge or set(current) == set(ours))
        annotations = (existing or {}).get("metadata", {}).get("annotations") or {}
        hash_key = merge_annotation(es.uid, "content-hash") if merge else HASH
        if existing is not None and data_same and \
                annotations.get(hash_key) == body["metadata"]["annotations"][hash_key]:
            return False, []
        changed = sorted(k for k in set(ours) | set(current)
                         if current.get(k) != ours.get(k) and (k in ours or not merge))
        # Force only over a Secret proven ours (repairs edits by people); a new Secret, or one
        # merged into, must not overwrite a field another writer owns: 409 instead.
        force = existing is not None and not merge
        manager = field_manager(es.uid)
        try:
            written = self.kube.apply_secret(body, manager=manager, force=force)
        except Exception as exc:  # noqa: BLE001 - reported in status, retried
            raise WriteError.from_exception(es, exc, merge=merge) from None
        self._retire_shared_manager(es, written)
        return True, changed

    def _retire_shared_manager(self, es: api.ExternalSecret, written: dict[str, Any]) -> None:
        """Earlier releases applied every Secret as one shared field manager; once this
        ExternalSecret's own manager holds its fields, that manager gives up what it held (what
        nobody else holds, such as a label an old Merge added, goes away)."""
        entries = written.get("metadata", {}).get("managedFields") or []
        if not any(e.get("manager") == MANAGER and e.get("operation") == "Apply"
                   for e in entries):
            return
        try:
            self.kube.release_fields(es.namespace, es.spec.target.name, MANAGER)
        except Exception:
            log.warning("could not retire the shared field manager on Secret %s/%s",
                        es.namespace, es.spec.target.name, exc_info=True)

    def _clean_up(self, raw: dict[str, Any], es: api.ExternalSecret,
                  existing: dict[str, Any], result: render.RenderResult,
                  entries: list[status_mod.EntryStatus], interval: float) -> Outcome:
        """--cleanup-secret-on-failure (ack-secret-manager's opt-in): every source failed, so
        the Secret this ExternalSecret owns is deleted (only that very Secret: the delete is
        conditional on its uid). A partial failure never gets here; a merged-into Secret is
        never deleted. The sync is retried and writes the Secret again once a source works."""
        reason, message = self._failure_summary(result)
        name = es.spec.target.name
        uid = str(existing.get("metadata", {}).get("uid") or "")
        try:
            self.kube.delete_secret(es.namespace, name, uid)
        except Exception as exc:  # noqa: BLE001 - reported in status, retried
            message = (f"every source failed and Secret {name} could not be deleted "
                       f"(--cleanup-secret-on-failure): {type(exc).__name__}; " + message)
            return self._finish(raw, es, False, reason, message[:2000], entries, False,
                                interval, "failed", retry=True)
        note = (f"Deleted Secret {name}: every source of the ExternalSecret failed and the "
                "controller runs with --cleanup-secret-on-failure")
        self.kube.event(raw, "Warning", SECRET_DELETED, note)
        return self._finish(raw, es, False, reason, f"{note}. {message}"[:2000], entries,
                            False, interval, "failed", retry=True)

    # --------------------------------------------------------------- endings
    def _failure_summary(self, result: render.RenderResult) -> tuple[str, str]:
        failed = result.failed_entries
        # What the value was turned into, not KMS, failed: the object says so at the top
        # (a bad key name is the Secret's problem: InvalidSecret).
        reasons = {INVALID_SECRET if e.reason == render.INVALID_KEY else e.reason
                   for e in failed}
        if reasons & {Kind.DENIED.value}:
            reason = ACCESS_DENIED
        elif len(reasons) == 1 and next(iter(reasons)) in _OWN_REASONS:
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
        return self._refused(raw, INVALID_SPEC, message)

    def _refused(self, raw: dict[str, Any], reason: str, message: str) -> Outcome:
        """Ready=False for an object that is not synced as it stands (its spec, or its size):
        it syncs again when it changes; the Secret keeps its data."""
        message = self.scrub(message)
        meta = raw.get("metadata", {})
        generation = int(meta.get("generation") or 0)
        old = raw.get("status")
        new = status_mod.build(old, ready=False, reason=reason, message=message,
                               generation=generation,
                               secret_name=str((old or {}).get("secretName", "")),
                               entries=[], wrote=False, now=self.now())
        if status_mod.changed(old, new):  # an Event for the change, not for each look again
            self.kube.apply_status(raw, new)  # (a restart, a stub's neighbour deleted)
            self.kube.event(raw, "Warning", reason, message)
        return Outcome("invalid", interval=0.0, retry=False, reason=reason, message=message)

    def _conflict(self, raw: dict[str, Any], es: api.ExternalSecret,
                  interval: float, owner: str = "") -> Outcome:
        name = es.spec.target.name
        if owner:
            message = (f"Secret {es.namespace}/{name} belongs to {owner}; it is left "
                       "untouched. Choose another spec.target.name, or delete that "
                       "ExternalSecret first")
        else:
            message = (f"Secret {es.namespace}/{name} exists and was not created by this "
                       f"ExternalSecret; it is left untouched. Set spec.target.creationPolicy:"
                       f" Merge to add keys to it, annotate the ExternalSecret with {ADOPT}: "
                       f"\"true\" to take it over, or choose another spec.target.name")
        # Come back (with backoff, at least once per interval): the Secret may go away.
        return self._finish(raw, es, False, SECRET_CONFLICT, message, [], False, interval,
                            "conflict", retry=True)

    def _finish(self, raw: dict[str, Any], es: api.ExternalSecret, ready: bool,
                reason: str, message: str, entries: list[status_mod.EntryStatus],
                wrote: bool, interval: float, result: str, *, retry: bool = False,
                degraded: tuple[str, str] | None = None) -> Outcome:
        message = self.scrub(message)
        if degraded is not None:
            degraded = (degraded[0], self.scrub(degraded[1]))
        old = raw.get("status")
        new = status_mod.build(old, ready=ready, reason=reason, message=message,
                               generation=es.generation, secret_name=es.spec.target.name,
                               entries=entries, wrote=wrote, now=self.now(),
                               degraded=degraded, interval=interval)
        if status_mod.changed(old, new):
            self.kube.apply_status(raw, new)
        if not ready:
            self.kube.event(raw, "Warning", reason, message)
        return Outcome(result, interval=interval, retry=retry, ready=ready,
                       reason=degraded[0] if degraded else reason,
                       degraded=degraded is not None, message="" if ready else message)


class WriteError(Exception):
    def __init__(self, message: str, retry: bool, conflict: bool = False) -> None:
        self.retry = retry
        self.conflict = conflict
        super().__init__(message)

    @classmethod
    def from_exception(cls, es: api.ExternalSecret, exc: Exception, *,
                       merge: bool = False) -> WriteError:
        status = int(getattr(exc, "status", 0) or 0)
        name = f"{es.namespace}/{es.spec.target.name}"
        if status == 409:
            managers = sorted(set(_CONFLICT_MANAGER.findall(str(getattr(exc, "message", "")))))
            who = ", ".join(managers) or "another writer"
            if merge:
                fix = ("remove those keys from this ExternalSecret, or from the other writer")
            else:
                fix = ("another ExternalSecret (or a person) created it at the same moment; "
                       "choose another spec.target.name")
            return cls(f"Secret {name}: fields this ExternalSecret would write are owned by "
                       f"{who}; nothing was overwritten. Fix: {fix}", retry=True,
                       conflict=True)
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
_CONFLICT_MANAGER = re.compile(r'conflict with "([^"]{1,128})"')
def _no_store(entry: api.DataEntry, error: FetchError) -> render.FetchFailure | None:
    """An entry without a secretStoreRef reads with the controller's own identity (Alibaba:
    the node's worker role); when the source says that identity could not be had
    (`FetchError.own_identity`), the message says first that the entry names no store (often
    the real mistake), then the source's own words. The reason stays the failure's own: a
    cluster that means to use that identity (ack-secret-manager's default) is not told a store
    is missing."""
    if entry.store_ref is not None or not error.own_identity:
        return None
    field = entry.spec_field
    return render.FetchFailure(
        error.kind.value,
        f"{field} has no secretStoreRef, so it reads with the controller's own identity, "
        f"which failed ({error.reason}); set {field}.secretStoreRef to a SecretStore with "
        "credentials")


def _is_ours(secret: dict[str, Any], es: api.ExternalSecret) -> bool:
    """Proof of ownership: an ownerReference to this ExternalSecret's uid, or the uid
    annotation that only the ExternalSecret that created the Secret writes. Labels and the
    source annotation prove nothing (anyone, including a Merge, can write them)."""
    if not es.uid:
        return False
    meta = secret.get("metadata", {})
    if any(ref.get("uid") == es.uid for ref in meta.get("ownerReferences") or []):
        return True
    return (meta.get("annotations") or {}).get(OWNER_UID) == es.uid


def _is_ours_or_merged(secret: dict[str, Any], es: api.ExternalSecret) -> bool:
    annotations = secret.get("metadata", {}).get("annotations") or {}
    return _is_ours(secret, es) or merge_annotation(es.uid, "external-secret") in annotations


def _other_owner(secret: dict[str, Any], es: api.ExternalSecret) -> str:
    """Which other ExternalSecret owns `secret` ("" when none does)."""
    meta = secret.get("metadata", {})
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "ExternalSecret" and str(ref.get("apiVersion", "")).startswith(
                "alibabacloud.com/") and ref.get("uid") != es.uid:
            return f"ExternalSecret {es.namespace}/{ref.get('name', '')}"
    annotations = meta.get("annotations") or {}
    uid = annotations.get(OWNER_UID)
    if uid and uid != es.uid:
        return f"ExternalSecret {es.namespace}/{annotations.get(SOURCE, '')} (uid {uid})"
    return ""


def _data_of(secret: dict[str, Any] | None) -> dict[str, bytes]:
    if secret is None:
        return {}
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


def _previous(existing: dict[str, Any] | None, es: api.ExternalSecret, merge: bool,
              ) -> tuple[dict[str, bytes], Mapping[str, list[str]] | None]:
    """The data this ExternalSecret wrote last time, and its ownership record."""
    if existing is None:
        return {}, None
    annotations = existing.get("metadata", {}).get("annotations") or {}
    keys_annotation = merge_annotation(es.uid, "owned-keys") if merge else KEYS
    ownership = render.ownership_from_json(annotations.get(keys_annotation))
    data = _data_of(existing)
    if ownership is not None:
        owned = {k for keys in ownership.values() for k in keys}
        data = {k: v for k, v in data.items() if k in owned}
    return data, ownership


def _secret_body(es: api.ExternalSecret, result: render.RenderResult,
                 merge: bool) -> dict[str, Any]:
    target = es.spec.target
    owner = target.creation_policy == api.CreationPolicy.OWNER and \
        target.deletion_policy == api.DeletionPolicy.DELETE
    keys = render.ownership_to_json(result.ownership)
    wanted_labels = target.template.labels if result.labels is None else result.labels
    wanted_annotations = target.template.annotations if result.annotations is None \
        else result.annotations
    if merge:
        # Nothing that claims the Secret: no managed-by label, no ownerReference, no type;
        # only this ExternalSecret's own annotations and the label that lets us watch it.
        labels = {**wanted_labels, MERGE_TARGET: "true"}
        annotations = {**wanted_annotations,
                       merge_annotation(es.uid, "external-secret"): es.name,
                       merge_annotation(es.uid, "owned-keys"): keys}
        hash_key = merge_annotation(es.uid, "content-hash")
    else:
        labels = {**wanted_labels, MANAGED_BY: MANAGER}
        annotations = {**wanted_annotations, SOURCE: es.name, KEYS: keys,
                       OWNER_UID: es.uid}
        hash_key = HASH
    secret_type = "" if merge else es.spec.secret_type
    marker = {**annotations, "owner-reference": es.uid if owner else ""}
    annotations[hash_key] = render.content_hash(result.data, secret_type, labels, marker)
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
