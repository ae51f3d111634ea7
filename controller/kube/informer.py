"""A list+watch cache of one resource, kept as plain dicts, with client-go's recovery rules.

List, then watch from the list's resourceVersion with bookmarks. A 410 Gone (the apiserver
restarted or the version is too old) means relist; after a relist, objects that vanished while
we were away are reported as deleted, so no deletion is lost. Other failures back off with
jitter (0.8 s .. 30 s) and resume. Handlers run on the informer's thread and must only enqueue.

The cache only moves forward. Our own writes are put in ahead of their watch events (so the
next sync does not act on the version before the write), but a write's result replaces the
cached object only if its resourceVersion is newer than what the watch already delivered, and
a DELETED delivered while the write was in flight wins: otherwise a user's edit or delete that
landed in between would be undone in the cache, and nothing would trigger a sync to repair it.
resourceVersions are opaque strings; etcd-backed ones are integers and are compared as such,
anything else prefers the watch.

Each namespace's objects may hold at most `namespace_budget` bytes (their JSON, as cached) of
one informer's cache (--namespace-cache-bytes): an object that would pass it is cached as a
stub (its name, uid, versions and status; `overflow()` says how big it was and why), so what a
tenant creates cannot grow the controller's memory without bound. Objects are admitted in the
order they arrive (a relist: the apiserver's order, by name), and stubs are read again, in
name order, when a deletion or a smaller version makes room in their namespace: on a thread of
the informer's own, since the watch serves every namespace (read on it, 900 stubs held every
other tenant's events for 11 s). A new version
of the same generation (our status write, a label) keeps its object's standing, whole or stub.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import urllib3

from controller.kube.rest import ApiError, Resource, Rest
from controller.ops.neterrors import DESCRIPTIONS, network_failure

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
Handler = Callable[[str, dict[str, Any]], None]  # (ADDED|MODIFIED|DELETED, object)
DeleteListener = Callable[[Key], None]

LIST_PAGE = 500
BACKOFF_MIN, BACKOFF_MAX = 0.8, 30.0
READ_TIMEOUT = 90.0  # bookmarks arrive about every 60 s; silence longer than this is a dead link


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata", {})
    return (meta.get("namespace", ""), meta.get("name", ""))


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
INTERN_MAX = 64  # strings up to this long are shared between cached objects


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """What the cache keeps of an object: no managedFields, no kubectl's copy of the last
    applied spec (nothing here reads either), and one shared copy of every key and short
    string instead of one per object (10,000 ExternalSecrets repeat the same few hundred)."""
    meta = obj.get("metadata", {})
    meta.pop("managedFields", None)
    (meta.get("annotations") or {}).pop(LAST_APPLIED, None)
    compact: dict[str, Any] = _intern(obj, in_data=False)
    return compact


def _intern(value: Any, in_data: bool) -> Any:
    if isinstance(value, dict):
        return {sys.intern(k): _intern(v, in_data or k in ("data", "stringData"))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_intern(v, in_data) for v in value]
    if isinstance(value, str) and not in_data and len(value) <= INTERN_MAX:
        return sys.intern(value)
    return value  # Secret values are never interned: they stay private to their object


# The key of a stub's record: a top-level field no API object has (the apiserver prunes them).
OVERFLOW = "ackSecretManagerOverflow"
_STUB_META = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
              "deletionTimestamp")
_STUB_FINALIZERS = 16  # a stub keeps finalizers (ack's is removed through it) up to this many


def overflow(obj: dict[str, Any]) -> dict[str, int] | None:
    """For a stub (an object over its namespace's budget): {"size": its bytes, "held": the
    bytes its namespace's objects held in the cache, "limit": the budget}; None otherwise."""
    found = obj.get(OVERFLOW)
    return found if isinstance(found, dict) else None


NAMESPACE_CACHE_FULL = "NamespaceCacheFull"  # the condition reason of an object over it
CACHE_FLAG = "--namespace-cache-bytes"


def overflow_message(obj: dict[str, Any]) -> str | None:
    """What an object over its namespace's budget reports (names, its size, the bound and the
    flag; no content); None for an object held whole. Nothing in it moves while the object
    stays as it is (not what its namespace holds at the moment): otherwise every look again
    (a restart, a neighbour's change) rewrote every stub's status, a PATCH of the whole
    object each (a black-box attempt: 2 s of another tenant's syncs after a restart)."""
    found = overflow(obj)
    if found is None:
        return None
    meta = obj.get("metadata", {})
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    kind = str(obj.get("kind") or "object")
    return (f"{kind} {namespace}/{name} ({_kib(found['size'])}, with the clients it needs) is "
            f"not served: the {kind}s of namespace {namespace} already fill what {CACHE_FLAG} "
            f"allows per namespace ({_kib(found['limit'])}). Delete or shrink {kind}s in "
            f"{namespace}, or ask the operator to raise {CACHE_FLAG}; data already synced is "
            "kept")


def _kib(size: int) -> str:
    return f"{size / 1024:,.1f} KiB"


STANDING_SLACK = 64  # bytes a version may grow outside its status and keep its standing
                    # (a longer resourceVersion, a timestamp)


def _generation(obj: dict[str, Any]) -> int:
    try:
        return int(obj.get("metadata", {}).get("generation") or 0)
    except (TypeError, ValueError):
        return 0


def _size(obj: dict[str, Any]) -> int:
    """Bytes of `obj` as compact JSON: what the budget counts."""
    return len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))


