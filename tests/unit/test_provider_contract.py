"""The Provider protocol's promises (controller/providers/base.py), checked against every
provider: the fake one (in memory) and the Alibaba one (KMS through the real SDK against
tests/fakecloud, which speaks the wire protocol). A new provider adds its `Subject` below.

Promises: a read returns the value; a missing secret is FetchError NOT_FOUND; a throttle is
retryable; `str(error)` never carries the secret value (even when the service's message
quotes it); `release` is idempotent and a released client reads again; `cancel` and `close`
may be called twice."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from controller import settings
from controller.providers import ClientKey, FetchError, Kind, Provider, RemoteRef
from controller.providers.alibaba.identity import ACCESS_KEY, Identity, IdentityPool
from controller.providers.alibaba.kms import Endpoint, Kms
from controller.providers.alibaba.pool import CallPolicy
from controller.providers.alibaba.provider import Alibaba
from controller.providers.alibaba.stores import Source
from controller.providers.fake import FakeClient, FakeProvider

VALUE = "s3cret-value-that-must-not-leak"
AK, SK = "LTAI5tContractKey0001", "contract-secret-0001"


@dataclass
class Subject:
    """One provider under test: how to reach it, and how to make its source misbehave."""

    provider: Provider
    client: ClientKey
    put: Callable[[str, str], None]
    throttle: Callable[[str], None]
    refuse_quoting: Callable[[str, str], None]  # (name, text): an error whose message quotes it


def _fake() -> Iterator[Subject]:
    fake = FakeProvider()

    def refuse(name: str, text: str) -> None:
        fake.fail[name] = Kind.DENIED  # the fake words its own errors: `text` cannot appear

    yield Subject(fake, FakeClient("contract"), fake.values.__setitem__,
                  lambda name: fake.fail.__setitem__(name, Kind.THROTTLED), refuse)


def _alibaba() -> Iterator[Subject]:
    from tests.fakecloud import FakeCloud

    with FakeCloud() as cloud:
        cloud.add_access_key(AK, SK, "contract")
        identities = IdentityPool(on_secret=None)
        kms = Kms(identities, region="cn-hangzhou",
                  policy=CallPolicy(max_attempts=1, max_retry_seconds=2))
        provider = Alibaba(settings.load([], {}), kms=kms, identities=identities)
        client = Source(Identity(ACCESS_KEY, access_key_id=AK, access_key_secret=SK),
                        Endpoint(cloud.kms_endpoint, "http"))

        def refuse(name: str, text: str) -> None:
            cloud.inject(secret=name, fault="error", times=None, status=403,
                         code="Forbidden.NoPermission", message=f"denied: {text}")

        try:
            yield Subject(provider, client, cloud.put_secret,
                          lambda name: cloud.inject(secret=name, fault="throttling",
                                                    times=None),
                          refuse)
        finally:
            provider.close()


@pytest.fixture(params=["fake", "alibaba"])
def subject(request: pytest.FixtureRequest, no_proxies: None) -> Iterator[Subject]:
    makers: dict[str, Callable[[], Iterator[Subject]]] = {"fake": _fake, "alibaba": _alibaba}
    yield from makers[request.param]()


def _error(subject: Subject, name: str) -> FetchError:
    with pytest.raises(FetchError) as caught:
        subject.provider.read(subject.client, RemoteRef(name))
    return caught.value


def test_a_read_returns_the_value(subject: Subject) -> None:
    subject.put("db", VALUE)
    value = subject.provider.read(subject.client, RemoteRef("db"))
    assert value.data == VALUE.encode()
    assert value.version_id
    assert value.data_type in ("text", "binary")
    assert VALUE not in repr(value)


def test_a_missing_secret_is_not_found(subject: Subject) -> None:
    error = _error(subject, "nowhere")
    assert error.kind == Kind.NOT_FOUND
    assert not error.retryable


def test_a_throttle_is_retryable(subject: Subject) -> None:
    subject.put("busy", VALUE)
    subject.throttle("busy")
    error = _error(subject, "busy")
    assert error.kind == Kind.THROTTLED
    assert error.retryable


def test_an_error_never_carries_the_secret_value(subject: Subject) -> None:
    subject.put("db", VALUE)
    subject.refuse_quoting("db", VALUE)
    error = _error(subject, "db")
    assert error.kind == Kind.DENIED
    for text in (str(error), error.reason, error.code, repr(error)):
        assert VALUE not in text


def test_release_is_idempotent_and_a_released_client_reads_again(subject: Subject) -> None:
    subject.put("db", VALUE)
    subject.provider.read(subject.client, RemoteRef("db"))
    for _ in range(2):
        subject.provider.release([subject.client], [subject.client.credential])
    subject.provider.release([], [])
    assert subject.provider.read(subject.client, RemoteRef("db")).data == VALUE.encode()


def test_cancel_and_close_may_be_called_twice(subject: Subject) -> None:
    for _ in range(2):
        subject.provider.cancel()
    for _ in range(2):
        subject.provider.close()


def test_a_client_key_is_hashable_and_says_nothing_secret(subject: Subject) -> None:
    keys: dict[Any, int] = {subject.client: 1}
    assert keys[subject.client] == 1
    assert hash(subject.client.credential) == hash(subject.client.credential)
    text = subject.client.describe(RemoteRef("db", version_stage="ACSCurrent")) + \
        subject.client.seed + repr(subject.client)
    assert SK not in text and VALUE not in text


def test_the_engine_syncs_through_a_provider_it_was_only_registered_with() -> None:
    """What adding a source takes: its folder and one registration. The reconciler, the
    store resolver and the fetcher serve an ExternalSecret through the fake provider, with no
    Alibaba part in the way; a failure of the fake reaches the status in the fake's words."""
    from tests.fakes import World, entry

    fake = FakeProvider({"db": VALUE})
    w = World(provider=fake)
    w.add_es("app", {"data": [entry("db")]})
    w.reconcile("app")
    assert w.kube.data(w.ns, "app") == {"db": VALUE}
    assert fake.reads == ["db"]
    fake.fail["other"] = Kind.THROTTLED
    w.add_es("broken", {"data": [entry("other")]})
    w.reconcile("broken")
    assert w.reason("broken") == "FetchFailed"
    assert "reading other failed (Throttled)" in w.message("broken")
    assert VALUE not in w.message("broken")
