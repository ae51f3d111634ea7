"""A Ready condition on every SecretStore and ClusterSecretStore: can the store work as written?

The check is `StoreResolver.check`: the store parses, its private CA has a place among its
namespace's first --max-cas-per-namespace, and its provider's check passes (Alibaba's: its
credential Secrets and keys exist, its endpoint is allowed, its identity resolves); no call
to the source. Ready=False
carries the reason and message an ExternalSecret reading through the store would get
(CredentialsNotFound, EndpointRefused, InvalidStore, ...), naming the field and the fix.

When: at once when a store is added or its spec changes (a new generation), and again on a
cadence for stores whose credentials live in Secrets (credential Secrets are not watched):
once per `recheck` seconds at a fixed offset per store (spread), and every `not_ready` seconds
(60 by default) while the store is not Ready, so creating the missing Secret shows soon; and
at once when another store's change allows or refuses its private CA (`check_soon`).
The status is written by server-side apply on the status subresource only when it changes;
the condition carries observedGeneration and keeps its lastTransitionTime while its status
stays, so a quiet store costs no write however often it is checked.

The checks have a controller of the runtime of their own (runtime/controller.py: a queue of
store keys and one worker), so they never delay an ExternalSecret's sync; only the leader runs
them (`start` with the workers). A check that cannot read what it needs (the API server out of
reach, say) is retried with backoff: min(5 s, recheck) doubling, jittered, up to `recheck`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controller import api
from controller.externalsecret import polls
from controller.externalsecret.status import READY, stamp
from controller.ops.neterrors import out_of_reach
from controller.runtime.clock import Clock, RealClock
from controller.runtime.controller import Controller, Result
from controller.runtime.queue import ExponentialBackoff, Jitter
from controller.secretstore.stores import StoreProblem, StoreResolver

log = logging.getLogger(__name__)
# Its own logger, so that only this line is folded with its repeats (ops/lognoise.py).
unreachable = logging.getLogger(__name__ + ".unreachable")

VALID = "Valid"
NOT_READY_RECHECK = 60.0  # seconds between checks of a store that is not Ready


class CheckReads:
    """The SecretReader of the store checks: each Secret read once per check (a store's
    accessKey and accessKeySecret usually are two keys of one Secret), forgotten at the
    next check (`StoreStatus` calls `clear`), so a fixed Secret shows then. `get` reads a
    whole Secret (`KubeAccess.secret`: the watch cache for Secrets the controller manages,
    else the apiserver); None when it does not exist."""

    def __init__(self, get: Callable[[str, str], dict[str, Any] | None]) -> None:
        self.get = get
        self._seen: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._lock = threading.Lock()

    def read_secret_key(self, namespace: str, name: str, key: str) -> bytes | None:
        with self._lock:
            known = (namespace, name) in self._seen
            secret = self._seen.get((namespace, name))
        if not known:
            secret = self.get(namespace, name)
            with self._lock:
                self._seen[(namespace, name)] = secret
        value = ((secret or {}).get("data") or {}).get(key)
        if not isinstance(value, str):
            return None
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


@dataclass(frozen=True)
class StoreKey:
    """Work queue key: one store. `namespace` is "" for a ClusterSecretStore."""

    kind: str  # SecretStore | ClusterSecretStore
    namespace: str
    name: str

    def describe(self) -> str:
        if self.kind == api.StoreKind.CLUSTER_SECRET_STORE.value:
            return f"ClusterSecretStore {self.name}"
        return f"SecretStore {self.namespace}/{self.name}"


def key_of(obj: Mapping[str, Any], kind: str) -> StoreKey:
    meta = obj.get("metadata") or {}
    namespace = "" if kind == api.StoreKind.CLUSTER_SECRET_STORE.value else \
        str(meta.get("namespace", ""))
    return StoreKey(kind, namespace, str(meta.get("name", "")))


def build(old_status: Mapping[str, Any] | None, *, ready: bool, reason: str, message: str,
          generation: int, now: datetime) -> dict[str, Any]:
    """The store's new status: one Ready condition carrying observedGeneration (the CRDs'
    status schema declares only `conditions`). lastTransitionTime moves only when the
    condition's status does."""
    old = old_status or {}
    status = "True" if ready else "False"
    previous = next((c for c in old.get("conditions") or [] if c.get("type") == READY), None)
    transition = stamp(now)
    if previous is not None and previous.get("status") == status:
        transition = str(previous.get("lastTransitionTime") or transition)
    return {"conditions": [{"type": READY, "status": status, "reason": reason,
                            "message": message, "lastTransitionTime": transition,
                            "observedGeneration": generation}]}


def changed(old_status: Mapping[str, Any] | None, new_status: Mapping[str, Any]) -> bool:
    old = old_status or {}
    return any(old.get(k) != v for k, v in new_status.items())


