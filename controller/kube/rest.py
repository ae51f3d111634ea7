"""Raw JSON requests through the shared ApiClient (auth, TLS and pooling come from it).

The controller keeps objects as plain dicts (memory at 10,000 objects matters, and the typed
models are slow to build), so it speaks to the API by path: `Resource` knows the paths of one
kind, `Rest` sends requests and returns parsed JSON or raises `ApiError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kubernetes.client.exceptions import ApiException

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


@dataclass(frozen=True)
class Resource:
    kind: str
    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str = "", name: str = "", sub: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        if sub:
            base += f"/{sub}"
        return base


GROUP = "alibabacloud.com"
EXTERNAL_SECRETS = Resource("ExternalSecret", GROUP, "v1alpha1", "externalsecrets")
SECRET_STORES = Resource("SecretStore", GROUP, "v1alpha1", "secretstores")
CLUSTER_SECRET_STORES = Resource(
    "ClusterSecretStore", GROUP, "v1alpha1", "clustersecretstores", namespaced=False
)
CLUSTER_EXTERNAL_SECRETS = Resource(
    "ClusterExternalSecret", GROUP, "v1alpha1", "clusterexternalsecrets", namespaced=False
)
SECRETS = Resource("Secret", "", "v1", "secrets")
CONFIG_MAPS = Resource("ConfigMap", "", "v1", "configmaps")
NAMESPACES = Resource("Namespace", "", "v1", "namespaces", namespaced=False)
SERVICE_ACCOUNTS = Resource("ServiceAccount", "", "v1", "serviceaccounts")
EVENTS = Resource("Event", "", "v1", "events")
LEASES = Resource("Lease", "coordination.k8s.io", "v1", "leases")


class ApiError(Exception):
    """A non-2xx answer from the apiserver: status code, reason and the Status body."""

    def __init__(self, status: int, reason: str, body: dict[str, Any] | None = None) -> None:
        self.status = status
        self.reason = reason
        self.body = body or {}
        super().__init__(f"{status} {reason}: {self.message}")

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))

    @classmethod
    def from_exception(cls, exc: ApiException) -> ApiError:
        body: dict[str, Any] = {}
        raw = getattr(exc, "body", None)
        if raw:
            try:
                parsed = json.loads(raw)
                body = parsed if isinstance(parsed, dict) else {}
            except (ValueError, TypeError):
                body = {}
        return cls(int(exc.status or 0), str(exc.reason or ""), body)


class Rest:
    """Send JSON requests by path through a kubernetes.client.ApiClient."""

    def __init__(self, api_client: Any, timeout: float = 30.0) -> None:
        self.api = api_client
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: Any = None,
        stream: bool = False,
    ) -> Any:
        """Return the parsed JSON answer (or the open urllib3 response when `stream`)."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        params = [(k, _q(v)) for k, v in (query or {}).items() if v is not None]
        serialized = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            resp = self.api.call_api(*serialized, _request_timeout=timeout or self.timeout)
        except ApiException as exc:
            raise ApiError.from_exception(exc) from None
        if not 200 <= resp.status <= 299:
            data = resp.read()
            try:
                parsed = json.loads(data) if data else {}
            except ValueError:
                parsed = {}
            body = parsed if isinstance(parsed, dict) else {}
            raise ApiError(resp.status, str(resp.reason), body)
        if stream:
            return resp.response
        data = resp.read()
        return json.loads(data) if data else {}

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query)

    def apply(self, path: str, body: dict[str, Any], manager: str, force: bool = True) -> Any:
        """Server-side apply `body` as field manager `manager`."""
        query = {"fieldManager": manager, "force": force}
        return self.request("PATCH", path, query=query, body=body, content_type=APPLY)

    def merge_patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, body=body, content_type=MERGE)

    def json_patch(self, path: str, ops: list[dict[str, Any]]) -> Any:
        return self.request("PATCH", path, body=ops, content_type=JSON_PATCH)

    def create(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _q(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
