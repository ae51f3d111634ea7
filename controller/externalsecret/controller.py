"""Wires the parts into a running controller: informers feed keys into the work queue,
workers reconcile, and each distinct KMS secret is polled on its own slot.

Two controllers of the runtime (runtime/controller.py: a queue and `--workers` threads each,
which own retries and backoff): ExternalSecret syncs (watch events, triggers, retries; `_sync`)
and KMS polls (`_poll`), so a change a user makes never waits behind background polls. Each
returns a `Result` (when to come back, whether it failed); the reconciler's richer `Outcome`
says which (`Outcome.requeue`). The ExternalSecret queue is fair between namespaces
(round-robin, and no namespace holds more than `--workers` - 1 workers, with 4 or more), and
the reconciler renders one namespace's templates one at a time: a tenant whose syncs are heavy
takes one tenant's share (docs/security.md).
Handlers update the bookkeeping (which objects exist, what they read) under one lock and
enqueue; they never call the API or KMS.

Polling is per KMS secret, not per ExternalSecret: every distinct (identity, endpoint, secret,
version) that some ExternalSecret uses is read once per interval (the shortest interval among
its users), at a fixed offset inside the interval so polls are spread; when the value (or the
error) changes, every ExternalSecret that uses it syncs at once. A quiet poll therefore costs
one KMS call per distinct secret and no Kubernetes write, and a change reaches the Secrets
within one interval. ExternalSecret, Secret and SecretStore changes arrive by watch and sync
at once. After a restart, objects already in sync wait for a slot spread over the interval,
so a restart does not burst.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from controller import api
from controller.externalsecret import polls, triggers
from controller.externalsecret.fetcher import Fetcher, FetchRequest
from controller.externalsecret.polls import PollSchedule
from controller.externalsecret.reconciler import (
    API_UNREACHABLE,
    Outcome,
    Reconciler,
    SyncBudgetLimits,
)
from controller.externalsecret.triggers import Seen, Triggers
from controller.kube.access import KubeAccess
from controller.kube.events import EventRecorder
from controller.kube.informer import Informer, overflow
from controller.kube.rest import (
    CLUSTER_SECRET_STORES,
    EXTERNAL_SECRETS,
    SECRET_STORES,
    SECRETS,
    ApiError,
    Rest,
)
from controller.names import (
    ACK_FINALIZER,
    FORCE_SYNC,
    MANAGED_BY,
    MANAGER,
    MERGE_TARGET,
)
from controller.providers import FetchError, on_behalf_of
from controller.providers.registry import Providers
from controller.runtime.clock import Clock, RealClock
from controller.runtime.controller import Controller, Result
from controller.runtime.queue import ExponentialBackoff, Jitter
from controller.secretstore.cas import PrivateCas
from controller.secretstore.stores import StoreResolver, ca_identities
from controller.secretstore.storestatus import CheckReads, StoreKey, StoreStatus
from controller.settings import Settings

log = logging.getLogger(__name__)

Key = tuple[str, str]


def _namespace_of(key: Key) -> str:
    return key[0]


def namespace_limit(workers: int) -> int:
    """Workers one namespace may hold at once: all but one, so another namespace's change
    never waits for a worker; with fewer than 4 workers, all (one reserved would cost a
    single-namespace cluster a third or more of its throughput; round-robin still holds)."""
    return workers - 1 if workers >= 4 else workers


RETRY_BASE, RETRY_CAP = 5.0, 3600.0  # the backoff of a failed sync or poll


@dataclass(frozen=True)
class SecretPoll:
    """Work queue key: poll one distinct KMS read."""

    request: FetchRequest


class Hooks:
    """Callbacks for metrics; every one defaults to doing nothing."""

    def sync(self, namespace: str, name: str, outcome: Outcome, seconds: float) -> None: ...
    def forget(self, namespace: str, name: str) -> None: ...
    def queue_wait(self, seconds: float) -> None: ...
    def write(self, kind: str, verb: str) -> None: ...
    def secret_value(self, value: bytes) -> None: ...
    def polled(self, keys: Iterable[Key], changed: bool) -> None: ...
    def known(self, namespace: str, name: str, ready: bool) -> None: ...
    def scrub(self, text: str) -> str:
        return text
    def retry(self) -> None: ...


class ExternalSecrets:
    """The ExternalSecret controller: the caches and their handlers, the sync and poll
    controllers (runtime.Controller each), and what they share (fetcher, poll schedule,
    triggers); app.py starts and stops it."""

    def __init__(self, settings: Settings, rest: Rest, providers: Providers, *, instance: str,
                 hooks: Hooks | None = None, clock: Clock | None = None,
                 on_credential: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.providers = providers  # the secret sources, by ExternalSecret provider name
        self.rest = rest
        self.hooks = hooks or Hooks()
        self.clock = clock or RealClock()
        # ExternalSecret syncs (user changes, triggers, retries) and KMS polls have a
        # controller each (runtime/controller.py: a queue and --workers threads): a change a
        # user makes never waits behind background polls. Syncs are fair between namespaces:
        # one worker always stays for the other namespaces.
        self.syncs: Controller[Key] = Controller(
            self._sync, backoff=_backoff(), clock=self.clock,
            describe=lambda key: f"work item ExternalSecret {key[0]}/{key[1]}",
            group=_namespace_of, group_limit=namespace_limit(settings.workers),
            on_wait=self.hooks.queue_wait)
        self.pollers: Controller[SecretPoll] = Controller(
            self._poll, backoff=_backoff(), clock=self.clock,
            describe=lambda poll: f"work item poll of {poll.request.describe()}")
        self.queue = self.syncs.queue  # where handlers put ExternalSecrets to sync
        self.poll_queue = self.pollers.queue
        self.events = EventRecorder(rest, instance)
        namespaces = settings.watch_namespaces or ("",)
        # What one namespace's objects may hold in each cache (--namespace-cache-bytes):
        # ExternalSecrets and SecretStores past it are refused (NamespaceCacheFull); Secrets
        # past it are read from the apiserver when a sync needs them.
        # A store, and an entry's own kmsEndpoint, count CLIENT_COST more: the clients and
        # sessions they make the controller hold.
        budget = settings.namespace_cache_bytes
        self.es_informers = {ns: Informer(rest, EXTERNAL_SECRETS, self._on_external_secret,
                                          namespace=ns, namespace_budget=budget,
                                          tokens=entry_clients, token_cost=CLIENT_COST)
                             for ns in namespaces}
        self.store_informers = {ns: Informer(rest, SECRET_STORES, self._on_secret_store,
                                             namespace=ns, namespace_budget=budget,
                                             tokens=store_clients, token_cost=CLIENT_COST)
                                for ns in namespaces}
        self.cluster_store_informer = Informer(rest, CLUSTER_SECRET_STORES,
                                               self._on_cluster_store)
        self.secret_informers = {ns: Informer(rest, SECRETS, self._on_secret, namespace=ns,
                                              label_selector=f"{MANAGED_BY}={MANAGER}",
                                              namespace_budget=budget, full_events=True)
                                 for ns in namespaces}
        # Secrets that ExternalSecrets merge into carry no managed-by label (they are not ours)
        self.merged_informers = {ns: Informer(rest, SECRETS, self._on_secret, namespace=ns,
                                              label_selector=f"{MERGE_TARGET}=true",
                                              namespace_budget=budget, full_events=True)
                                 for ns in namespaces}
        for informer in self.merged_informers.values():
            informer.name = f"merged-{informer.name}"
        self.kube = KubeAccess(
            rest, self.events,
            external_secrets=lambda ns: self._pick(self.es_informers, ns),
            secret_stores=lambda ns: self._pick(self.store_informers, ns),
            cluster_secret_stores=self.cluster_store_informer,
            secrets=lambda ns: self._pick(self.secret_informers, ns),
            merged_secrets=lambda ns: self._pick(self.merged_informers, ns),
            on_write=self.hooks.write,
        )
        # Which SecretStores may use their private CA (--max-cas-per-namespace), fed by the
        # SecretStore events; both resolvers below refuse the others.
        self.cas = PrivateCas(settings.max_cas_per_namespace, ca_identities(providers),
                              providers.shape)
        self.resolver = StoreResolver(settings, self.kube.store, self.kube,
                                      self.kube.namespace_labels, providers,
                                      on_credential=on_credential, cas=self.cas)
        # Stores' Ready conditions: a queue and one worker of their own (never in the way of
        # an ExternalSecret's sync), started with the workers (as leader).
        # Its own resolver: a check reads each credential Secret once, and fresh (no cache).
        reads = CheckReads(self.kube.secret)
        self.store_status = StoreStatus(
            StoreResolver(settings, self.kube.store, reads, self.kube.namespace_labels,
                          providers, on_credential=on_credential, cas=self.cas),
            self._store_of,
            lambda key, raw, status: self.kube.apply_store_status(key.kind, raw, status),
            recheck=settings.store_recheck_interval or settings.polling_interval,
            clock=self.clock, scrub=self.hooks.scrub, serves=self._serves_store, reads=reads)
        self.fetcher = Fetcher(providers, self.clock, max_bytes=settings.value_cache_bytes)
        self.reconciler = Reconciler(
            self.kube, self.resolver, self.fetcher,
            shape=providers.shape,
            default_interval=settings.polling_interval,
            disable_polling=settings.disable_polling,
            on_value=self.hooks.secret_value,
            bounds=api.IntervalBounds(settings.refresh_floor(),
                                        settings.max_refresh_interval),
            scrub=self.hooks.scrub,
            cleanup_on_failure=settings.cleanup_secret_on_failure,
            budget=SyncBudgetLimits(settings.sync_budget_bytes, settings.sync_budget_steps),
        )
        # One lock over what the handlers and the workers share: which objects exist and what
        # they trigger, and the poll schedule (so a DELETED and a sync that ends at the same
        # moment cannot leave a deleted object's polls behind).
        self.triggers = Triggers()
        self.polls = PollSchedule(self.fetcher.peek)
        self._fresh: set[Key] = set()
        self._said: dict[Key, tuple[str, str]] = {}  # failing objects: the cause last logged
        self._store_generations: dict[api.StoreRef, int] = {}  # each store's last spec
        # Deleted Merge ExternalSecrets whose marks are still on a user's Secret: (uid, Secret)
        self._departed: dict[Key, list[tuple[str, str]]] = {}
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._started = threading.Event()

    # ------------------------------------------------------------ lifecycle
    def informers(self) -> list[Informer]:
        return [*self.es_informers.values(), *self.store_informers.values(),
                self.cluster_store_informer, *self.secret_informers.values(),
                *self.merged_informers.values()]

    def cache_footprints(self) -> list[tuple[str, int, int | None]]:
        """(resource, bytes held whole, objects over budget) of each bounded cache, and the
        values read (metrics)."""
        found: list[tuple[str, int, int | None]] = [("values", self.fetcher.value_bytes, None)]
        for resource, informers in (("externalsecrets", self.es_informers),
                                    ("secretstores", self.store_informers),
                                    ("secrets", self.secret_informers),
                                    ("secrets", self.merged_informers)):
            found += [(resource, *informer.footprint()) for informer in informers.values()]
        return found

    def start_caches(self) -> None:
        self.events.start()
        for informer in self.informers():
            informer.start()

    def caches_synced(self) -> tuple[bool, str]:
        waiting = [i.name for i in self.informers() if not i.synced]
        return (not waiting, "synced" if not waiting else f"waiting for {', '.join(waiting)}")

    def threads_alive(self) -> tuple[bool, str]:
        """Liveness: every informer and (once started) every worker thread is running."""
        dead = [i.name for i in self.informers() if not i.alive]
        dead += [t.name for t in self._workers if not t.is_alive()]
        return (not dead, "running" if not dead else f"stopped: {', '.join(dead)}")

    def wait_caches(self, timeout: float | None = None,
                    stop: threading.Event | None = None) -> bool:
        """Wait until every cache has synced: False when `timeout` passes or `stop` is set
        first (checked at least every 0.2 s, so a signal during start-up is honoured)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for informer in self.informers():
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                if stop is not None and stop.is_set():
                    return False
                if informer.wait_synced(0.2 if left is None else min(0.2, left)):
                    break
        return True

    def start_workers(self) -> None:
        """Begin syncing (as leader): queue every known object, then start the workers."""
        self._started.set()
        for informer in self.es_informers.values():
            for obj in informer.items():
                try:
                    self._enqueue_initial(obj)
                except Exception:
                    log.exception("could not schedule an ExternalSecret; syncing it now")
                    meta = obj.get("metadata") or {}
                    self.queue.add((str(meta.get("namespace", "")), str(meta.get("name", ""))))
        self._workers.append(self.store_status.start(self._stores_to_check()))
        workers = range(self.settings.workers)
        self._workers += self.syncs.start(*(f"worker-{i}" for i in workers))
        self._workers += self.pollers.start(*(f"poller-{i}" for i in workers))

    def stop(self, timeout: float = 20.0, cancel: Callable[[], None] | None = None) -> bool:
        """Stop within `timeout` seconds in all: no new work from now on (keys still queued
        are dropped: the next leader syncs them), `cancel` ends KMS retries in flight, in-flight
        syncs finish, then the caches stop. True when every worker exited in time."""
        deadline = time.monotonic() + timeout
        self.syncs.shutdown()
        self.pollers.shutdown()
        self.store_status.stop()
        if cancel is not None:
            cancel()
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._workers if t.is_alive()]
        if stuck:
            log.warning("stop deadline passed with %d sync(s) still running (%s)", len(stuck),
                        ", ".join(stuck))
        for informer in self.informers():  # daemon threads with nothing to flush: no wait
            informer.stop(timeout=0)
        self.events.stop(timeout=min(2.0, max(0.05, deadline - time.monotonic())))
        return not stuck

    # ------------------------------------------------------------- handlers
    def _pick(self, informers: dict[str, Informer], namespace: str) -> Informer | None:
        return informers.get(namespace) or informers.get("")

    def _excluded(self, namespace: str) -> bool:
        return namespace in self.settings.exclude_namespaces

    def _on_external_secret(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if self._excluded(key[0]):
            return
        if kind == "DELETED":
            with self._lock:
                self.triggers.forget(key)
                self.polls.forget(key)
                self._fresh.discard(key)
                self.hooks.forget(*key)
                departed = _merge_target(obj)
                if departed is not None:
                    self._departed.setdefault(key, []).append(departed)
            self.syncs.forget(key)
            self._release_unused()
            if departed is not None and self._started.is_set():
                self.queue.add(key)  # the worker lets go of the Secret it merged into
            return
        seen = Seen(int(meta.get("generation") or 0),
                    str((meta.get("annotations") or {}).get(FORCE_SYNC, "")),
                    whole=overflow(obj) is None)
        es = self._parse(obj)
        with self._lock:
            changed, forced = self.triggers.observe(key, seen, es)
            if forced:
                self._fresh.add(key)
        if not self._started.is_set():
            return
        if changed or ACK_FINALIZER in (meta.get("finalizers") or []):
            log.debug("ExternalSecret %s/%s %s (generation %d): sync", *key, kind.lower(),
                      seen.generation)
            self.queue.add(key)

    def _parse(self, obj: dict[str, Any]) -> api.ExternalSecret | None:
        try:
            return self.reconciler.parse(obj)
        except api.SpecError:
            return None

    def _enqueue_initial(self, obj: dict[str, Any]) -> None:
        """After a (re)start: objects in sync, whose Secret still holds exactly what the last
        write put there, wait for their slot (no burst); the rest, including every Secret
        edited or deleted while the controller was down, sync now."""
        meta = obj.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if self._excluded(key[0]):
            return
        status = obj.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or [])
        self.hooks.known(*key, ready)
        current = status.get("observedGeneration") == meta.get("generation")
        es = self._parse(obj)  # one parse for the interval and the content check
        interval = self.reconciler.interval_of(es) if es is not None else 0.0
        if ready and current and interval > 0 and es is not None and \
                self.reconciler.secret_intact(es):
            self.queue.add_after(key, self._slot_delay(obj, interval))
        else:
            self.queue.add(key)

    def _on_secret(self, kind: str, obj: dict[str, Any]) -> None:
        if not self._started.is_set():
            return
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace", "")
        writers = triggers.writers(meta.get("annotations") or {})
        if not writers or self._excluded(namespace):
            return
        if kind != "DELETED" and self.kube.is_own_write(obj):
            return  # the echo of our own write
        for writer in writers:
            log.debug("Secret %s/%s %s by someone else: sync ExternalSecret %s", namespace,
                      meta.get("name", ""), kind.lower(), writer)
            self.queue.add((namespace, writer))

    def _on_secret_store(self, event: str, obj: dict[str, Any]) -> None:
        self._on_store(event, obj, SECRET_STORES.kind)

    def _on_cluster_store(self, event: str, obj: dict[str, Any]) -> None:
        self._on_store(event, obj, CLUSTER_SECRET_STORES.kind)

    def _store_checked(self, kind: str, namespace: str) -> bool:
        """Whether a store gets a Ready condition from this controller: one it serves."""
        if kind == CLUSTER_SECRET_STORES.kind:
            return self.settings.process_cluster_secret_store
        return not self._excluded(namespace)

    def _stores_to_check(self) -> list[tuple[str, dict[str, Any]]]:
        found = [(CLUSTER_SECRET_STORES.kind, obj) for obj in self.cluster_store_informer.items()]
        for informer in self.store_informers.values():
            found += [(SECRET_STORES.kind, obj) for obj in informer.items()]
        return [(kind, obj) for kind, obj in found
                if self._store_checked(kind, (obj.get("metadata") or {}).get("namespace", ""))]

    def _serves_store(self, raw: dict[str, Any]) -> bool:
        """With --watch-namespaces, a ClusterSecretStore is this controller's only when its
        conditions admit a watched namespace: another's credentials are not ours to read
        (nor, in the chart's namespaced RBAC, readable)."""
        watched = self.settings.watch_namespaces
        if not watched or raw.get("kind") != CLUSTER_SECRET_STORES.kind:
            return True
        try:
            store = api.parse_store(raw, self.providers.shape)
        except api.SpecError:
            return True  # its Ready=False InvalidStore says why
        if not isinstance(store, api.ClusterSecretStore):
            return True
        return any(store.allows_namespace(ns, self.kube.namespace_labels(ns)) for ns in watched)

    def _store_of(self, key: StoreKey) -> dict[str, Any] | None:
        return self.kube.store(key.kind, key.namespace, key.name)

    def _on_store(self, event: str, obj: dict[str, Any], kind: str) -> None:
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace", "")
        checked = self._store_checked(kind, namespace)
        if checked:
            self.store_status.observe(kind, event, obj)
        # Other SecretStores of the namespace whose private CA this event allowed or refused
        # (a deleted store's place goes to the next one): their users sync, their status too.
        moved = self.cas.observe(event, obj) if kind == SECRET_STORES.kind else set()
        ref = triggers.store_ref(kind, namespace, meta.get("name", ""))
        with self._lock:
            # Only a change of the spec (a new generation) or a deletion concerns its users:
            # a status write (the store's Ready condition, ours) or a label edit does not.
            generation = int(meta.get("generation") or 0)
            spec_changed = True
            if event == "DELETED":
                self._store_generations.pop(ref, None)
            elif self._store_generations.get(ref) == generation:
                spec_changed = False
            else:
                self._store_generations[ref] = generation
            if not self._started.is_set():
                return
            users = set(self.triggers.store_users(ref)) if spec_changed else set()
            for name in moved:
                users |= self.triggers.store_users(triggers.store_ref(kind, namespace, name))
        for name in sorted(moved):
            log.info("SecretStore %s/%s: its private CA is now %s (another store of the "
                     "namespace changed; --max-cas-per-namespace)", namespace, name,
                     "allowed" if self.cas.allows(namespace, name) else "refused")
            if checked:
                self.store_status.check_soon(StoreKey(kind, namespace, name))
        for key in users:
            self.queue.add(key)

    # --------------------------------------------------------------- workers
    def _sync(self, key: Key) -> Result:
        """Sync one ExternalSecret (its reconciler does the work); when to come back."""
        with self._lock:
            fresh = key in self._fresh
            self._fresh.discard(key)
            departed = self._departed.pop(key, [])
        for uid, secret in departed:
            self._release_merge(key[0], secret, uid)
        start = time.monotonic()
        outcome = self.reconciler.reconcile(*key, fresh=fresh)
        seconds = time.monotonic() - start
        with self._lock:  # against DELETED arriving while this sync ran (see the handler)
            if not self.triggers.alive(key):
                outcome = dataclasses.replace(outcome, result="gone")
            self.hooks.sync(*key, outcome, seconds)
        self._log_sync(key, outcome, seconds)
        if outcome.result == "gone":
            self._track(key, frozenset(), 0.0)
            return Result()
        self._track(key, outcome.requests, outcome.interval)
        if outcome.retry:
            self.hooks.retry()
        return outcome.requeue()

    def _release_merge(self, namespace: str, secret: str, uid: str) -> None:
        """Best effort: the Secret keeps its data either way (docs/usage.md)."""
        try:
            if self.kube.release_merge(namespace, secret, uid):
                log.info("Secret %s/%s: a deleted Merge ExternalSecret's labels and "
                         "annotations removed; the keys it wrote stay", namespace, secret)
        except ApiError as exc:
            log.warning("Secret %s/%s: could not remove a deleted Merge ExternalSecret's "
                        "labels and annotations (%s %s); remove them by hand", namespace,
                        secret, exc.status, exc.reason)

    def _log_sync(self, key: Key, outcome: Outcome, seconds: float) -> None:
        """A sync that ended Ready is INFO; one that did not is a WARNING with its reason and
        message, once per change of (reason, message): an object refused every interval for
        the same cause says so once, and again only when the cause changes (DEBUG between)."""
        fields = {"result": outcome.result, "reason": outcome.reason or "-",
                  "duration_ms": round(seconds * 1000)}
        failed = outcome.result in ("failed", "conflict", "invalid")
        with self._lock:
            said = self._said.pop(key, None)
            if failed:
                self._said[key] = (outcome.reason, outcome.message)
        if not failed:
            log.info("sync ExternalSecret %s/%s", key[0], key[1], extra=fields)
        elif said == (outcome.reason, outcome.message) or outcome.reason == API_UNREACHABLE:
            # (the API server out of reach is one folded line for all objects: reconciler.py)
            log.debug("sync ExternalSecret %s/%s still failing: %s", key[0], key[1],
                      outcome.reason, extra=fields)
        else:
            log.warning("sync ExternalSecret %s/%s failed: %s: %s", key[0], key[1],
                        outcome.reason, outcome.message, extra=fields)

    # ---------------------------------------------------------- secret polls
    def _track(self, key: Key, requests: frozenset[FetchRequest], interval: float) -> None:
        """Record which KMS reads `key` depends on; start polling reads that are new."""
        with self._lock:
            if not self.triggers.alive(key):
                # Deleted (possibly while its sync ran): nothing of it may stay registered,
                # whichever of the sync and the DELETED event gets here last.
                requests, interval = frozenset(), 0.0
            start = self.polls.track(key, requests, interval)
        self._release_unused()
        for request, every in start:
            log.debug("polling KMS secret %s every %gs (first use: ExternalSecret %s/%s)",
                      request.describe(), every, *key)
            self.poll_queue.add_after(SecretPoll(request), self._poll_delay(request, every))

    def _release_unused(self) -> None:
        """The clients and credentials (and, for the providers, what they hold for them:
        Alibaba's ServiceAccount tokens) that no ExternalSecret's read uses any more (its
        last user was deleted or changed its store) go now, not after their idle bound: a
        cluster where stores and ServiceAccounts come and go holds only what its live objects
        use."""
        with self._lock:
            clients, credentials = self.polls.take_released()
        if not clients:
            return
        self.fetcher.release(clients, credentials)

    def _poll(self, poll: SecretPoll) -> Result:
        """Read one KMS secret; every user syncs when it changed. When to poll again."""
        request = poll.request
        with self._lock:
            due = self.polls.due(request)
        if due is None:
            log.debug("KMS secret %s: no longer used, polling ends", request.describe())
            self.fetcher.drop(request)
            return Result()
        # One namespace's read is that namespace's share of the rate; a read several share is
        # nobody's in particular (its identity's).
        owners = {namespace for namespace, _name in due.users}
        with on_behalf_of(owners.pop() if len(owners) == 1 else ""):
            result = self.fetcher.fetch(request, 0.0, fresh=True)
        with self._lock:
            changed = self.polls.record(request, result)
        if changed:
            log.info("KMS secret %s changed; syncing %d ExternalSecret(s)",
                     request.describe(), len(due.users))
            for key in due.users:
                self.queue.add(key)
        self.hooks.polled(due.users, changed)
        if isinstance(result, FetchError) and result.retryable:
            return Result.retry(cap=due.interval)
        return Result.after(self._poll_delay(request, due.interval))

    # -------------------------------------------------------------- schedule
    def _slot_delay(self, obj: dict[str, Any], interval: float) -> float:
        meta = obj.get("metadata", {})
        seed = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
        return polls.until_slot(seed, interval, self.clock.now())

    def _poll_delay(self, request: FetchRequest, interval: float) -> float:
        return polls.until_slot(polls.poll_seed(request), interval, self.clock.now())


