"""The ClusterExternalSecret loop: keeps one ExternalSecret per selected namespace in step with
each ClusterExternalSecret, as namespaces appear, change labels or go away.

It runs beside the ExternalSecret manager (started and stopped by controller/app.py while this
replica leads) with its own informers (ClusterExternalSecrets, Namespaces, and the
ExternalSecrets it labelled), and a controller of the runtime (runtime/controller.py: a work
queue and one worker, which owns the retries; `_reconcile` returns a `Result`). A pass that
raises, or a full pass in which a namespace failed, comes back as a full pass with backoff (2 s
doubling, jittered, at most 5 minutes; after failed namespaces, at most the
refreshInterval too); a full pass comes back every refreshInterval. A queue key is a
ClusterExternalSecret name and a namespace: "" is a pass over every selected namespace (the
ClusterExternalSecret or the namespaces changed); a namespace is a pass over that namespace only
(one of its ExternalSecrets changed), so an object a tenant labels or edits in its own namespace
costs that namespace, not every namespace. A namespace pass whose result differs from the
status asks for one full pass (coalesced) to write the status. What to do is decided by
controller/clusterexternalsecret/logic.py; this module only reads caches and writes:

- an ExternalSecret that does not exist is created by server-side apply with this loop's field
  manager; if the answer shows another writer's fields, the object existed after all (created
  in the meantime) and our fields are withdrawn again: a conflict, not a takeover;
- one that is ours (ownerReference to the ClusterExternalSecret's uid) is applied with force and
  its uid as a precondition; one that is not ours is never written or deleted (status says so);
- ours in namespaces no longer selected are deleted (uid precondition); deleting the
  ClusterExternalSecret lets the garbage collector remove them all.

Without the CRD, or without the RBAC for it (chart value crds.createClusterExternalSecret=false),
the loop logs one line and does nothing. Status is written by server-side apply with the loop's own
field manager, as the ExternalSecret controller writes its status.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from controller import api
from controller.api import clusterexternalsecret as ces_api
from controller.clusterexternalsecret import logic as ces_logic
from controller.externalsecret.status import stamp
from controller.kube.informer import Informer
from controller.kube.rest import (
    CLUSTER_EXTERNAL_SECRETS,
    EXTERNAL_SECRETS,
    NAMESPACES,
    ApiError,
    Rest,
)
from controller.runtime.clock import Clock, RealClock
from controller.runtime.controller import Controller, Result
from controller.runtime.queue import ExponentialBackoff, Jitter
from controller.settings import Settings

log = logging.getLogger(__name__)

SYNC_TIMEOUT = 120.0
STATUS_PASS_DELAY = 5.0  # a namespace pass that changes the status: one full pass this soon
ALL = ""  # the namespace of a queue key that means every selected namespace
Key = tuple[str, str]  # (ClusterExternalSecret name, namespace or ALL)
PROBE_INTERVAL = 60.0  # seconds between checks for the CRD (and the RBAC) while missing
RETRY_BASE, RETRY_CAP = 2.0, 300.0


class ClusterExternalSecrets:
    """Start with `start()` (returns at once), stop with `request_stop()` then `join()`."""

    def __init__(self, settings: Settings, rest: Rest, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.rest = rest
        self.clock = clock or RealClock()
        # One worker; a pass that fails is retried as a full pass, with that pass's backoff.
        self.controller: Controller[Key] = Controller(
            self._reconcile, clock=self.clock,
            backoff=ExponentialBackoff(base=RETRY_BASE, cap=RETRY_CAP, jitter=Jitter.EQUAL),
            describe=lambda key: f"ClusterExternalSecret {key[0]}: pass",
            retry_as=lambda key: (key[0], ALL))
        self.queue = self.controller.queue  # where handlers put passes
        self.ces_informer = Informer(rest, CLUSTER_EXTERNAL_SECRETS, self._on_ces)
        self.ns_informer = Informer(rest, NAMESPACES, self._on_namespace)
        self.owned_informers = {
            ns: Informer(rest, EXTERNAL_SECRETS, self._on_owned, namespace=ns,
                         label_selector=ces_api.OWNER_LABEL)
            for ns in (settings.watch_namespaces or ("",))}
        for informer in self.owned_informers.values():
            informer.name = f"cluster-owned-{informer.name}"
        self._owned_marks: dict[tuple[str, str], tuple[int, str, str, str]] = {}
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.enabled = False

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cluster-external-secrets",
                                        daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """No new work from now on; the pass in progress ends after its current write."""
        self.stopping.set()
        self.controller.shutdown()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` for the start-up and the worker, then stop the informers.
        True when they ended."""
        deadline = time.monotonic() + timeout
        self.request_stop()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        stuck = self.controller.join(deadline)
        for informer in self._informers():
            informer.stop(timeout=0)
        if self._thread is not None and self._thread.is_alive():
            stuck.append(self._thread.name)
        if stuck:
            log.warning("stop deadline passed with a ClusterExternalSecret pass still running")
        return not stuck

    def _informers(self) -> list[Informer]:
        return [self.ces_informer, self.ns_informer, *self.owned_informers.values()]

    def _run(self) -> None:
        quiet = False
        while not self._available(quiet=quiet):  # a CRD installed later is picked up
            quiet = True
            if self.stopping.wait(PROBE_INTERVAL):
                return
        self.enabled = True
        for informer in self._informers():
            informer.start()
        deadline = time.monotonic() + SYNC_TIMEOUT
        for informer in self._informers():
            while not informer.wait_synced(0.2):
                if self.stopping.is_set():
                    return
                if time.monotonic() > deadline:
                    log.error("ClusterExternalSecret caches did not sync within %ss (waiting "
                              "for %s); is the RBAC granted?", SYNC_TIMEOUT, informer.name)
                    return
        for obj in self.ces_informer.items():
            self.queue.add((_name(obj), ALL))
        self.controller.start("cluster-external-secrets-worker")

    def _available(self, *, quiet: bool = False) -> bool:
        """Whether the CRD is served and this controller may list it (why not: logged once,
        unless `quiet`)."""
        say = log.debug if quiet else log.info
        path = f"/apis/{CLUSTER_EXTERNAL_SECRETS.api_version}"
        missing = ("ClusterExternalSecrets are not processed: their CRD is not installed "
                   "(helm/ack-secret-manager/crds/clusterexternalsecrets.yaml)")
        try:
            served = {r.get("name") for r in self.rest.get(path).get("resources", [])}
            if CLUSTER_EXTERNAL_SECRETS.plural not in served:
                say(missing)
                return False
            self.rest.get(CLUSTER_EXTERNAL_SECRETS.path(), limit=1)
        except ApiError as exc:
            if exc.status == 404:
                say(missing)
            else:
                say("ClusterExternalSecrets are not processed: listing them answered %s %s "
                    "(the chart grants it with crds.createClusterExternalSecret=true)",
                    exc.status, exc.reason)
            return False
        except Exception as exc:  # noqa: BLE001 - one line, the controller goes on
            say("ClusterExternalSecrets are not processed yet: %s", type(exc).__name__)
            return False
        return True

    # ------------------------------------------------------------- handlers
    def _on_ces(self, kind: str, obj: dict[str, Any]) -> None:
        name = _name(obj)
        if kind == "DELETED":
            self.controller.forget((name, ALL))
            return  # the garbage collector removes its ExternalSecrets (ownerReferences)
        self.queue.add((name, ALL))

    def _on_namespace(self, _kind: str, _obj: dict[str, Any]) -> None:
        for ces in self.ces_informer.items():  # few objects; a pass without changes is cheap
            self.queue.add((_name(ces), ALL))

    def _on_owned(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        # Status writes of the ExternalSecret's own syncs change neither of these: no pass.
        mark = (int(meta.get("generation") or 0), repr(sorted((meta.get("labels") or {}).items())),
                repr(sorted((meta.get("annotations") or {}).items())),
                repr(meta.get("ownerReferences")))
        if kind == "DELETED":
            self._owned_marks.pop(key, None)
        elif self._owned_marks.get(key) == mark:
            return
        else:
            self._owned_marks[key] = mark
        # Only the namespace the object lives in is looked at again: its labels and
        # ownerReferences are the tenant's to write, so they prove nothing and buy no more.
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == ces_logic.KIND and ref.get("name") and key[0]:
                self.queue.add((str(ref["name"]), key[0]))

    # --------------------------------------------------------------- worker
    def _reconcile(self, key: Key) -> Result:
        """One pass: over every selected namespace (ALL) or over one; when to come back."""
        name, namespace = key
        if namespace == ALL:
            return self._pass(name)
        self._namespace_pass(name, namespace)
        return Result()

    def _pass(self, name: str) -> Result:
        raw = self.ces_informer.get("", name)
        if raw is None or (raw.get("metadata") or {}).get("deletionTimestamp"):
            return Result()
        try:
            ces = api.parse_cluster_external_secret(raw)
        except api.SpecError as exc:
            self._write_status(raw, ces_logic.status(
                ces_logic.Outcome(), None, generation=_generation(raw),
                es_name=str((raw.get("spec") or {}).get("externalSecretName") or name),
                invalid=exc, now=self._now(), previous=raw.get("status")))
            return Result()
        selection = ces_logic.select(ces, self.ns_informer.items(), self._allowed)
        outcome = ces_logic.Outcome()
        for namespace in selection.namespaces:
            if self.stopping.is_set():
                return Result()
            problem = self._ensure(ces, namespace)
            if problem:
                outcome.failed[namespace] = problem
            else:
                outcome.provisioned.append(namespace)
        owned = [o for i in self.owned_informers.values() for o in i.items()
                 if self._allowed(str((o.get("metadata") or {}).get("namespace", "")))]
        for namespace, es_name, uid in ces_logic.stale(ces, owned, selection):
            if self.stopping.is_set():
                return Result()
            self._delete(namespace, es_name, uid)
        self._write_status(raw, ces_logic.status(
            outcome, selection, generation=ces.generation, es_name=ces.es_name,
            now=self._now(), previous=raw.get("status")))
        if outcome.failed:
            return Result.retry(cap=ces.refresh or RETRY_CAP)
        return Result.after(ces.refresh) if ces.refresh else Result()

    def _namespace_pass(self, name: str, namespace: str) -> None:
        """One namespace's ExternalSecret of `name` made right again after it changed. Only a
        namespace the last full pass recorded (provisioned or failed) is written, so the
        selection bound holds; a namespace no longer selected loses ours."""
        raw = self.ces_informer.get("", name)
        if raw is None or (raw.get("metadata") or {}).get("deletionTimestamp") or \
                not self._allowed(namespace):
            return
        try:
            ces = api.parse_cluster_external_secret(raw)
        except api.SpecError:
            return  # the full pass reports it
        ns = self.ns_informer.get("", namespace)
        previous = ces_logic.recorded(raw.get("status"), namespace)
        if ns is not None and ces_logic.select(ces, [ns], self._allowed).namespaces:
            if previous is None:
                return  # not provisioned by the last full pass (over the bound, or new)
            problem = self._ensure(ces, namespace)[:ces_logic.MAX_REASON]
            if problem != previous:
                self.queue.add_after((name, ALL), STATUS_PASS_DELAY)
            return
        informer = self._owned_cache(namespace)
        owned = informer.items() if informer is not None else []
        mine = [o for o in owned if (o.get("metadata") or {}).get("namespace") == namespace]
        for stale_ns, es_name, uid in ces_logic.stale(ces, mine, ces_logic.Selection((), ())):
            self._delete(stale_ns, es_name, uid)

    def _allowed(self, namespace: str) -> bool:
        watch = self.settings.watch_namespaces
        return (not watch or namespace in watch) and \
            namespace not in self.settings.exclude_namespaces

    def _owned_cache(self, namespace: str) -> Informer | None:
        return self.owned_informers.get(namespace) or self.owned_informers.get("")

    # --------------------------------------------------------------- writes
    def _ensure(self, ces: api.ClusterExternalSecret, namespace: str) -> str:
        """Make the ExternalSecret in `namespace` say what `ces` says; '' or the problem."""
        want = ces_logic.desired(ces, namespace)
        path = EXTERNAL_SECRETS.path(namespace, ces.es_name)
        informer = self._owned_cache(namespace)
        cached = informer.get(namespace, ces.es_name) if informer else None
        try:
            if cached is None or not ces_logic.owned_by(cached, ces.uid):
                cached = self._get(path)
            if cached is None:
                return self._create(path, want, namespace, ces.es_name)
            if not ces_logic.owned_by(cached, ces.uid):
                return ces_logic.conflict_reason(namespace, ces.es_name)
            if ces_logic.up_to_date(cached, want):
                return ""
            want["metadata"]["uid"] = (cached.get("metadata") or {}).get("uid")
            self._apply(path, want, force=True, informer=informer)
            return ""
        except ApiError as exc:
            return _api_problem(exc, namespace, ces.es_name)

    def _create(self, path: str, want: dict[str, Any], namespace: str, name: str) -> str:
        informer = self._owned_cache(namespace)
        ticket = informer.begin_write(namespace, name) if informer is not None else None
        applied: dict[str, Any] | None = None
        try:
            applied = self.rest.apply(path, want, ces_logic.FIELD_MANAGER, force=False)
        finally:
            ours = applied is not None and not ces_logic.created_by_others(applied)
            if informer is not None and ticket is not None:
                informer.finish_write(ticket, applied if ours else None)
        if ours:
            return ""
        # Someone created it between our read and our apply: withdraw every field we added.
        release = {"apiVersion": want["apiVersion"], "kind": want["kind"],
                   "metadata": {"name": name, "namespace": namespace}}
        self.rest.apply(path, release, ces_logic.FIELD_MANAGER, force=False)
        log.warning("ExternalSecret %s/%s appeared while a ClusterExternalSecret created it; "
                    "left to its creator", namespace, name)
        return ces_logic.conflict_reason(namespace, name)

    def _apply(self, path: str, body: dict[str, Any], *, force: bool,
               informer: Informer | None) -> dict[str, Any]:
        """Apply, and cache the result unless the object was deleted meanwhile (a write
        ticket: a DELETED seen while the write was in flight wins, as for ExternalSecrets)."""
        if informer is None:
            written: dict[str, Any] = self.rest.apply(path, body, ces_logic.FIELD_MANAGER,
                                                      force=force)
            return written
        ticket = informer.begin_write(body["metadata"]["namespace"], body["metadata"]["name"])
        try:
            result: dict[str, Any] = self.rest.apply(path, body, ces_logic.FIELD_MANAGER,
                                                     force=force)
        except BaseException:
            informer.finish_write(ticket, None)
            raise
        informer.finish_write(ticket, result)
        return result

    def _get(self, path: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.rest.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def _delete(self, namespace: str, name: str, uid: str) -> None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        try:
            self.rest.request("DELETE", EXTERNAL_SECRETS.path(namespace, name), body=body)
            log.info("ExternalSecret %s/%s deleted: its ClusterExternalSecret no longer "
                     "selects the namespace", namespace, name)
        except ApiError as exc:
            if exc.status not in (404, 409):  # gone already, or replaced by someone else's
                log.warning("could not delete ExternalSecret %s/%s: %s %s", namespace, name,
                            exc.status, exc.reason)

    def _write_status(self, raw: dict[str, Any], new: dict[str, Any]) -> None:
        if not ces_logic.status_changed(raw.get("status"), new):
            return
        name = _name(raw)
        ticket = self.ces_informer.begin_write("", name)
        result: dict[str, Any] | None = None
        try:
            body = {"apiVersion": CLUSTER_EXTERNAL_SECRETS.api_version,
                    "kind": CLUSTER_EXTERNAL_SECRETS.kind, "metadata": {"name": name},
                    "status": new}
            result = self.rest.apply(CLUSTER_EXTERNAL_SECRETS.path(name=name, sub="status"),
                                     body, ces_logic.FIELD_MANAGER)
        except ApiError as exc:
            if exc.status != 404:
                log.warning("ClusterExternalSecret %s: status not written: %s %s", name,
                            exc.status, exc.reason)
        finally:
            self.ces_informer.finish_write(ticket, result)

    def _now(self) -> str:
        return stamp(self.clock.wall())


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _generation(obj: dict[str, Any]) -> int:
    return int((obj.get("metadata") or {}).get("generation") or 0)


def _api_problem(exc: ApiError, namespace: str, name: str) -> str:
    """A failure reason for status: the apiserver's answer (it names fields, never values:
    an ExternalSecret holds no secret values), shortened."""
    if exc.status == 409:
        return ces_logic.conflict_reason(namespace, name)
    text = exc.message or exc.reason
    return f"writing ExternalSecret {namespace}/{name} failed: {exc.status} {text}"[:400]

