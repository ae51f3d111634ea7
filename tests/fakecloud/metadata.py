"""The fake ECS instance metadata server, reachable as a forward HTTP proxy.

The credentials library hard-codes host 100.100.100.200, but honours its public
``proxy`` option (``Config(type="ecs_ram_role", proxy=cloud.metadata_proxy)``):
requests then arrive here in absolute form (``GET http://100.100.100.200/...``).
Only that host is served; anything else gets 403, so this is no open proxy.

IMDSv2: ``PUT /latest/api/token`` with ``X-aliyun-ecs-metadata-token-ttl-seconds``
(1..21600) returns a token; reads send it in ``X-aliyun-ecs-metadata-token``.
An unknown or expired token gets 401. A read without a token gets 403 while
``state.metadata_require_token`` is True (IMDSv2 enforced), else it is served.
Injected faults (actions MetadataToken, MetadataRoleName, MetadataCredentials):
``drop`` and ``latency`` as usual; any other kind answers its ``status`` (default
500) as plain text, as the real metadata server has no JSON errors.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from urllib.parse import urlsplit

from .kms import iso_utc
from .state import CloudState
from .wire import Request, Response

METADATA_HOST = "100.100.100.200"
CREDENTIALS_PATH = "/latest/meta-data/ram/security-credentials/"
TOKEN_PATH = "/latest/api/token"
MAX_TOKEN_TTL = 21600


def _text(status: int, body: str, content_type: str = "text/plain") -> Response:
    return Response(
        status=status, body=body.encode("utf-8"), headers={"Content-Type": content_type}
    )


class MetadataService:
    def __init__(self, state: CloudState) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}

    def handle(self, req: Request) -> Response:
        started = time.time()
        path, action = self._route(req)
        response = self._serve(req, path, action)
        role = self.state.ecs_role()
        served_role = action == "MetadataCredentials" and response.status == 200
        self.state.log.record(
            service="metadata",
            action=action,
            secret=None,
            identity=role.identity if served_role and role else None,
            status=0 if response.drop else response.status,
            code=None,
            started=started,
        )
        return response

    def _route(self, req: Request) -> tuple[str | None, str]:
        path = req.path
        if path.startswith(("http://", "https://")):
            parts = urlsplit(path)
            if parts.hostname != METADATA_HOST:
                return None, "Proxy"
            path = parts.path
        if path == TOKEN_PATH:
            return path, "MetadataToken"
        if path == CREDENTIALS_PATH:
            return path, "MetadataRoleName"
        if path.startswith(CREDENTIALS_PATH):
            return path, "MetadataCredentials"
        return path, "Metadata"

    def _serve(self, req: Request, path: str | None, action: str) -> Response:
        if path is None:
            return _text(403, "this proxy only serves the ECS metadata host")
        fault = self.state.take_fault(action, None)
        if fault is not None and fault.kind == "drop":
            return Response(drop=True)
        if fault is not None and fault.kind == "latency":
            time.sleep(fault.seconds)
        elif fault is not None:
            return _text(fault.status or 500, "injected fault")
        if action == "MetadataToken":
            return self._issue_token(req)
        denied = self._check_token(req)
        if denied is not None:
            return denied
        role = self.state.ecs_role()
        if action == "MetadataRoleName":
            return _text(200, role.name) if role else _text(404, "Not Found")
        if action == "MetadataCredentials":
            name = path.removeprefix(CREDENTIALS_PATH)
            if role is None or name != role.name:
                return _text(404, "Not Found")
            record = self.state.issue_credentials(role.identity, role.lifetime_seconds, "ecs")
            body = {
                "AccessKeyId": record.access_key_id,
                "AccessKeySecret": record.secret,
                "SecurityToken": record.security_token,
                "Expiration": iso_utc(record.expires_at or time.time()),
                "LastUpdated": iso_utc(time.time()),
                "Code": "Success",
            }
            return _text(200, json.dumps(body), "application/json")
        return _text(404, "Not Found")

    def _issue_token(self, req: Request) -> Response:
        if req.method != "PUT":
            return _text(405, "Method Not Allowed")
        raw_ttl = req.header("X-aliyun-ecs-metadata-token-ttl-seconds") or ""
        if not raw_ttl.isdigit() or not 1 <= int(raw_ttl) <= MAX_TOKEN_TTL:
            return _text(400, "X-aliyun-ecs-metadata-token-ttl-seconds must be 1..21600")
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + int(raw_ttl)
        return _text(200, token)

    def _check_token(self, req: Request) -> Response | None:
        token = req.header("X-aliyun-ecs-metadata-token")
        if token is None:
            return _text(403, "Forbidden") if self.state.metadata_require_token else None
        with self._lock:
            expires = self._tokens.get(token)
        if expires is None or expires <= time.time():
            return _text(401, "Unauthorized")
        return None
