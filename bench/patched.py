"""`python -m bench.patched <controller flags>`: the controller with experimental changes
applied in memory, for `python -m bench --controller-patch NAME`.

This is how the benchmark measures a proposed change before anyone edits controller/: the
same run with and without the patch. The patches named in $BENCH_PATCHES (comma-separated)
are applied, then `controller.cli.main` runs unchanged. None of them is meant to ship as is;
docs/performance.md says what each one stands for. `intern` and `events-lru` are in the
controller since commit 7f51226 (applying them there changes nothing); they stay here to
repeat the before/after on older revisions.

- `intern`: the informer caches keep one copy of each dict key and of each short string
  value (`sys.intern`), instead of one per object, and drop kubectl's
  last-applied-configuration annotation. Secret `data` values are left alone.
- `events-lru`: the Event recorder's dedup memory (`EventRecorder._recent`) becomes an
  OrderedDict in time order that forgets its oldest entries as new ones come (beyond 10,000
  or older than the dedup window), so `record()` never rebuilds the whole dict.
- `no-intern`: the informer caches as before 7f51226 (only managedFields dropped), to measure
  what interning costs and saves on a revision that has it.
- `no-secret-get`: a Secret missing from the cache is taken as missing, without asking the
  apiserver. UNSAFE as is (an unmanaged Secret of the same name would be overwritten): it
  is the upper bound of what a metadata-only cache of all Secrets would save.
- `short-idle` (bench/churn.py): the idle bounds of the per-identity and per-host maps
  (credentials, SDK clients, limiters, ServiceAccount tokens; 10 minutes in the controller)
  become 20 s, and tokens are checked every 10 s, so that three churn rounds fit in minutes.
  The pruning is the controller's own; only its timing changes.
- `token-owner`: `ServiceAccountTokens` is told which token files live identities read
  (`IdentityPool.token_file_in_use`); the controller now does this wiring itself, so the
  patch changes nothing (kept so the recorded commands still run).
- `map-sizes`: every 5 s, the sizes of the maps of the manager and the objects it holds
  (fetcher, resolver, KubeAccess, Kms, IdentityPool, tokens, Event recorder) are written to
  $BENCH_SIZES_OUT as JSON, to see which map grows.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

INTERN_MAX = 64
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _compact(value: Any, in_data: bool = False) -> Any:
    if isinstance(value, dict):
        return {sys.intern(k): _compact(v, in_data or k in ("data", "stringData"))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v, in_data) for v in value]
    if isinstance(value, str) and not in_data and len(value) <= INTERN_MAX:
        return sys.intern(value)
    return value


def _patch_intern() -> None:
    from controller.kube import informer

    def slim(obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata", {})
        meta.pop("managedFields", None)
        (meta.get("annotations") or {}).pop(LAST_APPLIED, None)
        compact: dict[str, Any] = _compact(obj)
        return compact

    informer._slim = slim


def _patch_no_intern() -> None:
    from controller.kube import informer

    def slim(obj: dict[str, Any]) -> dict[str, Any]:
        obj.get("metadata", {}).pop("managedFields", None)
        return obj

    informer._slim = slim


def _patch_no_secret_get() -> None:
    from controller.kube.access import KubeAccess

    def secret(self: KubeAccess, namespace: str, name: str) -> dict[str, Any] | None:
        informer = self._secrets(namespace)
        return informer.get(namespace, name) if informer else None

    KubeAccess.secret = secret  # type: ignore[method-assign]


class _RecentEvents(OrderedDict[Any, float]):
    """Insertion (= time) ordered; setting a key moves it to the end and evicts from the
    front what is older than `window` or beyond `cap`, so len() never exceeds `cap`."""

    def __init__(self, window: float, cap: int = 10_000) -> None:
        super().__init__()
        self.window, self.cap = window, cap

    def __setitem__(self, key: Any, value: float) -> None:
        if key in self:
            self.move_to_end(key)
        super().__setitem__(key, value)
        while self and (len(self) > self.cap or next(iter(self.values())) < value - self.window):
            self.popitem(last=False)


def _patch_events_lru() -> None:
    from controller.kube.events import EventRecorder

    original = EventRecorder.__init__

    def init(self: EventRecorder, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._recent = _RecentEvents(self.dedup_window)

    EventRecorder.__init__ = init  # type: ignore[method-assign]


SHORT_IDLE = 20.0


def _patch_short_idle() -> None:
    from controller.alicloud import identity
    from controller.kube import tokens

    identity.IDLE_SECONDS = SHORT_IDLE
    tokens.TOKEN_IDLE = SHORT_IDLE
    original = tokens.ServiceAccountTokens.__init__

    def init(self: tokens.ServiceAccountTokens, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.refresh_every = min(self.refresh_every, SHORT_IDLE / 2)

    tokens.ServiceAccountTokens.__init__ = init  # type: ignore[method-assign]


def _manager_init_hook(hook: Any) -> None:
    """Run `hook(manager, kms)` after every Manager.__init__."""
    from controller.manager import Manager

    original = Manager.__init__

    def init(self: Manager, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        hook(self, args[2] if len(args) > 2 else kwargs["kms"])

    Manager.__init__ = init  # type: ignore[method-assign]


def _patch_token_owner() -> None:
    def wire(manager: Any, kms: Any) -> None:
        tokens = getattr(manager.resolver, "sa_token_file", None)
        if tokens is not None and getattr(tokens, "in_use", "n/a") is None:
            tokens.in_use = kms.identities.token_file_in_use

    _manager_init_hook(wire)


def _sizes_of(objects: dict[str, Any]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for label, obj in objects.items():
        for name, value in list(vars(obj).items()):
            if isinstance(value, (dict, set, list, OrderedDict)):
                sizes[f"{label}.{name}"] = len(value)
    return sizes


def _patch_map_sizes() -> None:
    out = os.environ.get("BENCH_SIZES_OUT", "map-sizes.json")

    def watch(manager: Any, kms: Any) -> None:
        objects = {"manager": manager, "fetcher": manager.fetcher, "resolver": manager.resolver,
                   "kube": manager.kube, "events": manager.events, "kms": kms,
                   "kms.clients": kms.clients, "identities": kms.identities,
                   "reconciler": manager.reconciler}
        tokens = getattr(manager.resolver, "sa_token_file", None)
        if tokens is not None:
            objects["tokens"] = tokens

        def loop() -> None:
            while True:
                try:
                    text = json.dumps(_sizes_of(objects), sort_keys=True)
                    with open(out + ".tmp", "w") as fh:
                        fh.write(text)
                    os.replace(out + ".tmp", out)
                except (OSError, RuntimeError):  # a dict resized while read: next time
                    pass
                time.sleep(5.0)

        threading.Thread(target=loop, name="bench-map-sizes", daemon=True).start()

    _manager_init_hook(watch)


PATCHES = {"intern": _patch_intern, "no-intern": _patch_no_intern,
           "no-secret-get": _patch_no_secret_get, "events-lru": _patch_events_lru,
           "short-idle": _patch_short_idle, "token-owner": _patch_token_owner,
           "map-sizes": _patch_map_sizes}


def apply_from_env() -> None:
    for name in filter(None, os.environ.get("BENCH_PATCHES", "").split(",")):
        PATCHES[name]()


def main() -> int:
    apply_from_env()
    from controller.cli import main as controller_main

    return controller_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
