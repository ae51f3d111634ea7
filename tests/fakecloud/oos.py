"""The fake OOS (CloudOps Orchestration Service): encryption parameters read with
``GetSecretParameter``, behind the same signature checks and fault injection as the fake KMS.

Why: ack-secret-manager's ``provider: oos`` reads OOS encryption parameters; the controller
must be tested against the wire behaviour of the real ``alibabacloud_oos20190601`` client.

Wire facts (read from alibabacloud-oos20190601 3.7.0 on tea-openapi 0.4.6): RPC style,
``POST /`` with the parameters in the query (``Action``/``x-acs-action: GetSecretParameter``,
``x-acs-version: 2019-06-01``), ACS3-HMAC-SHA256 by default (RPC V1 with
``signature_algorithm="v2"``); ``WithDecryption`` travels as ``true``/``false``,
``ParameterVersion`` as a decimal. Response (documented on the API page):
``{RequestId, Parameter{Name, Id, Type: "Secret", ParameterVersion (int), Value, KeyId,
CreatedDate, UpdatedDate, CreatedBy, UpdatedBy, Description, Constraints, Tags, ShareType,
ResourceGroupId}}``; ``Value`` is empty unless ``WithDecryption`` is true (documented).

Errors: the public API page lists none, so these are the fake's choices, made to look like the
POP gateway's: a missing parameter or version is 404 ``EntityNotExists.SecretParameter``, a
denied one 403 ``Forbidden.NoPermission`` (the identity's access rules, as for KMS secrets),
throttling 400 ``Throttling.User``; authentication errors as in ``auth.py``. Versions are
numbered 1, 2, ... like the real service (``UpdateSecretParameter`` adds one). Faults
(``inject("GetSecretParameter", name, ...)``) and latency apply as for KMS; the request log
records these calls under service ``oos``.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .auth import authenticate
from .faults import apply_fault
from .wire import ApiError, Request, Response, error_response, json_response, new_request_id

if TYPE_CHECKING:
    from .state import CloudState

OOS_VERSION = "2019-06-01"
ACTION = "GetSecretParameter"
NOT_FOUND = "EntityNotExists.SecretParameter"
_IDS = itertools.count(1)


@dataclass
class ParameterVersion:
    version: int
    value: str = field(repr=False)
    updated: float


@dataclass
class SecretParameter:
    name: str
    id: str
    key_id: str
    created: float
    description: str = ""
    versions: list[ParameterVersion] = field(default_factory=list)

    def version(self, number: int | None) -> ParameterVersion | None:
        if number is None:
            return self.versions[-1] if self.versions else None
        return next((v for v in self.versions if v.version == number), None)


class SecretParameterStore:
    """Encryption parameters with numbered versions (``cloud.oos``); thread-safe, own lock."""

    def __init__(self) -> None:
        self._parameters: dict[str, SecretParameter] = {}
        self._lock = threading.Lock()

    def put(self, name: str, value: str, *, key_id: str = "", description: str = "") -> int:
        """Create the parameter (version 1) or add its next version (like
        UpdateSecretParameter); returns the version number."""
        with self._lock:
            return self._put(name, value, key_id, description)

    def _put(self, name: str, value: str, key_id: str, description: str) -> int:
        now = time.time()
        parameter = self._parameters.get(name)
        if parameter is None:
            parameter = self._parameters[name] = SecretParameter(
                name=name,
                id=f"p-fake{next(_IDS):012x}",
                key_id=key_id or "alias/acs/oos",
                created=now,
                description=description,
            )
        number = parameter.versions[-1].version + 1 if parameter.versions else 1
        parameter.versions.append(ParameterVersion(number, value, now))
        return number

    def delete(self, name: str) -> bool:
        with self._lock:
            return self._parameters.pop(name, None) is not None

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._parameters)

    def lookup(self, name: str, number: int | None) -> dict[str, Any] | None:
        """The documented ``Parameter`` object of one version (latest when ``number`` is None),
        with its value, or None."""
        with self._lock:
            return self._lookup(name, number)

    def _lookup(self, name: str, number: int | None) -> dict[str, Any] | None:
        parameter = self._parameters.get(name)
        found = parameter.version(number) if parameter is not None else None
        if parameter is None or found is None:
            return None
        return {
            "Name": parameter.name,
            "Id": parameter.id,
            "Type": "Secret",
            "ParameterVersion": found.version,
            "Value": found.value,
            "KeyId": parameter.key_id,
            "CreatedDate": iso_utc(parameter.created),
            "UpdatedDate": iso_utc(found.updated),
            "CreatedBy": "root(1234567890123456)",
            "UpdatedBy": "root(1234567890123456)",
            "Description": parameter.description,
            "Constraints": "",
            "Tags": {},
            "ShareType": "Private",
            "ResourceGroupId": "rg-fake",
        }


class OosService:
    """``handle(Request)`` for the OOS endpoint (see the module docstring)."""

    def __init__(self, state: CloudState, *, host_id: str = "oos.cn-hangzhou.aliyuncs.com") -> None:
        self.state = state
        self.host_id = host_id

    def handle(self, req: Request) -> Response:
        started = time.time()
        request_id = new_request_id()
        params = req.params()
        action = req.header("x-acs-action") or params.get("Action")
        name = params.get("Name")
        identity: str | None = None
        status, code = 200, None
        with self.state.log.in_flight():
            try:
                if self.state.latency:
                    time.sleep(self.state.latency)
                identity = authenticate(req, self.state.lookup_key, self.state.nonces).identity
                fault = self.state.take_fault(action, name)
                if fault is not None:
                    raw = apply_fault(fault, throttling_code="Throttling.User")
                    if raw is not None:
                        status, code = (0 if raw.drop else raw.status), fault.kind
                        return raw
                payload = {"Parameter": self._get(action, params, identity),
                           "RequestId": request_id}
                return json_response(payload, headers={"x-acs-request-id": request_id})
            except ApiError as err:
                status, code = err.status, err.code
                return error_response(err, request_id, self.host_id, "oos")
            finally:
                self.state.log.record(service="oos", action=action, secret=name,
                                      identity=identity, status=status, code=code,
                                      started=started)

    def _get(self, action: str | None, params: dict[str, str], identity: str) -> dict[str, Any]:
        if action != ACTION:
            raise ApiError(404, "InvalidApi.NotFound",
                           f"Specified api {action} is not found, please check your url and "
                           "method.")
        name = params.get("Name")
        if not name:
            raise ApiError(400, "MissingParameter", "The input parameter Name should be specified.")
        number = _version(params.get("ParameterVersion"))
        if not self.state.may_read(identity, name):
            raise ApiError(403, "Forbidden.NoPermission",
                           f"This operation for {name} is forbidden by permission system.")
        found = self.state.oos.lookup(name, number)
        if found is None:
            raise ApiError(404, NOT_FOUND, f"The SecretParameter ({name}) does not exist.")
        if params.get("WithDecryption", "false").lower() != "true":
            found["Value"] = ""
        return found


def iso_utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version(raw: str | None) -> int | None:
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise ApiError(400, "InvalidParameter",
                       "The specified parameter ParameterVersion is invalid (1-100).")
    return int(raw)


def admin_route(
    store: SecretParameterStore, method: str, route: str, body: dict[str, Any]
) -> dict[str, Any] | None:
    """``/_admin/oos/parameters`` routes:

      GET    /oos/parameters            {"names": [...]}
      POST   /oos/parameters            {name, value, key_id?, description?} -> {"version"}
      DELETE /oos/parameters/<name>     {"deleted": bool}
    """
    from urllib.parse import unquote

    parts = route.strip("/").split("/", 2)
    if parts == ["oos", "parameters"] and method == "GET":
        return {"names": store.names()}
    if parts == ["oos", "parameters"] and method == "POST":
        version = store.put(str(body["name"]), str(body["value"]),
                            key_id=str(body.get("key_id", "")),
                            description=str(body.get("description", "")))
        return {"version": version}
    if len(parts) == 3 and parts[:2] == ["oos", "parameters"] and method == "DELETE":
        return {"deleted": store.delete(unquote(parts[2]))}
    return None


class ParameterAdmin:
    """The client side of ``admin_route``, mixed into ``FakeCloudAdmin``."""

    def _call(self, method: str, route: str, body: Any = None, **query: Any) -> dict[str, Any]:
        raise NotImplementedError

    def put_secret_parameter(self, name: str, value: str, *, key_id: str = "",
                             description: str = "") -> int:
        body = {"name": name, "value": value, "key_id": key_id, "description": description}
        return int(self._call("POST", "/oos/parameters", body)["version"])

    def delete_secret_parameter(self, name: str) -> bool:
        from urllib.parse import quote

        return bool(self._call("DELETE", f"/oos/parameters/{quote(name, safe='')}")["deleted"])

    def secret_parameter_names(self) -> list[str]:
        return list(self._call("GET", "/oos/parameters")["names"])
