"""Request, response and error shapes shared by every fake service.

The fake services (KMS, STS, ECS metadata, admin) are plain objects with a
``handle(Request) -> Response`` method so that the HTTP plumbing in
``server.py`` stays generic and the services stay testable without sockets.
Errors use the body every Alibaba Cloud POP gateway returns:
``{RequestId, HostId, Code, Message, Recommend}``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Request:
    """One HTTP request as the fake received it (after TLS, before any parsing)."""

    method: str
    path: str
    query: str
    headers: Message
    body: bytes = b""

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else str(value).strip()

    def query_params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))

    def form_params(self) -> dict[str, str]:
        content_type = (self.header("content-type") or "").split(";")[0].strip().lower()
        if content_type != FORM_CONTENT_TYPE or not self.body:
            return {}
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))

    def params(self) -> dict[str, str]:
        """Query parameters merged with form body parameters (RPC style)."""
        merged = self.query_params()
        merged.update(self.form_params())
        return merged


@dataclass
class Response:
    """What a service wants sent back; ``drop`` closes the socket without a reply."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


class ApiError(Exception):
    """An error the fake answers with the gateway's JSON error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def new_request_id() -> str:
    return str(uuid.uuid4()).upper()


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    all_headers = {"Content-Type": "application/json;charset=utf-8"}
    all_headers.update(headers or {})
    return Response(status=status, body=json.dumps(payload).encode("utf-8"), headers=all_headers)


def error_response(err: ApiError, request_id: str, host_id: str, product: str) -> Response:
    """The gateway's error body. The request id is repeated inside Message, as the real
    service does, so a caller that puts messages into a status must strip it."""
    body = {
        "RequestId": request_id,
        "HostId": host_id,
        "Code": err.code,
        "Message": f"{err.message} RequestId: {request_id}",
        "Recommend": (
            f"https://api.aliyun.com/troubleshoot?q={err.code}"
            f"&product={product}&requestId={request_id}"
        ),
    }
    headers = {"x-acs-request-id": request_id}
    headers.update(err.headers)
    return json_response(body, status=err.status, headers=headers)
