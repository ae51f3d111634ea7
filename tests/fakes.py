"""Plain fakes of the reconciler's collaborators, shared by unit tests: a Kubernetes that keeps
Secrets with server-side apply's field ownership (enough of it to show conflicts, pruning and
forced takeovers), and the wiring of a Reconciler over it and the fake provider
(controller/providers/fake); or, for the tests of Alibaba's store rules, over the Alibaba
provider reading a KMS fake that serves values from a dict. No network, no threads; the fake
clock decides what is fresh."""

from __future__ import annotations

import base64
import copy
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from controller import api
from controller.externalsecret.fetcher import Fetcher
from controller.externalsecret.reconciler import Reconciler, SyncBudgetLimits
from controller.providers import FetchError, Kind
from controller.providers.alibaba.identity import Identity
from controller.providers.alibaba.kms import Endpoint, SecretValue
from controller.providers.alibaba.provider import NAMES, Alibaba
from controller.providers.alibaba.shape import SHAPE as ALIBABA
from controller.providers.fake import FakeProvider
from controller.providers.registry import Providers
from controller.runtime.clock import FakeClock
from controller.secretstore.cas import PrivateCas
from controller.secretstore.stores import StoreResolver, ca_identities
from controller.settings import Settings, load

# ("data", key), ("labels", key), ("annotations", key), ("ownerReferences", uid), ("type", "")
Field = tuple[str, str]


class ApplyConflict(Exception):
    """What the apiserver answers when an apply without force meets another manager's field."""

    def __init__(self, message: str) -> None:
        self.status = 409
        self.message = message
        super().__init__(message)


class FakeKube:
    """Implements `externalsecret.reconciler.Kube` and `secretstore.stores.SecretReader`
    over dicts."""

    def __init__(self) -> None:
        self.external_secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.owners: dict[tuple[str, str], dict[Field, set[str]]] = {}
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}
        self.config_maps: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str, str]] = []  # (object, type, reason, message)
        self.applies: list[tuple[str, str, bool]] = []  # (secret, manager, force)
        self.released: list[tuple[str, str]] = []
        self.deleted: list[str] = []  # Secrets deleted by the controller
        self.before_apply: Callable[[dict[str, Any]], None] | None = None  # race hook
        self.hide_secrets = False  # the cache has not seen a Secret yet (a race)
        self._rv = itertools.count(1)

    # ------------------------------------------------------------------ reads
    def external_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.external_secrets.get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.hide_secrets:
            return None
        obj = self.secrets.get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.config_maps.get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def read_secret_key(self, namespace: str, name: str, key: str) -> bytes | None:
        obj = self.secrets.get((namespace, name))
        value = (obj or {}).get("data", {}).get(key)
        return None if value is None else base64.b64decode(value)

    # ----------------------------------------------------------------- writes
    def put_user_secret(self, namespace: str, name: str, data: dict[str, str], *,
                        manager: str = "kubectl", **meta: Any) -> None:
        body = {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace, **meta},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
        self._apply(body, manager, force=True)

    def apply_secret(self, body: dict[str, Any], *, manager: str,
                     force: bool) -> dict[str, Any]:
        if self.before_apply is not None:
            hook, self.before_apply = self.before_apply, None
            hook(body)
        meta = body["metadata"]
        self.applies.append((meta["name"], manager, force))
        return self._apply(body, manager, force=force)

    def delete_secret(self, namespace: str, name: str, uid: str) -> None:
        current = self.secrets.get((namespace, name))
        if current is None:
            return
        if current.get("metadata", {}).get("uid", "") != uid:
            raise RuntimeError("409 Conflict: precondition failed: UID in precondition")
        del self.secrets[(namespace, name)]
        self.owners.pop((namespace, name), None)
        self.deleted.append(name)

    def release_fields(self, namespace: str, name: str, manager: str) -> None:
        self.released.append((name, manager))
        self._apply({"metadata": {"name": name, "namespace": namespace}}, manager, force=False)

    def apply_status(self, es: dict[str, Any], status: dict[str, Any]) -> None:
        meta = es["metadata"]
        key = (meta["namespace"], meta["name"])
        self.statuses[key] = copy.deepcopy(status)
        if key in self.external_secrets:
            self.external_secrets[key]["status"] = copy.deepcopy(status)

    def remove_finalizer(self, es: dict[str, Any], finalizer: str) -> None:
        meta = self.external_secrets[(es["metadata"]["namespace"], es["metadata"]["name"])][
            "metadata"]
        meta["finalizers"] = [f for f in meta.get("finalizers", []) if f != finalizer]

    def event(self, es: dict[str, Any], kind: str, reason: str, message: str) -> None:
        self.events.append((es["metadata"]["name"], kind, reason, message))

    # ------------------------------------------------------- server-side apply
    def _apply(self, body: dict[str, Any], manager: str, *, force: bool) -> dict[str, Any]:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        current = self.secrets.get(key)
        owners = self.owners.setdefault(key, {})
        wanted = _fields(body)
        have = _fields(current) if current else {}
        conflicts = sorted(
            f"conflict with \"{other}\": .{f[0]}.{f[1]}"
            for f, value in wanted.items() if f in have and have[f] != value
            for other in owners.get(f, set()) - {manager})
        if conflicts and not force:
            raise ApplyConflict(f"Apply failed with {len(conflicts)} conflicts: "
                                + "; ".join(conflicts))
        merged = dict(have)
        for f, value in wanted.items():
            if f in have and have[f] != value:
                owners[f] = set()  # forced (or unowned): the applier takes it alone
            merged[f] = value
            owners.setdefault(f, set()).add(manager)
        for f, who in list(owners.items()):
            if manager in who and f not in wanted:
                who.discard(manager)
                if not who:
                    del owners[f]
                    merged.pop(f, None)
        obj = _build(meta["namespace"], meta["name"], merged)
        rv = next(self._rv)
        obj["metadata"]["resourceVersion"] = str(rv)
        # the uid stays the object's own until it is deleted
        obj["metadata"]["uid"] = (current or {}).get("metadata", {}).get("uid") or f"uid-{rv}"
        obj["metadata"]["managedFields"] = [
            {"manager": m, "operation": "Apply"}
            for m in sorted({m for who in owners.values() for m in who})]
        self.secrets[key] = obj
        return copy.deepcopy(obj)

    def data(self, namespace: str, name: str) -> dict[str, str] | None:
        obj = self.secrets.get((namespace, name))
        if obj is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}

    def gc(self, uid: str) -> None:
        """The garbage collector after the owner with `uid` is deleted."""
        for key, obj in list(self.secrets.items()):
            refs = obj["metadata"].get("ownerReferences") or []
            if refs and all(r["uid"] == uid for r in refs):
                del self.secrets[key]


