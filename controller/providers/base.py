"""What the controller and its secret sources say to each other, whatever the source: the
kinds of a failed read and the error that carries one (issue 20, the source seam).

A source (today the Alibaba Cloud readers in controller/alicloud: KMS, a KMS instance, OOS)
learns whose read it makes from `tenant()` (to share its rate fairly) and raises `FetchError`
with a `Kind`; the engine decides with the kind alone what a failure means
for an ExternalSecret (retry with backoff, keep the data, which condition reason). Nothing here
knows a source: this module imports nothing of the controller's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from enum import StrEnum

# The namespace on whose behalf the current thread reads (set by the sync and the poll that
# ask): sources share their rate between tenants by it, so a tenant is one tenant however many
# identities it owns. "" when no one namespace asks (a read shared by several).
_TENANT: ContextVar[str] = ContextVar("tenant", default="")


@contextlib.contextmanager
def on_behalf_of(namespace: str) -> Iterator[None]:
    """Reads made inside are `namespace`'s (see `tenant`)."""
    token = _TENANT.set(namespace)
    try:
        yield
    finally:
        _TENANT.reset(token)


def tenant() -> str:
    """The namespace the current read is made for; "" when none was said."""
    return _TENANT.get()


class Kind(StrEnum):
    NOT_FOUND = "NotFound"
    DENIED = "AccessDenied"
    THROTTLED = "Throttled"
    TRANSIENT = "Transient"
    AUTH = "AuthFailed"
    CONFIG = "InvalidConfig"


RETRYABLE = frozenset({Kind.THROTTLED, Kind.TRANSIENT})


class FetchError(Exception):
    """A read of a source that failed, classified; `str()` is safe for status, Events and
    logs (the source builds it from codes and its own words, never from a service's message)."""

    def __init__(
        self,
        kind: Kind,
        code: str,
        reason: str,
        *,
        retry_after: float | None = None,
        token_expired: bool = False,
    ) -> None:
        self.kind = kind
        self.code = code
        self.reason = reason
        self.retry_after = retry_after
        self.token_expired = token_expired
        super().__init__(reason)

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE
