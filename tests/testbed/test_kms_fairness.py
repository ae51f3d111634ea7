"""The KMS client (controller.alicloud.kms) with the real SDK against the fake cloud: an
identity that KMS keeps throttling cools down without holding workers while another identity's
reads go on; `cancel()` ends retries at once (the stop deadline); each private CA of a host
gets its own TLS session."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from controller.alicloud.errors import FetchError, Kind
from controller.alicloud.identity import ACCESS_KEY, Identity, IdentityPool
from controller.alicloud.kms import Endpoint, Kms
from tests.fakecloud import FakeCloud

A = Identity(ACCESS_KEY, access_key_id="LTAIaaaaaaaaaaaa0001", access_key_secret="secret-a")
B = Identity(ACCESS_KEY, access_key_id="LTAIbbbbbbbbbbbb0002", access_key_secret="secret-b")


@pytest.fixture
def cloud() -> Iterator[FakeCloud]:
    with FakeCloud() as fake:
        fake.add_access_key(A.access_key_id, A.access_key_secret, "tenant-a")
        fake.add_access_key(B.access_key_id, B.access_key_secret, "tenant-b")
        fake.put_secret("a", "va")
        fake.put_secret("b", "vb")
        yield fake


@pytest.fixture
def kms() -> Iterator[Kms]:
    client = Kms(IdentityPool(on_secret=None), region="cn-hangzhou", max_attempts=3,
                 max_retry_seconds=3.0)
    yield client
    client.close()


def test_a_throttled_identity_cools_down_and_others_go_on(cloud: FakeCloud, kms: Kms) -> None:
    endpoint = Endpoint(cloud.kms_endpoint, "http")
    cloud.inject(secret="a", fault="throttling", times=100, retry_after_ms=100)
    with pytest.raises(FetchError) as first:
        kms.get_secret_value(A, endpoint, "a")
    assert first.value.kind == Kind.THROTTLED
    calls = cloud.calls("GetSecretValue", secret="a")
    assert calls == 3  # the whole retry budget of one call
    started = time.monotonic()
    with pytest.raises(FetchError) as cooling:
        kms.get_secret_value(A, endpoint, "a")
    assert time.monotonic() - started < 0.5  # fails at once: no worker held
    assert cooling.value.kind == Kind.THROTTLED and "wait" in str(cooling.value)
    assert cloud.calls("GetSecretValue", secret="a") == calls  # no call reached KMS
    assert kms.get_secret_value(B, endpoint, "b").data == b"vb"  # another tenant goes on


def test_cancel_ends_retries_at_once(cloud: FakeCloud, kms: Kms) -> None:
    endpoint = Endpoint(cloud.kms_endpoint, "http")
    cloud.inject(secret="a", fault="throttling", times=100, retry_after_ms=2500)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            kms.get_secret_value(A, endpoint, "a")
        except FetchError as exc:
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    deadline = time.monotonic() + 10
    while cloud.calls("GetSecretValue", secret="a") < 1 and time.monotonic() < deadline:
        time.sleep(0.01)  # the first attempt has been answered; it now waits 2.5 s
    started = time.monotonic()
    kms.cancel()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0
    assert errors and isinstance(errors[0], FetchError)
    with pytest.raises(FetchError) as after:
        kms.get_secret_value(B, endpoint, "b")
    assert after.value.code == "Cancelled"


def test_each_private_ca_of_a_host_gets_its_own_session(kms: Kms) -> None:
    host = "kst-1.cryptoservice.kms.aliyuncs.com"
    right = Endpoint(host, "https", "-----BEGIN CERTIFICATE-----\nRIGHT\n")
    wrong = Endpoint(host, "https", "-----BEGIN CERTIFICATE-----\nWRONG\n")
    plain = Endpoint(host, "https")
    sizes = {kms._pool_size(e) for e in (right, wrong, plain)}
    assert len(sizes) == 3 and None in sizes
    assert kms._pool_size(right) == kms._pool_size(right)
