"""An in-memory secret source: the worked example of a provider, and what the engine's unit
tests read through instead of a cloud.

Copy this folder to add a source: implement `providers.base.Provider` (client_for, check_store,
private_ca, read, release, cancel, close), declare its API shape (`SHAPE`: the `provider`
names it serves, the store block it owns with its parser and CRD schema), then add one line
to controller/providers/installed.py; the engine, the API's parsers and the CRD generator need
nothing else (tests/unit/test_provider_contract.py runs its promises, and
tests/unit/test_installed.py installs this one and syncs an ExternalSecret through it).

Its API shape: ExternalSecrets with `provider: fake` read through stores with `spec.Fake`
(one optional field, `where`: the name its clients give the fake, default "fake.local").

Remote secrets live in `values` (name -> value, one version each); `fail` makes the reads of
a name raise a `FetchError` (of the given `Kind`: NotFound, Throttled, ...; or a copy of the
given error) to exercise the engine's failure paths. Each store is one client; an entry that
names no store reads as the controller, if the rules allow that namespace to.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller import api
from controller.api.fields import MAX_FIELD_LENGTH, Problems, as_mapping, read_text
from controller.providers.base import (
    FetchError,
    Kind,
    PrivateCa,
    Provider,
    RemoteRef,
    SecretValue,
    StoreRules,
)
from controller.providers.registry import Providers

__all__ = ["SHAPE", "FakeBlock", "FakeClient", "FakeProvider", "serving"]

NAME, BLOCK, WHERE = "fake", "Fake", "fake.local"


@dataclass(frozen=True)
class FakeBlock:
    """A store's spec.Fake, as parsed."""

    where: str = WHERE


def parse_block(raw: object, field: str, namespace: str, p: Problems) -> FakeBlock:
    """spec.Fake (`field`): every field optional."""
    return FakeBlock(read_text(as_mapping(raw, field, p), "where", field, p) or WHERE)


SHAPE = api.SourceShape(
    names=(NAME,),
    blocks=(api.StoreBlock(BLOCK, parse_block, {
        "type": "object",
        "description": "Read the in-memory fake source (ExternalSecrets with provider fake).",
        "properties": {"where": {
            "type": "string", "maxLength": MAX_FIELD_LENGTH,
            "description": f"The name its clients give the fake. Default: {WHERE}."}},
    }),),
    provider_doc="fake, the in-memory example",
)

# Our own words for each kind: a FetchError's text never quotes a value (nor would a real
# service's message, which the Alibaba provider never passes on either).
_CODES = {
    Kind.NOT_FOUND: "NotFound",
    Kind.DENIED: "Forbidden",
    Kind.THROTTLED: "Throttling",
    Kind.TRANSIENT: "ServiceUnavailable",
    Kind.AUTH: "InvalidCredentials",
    Kind.CONFIG: "InvalidRequest",
}


@dataclass(frozen=True)
class FakeClient:
    """The fake's client key: whose credentials (a store, or "controller"), and where."""

    credential: str
    where: str = "fake.local"

    @property
    def seed(self) -> str:
        return f"{self.credential}/{self.where}"

    def describe(self, ref: RemoteRef) -> str:
        version = ref.version_id or ref.version_stage or "current"
        return f"{ref.name}@{version} on {self.where}"


class FakeProvider:
    """`providers.base.Provider` over a dict. Thread-safe; counts what it was asked."""

    def __init__(self, values: dict[str, str | bytes] | None = None) -> None:
        self.values: dict[str, str | bytes] = dict(values or {})
        # name -> the error its reads raise: a kind (in our words), or a copy of this error
        self.fail: dict[str, Kind | FetchError] = {}
        self.reads: list[str] = []
        self.released: list[Hashable] = []  # clients and credentials let go, in order
        self.cancelled = self.closed = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------- resolve
    def client_for(self, es: api.ExternalSecret, entry: api.DataEntry,
                   store: api.SecretStore | None, rules: StoreRules) -> FakeClient:
        if store is None:
            rules.may_use_controller_identity(
                es.namespace, f"{entry.spec_field} has no secretStoreRef, so it")
            return FakeClient("controller")
        block = store.blocks.get(BLOCK)
        where = block.where if isinstance(block, FakeBlock) else WHERE
        return FakeClient(f"{store.kind}/{store.namespace}/{store.name}", where)

    def check_store(self, store: api.SecretStore, rules: StoreRules) -> bool:
        return False  # nothing to check: the fake needs no credentials

    def private_ca(self, store: api.SecretStore) -> PrivateCa | None:
        return None

    # ---------------------------------------------------------------- read
    def read(self, client: Hashable, ref: RemoteRef) -> SecretValue:
        with self._lock:
            self.reads.append(ref.name)
            fault = self.fail.get(ref.name)
            value = self.values.get(ref.name)
        if isinstance(fault, FetchError):  # a new one each time: a shared one's traceback grows
            raise FetchError(fault.kind, fault.code, fault.reason,
                             retry_after=fault.retry_after, token_expired=fault.token_expired,
                             own_identity=fault.own_identity)
        if fault is None and value is None:
            fault = Kind.NOT_FOUND
        if fault is not None:
            code = _CODES[fault]
            raise FetchError(fault, code, f"{code}: reading {ref.name} failed ({fault.value})")
        data = value if isinstance(value, bytes) else str(value).encode()
        return SecretValue(ref.name, data, "binary" if isinstance(value, bytes) else "text",
                           ref.version_id or "v1")

    # ----------------------------------------------------------- lifecycle
    def release(self, clients: Collection[Hashable],
                credentials: Collection[Hashable]) -> None:
        with self._lock:
            self.released.extend([*clients, *credentials])

    def cancel(self) -> None:
        self.cancelled = True

    def close(self) -> None:
        self.closed = True


if TYPE_CHECKING:  # mypy proves the fake keeps the protocol
    _PROVIDER: Provider = FakeProvider()


def serving(provider: Provider, *names: str, shape: api.SourceShape | None = None) -> Providers:
    """A registry in which `provider` serves `names` (default: "kms" and "oos") with the store
    blocks of `shape` (e.g. the Alibaba ones, for tests that drive the engine through the fake
    with stores as users write them), for tests."""
    providers = Providers()
    providers.register(provider, *(names or ("kms", "oos")), shape=shape)
    return providers
