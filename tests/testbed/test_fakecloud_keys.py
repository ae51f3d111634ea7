"""The fake KMS's keys behave like KMS's as seen through the real SDK: Encrypt with the
primary version, Decrypt of any version, rotation, key states, EncryptionContext checking,
fault injection, and the admin API; plus `controller.providers.alibaba.kms_crypto`'s time budget and
retries against them."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from alibabacloud_kms20160120.client import Client as KmsClient
from alibabacloud_kms20160120.models import (
    DecryptRequest,
    DescribeKeyRequest,
    EncryptRequest,
    ListKeyVersionsRequest,
)
from alibabacloud_tea_openapi.exceptions import ClientException, ThrottlingException
from alibabacloud_tea_openapi.models import Config

from controller.providers.alibaba.errors import Kind
from controller.providers.alibaba.identity import ACCESS_KEY, Identity, IdentityPool
from controller.providers.alibaba.kms import Endpoint, Kms
from controller.providers.alibaba.kms_crypto import CryptoError, KmsCrypto
from tests.fakecloud import FakeCloud, FakeCloudAdmin

AK, SK = "LTAI5tKeysTest0001", "keys-test-secret-0001"
CONTEXT = {"cluster": "prod-a"}


@pytest.fixture(autouse=True)
def _no_proxies(no_proxies: None) -> None:
    """Every test here talks to the fake cloud on 127.0.0.1 (tests/conftest.py)."""


@pytest.fixture
def cloud() -> Iterator[FakeCloud]:
    with FakeCloud(admin=True) as fake:
        fake.add_access_key(AK, SK, "plugin")
        yield fake


def sdk(cloud: FakeCloud) -> KmsClient:
    return KmsClient(Config(access_key_id=AK, access_key_secret=SK,
                            endpoint=cloud.kms_endpoint, protocol="http"))


def encrypt(client: KmsClient, key_id: str, data: str,
            context: dict[str, str] | None = None) -> Any:
    return client.encrypt(EncryptRequest(key_id=key_id, plaintext=data,
                                         encryption_context=context)).body


def test_encrypt_decrypt_rotation_and_versions(cloud: FakeCloud) -> None:
    client = sdk(cloud)
    key = cloud.keys.create_key()
    first = encrypt(client, key, "aGVsbG8=", CONTEXT)
    meta = client.describe_key(DescribeKeyRequest(key_id=key)).body.key_metadata
    assert (meta.key_state, meta.primary_key_version) == ("Enabled", first.key_version_id)
    assert first.key_id == key and "aGVsbG8" not in first.ciphertext_blob

    second_version = cloud.keys.rotate_key(key)
    second = encrypt(client, key, "d29ybGQ=", CONTEXT)
    assert second.key_version_id == second_version != first.key_version_id
    meta = client.describe_key(DescribeKeyRequest(key_id=key)).body.key_metadata
    assert meta.primary_key_version == second_version and meta.last_rotation_date

    # The old version still decrypts, and says which version it was.
    old = client.decrypt(DecryptRequest(ciphertext_blob=first.ciphertext_blob,
                                        encryption_context=CONTEXT)).body
    assert (old.plaintext, old.key_id, old.key_version_id) == (
        "aGVsbG8=", key, first.key_version_id)
    versions = client.list_key_versions(ListKeyVersionsRequest(key_id=key)).body
    assert [v.key_version_id for v in versions.key_versions.key_version] == [
        first.key_version_id, second_version]


@pytest.mark.parametrize("context", [None, {"cluster": "prod-b"}, {"cluster": "prod-a", "x": "y"}])
def test_decrypt_needs_the_same_encryption_context(
    cloud: FakeCloud, context: dict[str, str] | None
) -> None:
    client = sdk(cloud)
    key = cloud.keys.create_key()
    blob = encrypt(client, key, "c2VjcmV0", CONTEXT).ciphertext_blob
    with pytest.raises(ClientException) as err:
        client.decrypt(DecryptRequest(ciphertext_blob=blob, encryption_context=context))
    assert (err.value.code, err.value.status_code) == ("InvalidParameter", 400)


def test_tampered_blob_and_unknown_key(cloud: FakeCloud) -> None:
    client = sdk(cloud)
    key = cloud.keys.create_key()
    raw = bytearray(base64.b64decode(encrypt(client, key, "YQ==", CONTEXT).ciphertext_blob))
    raw[-1] ^= 1
    with pytest.raises(ClientException) as err:
        client.decrypt(DecryptRequest(ciphertext_blob=base64.b64encode(bytes(raw)).decode(),
                                      encryption_context=CONTEXT))
    assert err.value.code == "InvalidParameter"
    with pytest.raises(ClientException) as err:
        encrypt(client, "00000000-0000-0000-0000-000000000000", "YQ==")
    assert (err.value.code, err.value.status_code) == ("Forbidden.KeyNotFound", 404)


@pytest.mark.parametrize(("state", "code"), [("Disabled", "Rejected.Disabled"),
                                             ("PendingDeletion", "Rejected.PendingDeletion")])
def test_key_state_blocks_use_but_not_describe(cloud: FakeCloud, state: str, code: str) -> None:
    client = sdk(cloud)
    key = cloud.keys.create_key()
    blob = encrypt(client, key, "YQ==", CONTEXT).ciphertext_blob
    FakeCloudAdmin(cloud.admin_url).set_key_state(key, state)
    assert client.describe_key(DescribeKeyRequest(key_id=key)).body.key_metadata.key_state == state
    for call in (lambda: encrypt(client, key, "YQ=="),
                 lambda: client.decrypt(DecryptRequest(ciphertext_blob=blob,
                                                       encryption_context=CONTEXT))):
        with pytest.raises(ClientException) as err:
            call()
        assert (err.value.code, err.value.status_code) == (code, 409)
    cloud.keys.set_state(key, "Enabled")
    assert encrypt(client, key, "YQ==").key_id == key


def test_admin_api_creates_rotates_and_describes(cloud: FakeCloud) -> None:
    admin = FakeCloudAdmin(cloud.admin_url)
    key = admin.create_key(description="etcd")
    version = admin.rotate_key(key)
    assert admin.describe_key(key)["PrimaryKeyVersion"] == version
    assert cloud.keys.key_ids() == [key]


def test_faults_apply_to_key_calls(cloud: FakeCloud) -> None:
    client = sdk(cloud)
    key = cloud.keys.create_key()
    cloud.inject("Encrypt", key, "throttling", retry_after_ms=50)
    with pytest.raises(ThrottlingException):
        encrypt(client, key, "YQ==")
    assert encrypt(client, key, "YQ==").key_id == key
    assert cloud.calls("Encrypt") == 2


# --- controller.providers.alibaba.kms_crypto against the fake -------------------------------------

@pytest.fixture
def crypto(cloud: FakeCloud) -> Iterator[KmsCrypto]:
    kms = Kms(IdentityPool(), region="cn-hangzhou")
    identity = Identity(ACCESS_KEY, access_key_id=AK, access_key_secret=SK)
    try:
        yield KmsCrypto(kms, identity, Endpoint(cloud.kms_endpoint, "http"), budget=1.5)
    finally:
        kms.close()


def test_crypto_round_trip_across_rotation(cloud: FakeCloud, crypto: KmsCrypto) -> None:
    key = cloud.keys.create_key()
    first = crypto.encrypt(key, b"\x00seed\xff", CONTEXT)
    cloud.keys.rotate_key(key)
    assert crypto.describe_key(key).primary_version != first.version_id
    back = crypto.decrypt(key, first.ciphertext, CONTEXT)
    assert (back.plaintext, back.version_id) == (b"\x00seed\xff", first.version_id)


def test_crypto_retries_throttling_and_5xx_within_budget(
    cloud: FakeCloud, crypto: KmsCrypto
) -> None:
    key = cloud.keys.create_key()
    cloud.inject("Encrypt", key, "throttling", times=1, retry_after_ms=100)
    cloud.inject("Encrypt", key, "unavailable", times=1)
    assert crypto.encrypt(key, b"x", CONTEXT).key_id == key
    assert cloud.calls("Encrypt") == 3


def test_crypto_gives_up_inside_the_budget(cloud: FakeCloud, crypto: KmsCrypto) -> None:
    key = cloud.keys.create_key()
    cloud.inject("DescribeKey", key, "latency", times=None, seconds=5)
    started = time.monotonic()
    with pytest.raises(CryptoError) as err:
        crypto.describe_key(key)
    assert time.monotonic() - started < 2.0  # budget 1.5 s; the apiserver allows 3 s
    assert err.value.kind == Kind.TRANSIENT and key in str(err.value)
    cloud.clear_faults()


def test_crypto_errors_name_key_and_fix(cloud: FakeCloud, crypto: KmsCrypto) -> None:
    key = cloud.keys.create_key()
    blob = crypto.encrypt(key, b"x", CONTEXT).ciphertext
    with pytest.raises(CryptoError) as err:
        crypto.decrypt(key, blob, {"cluster": "other"})
    assert "InvalidParameter" in str(err.value) and "EncryptionContext" in str(err.value)
    cloud.keys.set_state(key, "Disabled")
    with pytest.raises(CryptoError) as err:
        crypto.encrypt(key, b"x", CONTEXT)
    assert err.value.code == "Rejected.Disabled" and key in str(err.value)
    assert "enable it" in str(err.value) and not err.value.retryable
    assert cloud.calls("Encrypt") == 2  # not retried
