"""The reconciler's view of Kubernetes: cached reads from the informers, writes by
server-side apply, Events through the recorder. Implements `engine.reconciler.Kube` and
`engine.stores.SecretReader`.

Each write goes through its informer's write ticket, so the cache takes the result only if
nothing newer (an edit, a delete) reached the watch meanwhile. The fingerprints of our recent
Secret writes (`is_own_write`) are forgotten when the Secret's DELETED arrives and are bounded
in number, so they do not grow with every Secret ever written.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from controller.kube.events import EventRecorder
from controller.kube.informer import Informer, Key, overflow
from controller.kube.rest import (
    CLUSTER_SECRET_STORES,
    CONFIG_MAPS,
    EXTERNAL_SECRETS,
    NAMESPACES,
    SECRET_STORES,
    SECRETS,
    ApiError,
    Resource,
    Rest,
)
from controller.names import HASH, MANAGER, MERGE_TARGET, field_manager, merge_annotation

log = logging.getLogger(__name__)

NAMESPACE_TTL = 30.0
WRITES_REMEMBERED = 4
WRITTEN_MAX = 50_000  # Secrets whose writes we remember; forgetting one costs one extra sync


class KubeAccess:
    def __init__(
        self,
        rest: Rest,
        events: EventRecorder,
        *,
        external_secrets: Callable[[str], Informer | None],
        secret_stores: Callable[[str], Informer | None],
        cluster_secret_stores: Informer | None,
        secrets: Callable[[str], Informer | None],
        merged_secrets: Callable[[str], Informer | None] | None = None,
        on_write: Callable[[str, str], None] | None = None,
        written_max: int = WRITTEN_MAX,
    ) -> None:
        self.rest = rest
        self.events = events
        self._es = external_secrets
        self._stores = secret_stores
        self._cluster_stores = cluster_secret_stores
        self._secrets = secrets
        self._merged = merged_secrets or (lambda _ns: None)
        self.on_write = on_write or (lambda _kind, _verb: None)
        # Fingerprints of our recent writes per Secret, oldest Secret first.
        self._written: OrderedDict[Key, tuple[str, ...]] = OrderedDict()
        self._written_max = written_max
        self._watching_deletes: set[int] = set()  # id() of the Secret informers subscribed
        # namespace -> (when read, labels); entries older than the TTL are swept (amortized,
        # at most once per TTL), so deleted namespaces do not stay.
        self._ns_labels: dict[str, tuple[float, dict[str, str]]] = {}
        self._ns_swept = 0.0
        self.clock: Callable[[], float] = time.monotonic
        self._lock = threading.Lock()

    # -------------------------------------------------------------- reads
    def external_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        informer = self._es(namespace)
        return informer.get(namespace, name) if informer else None

    def store(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == "ClusterSecretStore":
            return self._cluster_stores.get("", name) if self._cluster_stores else None
        informer = self._stores(namespace)
        if informer is not None:
            return informer.get(namespace, name)
        return self._get(SECRET_STORES.path(namespace, name))  # outside the watched namespaces

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        for informer in (self._secrets(namespace), self._merged(namespace)):
            cached = informer.get(namespace, name) if informer else None
            if cached is not None and overflow(cached) is None:
                return cached
            if cached is not None:  # over its namespace's cache budget: read, not kept
                break
        # Not managed by us (or not yet in the cache): ask the apiserver.
        return self._get(SECRETS.path(namespace, name))

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A ConfigMap of templateFrom (read when a sync needs it; not watched)."""
        return self._get(CONFIG_MAPS.path(namespace, name))

    def read_secret_key(self, namespace: str, name: str, key: str) -> bytes | None:
        secret = self._get(SECRETS.path(namespace, name))
        if secret is None:
            return None
        value = (secret.get("data") or {}).get(key)
        if value is None:
            return None
        try:
            return base64.b64decode(value)
        except (binascii.Error, ValueError):
            return None

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        now = self.clock()
        with self._lock:
            hit = self._ns_labels.get(namespace)
        if hit is not None and now - hit[0] < NAMESPACE_TTL:
            return hit[1]
        obj = self._get(NAMESPACES.path(name=namespace)) or {}
        labels = dict(obj.get("metadata", {}).get("labels") or {})
        with self._lock:
            self._ns_labels[namespace] = (now, labels)
            if now - self._ns_swept >= NAMESPACE_TTL:
                self._ns_swept = now
                for name in [n for n, (at, _l) in self._ns_labels.items()
                             if now - at >= NAMESPACE_TTL]:
                    del self._ns_labels[name]
        return labels

    def namespace_labels_cached(self) -> int:
        with self._lock:
            return len(self._ns_labels)

    def is_own_write(self, secret: dict[str, Any]) -> bool:
        """Whether `secret` holds exactly what our last write of it put there (its watch
        event then needs no sync). Set before the write, so the event cannot outrun it."""
        meta = secret.get("metadata", {})
        with self._lock:
            written = self._written.get((meta.get("namespace", ""), meta.get("name", "")), ())
        return _fingerprint(secret) in written

    # ------------------------------------------------------------- writes
    def apply_secret(self, body: dict[str, Any], *, manager: str = MANAGER,
                     force: bool = True) -> dict[str, Any]:
        """Server-side apply `body` as `manager`; `force` takes over fields that other
        managers own (only for a Secret proven to be the writer's). Raises ApiError (409:
        conflicting fields, message names their managers)."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        labels = meta.get("labels") or {}
        informer = self._merged(ns) if MERGE_TARGET in labels else self._secrets(ns)
        self._remember_write((ns, name), _fingerprint(body), informer)
        ticket = informer.begin_write(ns, name) if informer is not None else None
        result: dict[str, Any] | None = None
        try:
            result = self.rest.apply(SECRETS.path(ns, name), body, manager, force=force)
        finally:
            if informer is not None and ticket is not None:
                informer.finish_write(ticket, result)
        self.on_write("Secret", "apply")
        return result or {}

    def forget_secret(self, key: Key) -> None:
        """Drop what we remember of our writes of the Secret `key` (it was deleted)."""
        with self._lock:
            self._written.pop(key, None)

    def written_count(self) -> int:
        with self._lock:
            return len(self._written)

    def _remember_write(self, key: Key, fingerprint: str, informer: Informer | None) -> None:
        """Set before the write, so its watch event cannot outrun it."""
        with self._lock:
            if informer is not None and id(informer) not in self._watching_deletes:
                informer.on_deleted(self.forget_secret)
                self._watching_deletes.add(id(informer))
            # The last few: a watch event of an earlier write may arrive after a later write.
            recent = self._written.pop(key, ())
            self._written[key] = (*recent[-(WRITES_REMEMBERED - 1):], fingerprint)
            while len(self._written) > self._written_max:
                self._written.popitem(last=False)

    def release_fields(self, namespace: str, name: str, manager: str) -> None:
        """Give up every field `manager` owns on a Secret (an apply of an empty body): fields
        no other manager owns are removed. Used once to retire the shared field manager of
        earlier releases."""
        body = {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace}}
        self.rest.apply(SECRETS.path(namespace, name), body, manager, force=False)
        self.on_write("Secret", "apply")

    def release_merge(self, namespace: str, name: str, uid: str) -> bool:
        """A deleted `Merge` ExternalSecret (`uid`) lets go of the user's Secret: an apply by
        its own field manager that keeps the data keys it wrote (their current values) and
        nothing else, so its labels and annotations (its marks, its template's metadata) go,
        and the merge-target label too once no other ExternalSecret merges into the Secret
        (each applies it: it stays while another still owns it). True when applied."""
        secret = self._get(SECRETS.path(namespace, name))
        if secret is None:
            return False
        annotations = (secret.get("metadata") or {}).get("annotations") or {}
        record = annotations.get(merge_annotation(uid, "owned-keys"))
        if record is None:
            return False  # never merged, or already released
        try:
            owned = {k for keys in json.loads(record).values() for k in keys}
        except (ValueError, AttributeError, TypeError):
            owned = set()
        data = secret.get("data") or {}
        body = {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "data": {k: v for k, v in data.items() if k in owned}}
        self.rest.apply(SECRETS.path(namespace, name), body, field_manager(uid), force=False)
        self.on_write("Secret", "apply")
        return True

    def delete_secret(self, namespace: str, name: str, uid: str) -> None:
        """Delete the Secret only if it is still the object with `uid` (a Secret re-created
        under the same name meanwhile is left alone: 409, raised). Gone already: done."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions",
                "preconditions": {"uid": uid}}
        try:
            self.rest.request("DELETE", SECRETS.path(namespace, name), body=body)
        except ApiError as err:
            if err.status != 404:
                raise
        self.on_write("Secret", "delete")

    def apply_status(self, es: dict[str, Any], status: dict[str, Any]) -> None:
        meta = es.get("metadata", {})
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        if self._apply_status(EXTERNAL_SECRETS, ns, name, status, self._es(ns)):
            self.on_write("ExternalSecretStatus", "apply")

    def apply_store_status(self, kind: str, store: dict[str, Any],
                           status: dict[str, Any]) -> None:
        """Server-side apply a SecretStore's or ClusterSecretStore's status (its Ready
        condition, secretstore/storestatus.py)."""
        meta = store.get("metadata", {})
        cluster = kind == CLUSTER_SECRET_STORES.kind
        resource = CLUSTER_SECRET_STORES if cluster else SECRET_STORES
        ns, name = ("" if cluster else meta.get("namespace", "")), meta.get("name", "")
        informer = self._cluster_stores if cluster else self._stores(ns)
        if self._apply_status(resource, ns, name, status, informer):
            self.on_write(f"{resource.kind}Status", "apply")

    def _apply_status(self, resource: Resource, ns: str, name: str, status: dict[str, Any],
                      informer: Informer | None) -> bool:
        """Apply `status` to the status subresource as this controller, through a write
        ticket of the object's cache. False when the object was deleted meanwhile (404)."""
        metadata = {"name": name, "namespace": ns} if ns else {"name": name}
        body = {"apiVersion": resource.api_version, "kind": resource.kind,
                "metadata": metadata, "status": status}
        ticket = informer.begin_write(ns, name) if informer is not None else None
        result: dict[str, Any] | None = None
        try:
            result = self.rest.apply(resource.path(ns, name, "status"), body, MANAGER)
        except ApiError as exc:
            if exc.status != 404:
                raise
        finally:
            if informer is not None and ticket is not None:
                informer.finish_write(ticket, result)
        return result is not None

    def remove_finalizer(self, es: dict[str, Any], finalizer: str) -> None:
        meta = es.get("metadata", {})
        current = list(meta.get("finalizers") or [])
        if finalizer not in current:
            return
        ops = [{"op": "test", "path": "/metadata/finalizers", "value": current},
               {"op": "replace", "path": "/metadata/finalizers",
                "value": [f for f in current if f != finalizer]}]
        path = EXTERNAL_SECRETS.path(meta.get("namespace", ""), meta.get("name", ""))
        try:
            self.rest.json_patch(path, ops)
            self.on_write("ExternalSecret", "patch")
            log.info("removed ack-secret-manager's finalizer from ExternalSecret %s/%s",
                     meta.get("namespace"), meta.get("name"))
        except ApiError as exc:
            if exc.status not in (404, 409, 422):
                raise

    def event(self, es: dict[str, Any], kind: str, reason: str, message: str) -> None:
        if self.events.record(es, kind, reason, message):
            self.on_write("Event", "create")

    # ------------------------------------------------------------ helpers
    def _get(self, path: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.rest.get(path)
            return result
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise



def _fingerprint(secret: dict[str, Any]) -> str:
    """Digest of a Secret's data and content-hash annotation (what our writes decide)."""
    annotations = secret.get("metadata", {}).get("annotations") or {}
    material = json.dumps([secret.get("data") or {}, annotations.get(HASH, "")],
                          sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()