def _stub(obj: dict[str, Any], size: int, held: int, limit: int) -> dict[str, Any]:
    meta = obj.get("metadata", {})
    kept = {k: meta[k] for k in _STUB_META if k in meta}
    finalizers = meta.get("finalizers") or []
    if 0 < len(finalizers) <= _STUB_FINALIZERS:
        kept["finalizers"] = finalizers
    stub: dict[str, Any] = {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""),
                            "metadata": kept, OVERFLOW: {"size": size, "held": held,
                                                         "limit": limit}}
    if isinstance(obj.get("status"), dict):
        stub["status"] = obj["status"]  # written by the controller, not by the tenant
    return stub


# What an object makes the controller hold besides itself, as tokens (e.g. the store and
# endpoint host an entry reads through: an SDK client and session): each distinct token of a
# namespace costs `token_cost` once, however many of its objects name it.
Tokens = Callable[[dict[str, Any]], frozenset[str]]


class _Ledger:
    """The bytes of each namespace's objects held in full (their JSON, plus `token_cost` per
    distinct token they name), against a per-namespace budget (0: no budget), and the sizes
    of its stubs."""

    def __init__(self, budget: int, tokens: Tokens | None = None, token_cost: int = 0) -> None:
        self.budget = budget
        self.tokens = tokens
        self.token_cost = token_cost
        self.held: dict[str, int] = {}
        self.sizes: dict[Key, int] = {}
        self.named: dict[Key, frozenset[str]] = {}  # the tokens of each object held whole
        self.cores: dict[Key, int] = {}  # each object's size without its status, when judged
        self.refs: dict[str, dict[str, int]] = {}  # namespace -> {token: objects naming it}
        self.stubs: dict[str, dict[str, int]] = {}  # namespace -> {stub's name: its cost}

    def admit(self, key: Key, obj: dict[str, Any],
              previous: dict[str, Any] | None = None) -> dict[str, Any]:
        """What the cache keeps of `obj`: itself, or its stub when it would take its
        namespace past the budget (an object already a stub stays one). A new version of the
        same generation as `previous` whose size grew only in its status (our status write)
        keeps `previous`'s standing, whole or stub, so an object at the edge of the budget
        does not flip with every status write (and sync again each time); any other change
        (the spec, labels, annotations) is judged again."""
        namespace = key[0]
        if not self.budget or not namespace:
            return obj
        core_before = self.cores.pop(key, None)
        self.forget(key)
        found = overflow(obj)
        if found is None:
            tokens = self.tokens(obj) if self.tokens is not None else frozenset()
            refs = self.refs.get(namespace, {})
            size = _size(obj)
            core = size - _size(obj.get("status") or {})  # what the object's writers control
            cost = size + self.token_cost * sum(1 for t in tokens if t not in refs)
            held = self.held.get(namespace, 0)
            if previous is not None and core_before is not None and \
                    _generation(previous) == _generation(obj) > 0 and \
                    core <= core_before + STANDING_SLACK:
                whole = overflow(previous) is None  # its standing: only its status grew
            else:
                whole = held + cost <= self.budget
            self.cores[key] = core
            if whole:
                self.sizes[key] = size
                self.named[key] = tokens
                refs = self.refs.setdefault(namespace, {})
                for token in tokens:
                    refs[token] = refs.get(token, 0) + 1
                self.held[namespace] = held + cost
                return obj
            obj = _stub(obj, cost, held, self.budget)
            found = overflow(obj)
            assert found is not None
        self.stubs.setdefault(namespace, {})[key[1]] = found["size"]
        return obj

    def forget(self, key: Key) -> None:
        namespace = key[0]
        self.cores.pop(key, None)
        freed = self.sizes.pop(key, 0)
        refs = self.refs.get(namespace, {})
        for token in self.named.pop(key, frozenset()):
            refs[token] -= 1
            if not refs[token]:
                del refs[token]
                freed += self.token_cost
        if not refs:
            self.refs.pop(namespace, None)
        if freed:
            left = self.held.get(namespace, 0) - freed
            if left > 0:
                self.held[namespace] = left
            else:
                self.held.pop(namespace, None)
        stubs = self.stubs.get(namespace)
        if stubs is not None:
            stubs.pop(key[1], None)
            if not stubs:
                del self.stubs[namespace]

    def fitting(self, namespace: str) -> list[str]:
        """The stubs of `namespace` that would fit now, by the size they had, in name order."""
        room = self.budget - self.held.get(namespace, 0)
        names = []
        for name, size in sorted(self.stubs.get(namespace, {}).items()):
            if size <= room:
                names.append(name)
                room -= size
        return names


