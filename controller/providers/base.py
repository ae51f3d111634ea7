"""What the controller and its secret sources say to each other, whatever the source (issue
20, the source seam): the `Provider` protocol every source implements, the provider-neutral
types it takes and returns (`RemoteRef`, `SecretValue`, a `ClientKey`), the kinds of a failed
read and the error that carries one, the problems a store can have, and what the composition
root lends a source it builds (`Wiring`). What a source adds to the API (its provider names
and store blocks) is the API's own neutral type, `api.SourceShape`.

A source (the Alibaba Cloud readers in controller/providers/alibaba: KMS, a KMS instance,
OOS; the in-memory example in controller/providers/fake) learns whose read it makes from
`tenant()` (to share its rate fairly) and raises `FetchError` with a `Kind`; the engine
decides with the kind alone what a failure means for an ExternalSecret (retry with backoff,
keep the data, which condition reason). Nothing here knows a source, and nothing here imports
a controller: the API's resource types (controller.api) and the operator's settings are the
only things of ours it names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Hashable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from controller import api
    from controller.settings import Settings

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
        own_identity: bool = False,
    ) -> None:
        self.kind = kind
        self.code = code
        self.reason = reason
        self.retry_after = retry_after
        self.token_expired = token_expired
        # The controller's own identity (what an entry without a store reads with) could not
        # be had: the engine then says first that the entry names no store.
        self.own_identity = own_identity
        super().__init__(reason)

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


class StoreProblem(Exception):
    """Why an entry cannot be read through its store (or a store cannot work as written):
    `reason` is a condition reason, `str()` the message, naming the object, the field and the
    fix, never key material. Raised by the engine's store rules and by providers alike."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class RemoteRef:
    """Which remote secret an entry reads: its name at the source, and a version (by id, or
    by stage; neither: the source's current one)."""

    name: str
    version_id: str = ""
    version_stage: str = ""


@dataclass(frozen=True)
class SecretValue:
    """A value read: its bytes (never in repr), the version read, and its data type ("text"
    or "binary": binary values are base64-encoded into the Secret's text-valued templates)."""

    name: str
    data: bytes = field(repr=False)
    data_type: str
    version_id: str
    stages: tuple[str, ...] = ()


class ClientKey(Hashable, Protocol):
    """Who reads where, as the provider that made it knows: opaque to the engine, which only
    compares and hashes it (equal keys are one client: reads through them are deduplicated,
    cached and polled together) and asks it the three things below. Immutable; its repr and
    its answers carry no secret."""

    @property
    def credential(self) -> Hashable:
        """Whose credentials the reads use: clients may share one. Values read through it
        are charged to it when no namespace asks; when no client uses it any more, the
        provider is told (`Provider.release`)."""

    @property
    def seed(self) -> str:
        """A text stable across restarts (no secret in it) that spreads polls in time."""

    def describe(self, ref: RemoteRef) -> str:
        """A read through this client, as logs name it (e.g. "db@ACSCurrent on kms.host")."""


class PrivateCa(NamedTuple):
    """A private CA a store's reads trust, as the engine counts them per namespace
    (--max-cas-per-namespace): `identity` is (endpoint host, digest of the CA or the Secret
    key naming it), `field` where the store names it (for messages)."""

    identity: tuple[str, str]
    field: str


class StoreRules(Protocol):
    """What the engine lends a provider while it resolves or checks a store: its namespace
    rules and its reads of Kubernetes objects. Each raises StoreProblem naming the fix."""

    def credential(self, store: api.SecretStore, ref: api.SecretRef, path: str) -> str:
        """The text of one key of a credential Secret the store names at `path` (a
        SecretStore: in its own namespace unless the operator allowed otherwise); never
        empty; registered for redaction."""

    def secret_key(self, store: api.SecretStore, ref: api.SecretRef, path: str,
                   ) -> bytes | None:
        """One key of a Secret the store names at `path` (the same namespace rule); None
        when the Secret or the key is missing."""

    def same_namespace(self, store: api.SecretStore, namespace: str, what: str,
                       fix: str) -> None:
        """Refuses an object of another namespace for a SecretStore, unless allowed."""

    def may_use_controller_identity(self, namespace: str, what: str) -> None:
        """Refuses the controller's own identity to a namespace the operator did not give
        it to (--controller-identity-namespaces)."""


class Provider(Protocol):
    """One secret source behind the seam: registered under the ExternalSecret `provider`
    names it serves (`registry.Providers`). The engine calls nothing else of it.

    Threads: every method may be called from several workers at once. Errors: reads raise
    FetchError only; store resolution raises StoreProblem only; neither carries a secret."""

    def client_for(self, es: api.ExternalSecret, entry: api.DataEntry,
                   store: api.SecretStore | None, rules: StoreRules) -> ClientKey:
        """The client `entry` of `es` reads through: `store` is its secretStoreRef's store,
        already found and admitted by the engine (None: the entry names no store, so the
        controller's own identity, if `rules` allow it). No remote call; raises
        StoreProblem."""

    def check_store(self, store: api.SecretStore, rules: StoreRules) -> bool:
        """Whether `store` can work as written, without an ExternalSecret and without a
        remote call (its credentials exist, its endpoint is allowed, ...): raises
        StoreProblem with the reason an entry reading through it would get. Returns whether
        the check read Secrets (which are not watched, so the store is checked again on a
        cadence). A store with no block of this provider's passes (False)."""

    def private_ca(self, store: api.SecretStore) -> PrivateCa | None:
        """The private CA the store's reads would trust, None for none. Pure: reads
        nothing."""

    def read(self, client: ClientKey, ref: RemoteRef) -> SecretValue:
        """The value of `ref` read through `client` (a key this provider made): raises
        FetchError, NOT_FOUND when the secret or version does not exist, THROTTLED or
        TRANSIENT when trying again may succeed. Makes at most the calls its own retry
        policy allows, and stops early once `cancel` was called."""

    def release(self, clients: Collection[ClientKey],
                credentials: Collection[Hashable]) -> None:
        """No read goes through `clients` any more, nor uses `credentials` (`ClientKey.
        credential`s, of any provider: ignore foreign ones): drop their connections, sessions
        and credentials now. Idempotent; unknown keys are ignored."""

    def cancel(self) -> None:
        """Stop retrying: reads in flight end soon (the process is stopping)."""

    def close(self) -> None:
        """Let go of everything held (connections, files, threads). Idempotent."""


@dataclass(frozen=True)
class Wiring:
    """What the composition root (controller/app.py) lends a source when it builds it
    (controller/providers/installed.py): the operator's settings, and its hooks: each call a
    source makes (API action, endpoint host, result code, seconds), each credential it builds
    (its kind), and the ServiceAccount token source (kube/tokens.py), given which token files
    are still read."""

    settings: Settings
    on_call: Callable[[str, str, str, float], None]
    on_identity: Callable[[str], None]
    tokens: Callable[[Callable[[str], bool]], Any]
