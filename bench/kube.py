"""The benchmark's side of the apiserver: raw JSON requests through the kubernetes client, and
a `Tracker` that watches ExternalSecrets and the controller's Secrets and records when each
became Ready, appeared, or took a value.

Everything is plain dicts (no generated models), so creating and watching 10,000 objects
costs the benchmark little CPU, which the controller and the apiserver need on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kubernetes import client, config

from controller.kube.informer import watch_events

GROUP, VERSION = "alibabacloud.com", "v1alpha1"
MANAGED_BY = "app.kubernetes.io/managed-by=ack-secret-manager"


class ApiError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        super().__init__(f"{status}: {body[:300].decode(errors='replace')}")


class Kube:
    """Requests by path, as the cluster admin, over one pooled ApiClient."""

    def __init__(self, kubeconfig: Path, pool: int = 32) -> None:
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = pool
        self.api = client.ApiClient(cfg)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.api.close()

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: Any = None, timeout: Any = 30.0, stream: bool = False) -> Any:
        params = [(k, _q(v)) for k, v in (query or {}).items() if v is not None]
        serialized = self.api.param_serialize(
            method=method, resource_path=path, query_params=params,
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body, auth_settings=["BearerToken"])
        try:
            resp = self.api.call_api(*serialized, _request_timeout=timeout)
        except client.exceptions.ApiException as exc:
            raise ApiError(int(exc.status or 0), str(exc.body or "").encode()) from None
        if not 200 <= resp.status <= 299:
            raise ApiError(resp.status, resp.read() or b"")
        if stream:
            return resp.response
        data = resp.read()
        return json.loads(data) if data else {}

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", path, body=body)
        return result

    def version(self) -> str:
        return str(self.request("GET", "/version").get("gitVersion", ""))


def es_path(namespace: str = "", name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}"
    if namespace:
        base += f"/namespaces/{quote(namespace)}"
    base += "/externalsecrets"
    return base + (f"/{quote(name)}" if name else "")


def store_path(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/secretstores"


def secret_path(namespace: str = "") -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/secrets" if namespace else "/api/v1/secrets"


def _q(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_ready(obj: dict[str, Any]) -> bool:
    """Ready=True for the current generation (the controller has seen this spec)."""
    meta, status = obj.get("metadata", {}), obj.get("status") or {}
    if status.get("observedGeneration") != meta.get("generation"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])


Key = tuple[str, str]


class _Watch(threading.Thread):
    """List, then watch from the list's resourceVersion (relist on 410), calling `apply` for
    every object with the time (time.monotonic) it arrived."""

    def __init__(self, kube: Kube, path: str, apply: Callable[[str, dict[str, Any], float], None],
                 label_selector: str | None = None) -> None:
        super().__init__(name=f"watch {path}", daemon=True)
        self.kube, self.path, self.apply = kube, path, apply
        self.label_selector = label_selector
        self.stopping = threading.Event()
        self.listed = threading.Event()
        self.error: BaseException | None = None
        self._resp: Any = None

    def stop(self) -> None:
        self.stopping.set()
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()
        self.join(5)

    def run(self) -> None:
        rv = ""
        while not self.stopping.is_set():
            try:
                if not rv:
                    rv = self._list()
                rv = self._watch(rv)
            except ApiError as exc:
                if exc.status == 410:
                    rv = ""
                    continue
                self.error = exc
                self.stopping.wait(1.0)
            except Exception as exc:  # noqa: BLE001 - a dropped watch resumes
                if self.stopping.is_set():
                    return
                self.error = exc
                self.stopping.wait(1.0)

    def _list(self) -> str:
        cont = None
        while True:
            page = self.kube.request("GET", self.path, query={
                "limit": 500, "continue": cont, "labelSelector": self.label_selector})
            now = time.monotonic()
            for item in page.get("items", []):
                self.apply("ADDED", item, now)
            cont = page.get("metadata", {}).get("continue")
            if not cont:
                self.listed.set()
                return str(page["metadata"]["resourceVersion"])

    def _watch(self, rv: str) -> str:
        resp = self.kube.request("GET", self.path, query={
            "watch": True, "resourceVersion": rv, "allowWatchBookmarks": True,
            "timeoutSeconds": 600, "labelSelector": self.label_selector},
            timeout=(10.0, 120.0), stream=True)
        self._resp = resp
        try:
            for event in watch_events(resp):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(int(obj.get("code", 500)), json.dumps(obj).encode())
                rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self.apply(str(kind), obj, time.monotonic())
                if self.stopping.is_set():
                    break
        finally:
            self._resp = None
            with contextlib.suppress(Exception):
                resp.release_conn()
        return rv


class Tracker:
    """What the cluster shows, kept up to date by two watches (all namespaces):

    - per ExternalSecret: whether it is Ready now, and when it first became Ready;
    - per Secret written by the controller: when it first appeared, its data (base64, as
      served), and when its data last changed.

    Times are `time.monotonic()` at the moment the watch event arrived in this process.
    `wait(predicate)` blocks until the predicate over the tracker holds.
    """

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.cond = threading.Condition()
        self.ready: dict[Key, bool] = {}
        self.ready_at: dict[Key, float] = {}
        self.secret_seen: dict[Key, float] = {}
        self.secret_data: dict[Key, dict[str, str]] = {}
        self.secret_changed: dict[Key, float] = {}
        self.ready_count = 0
        self.changed: set[Key] = set()  # Secrets whose data changed since `take_changed`
        self.last_event = time.monotonic()
        self.events = 0
        self._watches = [
            _Watch(kube, es_path(), self._on_es),
            _Watch(kube, secret_path(), self._on_secret, label_selector=MANAGED_BY),
        ]

    def start(self, timeout: float = 60.0) -> None:
        for w in self._watches:
            w.start()
        for w in self._watches:
            if not w.listed.wait(timeout):
                raise RuntimeError(f"tracker: listing {w.path} failed: {w.error!r}")

    def stop(self) -> None:
        for w in self._watches:
            w.stop()

    def _on_es(self, kind: str, obj: dict[str, Any], at: float) -> None:
        meta = obj.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        ready = kind != "DELETED" and is_ready(obj)
        with self.cond:
            before = self.ready.get(key, False)
            if kind == "DELETED":
                self.ready.pop(key, None)
            else:
                self.ready[key] = ready
            self.ready_count += int(ready) - int(before)
            if ready and key not in self.ready_at:
                self.ready_at[key] = at
            self._touch(at)

    def _on_secret(self, kind: str, obj: dict[str, Any], at: float) -> None:
        meta = obj.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        with self.cond:
            if kind == "DELETED":
                self.secret_data.pop(key, None)
            else:
                data = dict(obj.get("data") or {})
                self.secret_seen.setdefault(key, at)
                if self.secret_data.get(key) != data:
                    self.secret_data[key] = data
                    self.secret_changed[key] = at
                    self.changed.add(key)
            self._touch(at)

    def take_changed(self) -> set[Key]:
        """The Secrets whose data changed since the last call (call with the lock held)."""
        changed, self.changed = self.changed, set()
        return changed

    def _touch(self, at: float) -> None:
        self.last_event = at
        self.events += 1
        self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str,
             on_tick: Callable[[], None] | None = None, tick: float = 2.0) -> None:
        """Wait until `predicate()` (called with the lock held) is true; `on_tick` runs (without
        the lock) every `tick` seconds meanwhile, for progress lines and liveness checks."""
        deadline = time.monotonic() + timeout
        next_tick = time.monotonic() + tick
        while True:
            with self.cond:
                if predicate():
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
                self.cond.wait(min(left, max(0.0, next_tick - time.monotonic()), 0.5))
            if on_tick is not None and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + tick
                on_tick()
