"""Admin HTTP API and its client, for driving a fake that runs in another process.

Demos and the benchmark start ``python -m tests.fakecloud`` and then put
secrets, inject faults, set latency and read counters over JSON:

  GET    /_admin/info                       endpoints (and CA paths)
  POST   /_admin/seed                       the secrets-file document (see package doc)
  GET    /_admin/secrets                    {"names": [...]}
  POST   /_admin/secrets                    {name, data | data_base64, version_id?,
                                             stages?, data_type?}
  DELETE /_admin/secrets/<name>
  POST   /_admin/access-keys                {id, secret, identity}
  POST   /_admin/rules                      {identity, allow?: [...], deny?: [...]}
  POST   /_admin/expire-tokens              {"expired": n}
  POST   /_admin/faults                     {fault, action?, secret?, times?, retry_after_ms?,
                                             seconds?, status?, code?, message?} -> {"id": n}
  DELETE /_admin/faults[/<id>]
  GET|PUT /_admin/latency                   {"seconds": s}
  GET    /_admin/counters?action=&secret=&identity=&service=&window=
                                            {calls, peak_concurrency, peak_rate}
  GET    /_admin/log                        {"entries": [...]}
  /_admin/oos/parameters[/<name>]           OOS encryption parameters (see ``oos.admin_route``)
  /_admin/dkms/client-keys[/<id>]           KMS instance client keys (see ``dkms.admin_route``)
  /_admin/keys[/<id>[/rotate|/state]]       KMS keys: create, rotate, state (``keys.admin_route``)
  /_admin/aliases[/delete]                  KMS key aliases: create, re-point, delete
  POST   /_admin/reset                      reset counters, log and peak concurrency

Bound to 127.0.0.1 and unauthenticated: it is a test fixture.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from . import dkms, keys, oos, seed
from .state import CloudState
from .wire import Request, Response, json_response

PREFIX = "/_admin"


class AdminService:
    def __init__(self, state: CloudState, info: Callable[[], dict[str, str]]) -> None:
        self.state = state
        self.info = info

    def handle(self, req: Request) -> Response:
        if not req.path.startswith(PREFIX + "/"):
            return json_response({"error": "not found"}, status=404)
        route = req.path[len(PREFIX) :]
        try:
            body = json.loads(req.body) if req.body else {}
            result = self._route(req.method, route, body, dict(parse_qsl(req.query)))
        except (KeyError, TypeError, ValueError) as exc:
            return json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
        if result is None:
            return json_response({"error": f"no route {req.method} {route}"}, status=404)
        return json_response(result)

    def _route(
        self, method: str, route: str, body: dict[str, Any], query: dict[str, str]
    ) -> dict[str, Any] | None:
        state = self.state
        if route == "/keys" or route.startswith(("/keys/", "/aliases")):
            return keys.admin_route(state.keys, method, route, body)
        if route.startswith("/oos/"):
            return oos.admin_route(state.oos, method, route, body)
        if route.startswith("/dkms/"):
            return dkms.admin_route(state.dkms, method, route, body)
        if (method, route) == ("GET", "/info"):
            return self.info()
        if (method, route) == ("POST", "/seed"):
            seed.apply(state, body)
            return {"ok": True}
        if route == "/secrets" and method == "GET":
            return {"names": state.secret_names()}
        if route == "/secrets" and method == "POST":
            data: str | bytes = (
                base64.b64decode(body["data_base64"]) if "data_base64" in body else body["data"]
            )
            vid = state.put_secret(
                body["name"],
                data,
                version_id=body.get("version_id"),
                stages=body.get("stages", ["ACSCurrent"]),
                data_type=body.get("data_type"),
            )
            return {"version_id": vid}
        if route.startswith("/secrets/") and method == "DELETE":
            return {"deleted": state.delete_secret(unquote(route[len("/secrets/") :]))}
        if (method, route) == ("POST", "/access-keys"):
            state.add_access_key(body["id"], body["secret"], body["identity"])
            return {"ok": True}
        if (method, route) == ("POST", "/rules"):
            for pattern in body.get("allow", []):
                state.allow(body["identity"], pattern)
            for pattern in body.get("deny", []):
                state.deny(body["identity"], pattern)
            return {"ok": True}
        if (method, route) == ("POST", "/expire-tokens"):
            return {"expired": state.expire_all_tokens()}
        if (method, route) == ("POST", "/faults"):
            fields = dict(body)
            kind = fields.pop("fault")
            return {"id": state.inject(fault=kind, **fields)}
        if route.startswith("/faults") and method == "DELETE":
            rest = route[len("/faults") :].strip("/")
            state.clear_faults(int(rest) if rest else None)
            return {"ok": True}
        if route == "/latency" and method == "PUT":
            state.latency = float(body["seconds"])
            return {"seconds": state.latency}
        if (method, route) == ("GET", "/latency"):
            return {"seconds": state.latency}
        if (method, route) == ("GET", "/counters"):
            return {
                "calls": state.calls(
                    query.get("action"),
                    query.get("secret"),
                    query.get("identity"),
                    service=query.get("service"),
                ),
                "peak_concurrency": state.peak_concurrency,
                "peak_rate": state.peak_rate(
                    float(query.get("window", "1.0")), query.get("action")
                ),
            }
        if (method, route) == ("GET", "/log"):
            return {"entries": state.request_log}
        if (method, route) == ("POST", "/reset"):
            state.reset_counters()
            return {"ok": True}
        return None


class AdminError(RuntimeError):
    pass


class FakeCloudAdmin(keys.KeyAdmin, oos.ParameterAdmin, dkms.ClientKeyAdmin):
    """Client for the admin API: ``FakeCloudAdmin(info["admin_url"])``."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        # Never route 127.0.0.1 through an HTTP(S)_PROXY from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, route: str, body: Any = None, **query: Any) -> dict[str, Any]:
        params = {k: v for k, v in query.items() if v is not None}
        url = f"{self.url}{PREFIX}{route}" + (f"?{urlencode(params)}" if params else "")
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                result: dict[str, Any] = json.loads(resp.read())
                return result
        except urllib.error.HTTPError as exc:
            raise AdminError(f"{method} {route}: {exc.code} {exc.read().decode()}") from exc

    def info(self) -> dict[str, Any]:
        return self._call("GET", "/info")

    def seed(self, document: dict[str, Any]) -> None:
        self._call("POST", "/seed", document)

    def put_secret(
        self,
        name: str,
        data: str | bytes,
        *,
        version_id: str | None = None,
        stages: Iterable[str] = ("ACSCurrent",),
        data_type: str | None = None,
    ) -> str:
        body: dict[str, Any] = {"name": name, "stages": list(stages)}
        if isinstance(data, bytes):
            body["data_base64"] = base64.b64encode(data).decode("ascii")
        else:
            body["data"] = data
        if version_id is not None:
            body["version_id"] = version_id
        if data_type is not None:
            body["data_type"] = data_type
        return str(self._call("POST", "/secrets", body)["version_id"])

    def delete_secret(self, name: str) -> bool:
        return bool(self._call("DELETE", f"/secrets/{quote(name, safe='')}")["deleted"])

    def secret_names(self) -> list[str]:
        return list(self._call("GET", "/secrets")["names"])

    def add_access_key(self, ak_id: str, ak_secret: str, identity: str) -> None:
        self._call("POST", "/access-keys", {"id": ak_id, "secret": ak_secret, "identity": identity})

    def allow(self, identity: str, secret_pattern: str) -> None:
        self._call("POST", "/rules", {"identity": identity, "allow": [secret_pattern]})

    def deny(self, identity: str, secret_pattern: str) -> None:
        self._call("POST", "/rules", {"identity": identity, "deny": [secret_pattern]})

    def expire_all_tokens(self) -> int:
        return int(self._call("POST", "/expire-tokens", {})["expired"])

    def inject(
        self,
        action: str | None = "GetSecretValue",
        secret: str | None = None,
        fault: str = "throttling",
        times: int | None = 1,
        **options: Any,
    ) -> int:
        body = {"action": action, "secret": secret, "fault": fault, "times": times, **options}
        return int(self._call("POST", "/faults", body)["id"])

    def clear_faults(self, fault_id: int | None = None) -> None:
        self._call("DELETE", "/faults" if fault_id is None else f"/faults/{fault_id}")

    def set_latency(self, seconds: float) -> None:
        self._call("PUT", "/latency", {"seconds": seconds})

    def counters(
        self,
        action: str | None = None,
        secret: str | None = None,
        identity: str | None = None,
        *,
        service: str | None = None,
        window: float = 1.0,
    ) -> dict[str, Any]:
        return self._call(
            "GET",
            "/counters",
            action=action,
            secret=secret,
            identity=identity,
            service=service,
            window=window,
        )

    def calls(
        self, action: str | None = None, secret: str | None = None, identity: str | None = None
    ) -> int:
        return int(self.counters(action, secret, identity)["calls"])

    def request_log(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/log")["entries"])

    def reset_counters(self) -> None:
        self._call("POST", "/reset", {})