def newer(candidate: dict[str, Any], cached: dict[str, Any]) -> bool:
    """Whether `candidate` is a later version than `cached`: integer resourceVersions are
    compared; when either does not parse as one, the cached (watched) object is kept."""
    try:
        return int(_rv(candidate)) > int(_rv(cached))
    except ValueError:
        return False


class WriteTicket:
    """One write of one object in flight; learns of a DELETED of that object meanwhile."""

    __slots__ = ("deleted", "key")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.deleted = False


class Informer:
    def __init__(
        self,
        rest: Rest,
        resource: Resource,
        handler: Handler,
        *,
        namespace: str = "",
        label_selector: str = "",
        namespace_budget: int = 0,
        full_events: bool = False,
        tokens: Tokens | None = None,
        token_cost: int = 0,
    ) -> None:
        """`namespace_budget`: bytes each namespace's objects may hold in this cache (0: no
        bound); `tokens`, `token_cost`: what else an object costs against it (see `Tokens`);
        `full_events`: the handler sees an object over it whole (it must not keep it), not
        its stub."""
        self.rest = rest
        self.resource = resource
        self.handler = handler
        self.namespace = namespace
        self.label_selector = label_selector
        self.name = f"{resource.plural}{'/' + namespace if namespace else ''}"
        self._cache: dict[Key, dict[str, Any]] = {}
        self._ledger = _Ledger(namespace_budget, tokens, token_cost)
        self._unread: set[str] = set()  # namespaces whose stubs' reading again failed
        # Namespaces where room was made: their stubs are read again on a thread of their own
        # (`readmit_pending`), never on the watch's, which serves every namespace.
        self._pending: set[str] = set()
        self._wake = threading.Event()
        self._readmitter: threading.Thread | None = None
        self.full_events = full_events
        self._writing: dict[Key, list[WriteTicket]] = {}  # emptied by finish_write
        self._delete_listeners: list[DeleteListener] = []
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self.last_contact = 0.0
        self.relists = 0

    # ---------------------------------------------------------------- reading
    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._cache.get((namespace, name))

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._cache.values())

    def begin_write(self, namespace: str, name: str) -> WriteTicket:
        """Call before writing an object; pass the ticket to `finish_write` afterwards."""
        ticket = WriteTicket((namespace, name))
        with self._lock:
            self._writing.setdefault(ticket.key, []).append(ticket)
        return ticket

    def finish_write(self, ticket: WriteTicket, result: dict[str, Any] | None) -> bool:
        """End a write: cache its `result` (None: the write failed) unless a DELETED arrived
        meanwhile or the watch already has a later version. True when cached."""
        slim = _slim(result) if result else None
        with self._lock:
            tickets = self._writing.get(ticket.key, [])
            if ticket in tickets:
                tickets.remove(ticket)
            if not tickets:
                self._writing.pop(ticket.key, None)
            if slim is None or ticket.deleted or key_of(slim) != ticket.key:
                return False
            return self._put_if_newer(ticket.key, slim)

    def on_deleted(self, listener: DeleteListener) -> None:
        """Also call `listener(key)` (on the informer's thread) for every deletion seen."""
        with self._lock:
            if listener not in self._delete_listeners:
                self._delete_listeners.append(listener)

    def _put_if_newer(self, key: Key, obj: dict[str, Any]) -> bool:
        cached = self._cache.get(key)
        if cached is not None and not newer(obj, cached):
            return False
        self._cache[key] = self._ledger.admit(key, obj, cached)
        return True

    def _deleted(self, key: Key) -> None:
        """Record a deletion (the lock held): writes in flight must not bring the object back."""
        for ticket in self._writing.get(key, ()):
            ticket.deleted = True

    def _notify_deleted(self, keys: list[Key]) -> None:
        with self._lock:
            listeners = list(self._delete_listeners)
        for key in keys:
            for listener in listeners:
                listener(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def footprint(self) -> tuple[int, int]:
        """(bytes of the objects held whole, objects held as stubs) under a namespace budget
        (0, 0 without one)."""
        with self._lock:
            return (sum(self._ledger.held.values()),
                    sum(len(stubs) for stubs in self._ledger.stubs.values()))

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    # ---------------------------------------------------------------- running
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}",
                                        daemon=True)
        self._thread.start()
        if self._ledger.budget:
            self._readmitter = threading.Thread(target=self._readmit_loop,
                                                name=f"readmit-{self.name}", daemon=True)
            self._readmitter.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        resp = self._response
        if resp is not None:
            try:
                resp.shutdown()
            except Exception:
                log.debug("closing watch of %s failed", self.name, exc_info=True)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        rv: str | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._relist()
                rv = self._watch(rv)
                failures = 0
            except ApiError as exc:
                if exc.status == 410:
                    log.info("watch of %s expired (410 Gone); relisting", self.name)
                    rv = None
                    continue
                failures += 1
                log.warning("watch of %s failed: %s", self.name, exc)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                if self._stop.is_set():
                    break
                failures += 1
                failure = network_failure(exc)
                if failure and failures > 1:  # the first retry failed too: say why
                    log.warning("watch of %s: the API server cannot be reached: %s; retrying "
                                "with backoff", self.name, DESCRIPTIONS[failure])
                else:
                    log.info("watch of %s interrupted (%s); resuming", self.name,
                             type(exc).__name__)
            if failures:
                delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (failures - 1))
                self._stop.wait(delay * random.uniform(0.5, 1.0))

    def _relist(self) -> str:
        fresh: dict[Key, dict[str, Any]] = {}
        ledger = _Ledger(self._ledger.budget, self._ledger.tokens, self._ledger.token_cost)
        cont: str | None = None
        while True:
            page = self.rest.get(
                self.resource.path(self.namespace),
                labelSelector=self.label_selector or None,
                limit=LIST_PAGE,
                **{"continue": cont},
            )
            for item in page.get("items", []):
                item.setdefault("apiVersion", self.resource.api_version)
                item.setdefault("kind", self.resource.kind)
                slim = _slim(item)
                fresh[key_of(slim)] = ledger.admit(key_of(slim), slim)
            cont = page.get("metadata", {}).get("continue")
            if not cont:
                rv = str(page.get("metadata", {}).get("resourceVersion", ""))
                break
        self.last_contact = time.monotonic()
        self.relists += 1
        with self._lock:
            old, self._cache, self._ledger = self._cache, fresh, ledger
            for key, kept in old.items():  # a write answered after the list's snapshot
                if key in fresh and newer(kept, fresh[key]):
                    fresh[key] = ledger.admit(key, kept)
            vanished = [key for key in old if key not in fresh]
            for key in vanished:
                self._deleted(key)
        self._notify_deleted(vanished)
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None:
                self.handler("ADDED", obj)
            elif _rv(prev) != _rv(obj):
                self.handler("MODIFIED", obj)
        for key, obj in old.items():
            if key not in fresh:
                self.handler("DELETED", obj)
        self._synced.set()
        return rv

    def _watch(self, rv: str) -> str:
        query = {
            "watch": True,
            "resourceVersion": rv,
            "allowWatchBookmarks": True,
            "timeoutSeconds": random.randint(240, 360),
            "labelSelector": self.label_selector or None,
        }
        resp = self.rest.request("GET", self.resource.path(self.namespace), query=query,
                                 timeout=(10.0, READ_TIMEOUT), stream=True)
        self._response = resp
        try:
            for event in watch_events(resp):
                self.last_contact = time.monotonic()
                rv = self._apply(event, rv)
                if self._stop.is_set():
                    break
        finally:
            self._response = None
            resp.release_conn()
        return rv

    def _apply(self, event: dict[str, Any], rv: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            raise ApiError(int(obj.get("code", 500)), str(obj.get("reason", "")), obj)
        new_rv = _rv(obj) or rv
        if kind == "BOOKMARK":
            return new_rv
        obj = _slim(obj)
        key = key_of(obj)
        seen = obj
        freed = False
        with self._lock:
            held = self._ledger.held.get(key[0], 0)
            if kind == "DELETED":
                self._cache.pop(key, None)
                self._ledger.forget(key)
                self._deleted(key)
            else:
                cached = self._cache.get(key)
                if cached is None or not newer(cached, obj):  # never back to an older version
                    self._cache[key] = self._ledger.admit(key, obj, cached)
                    if not self.full_events:
                        seen = self._cache[key]
            freed = key[0] in self._ledger.stubs and (
                self._ledger.held.get(key[0], 0) < held or key[0] in self._unread)
        if kind == "DELETED":
            self._notify_deleted([key])
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self.handler(str(kind), seen)
        if freed:
            with self._lock:
                self._pending.add(key[0])
            self._wake.set()
        return new_rv

    def _readmit_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if not self._stop.is_set():
                self.readmit_pending()

    def readmit_pending(self) -> None:
        """Read again the stubs that fit in every namespace where room was made (the
        readmitter thread's work; tests call it directly)."""
        while not self._stop.is_set():
            with self._lock:
                if not self._pending:
                    return
                namespace = self._pending.pop()
            try:
                self._readmit(namespace)
            except Exception:
                log.exception("reading the stubs of %s in %s again failed", namespace,
                              self.name)
                with self._lock:
                    self._unread.add(namespace)

    def _readmit(self, namespace: str) -> None:
        """Room was made in `namespace`: read its stubs that fit again, in name order, and
        cache them whole (a MODIFIED for each); again while a pass admitted some (a stub may
        have grown since it was measured: it stays one, and the next in line gets the room).
        A read that fails ends it (then again at the namespace's next event)."""
        with self._lock:
            self._unread.discard(namespace)
        while not self._stop.is_set():
            with self._lock:
                names = self._ledger.fitting(namespace)
            admitted = 0
            for name in names:
                obj = self._read_again(namespace, name)
                if obj is None:
                    return
                key = (namespace, name)
                with self._lock:
                    cached = self._cache.get(key)
                    if not obj or cached is None or overflow(cached) is None or \
                            newer(cached, obj):
                        continue  # deleted, or a watch event got there first
                    kept = self._cache[key] = self._ledger.admit(key, obj)
                if overflow(kept) is None:
                    admitted += 1
                    self.handler("MODIFIED", kept)
            if not admitted:
                return

    def _read_again(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One object, slimmed; {} when it is gone; None when it could not be read."""
        try:
            obj = self.rest.get(self.resource.path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return {}  # deleted: its DELETED is on its way
            failure: object = exc
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            failure = type(exc).__name__
        else:
            obj.setdefault("apiVersion", self.resource.api_version)
            obj.setdefault("kind", self.resource.kind)
            return _slim(obj)
        log.debug("reading %s/%s of %s again failed: %s", namespace, name, self.name, failure)
        with self._lock:
            self._unread.add(namespace)
        return None


def _rv(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))


def watch_events(resp: Any) -> Iterator[dict[str, Any]]:
    """The JSON events of a streaming watch response, one per line."""
    buffer = b""
    for chunk in resp.stream(64 * 1024, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)
    if buffer.strip():
        yield json.loads(buffer)
