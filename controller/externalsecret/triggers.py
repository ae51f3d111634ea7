"""Which ExternalSecrets a watch event concerns: the object itself when its spec or force-sync
annotation changed, the writers of a Secret that someone else changed, the users of a store
that changed.

Pure bookkeeping over parsed models (the same parse the sync uses); not thread-safe on its
own: the manager calls it under the lock that also guards the poll schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller import api
from controller.names import MERGE_DOMAIN, SOURCE

Key = tuple[str, str]


@dataclass(frozen=True)
class Seen:
    generation: int
    force: str  # the force-sync annotation's value
    whole: bool = True  # False: a stub (over its namespace's cache budget, no spec)


class Triggers:
    def __init__(self) -> None:
        self._seen: dict[Key, Seen] = {}
        self._stores: dict[Key, frozenset[api.StoreRef]] = {}
        self._by_store: dict[api.StoreRef, set[Key]] = {}

    # ------------------------------------------------------------ ExternalSecrets
    def observe(self, key: Key, seen: Seen,
                es: api.ExternalSecret | None) -> tuple[bool, bool]:
        """An ExternalSecret was added or changed (`es`: its parse, None if it does not
        parse). Returns (changed: it is new, its generation or force-sync annotation moved,
        or it became a stub or whole again; forced: the force-sync annotation changed on a
        known object held whole)."""
        before = self._seen.get(key)
        self._seen[key] = seen
        self._index(key, stores_of(es) if es is not None else frozenset())
        forced = before is not None and before.whole and seen.whole and \
            before.force != seen.force
        return before != seen, forced

    def forget(self, key: Key) -> None:
        self._seen.pop(key, None)
        self._index(key, frozenset())

    def alive(self, key: Key) -> bool:
        return key in self._seen

    # ------------------------------------------------------------------ stores
    def store_users(self, ref: api.StoreRef) -> frozenset[Key]:
        return frozenset(self._by_store.get(ref, ()))

    def _index(self, key: Key, refs: frozenset[api.StoreRef]) -> None:
        before = self._stores.pop(key, frozenset())
        for ref in before - refs:
            users = self._by_store.get(ref)
            if users is not None:
                users.discard(key)
                if not users:
                    del self._by_store[ref]
        if refs:
            self._stores[key] = refs
        for ref in refs:
            self._by_store.setdefault(ref, set()).add(key)

    def sizes(self) -> dict[str, int]:
        return {"seen": len(self._seen), "stores": len(self._stores),
                "by_store": len(self._by_store)}


def stores_of(es: api.ExternalSecret) -> frozenset[api.StoreRef]:
    return frozenset(e.store_ref for e in es.spec.entries if e.store_ref is not None)


def store_ref(kind: str, namespace: str, name: str) -> api.StoreRef:
    if kind == "ClusterSecretStore":
        return api.StoreRef(api.StoreKind.CLUSTER_SECRET_STORE, "", name)
    return api.StoreRef(api.StoreKind.SECRET_STORE, namespace, name)


def writers(annotations: Mapping[str, str]) -> list[str]:
    """The ExternalSecrets that write a Secret: its owner and every one merging into it."""
    names = [annotations[SOURCE]] if annotations.get(SOURCE) else []
    suffix = f".{MERGE_DOMAIN}/external-secret"
    names += [v for k, v in annotations.items() if k.endswith(suffix) and v]
    return list(dict.fromkeys(names))