# What a SecretStore, or an entry with a kmsEndpoint of its own, makes the controller hold
# besides the object: SDK clients and a session (with the object itself ~0.13 MiB measured,
# tests/integration/test_tenant_leaks.py). Charged against --namespace-cache-bytes once per
# store and once per distinct (store, kmsEndpoint) of a namespace's entries.
CLIENT_COST = 128 << 10


def store_clients(obj: dict[str, Any]) -> frozenset[str]:
    """A SecretStore's token: itself (its identity's clients)."""
    return frozenset({str((obj.get("metadata") or {}).get("name", ""))})


def entry_clients(obj: dict[str, Any]) -> frozenset[str]:
    """An ExternalSecret's tokens: each (store, kmsEndpoint) its entries read through."""
    spec = obj.get("spec")
    found: set[str] = set()
    for field in ("data", "dataFrom"):
        entries = spec.get(field) if isinstance(spec, dict) else None
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, dict) and entry.get("kmsEndpoint"):
                ref = entry.get("secretStoreRef")
                ref = ref if isinstance(ref, dict) else {}
                found.add(f"{ref.get('kind', '')}/{ref.get('name', '')}@{entry['kmsEndpoint']}")
    return frozenset(found)


def _merge_target(obj: dict[str, Any]) -> tuple[str, str] | None:
    """(uid, Secret name) of a Merge ExternalSecret; None for any other (or unreadable)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec")
    target = spec.get("target") if isinstance(spec, dict) else None
    if not isinstance(target, dict) or target.get("creationPolicy") != "Merge":
        return None
    uid, name = meta.get("uid"), target.get("name") or meta.get("name")
    if not isinstance(uid, str) or not uid or not isinstance(name, str) or not name:
        return None
    return uid, name


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(base=RETRY_BASE, cap=RETRY_CAP, jitter=Jitter.EQUAL)
