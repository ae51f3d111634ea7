"""Which network failure an exception stands for, found under the wrappers of the libraries
that raise it (the Alibaba SDK's `inner_exception`, requests' and urllib3's `reason`, Python's
`__cause__` / `__context__`).

Why it exists: every HTTP client here (the Alibaba SDKs over requests, the Kubernetes client
over urllib3) wraps the socket error in two to five layers, and the outermost type
(`RetryError`, `MaxRetryError`) says nothing an operator can act on. Both the cloud error
classes (providers/alibaba/errors.py) and the watch loops (kube/informer.py) need the one thing that
does: the name did not resolve, the connection was refused, nothing answered in time, or the
certificate was not trusted. Only types are inspected, never exception text.
"""

from __future__ import annotations

import socket
import ssl

# Exception type names that mean "timed out" in requests and urllib3, whose classes this
# module does not import.
_TIMEOUT_NAMES = frozenset({"ReadTimeout", "ConnectTimeout", "ReadTimeoutError",
                            "ConnectTimeoutError", "Timeout"})
_CHAIN_LIMIT = 16

NAME_NOT_RESOLVED = "NameNotResolved"
CONNECTION_REFUSED = "ConnectionRefused"
TIMEOUT = "Timeout"
TLS_VERIFY_FAILED = "TLSVerifyFailed"

DESCRIPTIONS = {
    NAME_NOT_RESOLVED: "the host name does not resolve (DNS)",
    CONNECTION_REFUSED: "the connection was refused (nothing listens on that host and port)",
    TIMEOUT: "no answer in time (connect or read timeout)",
    TLS_VERIFY_FAILED: "its TLS certificate is not trusted",
}


def root_causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it wraps, breadth first, bounded, without cycles."""
    found: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(found) < _CHAIN_LIMIT:
        current = todo.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        args = getattr(current, "args", ())
        for nxt in (getattr(current, "inner_exception", None), getattr(current, "reason", None),
                    current.__cause__, current.__context__, args[0] if args else None):
            if isinstance(nxt, BaseException):
                todo.append(nxt)
    return found


def network_failure(exc: BaseException) -> str:
    """NAME_NOT_RESOLVED, CONNECTION_REFUSED, TIMEOUT, TLS_VERIFY_FAILED, or "" when the
    failure is none of these."""
    for cause in root_causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return TLS_VERIFY_FAILED
        if isinstance(cause, socket.gaierror):
            return NAME_NOT_RESOLVED
        if isinstance(cause, ConnectionRefusedError):
            return CONNECTION_REFUSED
        if isinstance(cause, TimeoutError) or type(cause).__name__ in _TIMEOUT_NAMES:
            return TIMEOUT
    return ""


def out_of_reach(exc: BaseException) -> str | None:
    """Whether `exc` means a server (the API server, for the callers) could not be reached:
    a network failure above, or a connection or timeout error, or urllib3's own (which the
    Kubernetes client raises after its retries). Returns what to say ("the host name does not
    resolve (DNS)", or the exception's type name), or None for anything else: an OSError that
    is no connection error (a file, a permission) is not the network."""
    failure = network_failure(exc)
    if failure:
        return DESCRIPTIONS[failure]
    if isinstance(exc, ConnectionError | TimeoutError) or \
            type(exc).__module__.startswith("urllib3"):
        return type(exc).__name__
    return None
