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
  (fetcher, resolver, the Alibaba stores' identity cache, KubeAccess, Kms, IdentityPool,
  tokens, Event recorder, the log redactor: its owners and the forms it remembers) are
  written to $BENCH_SIZES_OUT as JSON, to see which map grows.
- `heap-stats` (bench/churn.py --heap-stats): on SIGUSR2 the controller writes to
  $BENCH_HEAP_OUT what its heap holds: glibc's mallinfo2 (in use, free, mmapped), pymalloc's
  arenas and blocks, the gc-tracked objects by type and the RSS; with $BENCH_HEAP_GC set,
  the same after a full gc.collect(); then, if the file
  $BENCH_HEAP_OUT.trim exists, it calls malloc_trim(0) and writes the RSS after. Whether RSS
  that is not given back is live objects or free heap the allocators keep. For each type
  named in $BENCH_HEAP_WHO (comma-separated), one instance's chain of referrers (type names,
  and the key or attribute that holds it) shows who keeps such objects alive.
"""

from __future__ import annotations

import ctypes
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
    from controller.kube import tokens
    from controller.providers.alibaba import identity

    identity.IDLE_SECONDS = SHORT_IDLE
    tokens.TOKEN_IDLE = SHORT_IDLE
    original = tokens.ServiceAccountTokens.__init__

    def init(self: tokens.ServiceAccountTokens, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.refresh_every = min(self.refresh_every, SHORT_IDLE / 2)

    tokens.ServiceAccountTokens.__init__ = init  # type: ignore[method-assign]


def _manager_init_hook(hook: Any) -> None:
    """Run `hook(manager, kms)` after every ExternalSecrets.__init__."""
    from controller.externalsecret.controller import ExternalSecrets

    original = ExternalSecrets.__init__

    def init(self: ExternalSecrets, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        providers = args[2] if len(args) > 2 else kwargs["providers"]
        hook(self, next(p for p in providers if hasattr(p, "readers")))  # the Alibaba one

    ExternalSecrets.__init__ = init  # type: ignore[method-assign]


def _patch_token_owner() -> None:
    def wire(manager: Any, alibaba: Any) -> None:
        tokens = alibaba.tokens
        if tokens is not None and getattr(tokens, "in_use", "n/a") is None:
            tokens.in_use = alibaba.identities.token_file_in_use

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

    def watch(manager: Any, alibaba: Any) -> None:
        kms = alibaba.readers["kms"]
        objects = {"manager": manager, "fetcher": manager.fetcher, "resolver": manager.resolver,
                   "stores": alibaba.stores, "kube": manager.kube, "events": manager.events,
                   "kms": kms, "kms.clients": kms.clients, "identities": alibaba.identities,
                   "reconciler": manager.reconciler}
        tokens = alibaba.tokens
        if tokens is not None:
            objects["tokens"] = tokens

        from controller.ops.redact import default_redactor

        redactor = default_redactor()
        objects["redactor"] = redactor

        def loop() -> None:
            while True:
                try:
                    sizes = _sizes_of(objects)
                    sizes["redactor.forms"] = len(redactor)
                    text = json.dumps(sizes, sort_keys=True)
                    with open(out + ".tmp", "w") as fh:
                        fh.write(text)
                    os.replace(out + ".tmp", out)
                except (OSError, RuntimeError):  # a dict resized while read: next time
                    pass
                time.sleep(5.0)

        threading.Thread(target=loop, name="bench-map-sizes", daemon=True).start()

    _manager_init_hook(watch)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


_PYMALLOC = {"# arenas allocated current": "pymalloc_arenas",
             "# bytes in allocated blocks": "pymalloc_allocated_mb",
             "# bytes in available blocks": "pymalloc_available_mb",
             "# bytes lost to pool headers": "pymalloc_pool_headers_mb",
             "# bytes lost to quantization": "pymalloc_quantization_mb",
             "Total": "pymalloc_total_mb"}


def _pymalloc_stats() -> dict[str, float]:
    """sys._debugmallocstats() writes to the C stderr: catch it in a file and pick the
    totals (the first "Total" is the arenas' bytes, the second the arena map's)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read()
    out: dict[str, float] = {}
    for line in text.splitlines():
        label, _, value = line.rpartition("=")
        key = _PYMALLOC.get(label.strip())
        if key is not None and key not in out:  # the first "Total": the arenas' bytes
            number = float(value.strip().replace(",", ""))
            out[key] = number if key == "pymalloc_arenas" else round(number / 2**20, 1)
    return out