def _fields(obj: dict[str, Any]) -> dict[Field, Any]:
    meta = obj.get("metadata", {})
    out: dict[Field, Any] = {}
    for part in ("labels", "annotations"):
        for k, v in (meta.get(part) or {}).items():
            out[(part, k)] = v
    for ref in meta.get("ownerReferences") or []:
        out[("ownerReferences", ref["uid"])] = dict(ref)
    for k, v in (obj.get("data") or {}).items():
        out[("data", k)] = v
    if obj.get("type"):
        out[("type", "")] = obj["type"]
    return out


def _build(namespace: str, name: str, fields: dict[Field, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": meta}
    for (part, k), v in sorted(fields.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        if part in ("labels", "annotations"):
            meta.setdefault(part, {})[k] = v
        elif part == "ownerReferences":
            meta.setdefault(part, []).append(v)
        elif part == "data":
            obj.setdefault("data", {})[k] = v
        else:
            obj["type"] = v
    controllers = [r for r in meta.get("ownerReferences", []) if r.get("controller")]
    if len(controllers) > 1:
        raise ApplyConflict("Only one reference can have Controller set to true")
    return obj


class FakeKms:
    """An Alibaba reader (`providers.alibaba.provider.Reader`) over a dict; `fail` maps a
    secret to an error to raise."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.fail: dict[str, BaseException] = {}
        self.reads: list[str] = []

    def get_secret_value(self, identity: Identity, endpoint: Endpoint, name: str,
                         version_id: str = "", version_stage: str = "") -> SecretValue:
        self.reads.append(name)
        if name in self.fail:
            raise self.fail[name]
        if name not in self.values:
            raise FetchError(Kind.NOT_FOUND, "Forbidden.ResourceNotFound",
                             f"Forbidden.ResourceNotFound: {name} does not exist")
        return SecretValue(name, self.values[name].encode(), "text", "v1")


AK = {"accessKey": {"name": "ak", "key": "id"}, "accessKeySecret": {"name": "ak", "key": "s"}}


class World:
    """A Reconciler over FakeKube and the fake provider (`kms`: its values, faults and reads),
    with one AccessKey SecretStore "store". `alibaba`: the Alibaba provider reading FakeKms
    instead, for the tests of its store rules (private CAs, ...)."""

    def __init__(self, argv: list[str] | None = None, namespace: str = "team",
                 provider: FakeProvider | None = None, *, alibaba: bool = False,
                 shape: api.SourceShape = ALIBABA) -> None:
        self.ns = namespace
        self.settings: Settings = load(argv or ["--polling-interval", "1h"], {})
        self.kube = FakeKube()
        self.clock = FakeClock()
        self.stores: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.providers = Providers()
        self.kms: FakeProvider | FakeKms
        if alibaba:
            self.kms = FakeKms()
            self.providers.register(Alibaba(self.settings, kms=self.kms), shape=ALIBABA)
        else:
            self.kms = provider or FakeProvider()
            self.providers.register(self.kms, *(() if shape is not ALIBABA else NAMES),
                                    shape=shape)
        # --max-cas-per-namespace, its index fed by add_store as the informer would
        self.cas = PrivateCas(self.settings.max_cas_per_namespace,
                              ca_identities(self.providers), self.providers.shape)
        self.kube.put_user_secret(namespace, "ak", {"id": "LTAI-x", "s": "ak-secret"})
        self.add_store("store", {"KMSAuth": AK})
        self.resolver = StoreResolver(self.settings, self._store, self.kube, lambda _ns: {},
                                      self.providers, cas=self.cas)
        self.fetcher = Fetcher(self.providers, self.clock)
        self.reconciler = Reconciler(
            self.kube, self.resolver, self.fetcher,
            shape=self.providers.shape,
            default_interval=self.settings.polling_interval,
            disable_polling=self.settings.disable_polling,
            now=lambda: datetime(2026, 12, 1, tzinfo=UTC),
            bounds=api.IntervalBounds(self.settings.refresh_floor(),
                                        self.settings.max_refresh_interval),
            cleanup_on_failure=self.settings.cleanup_secret_on_failure,
            budget=SyncBudgetLimits(self.settings.sync_budget_bytes,
                                    self.settings.sync_budget_steps))
        self._uids = itertools.count(1)

    def _store(self, kind: api.StoreKind, namespace: str, name: str) -> dict[str, Any] | None:
        return self.stores.get((str(kind), namespace, name))

    def add_store(self, name: str, kms: dict[str, Any], created: str = "", *,
                  block: str = "KMS") -> None:
        """Add (or replace) SecretStore `name` with `kms` as its spec.<block>; `created`: its
        creationTimestamp."""
        event = "MODIFIED" if ("SecretStore", self.ns, name) in self.stores else "ADDED"
        raw = self.stores[("SecretStore", self.ns, name)] = {
            "kind": "SecretStore", "metadata": {"name": name, "namespace": self.ns,
                                                "uid": f"store-{name}", "resourceVersion": "1",
                                                "creationTimestamp": created},
            "spec": {block: kms}}
        self.cas.observe(event, raw)

    def add_es(self, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
        obj = {"apiVersion": "alibabacloud.com/v1alpha1", "kind": "ExternalSecret",
               "metadata": {"name": name, "namespace": self.ns, "uid": f"uid-{name}-"
                            f"{next(self._uids)}", "generation": 1, "resourceVersion": "1",
                            **meta},
               "spec": spec}
        self.kube.external_secrets[(self.ns, name)] = obj
        return obj

    def update_spec(self, name: str, spec: dict[str, Any]) -> None:
        obj = self.kube.external_secrets[(self.ns, name)]
        obj["spec"] = spec
        obj["metadata"]["generation"] += 1

    def reconcile(self, name: str) -> Any:
        return self.reconciler.reconcile(self.ns, name)

    def reason(self, name: str) -> str:
        status = self.kube.statuses.get((self.ns, name)) or {}
        return next((c["reason"] for c in status.get("conditions", [])), "")

    def message(self, name: str) -> str:
        status = self.kube.statuses.get((self.ns, name)) or {}
        return next((c["message"] for c in status.get("conditions", [])), "")


def entry(key: str, store: str | None = "store", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, **extra}
    if store:
        out["secretStoreRef"] = {"name": store}
    return out
