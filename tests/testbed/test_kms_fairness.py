"""The KMS client (controller.providers.alibaba.kms) with the real SDK against the fake cloud: an
identity that KMS keeps throttling cools down without holding workers while another identity's
reads go on; `cancel()` ends retries at once (the stop deadline); each private CA of a host
gets its own TLS session, released (session, fd) with its last client."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.providers.alibaba.errors import FetchError, Kind
from controller.providers.alibaba.identity import ACCESS_KEY, Identity, IdentityPool
from controller.providers.alibaba.kms import Endpoint, Kms
from controller.providers.alibaba.pool import CallPolicy
from tests.fakecloud import FakeCloud
from tests.fakecloud.tls import write_tls_files
from tests.waiting import wait_for

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
    client = Kms(IdentityPool(on_secret=None), region="cn-hangzhou",
                 policy=CallPolicy(max_attempts=3, max_retry_seconds=3.0))
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
    (_, one), (_, two), (_, again) = (kms.cas.acquire(e) for e in (right, wrong, right))
    assert one != two and one == again and len(kms.cas) == 2
    for endpoint in (right, wrong, right):
        kms.cas.release(endpoint)
    assert len(kms.cas) == 0


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _sdk_sessions() -> set[str]:
    from darabonba.core import DaraCore

    return set(DaraCore._sessions)


def test_a_private_ca_is_released_with_its_last_client(cloud: FakeCloud, kms: Kms,
                                                       tmp_path: Path) -> None:
    """Issue 18 case 6: each distinct store CA kept an SDK session (~1 MiB), an fd and a
    file in /tmp for the life of the process. Now: no file anywhere, and when the last
    client using a CA is released, its session and fd go too; 50 distinct CAs come and go
    and leave the session table, the fd count and the CA sessions where they started. A
    CA that does not sign the server still fails after the right one's session was
    released and its pool size handed on (no widened trust)."""
    endpoint = Endpoint(cloud.kms_tls_endpoint, "https", cloud.ca_pem)
    sessions, fds = _sdk_sessions(), _fds()
    assert kms.get_secret_value(A, endpoint, "a").data == b"va"
    assert len(kms.cas) == 1 and len(_sdk_sessions() - sessions) == 1
    assert kms.release(A, endpoint)
    assert len(kms.cas) == 0 and _sdk_sessions() == sessions
    # (the fake cloud runs in this process: its side of a closed connection ends soon after)
    wait_for(lambda: _fds() <= fds, 10, "fds back where they started")
    tmp = Path(tempfile.gettempdir())
    assert not list(tmp.glob("asm-kms-ca-*"))
    for i in range(50):  # distinct CAs (the real one with a distinct comment)
        other = Endpoint(cloud.kms_tls_endpoint, "https", f"{cloud.ca_pem}\n# {i}\n")
        assert kms.get_secret_value(B, other, "b").data == b"vb"
        kms.release(B, other)
    assert len(kms.cas) == 0 and _sdk_sessions() == sessions
    wait_for(lambda: _fds() <= fds, 10, "fds back where they started")
    (tmp_path / "other").mkdir()
    stranger = Endpoint(cloud.kms_tls_endpoint, "https",
                        write_tls_files(tmp_path / "other").ca_pem)
    with pytest.raises(FetchError) as untrusted:
        kms.get_secret_value(A, stranger, "a")
    assert untrusted.value.kind == Kind.CONFIG
    kms.release(A, stranger)
    assert len(kms.cas) == 0 and _sdk_sessions() == sessions
