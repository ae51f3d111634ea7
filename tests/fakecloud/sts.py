"""The fake STS: AssumeRole (signed) and AssumeRoleWithOIDC (unsigned), plus GetCallerIdentity.

Served over https only, like the real STS (the credentials library hard-codes
https). Issued credentials carry the role ARN as identity. Error codes come
from the STS error-code page (help.aliyun.com api-sts-2015-04-01-errorcodes),
the ACK RRSA troubleshooting table and the STS AssumeRole FAQ:
EntityNotExist.Role 404, NoPermission 403 (AssumeRole trust),
AuthenticationFail.NoPermission 401 (OIDC provider unknown / subject not
trusted), AuthenticationFail.OIDCToken.* 401, InvalidParameter.* 400,
Throttling.User 400 for injected throttling.
"""

from __future__ import annotations

import re
import time
import zlib
from typing import Any

from .auth import Caller, authenticate
from .faults import apply_fault
from .iam import KeyRecord, Role
from .kms import iso_utc
from .oidc import verify_oidc_token
from .state import CloudState
from .wire import ApiError, Request, Response, error_response, json_response, new_request_id

SESSION_NAME = re.compile(r"^[a-zA-Z0-9.@_\-]{2,64}$")
MIN_DURATION = 900
MAX_DURATION = 43200


class StsService:
    def __init__(self, state: CloudState, *, host_id: str = "sts.aliyuncs.com") -> None:
        self.state = state
        self.host_id = host_id

    def handle(self, req: Request) -> Response:
        started = time.time()
        request_id = new_request_id()
        params = req.params()
        action = params.get("Action") or req.header("x-acs-action")
        identity: str | None = None
        status, code = 200, None
        try:
            caller: Caller | None = None
            if action in ("AssumeRole", "GetCallerIdentity"):
                caller = authenticate(req, self.state.lookup_key, self.state.nonces)
                identity = caller.identity
            elif action != "AssumeRoleWithOIDC":
                raise ApiError(404, "InvalidApi.NotFound", f"Specified api {action} is not found.")
            fault = self.state.take_fault(action, None)
            if fault is not None:
                raw = apply_fault(fault, throttling_code="Throttling.User")
                if raw is not None:
                    status, code = (0 if raw.drop else raw.status), fault.kind
                    return raw
            if caller is None:
                payload, identity = self._assume_role_with_oidc(params)
            elif action == "AssumeRole":
                payload = self._assume_role(params, caller.identity)
            else:
                payload = self._caller_identity(caller.access_key_id, caller.identity)
            payload["RequestId"] = request_id
            return json_response(payload, headers={"x-acs-request-id": request_id})
        except ApiError as err:
            status, code = err.status, err.code
            return error_response(err, request_id, self.host_id, "Sts")
        finally:
            self.state.log.record(
                service="sts",
                action=action,
                secret=None,
                identity=identity,
                status=status,
                code=code,
                started=started,
            )

    def _assume_role(self, params: dict[str, str], caller_identity: str) -> dict[str, Any]:
        role = self._role(params)
        session = _session_name(params)
        duration = _duration(params)
        if not role.trusts_principal(caller_identity):
            raise ApiError(
                403,
                "NoPermission",
                "No permission perform sts:AssumeRole on this Role. "
                "Maybe you should check the role's trust policy.",
            )
        return self._credentials(role, session, duration)

    def _assume_role_with_oidc(self, params: dict[str, str]) -> tuple[dict[str, Any], str]:
        provider_arn = params.get("OIDCProviderArn", "")
        provider = self.state.oidc_provider(provider_arn)
        if provider is None:
            raise ApiError(
                401, "AuthenticationFail.NoPermission", "No such OIDC Provider registered."
            )
        claims = verify_oidc_token(params.get("OIDCToken", ""), provider)
        role = self._role(params)
        session = _session_name(params)
        duration = _duration(params)
        if not role.trusts_subject(provider_arn, str(claims.get("sub", ""))):
            raise ApiError(401, "AuthenticationFail.NoPermission", "There is no permission")
        payload = self._credentials(role, session, duration)
        aud = claims.get("aud")
        payload["OIDCTokenInfo"] = {
            "Subject": claims.get("sub"),
            "Issuer": claims.get("iss"),
            "ClientIds": ",".join(aud) if isinstance(aud, list) else aud,
            "ExpirationTime": iso_utc(float(claims["exp"])),
            "IssuanceTime": iso_utc(float(claims.get("iat", time.time()))),
        }
        return payload, role.arn

    def _role(self, params: dict[str, str]) -> Role:
        arn = params.get("RoleArn", "")
        if not arn:
            raise ApiError(400, "MissingRoleArn", "RoleArn is mandatory for this action.")
        role = self.state.role(arn)
        if role is None:
            raise ApiError(404, "EntityNotExist.Role", f"The role not exists: {arn}.")
        return role

    def _credentials(self, role: Role, session: str, duration: float) -> dict[str, Any]:
        lifetime = min(duration, role.lifetime_seconds)
        record: KeyRecord = self.state.issue_credentials(role.arn, lifetime, session)
        account = role.arn.split(":")[3] if role.arn.count(":") >= 4 else self.state.account_id
        return {
            "AssumedRoleUser": {
                "Arn": f"acs:ram::{account}:assumed-role/{role.name}/{session}",
                "AssumedRoleId": f"3{zlib.crc32(role.arn.encode()):015d}:{session}",
            },
            "Credentials": {
                "AccessKeyId": record.access_key_id,
                "AccessKeySecret": record.secret,
                "SecurityToken": record.security_token,
                "Expiration": iso_utc(record.expires_at or time.time()),
            },
        }

    def _caller_identity(self, ak_id: str, identity: str) -> dict[str, Any]:
        return {
            "AccountId": self.state.account_id,
            "Arn": identity,
            "IdentityType": "AssumedRoleUser" if ak_id.startswith("STS.") else "RAMUser",
            "PrincipalId": ak_id,
        }


def _session_name(params: dict[str, str]) -> str:
    name = params.get("RoleSessionName", "")
    if not SESSION_NAME.match(name):
        raise ApiError(
            400,
            "InvalidParameter.RoleSessionName",
            "The parameter RoleSessionName is wrongly formed.",
        )
    return name


def _duration(params: dict[str, str]) -> float:
    raw = params.get("DurationSeconds") or "3600"
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not MIN_DURATION <= value <= MAX_DURATION:
        raise ApiError(
            400,
            "InvalidParameter.DurationSeconds",
            f"The Min/Max value of DurationSeconds is {MIN_DURATION}s/{MAX_DURATION}s.",
        )
    return float(value)
