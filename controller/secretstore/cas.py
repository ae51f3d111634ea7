"""Private CAs per namespace: which SecretStores may use theirs (docs/security.md, 4b).

Each distinct private CA in use (a store's `spec.KMS.ca` or `caSecretRef`, a KMS instance
store's `dedicatedKMSAuth.ca`) keeps a session alive for as long as a store uses it: its TLS
context, an idle connection, the CA's memory-only file. `--max-cas-per-namespace` (N, 0: no
bound) bounds how many one namespace's SecretStores keep at once. The rule is deterministic
and checked before any session is made: order the namespace's SecretStores by
(creationTimestamp, name) and take the distinct CA identities in that order; the first N are
allowed, and a store whose CA is not among them is refused (its ExternalSecrets and its own
Ready condition say so; what they synced before stays). ClusterSecretStores are the operator's:
not counted, never refused.

A CA identity is what keys a session (`CaIdentity`): the endpoint host the store's reads use
the CA with and the CA itself: the SHA-256 of its PEM, or, for a caSecretRef, the Secret key it
names (the rule then needs no read; two references to equal PEMs count twice, never fewer).
Computing it is the resolver's (secretstore/stores.py `private_ca`), handed in as `identify`.

`PrivateCas` keeps an index of the stores that have a CA, per namespace, fed by the SecretStore
informer's events (`observe`). It returns the stores whose admission changed, so that their
ExternalSecrets and status checks run again at once (a deleted store's place goes to the next
store by creation time). `refused` answers for a store as a sync or a check sees it; a store
the index has not seen in that form yet (its event still on the way) is counted in its place.
Once a namespace's N places are taken, a store created after the one that took the last
place costs a sorted insert and no rescan; a change before it scans the namespace's CA stores
in order up to the N-th CA.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller import api

# (endpoint host[:port], "sha256:<hex of the PEM>" | "secret:<namespace>/<name>/<key>")
CaIdentity = tuple[str, str]
Identify = Callable[[api.SecretStore], CaIdentity | None]
FLAG = "--max-cas-per-namespace"


@dataclass(frozen=True)
class Place:
    """One SecretStore with a private CA. `key` is its place in the rule's order, unique
    within a namespace."""

    created: str  # metadata.creationTimestamp (RFC 3339, UTC, whole seconds: sorts as time)
    name: str
    ca: CaIdentity

    @property
    def key(self) -> tuple[str, str]:
        return (self.created, self.name)


def _key(place: Place) -> tuple[str, str]:
    return place.key


def allowed_cas(places: Iterable[Place], limit: int) -> frozenset[CaIdentity]:
    """The rule: the first `limit` distinct CAs of `places` in (created, name) order; every
    CA when `limit` is 0."""
    ordered = sorted(places, key=_key)
    if limit <= 0:
        return frozenset(p.ca for p in ordered)
    seen: dict[CaIdentity, None] = {}
    for place in ordered:
        if len(seen) == limit:
            break
        seen.setdefault(place.ca)
    return frozenset(seen)


class _Namespace:
    """The CA stores of one namespace, kept in the rule's order, and the rule's answer (cached
    until a change that can move it)."""

    def __init__(self) -> None:
        self.places: dict[str, Place] = {}
        self.order: list[Place] = []
        self.by_ca: dict[CaIdentity, set[str]] = {}
        self._allowed: frozenset[CaIdentity] | None = None
        # The store whose CA took the last place (None: fewer CAs than places): no change
        # after it in the order can move the answer.
        self._frontier: Place | None = None

    def allowed(self, limit: int) -> frozenset[CaIdentity]:
        if self._allowed is None:
            self._allowed, self._frontier = self._compute(limit)
        return self._allowed

    def _compute(self, limit: int) -> tuple[frozenset[CaIdentity], Place | None]:
        if len(self.by_ca) < limit:
            return frozenset(self.by_ca), None
        seen: dict[CaIdentity, None] = {}
        for place in self.order:
            if place.ca not in seen:
                seen[place.ca] = None
                if len(seen) == limit:
                    return frozenset(seen), place
        return frozenset(seen), None  # not reached: len(by_ca) >= limit

    def beyond_frontier(self, place: Place | None) -> bool:
        """Whether adding or removing `place` leaves the answer as it is."""
        frontier = self._frontier
        return self._allowed is not None and frontier is not None and (
            place is None or place.key > frontier.key)

    def remove(self, place: Place) -> None:
        del self.places[place.name]
        del self.order[bisect.bisect_left(self.order, place.key, key=_key)]
        names = self.by_ca[place.ca]
        names.discard(place.name)
        if not names:
            del self.by_ca[place.ca]

    def add(self, place: Place) -> None:
        self.places[place.name] = place
        bisect.insort(self.order, place, key=_key)
        self.by_ca.setdefault(place.ca, set()).add(place.name)

    def invalidate(self) -> None:
        self._allowed = self._frontier = None


class PrivateCas:
    """The index and the rule (see the module docstring). Thread-safe: `observe` runs on the
    informer's thread, `refused` on the workers and the store checker."""

    def __init__(self, limit: int, identify: Identify, shape: api.Shape) -> None:
        self.limit = limit
        self.identify = identify
        self.shape = shape  # the store blocks the installed sources own
        self._spaces: dict[str, _Namespace] = {}
        self._lock = threading.Lock()

    @property
    def bounded(self) -> bool:
        return self.limit > 0

    def observe(self, event: str, raw: Mapping[str, Any]) -> set[str]:
        """A SecretStore event (ADDED, MODIFIED, DELETED). Returns the names of the
        namespace's other SecretStores whose CA went from refused to allowed or back."""
        if not self.bounded:
            return set()
        meta = raw.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        new = None if event == "DELETED" else self._place(raw)
        with self._lock:
            space = self._spaces.get(namespace)
            old = space.places.get(name) if space is not None else None
            if old == new:
                return set()
            if space is None:
                space = self._spaces[namespace] = _Namespace()
            before = space.allowed(self.limit)
            keep = space.beyond_frontier(old) and space.beyond_frontier(new)
            if old is not None:
                space.remove(old)
            if new is not None:
                space.add(new)
            if not space.places:
                del self._spaces[namespace]
                return set()
            if not keep:
                space.invalidate()
            after = space.allowed(self.limit)
            moved: set[str] = set()
            for ca in before ^ after:
                moved |= space.by_ca.get(ca, set())
        moved.discard(name)
        return moved

    def refused(self, store: api.SecretStore, ca: CaIdentity) -> bool:
        """Whether `store` (a SecretStore whose private CA is `ca`) must not use it: its CA is
        not among the first `limit` of its namespace."""
        if not self.bounded or store.kind != api.StoreKind.SECRET_STORE:
            return False
        place = Place(store.created, store.name, ca)
        with self._lock:
            space = self._spaces.get(store.namespace)
            known = space.places.get(store.name) if space is not None else None
            if space is not None and known == place:
                return ca not in space.allowed(self.limit)
            others = [p for n, p in space.places.items() if n != store.name] \
                if space is not None else []
        return ca not in allowed_cas([*others, place], self.limit)

    def allows(self, namespace: str, name: str) -> bool:
        """Whether the indexed SecretStore `namespace/name` may use its CA (True for a store
        the index does not hold: without a CA, or unknown)."""
        with self._lock:
            space = self._spaces.get(namespace)
            place = space.places.get(name) if space is not None else None
            return place is None or space is None or place.ca in space.allowed(self.limit)

    def sizes(self) -> dict[str, int]:
        """Namespaces and stores indexed (for tests: deleted stores leave nothing)."""
        with self._lock:
            return {"namespaces": len(self._spaces),
                    "stores": sum(len(s.places) for s in self._spaces.values())}

    def _place(self, raw: Mapping[str, Any]) -> Place | None:
        try:
            store = api.parse_secret_store(raw, self.shape)
        except api.SpecError:
            return None  # refused as InvalidStore: it makes no session
        ca = self.identify(store)
        return None if ca is None else Place(store.created, store.name, ca)
