"""The fake KMS: GetSecretValue behind real signature checks.

Served on a plain-http port (shared gateway stand-in) and on an https port
(KMS instance endpoint stand-in); both share one state. Status codes:
Forbidden.ResourceNotFound 404 (missing secret/version), Forbidden.NoPermission
403 (access rules), InvalidApi.NotFound 404 (unknown action), plus the
authentication errors of ``auth.py`` and injected faults.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from . import keys
from .auth import authenticate
from .faults import apply_fault
from .state import CloudState
from .wire import ApiError, Request, Response, error_response, json_response, new_request_id

KMS_VERSION = "2016-01-20"


def iso_utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KmsService:
    def __init__(
        self, state: CloudState, *, service: str = "kms", host_id: str = "kms.aliyuncs.com"
    ) -> None:
        self.state = state
        self.service = service
        self.host_id = host_id

    def handle(self, req: Request) -> Response:
        started = time.time()
        self.state.capture(req)
        request_id = new_request_id()
        params = req.params()
        action = req.header("x-acs-action") or params.get("Action")
        secret = params.get("SecretName") or params.get("KeyId")  # faults match keys too
        identity: str | None = None
        status, code = 200, None
        with self.state.log.in_flight():
            try:
                if self.state.latency:
                    time.sleep(self.state.latency)
                caller = authenticate(req, self.state.lookup_key, self.state.nonces)
                identity = caller.identity
                fault = self.state.take_fault(action, secret)
                if fault is not None:
                    raw = apply_fault(fault, throttling_code="Rejected.Throttling")
                    if raw is not None:
                        status, code = (0 if raw.drop else raw.status), fault.kind
                        return raw
                payload = self._dispatch(action, params, identity)
                payload["RequestId"] = request_id
                return json_response(payload, headers={"x-acs-request-id": request_id})
            except ApiError as err:
                status, code = err.status, err.code
                return error_response(err, request_id, self.host_id, "Kms")
            finally:
                self.state.log.record(
                    service=self.service,
                    action=action,
                    secret=secret,
                    identity=identity,
                    status=status,
                    code=code,
                    started=started,
                )

    def _dispatch(
        self, action: str | None, params: dict[str, str], identity: str
    ) -> dict[str, Any]:
        if not action:
            raise ApiError(400, "MissingAction", "Action is mandatory for this request.")
        if action in keys.KEY_ACTIONS:
            return self._key_action(action, params, identity)
        if action != "GetSecretValue":
            raise ApiError(
                404,
                "InvalidApi.NotFound",
                f"Specified api {action} is not found, please check your url and method.",
            )
        return self._get_secret_value(params, identity)

    def _key_action(self, action: str, params: dict[str, str], identity: str) -> dict[str, Any]:
        key_ref = params.get("KeyId")
        if not key_ref and action == "DeleteAlias" and params.get("AliasName"):
            key_ref = params["AliasName"]
        if key_ref:
            # An alias needs permissions on its key, not the alias (as the service does);
            # rules' globs match key ids.
            key_id = self.state.keys.resolve(key_ref)
            if not self.state.may_read(identity, key_id):
                raise ApiError(403, "Forbidden.NoPermission",
                               f"This operation for {key_ref} is forbidden by permission "
                               "system.")
        return keys.handle(self.state.keys, action, params)

    def _get_secret_value(self, params: dict[str, str], identity: str) -> dict[str, Any]:
        name = params.get("SecretName")
        if not name:
            raise ApiError(400, "MissingSecretName", "SecretName is mandatory for this action.")
        if not self.state.may_read(identity, name):
            raise ApiError(
                403,
                "Forbidden.NoPermission",
                f"This operation for {name} is forbidden by permission system.",
            )
        found = self.state.lookup_secret(name, params.get("VersionId"), params.get("VersionStage"))
        if found is None:
            raise ApiError(404, "Forbidden.ResourceNotFound", "The resource is not found.")
        secret_name, version, created, secret_type = found
        return {
            "SecretName": secret_name,
            "VersionId": version.version_id,
            "VersionStages": {"VersionStage": sorted(version.stages)},
            "SecretData": version.data,
            "SecretDataType": version.data_type,
            "CreateTime": iso_utc(created),
            "SecretType": secret_type,
            "AutomaticRotation": "Disabled",
        }