class StoreStatus:
    """Checks stores and writes their Ready condition (see the module docstring).

    `get` reads a store from the informers' cache; `apply` writes a status
    (`KubeAccess.apply_store_status`); `scrub` is the log redactor, applied to every
    message as defence in depth (messages name fields and objects, never values)."""

    def __init__(self, resolver: StoreResolver,
                 get: Callable[[StoreKey], dict[str, Any] | None],
                 apply: Callable[[StoreKey, dict[str, Any], dict[str, Any]], None], *,
                 recheck: float, not_ready: float = NOT_READY_RECHECK,
                 clock: Clock | None = None,
                 now: Callable[[], datetime] | None = None,
                 scrub: Callable[[str], str] | None = None,
                 serves: Callable[[dict[str, Any]], bool] | None = None,
                 reads: CheckReads | None = None) -> None:
        self.resolver = resolver
        # Whether this controller serves the store at all (a ClusterSecretStore that admits
        # none of its --watch-namespaces is another controller's: not checked, no status).
        self.serves = serves or (lambda _raw: True)
        self.reads = reads  # the resolver's reader, cleared before each check
        self.get = get
        self.apply = apply
        self.recheck = recheck
        self.not_ready = min(not_ready, recheck)
        self.clock = clock or RealClock()
        self.now = now or (lambda: datetime.now(UTC))
        self.scrub = scrub or (lambda text: text)
        self.controller: Controller[StoreKey] = Controller(
            self._reconcile, clock=self.clock, on_error=self._failed,
            backoff=ExponentialBackoff(base=min(5.0, self.recheck), cap=self.recheck,
                                       jitter=Jitter.EQUAL))
        self.queue = self.controller.queue  # where handlers put stores to check
        self._generations: dict[StoreKey, int] = {}
        self._lock = threading.Lock()
        self._started = threading.Event()

    # ------------------------------------------------------------- handlers
    def observe(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        """An informer event of a store: a new store or a new generation is checked now; a
        status-only change (our own write among them) is not."""
        key = key_of(obj, kind)
        if event == "DELETED":
            with self._lock:
                self._generations.pop(key, None)
            self.controller.forget(key)
            return
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        with self._lock:
            seen = self._generations.get(key)
            self._generations[key] = generation
        if seen != generation and self._started.is_set():
            self.queue.add(key)

    def check_soon(self, key: StoreKey) -> None:
        """Check `key` again now (its private CA was allowed or refused by another store's
        change); nothing before the checks start."""
        if self._started.is_set():
            self.queue.add(key)

    # ------------------------------------------------------------- lifecycle
    def start(self, stores: list[tuple[str, dict[str, Any]]]) -> threading.Thread:
        """As leader: check every known store, then keep checking (one worker thread)."""
        self._started.set()
        for kind, obj in stores:
            key = key_of(obj, kind)
            with self._lock:
                self._generations[key] = int((obj.get("metadata") or {}).get("generation")
                                             or 0)
            self.queue.add(key)
        [thread] = self.controller.start("store-status")
        return thread

    def stop(self) -> None:
        self.controller.shutdown()

    @staticmethod
    def _failed(key: StoreKey, exc: BaseException) -> None:
        """A check that could not read what it needs. The API server out of reach is said in
        one line that names no store (folded with its repeats, ops/lognoise.py), not a
        traceback per store per retry; anything else is unexpected and keeps its traceback."""
        what = out_of_reach(exc)
        if what is not None:
            unreachable.warning("store status checks wait: the API server cannot be reached "
                                "(%s); retrying with backoff", what)
        else:
            log.exception("status check of %s failed unexpectedly", key.describe())

    # ------------------------------------------------------------------ check
    def check(self, key: StoreKey) -> bool | None:
        """Check one store now as the worker does: write its status if it changed, schedule
        the next check. Returns whether it is Ready (None: the store is gone, or not this
        controller's)."""
        ready, result = self._check(key)
        self.controller.settle(key, result)
        return ready

    def _reconcile(self, key: StoreKey) -> Result:
        return self._check(key)[1]

    def _check(self, key: StoreKey) -> tuple[bool | None, Result]:
        """Whether the store is Ready (its status written if it changed), and when to check
        it again: `not_ready` while it is not, its slot in `recheck` when it reads Secrets."""
        raw = self.get(key)
        if raw is None:
            return None, Result()
        raw = {**raw, "kind": key.kind}
        if not self.serves(raw):
            return None, Result()
        meta = raw.get("metadata") or {}
        generation = int(meta.get("generation") or 0)
        recheck = True
        if self.reads is not None:
            self.reads.clear()
        try:
            _store, recheck = self.resolver.check(raw)
            ready, reason = True, VALID
            message = f"{key.describe()} is valid: its credentials, endpoint and identity " \
                      "were checked (without a call to Alibaba Cloud)"
        except StoreProblem as problem:
            ready, reason, message = False, problem.reason, self.scrub(str(problem))
        old = raw.get("status")
        new = build(old, ready=ready, reason=reason, message=message[:2000],
                    generation=generation, now=self.now())
        if changed(old, new):
            self.apply(key, raw, new)
            log_at = logging.INFO if ready else logging.WARNING
            log.log(log_at, "%s: Ready=%s %s: %s", key.describe(), new["conditions"][0]
                    ["status"], reason, message)
        else:
            log.debug("%s checked: unchanged (Ready=%s %s)", key.describe(),
                      new["conditions"][0]["status"], reason)
        if not ready:
            return ready, Result.after(self.not_ready)
        if recheck:
            seed = str(meta.get("uid") or key.describe())
            return ready, Result.after(polls.until_slot(seed, self.recheck, self.clock.now()))
        return ready, Result()