def _heap_stats(libc: ctypes.CDLL) -> dict[str, Any]:
    import gc
    from collections import Counter

    mi = libc.mallinfo2()
    mb = 2**20
    pymalloc = _pymalloc_stats()
    types = Counter(type(o).__name__ for o in gc.get_objects())
    from bench.probes import memory

    return {"rss_mb": round(memory(os.getpid())["VmRSS"], 1),
            "malloc_in_use_mb": round(mi.uordblks / mb, 1),
            "malloc_free_mb": round(mi.fordblks / mb, 1),
            "malloc_arena_mb": round(mi.arena / mb, 1),
            "malloc_mmapped_mb": round(mi.hblkhd / mb, 1),
            "pymalloc_blocks": sys.getallocatedblocks(), **pymalloc,
            "gc_objects": sum(types.values()), "threads": threading.active_count(),
            "top_types": dict(types.most_common(25))}


def _holder(parent: Any, child: Any) -> str:
    """How `parent` holds `child`: the key, attribute or index (names only, never values)."""
    if isinstance(parent, dict):
        for key, value in parent.items():
            if value is child:
                return f"dict[{key!r:.60}]"
            if key is child:
                return "dict key"
        return "dict"
    if isinstance(parent, (list, tuple, set, frozenset)):
        return type(parent).__name__
    return type(parent).__name__


_PROBE = ("_chain", "_who", "dump")


def _ours(obj: Any) -> bool:
    """This probe's own frames and the dict of objects it found."""
    import types

    if isinstance(obj, types.FrameType):
        return obj.f_code.co_name in _PROBE
    return isinstance(obj, dict) and obj.get("__heap_probe__") is True


def _chain(obj: Any, depth: int = 12) -> list[str]:
    """Referrers from `obj` upwards (the first one that is not this probe's own bookkeeping)
    until a module, a class, a frame or nothing: no closures here, so no cells of ours."""
    import gc
    import types

    chain: list[str] = [type(obj).__name__]
    seen = {id(obj), id(chain)}
    current = obj
    for _ in range(depth):
        parents: list[Any] = []
        seen.add(id(parents))
        for ref in gc.get_referrers(current):
            if id(ref) not in seen and not _ours(ref):
                parents.append(ref)
        if not parents:
            chain.append("(no other referrer: unreachable garbage, or held from C)")
            break
        parent = parents[0]
        label = _holder(parent, current)
        if isinstance(parent, dict):
            for owner in gc.get_referrers(parent):
                if getattr(owner, "__dict__", None) is parent:
                    parent, label = owner, f"{type(owner).__name__}.{label[5:-1].strip(chr(39))}"
                    break
        if isinstance(parent, types.FrameType):
            label = (f"frame {parent.f_code.co_name} ({parent.f_code.co_filename}:"
                     f"{parent.f_lineno})")
        chain.append(label + (f" (+{len(parents) - 1} other referrers)"
                              if len(parents) > 1 else ""))
        if isinstance(parent, (types.ModuleType, type, types.FrameType)):
            if not isinstance(parent, types.FrameType):
                chain.append(f"{type(parent).__name__} {getattr(parent, '__name__', '')}")
            break
        seen.add(id(parent))
        current = parent
    return chain


def _who(names: list[str]) -> dict[str, list[str]]:
    import gc

    wanted, found = set(names), {"__heap_probe__": True}
    everything = gc.get_objects()
    for obj in everything:
        name = type(obj).__name__
        if name in wanted and name not in found:
            found[name] = obj
    del everything, obj
    chains: dict[str, list[str]] = {}
    for name in wanted:  # no items() iterator: it would show up as a referrer
        if name in found:
            chains[name] = _chain(found[name])
    return chains


def _patch_heap_stats() -> None:
    import signal

    out = os.environ.get("BENCH_HEAP_OUT", "heap-stats.json")
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc_trim.argtypes = [ctypes.c_size_t]

    who = [n for n in os.environ.get("BENCH_HEAP_WHO", "").split(",") if n]

    def dump(_signum: int, _frame: Any) -> None:
        import gc

        stats = _heap_stats(libc)
        if who:
            stats["who"] = _who(who)
        if os.environ.get("BENCH_HEAP_GC"):
            stats["gc_collected"] = gc.collect()
            stats["after_gc"] = _heap_stats(libc)
        if os.path.exists(out + ".trim"):
            libc.malloc_trim(0)
            stats["after_trim"] = {k: v for k, v in _heap_stats(libc).items()
                                   if k != "top_types"}
        with open(out + ".tmp", "w") as fh:
            json.dump(stats, fh)
        os.replace(out + ".tmp", out)

    signal.signal(signal.SIGUSR2, dump)


PATCHES = {"intern": _patch_intern, "no-intern": _patch_no_intern,
           "no-secret-get": _patch_no_secret_get, "events-lru": _patch_events_lru,
           "short-idle": _patch_short_idle, "token-owner": _patch_token_owner,
           "map-sizes": _patch_map_sizes, "heap-stats": _patch_heap_stats}


def apply_from_env() -> None:
    for name in filter(None, os.environ.get("BENCH_PATCHES", "").split(",")):
        PATCHES[name]()


def main() -> int:
    apply_from_env()
    from controller.cli import main as controller_main

    return controller_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
