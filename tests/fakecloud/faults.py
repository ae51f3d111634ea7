"""Fault injection: make the next N matching calls fail the way the real cloud fails.

A fault matches by action (``None`` = any) and secret name (``None`` = any,
fnmatch globs allowed) and is consumed once per matching call; ``times=None``
keeps it forever. Faults apply after the caller is authenticated.

Kinds:
  ``throttling``    400 (KMS ``Rejected.Throttling``, STS ``Throttling.User``);
                    with ``retry_after_ms`` also header ``x-acs-retry-after``
  ``unavailable``   503 ``ServiceUnavailableTemporary``
  ``internal``      500 ``InternalFailure``
  ``non_json``      an HTML page (``status``, default 502), as a broken proxy sends
  ``latency``       sleep ``seconds``, then answer normally
  ``drop``          close the connection without a reply
  ``expired_token`` 400 ``InvalidSecurityToken.Expired``
  ``error``         any ``status``/``code``/``message`` you choose
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .wire import ApiError, Response

KINDS = (
    "throttling",
    "unavailable",
    "internal",
    "non_json",
    "latency",
    "drop",
    "expired_token",
    "error",
)


@dataclass
class Fault:
    id: int
    kind: str
    action: str | None = None
    secret: str | None = None
    times: int | None = None
    retry_after_ms: int | None = None
    seconds: float = 0.0
    status: int | None = None
    code: str | None = None
    message: str | None = None

    def matches(self, action: str | None, secret: str | None) -> bool:
        if self.action is not None and self.action != action:
            return False
        if self.secret is None:
            return True
        return secret is not None and fnmatchcase(secret, self.secret)


class FaultBook:
    """Not thread-safe on its own: ``CloudState`` guards it with its lock."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(
        self,
        kind: str,
        *,
        action: str | None = None,
        secret: str | None = None,
        times: int | None = None,
        retry_after_ms: int | None = None,
        seconds: float = 0.0,
        status: int | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(KINDS)}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None (forever)")
        fault = Fault(
            next(self._ids),
            kind,
            action,
            secret,
            times,
            retry_after_ms,
            seconds,
            status,
            code,
            message,
        )
        self._faults.append(fault)
        return fault

    def remove(self, fault_id: int | None = None) -> None:
        if fault_id is None:
            self._faults.clear()
        else:
            self._faults = [f for f in self._faults if f.id != fault_id]

    def take(self, action: str | None, secret: str | None) -> Fault | None:
        for fault in self._faults:
            if fault.matches(action, secret):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                return fault
        return None

    def active(self) -> list[Fault]:
        return list(self._faults)


def apply_fault(fault: Fault, throttling_code: str) -> Response | None:
    """Turn a fault into its effect: raises ApiError, returns a raw Response, or
    returns None when the call should continue normally (after any delay)."""
    kind = fault.kind
    if kind == "latency":
        time.sleep(fault.seconds)
        return None
    if kind == "drop":
        return Response(drop=True)
    if kind == "non_json":
        html = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        return Response(
            status=fault.status or 502, body=html, headers={"Content-Type": "text/html"}
        )
    if kind == "throttling":
        headers = {}
        if fault.retry_after_ms is not None:
            headers["x-acs-retry-after"] = str(fault.retry_after_ms)
        raise ApiError(
            fault.status or 400,
            fault.code or throttling_code,
            fault.message or "Request was denied due to user flow control.",
            headers,
        )
    if kind == "unavailable":
        raise ApiError(
            fault.status or 503,
            fault.code or "ServiceUnavailableTemporary",
            fault.message or "The service is temporarily unavailable. Please try again later.",
        )
    if kind == "internal":
        raise ApiError(
            fault.status or 500,
            fault.code or "InternalFailure",
            fault.message or "The request processing has failed due to some unknown error.",
        )
    if kind == "expired_token":
        raise ApiError(400, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired.")
    raise ApiError(
        fault.status or 400, fault.code or "InjectedError", fault.message or "Injected error."
    )
