"""OOS encryption parameters: the real ``alibabacloud_oos20190601`` client and the controller's
``controller.providers.alibaba.oos.Oos`` against the fake cloud's ``GetSecretParameter``.

Proves the fake speaks OOS's wire protocol (both signature styles, refusals, documented
response shape, decryption switch, versions) and that the controller reads parameters with
the KMS path's identities, retries and error classes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from alibabacloud_oos20190601.client import Client as OosClient
from alibabacloud_oos20190601.models import GetSecretParameterRequest
from alibabacloud_tea_openapi.exceptions import ClientException, ThrottlingException
from alibabacloud_tea_openapi.models import Config

from controller.providers.alibaba.errors import FetchError, Kind
from controller.providers.alibaba.identity import ACCESS_KEY, RAM_ROLE_ARN, Identity, IdentityPool
from controller.providers.alibaba.kms import Endpoint
from controller.providers.alibaba.oos import Oos, endpoint_for
from controller.providers.alibaba.pool import CallPolicy
from tests.fakecloud import FakeCloud, FakeCloudAdmin, Trust, seed

AK, SK, ALICE = "LTAI5tFakeOosKey0001", "fake-oos-secret-0001", "alice"
ROLE = "acs:ram::1234567890123456:role/oos-reader"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:  # the SDK honours HTTP(S)_PROXY but not NO_PROXY
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def cloud() -> Iterator[FakeCloud]:
    with FakeCloud(admin=True) as fake:
        fake.add_access_key(AK, SK, ALICE)
        fake.oos.put("app-db-password", "first")
        fake.oos.put("app-db-password", "second")
        yield fake
    assert fake.leftover_connections == 0
    assert not [t for t in threading.enumerate() if t.name == "fakecloud-oos"]


@pytest.fixture
def oos() -> Iterator[Oos]:
    reader = Oos(IdentityPool(on_secret=None), region="cn-hangzhou",
                 policy=CallPolicy(max_retry_seconds=5))
    yield reader
    reader.close()


def sdk(cloud: FakeCloud, *, secret: str = SK, signature: str | None = None) -> OosClient:
    config = Config(access_key_id=AK, access_key_secret=secret, endpoint=cloud.oos_endpoint,
                    protocol="http", region_id="cn-hangzhou")
    if signature:
        config.signature_algorithm = signature
    return OosClient(config)


def alice() -> Identity:
    return Identity(kind=ACCESS_KEY, access_key_id=AK, access_key_secret=SK,
                    source="SecretStore default/oos")


def here(cloud: FakeCloud) -> Endpoint:
    return Endpoint(host=cloud.oos_endpoint, protocol="http")


# --- the fake, seen through the real SDK -------------------------------------------------


@pytest.mark.parametrize("signature", [None, "v2"])
def test_sdk_reads_latest_version_decrypted_with_either_signature(
    cloud: FakeCloud, signature: str | None
) -> None:
    body = sdk(cloud, signature=signature).get_secret_parameter(
        GetSecretParameterRequest(name="app-db-password", with_decryption=True)).body
    assert body.parameter.value == "second"
    assert body.parameter.parameter_version == 2
    assert body.parameter.type == "Secret"
    assert body.parameter.name == "app-db-password" and body.request_id
    assert cloud.calls("GetSecretParameter", "app-db-password", ALICE, service="oos") == 1


def test_sdk_value_is_empty_without_decryption_and_versions_select(cloud: FakeCloud) -> None:
    client = sdk(cloud)
    plain = client.get_secret_parameter(GetSecretParameterRequest(name="app-db-password")).body
    assert plain.parameter.value == "" and plain.parameter.parameter_version == 2
    first = client.get_secret_parameter(GetSecretParameterRequest(
        name="app-db-password", parameter_version=1, with_decryption=True)).body
    assert (first.parameter.value, first.parameter.parameter_version) == ("first", 1)


def test_sdk_sees_refusals_with_codes_and_statuses(cloud: FakeCloud) -> None:
    cases = [
        (sdk(cloud, secret="wrong"), "app-db-password", None, 400, "SignatureDoesNotMatch"),
        (sdk(cloud), "missing", None, 404, "EntityNotExists.SecretParameter"),
        (sdk(cloud), "app-db-password", 7, 404, "EntityNotExists.SecretParameter"),
    ]
    for client, name, version, status, code in cases:
        with pytest.raises(ClientException) as caught:
            client.get_secret_parameter(GetSecretParameterRequest(
                name=name, parameter_version=version, with_decryption=True))
        assert (caught.value.status_code, caught.value.code) == (status, code)
    cloud.deny(ALICE, "app-*")
    with pytest.raises(ClientException) as denied:
        sdk(cloud).get_secret_parameter(GetSecretParameterRequest(name="app-db-password"))
    assert (denied.value.status_code, denied.value.code) == (403, "Forbidden.NoPermission")


def test_sdk_sees_injected_throttling_with_retry_after(cloud: FakeCloud) -> None:
    cloud.inject("GetSecretParameter", "app-*", "throttling", retry_after_ms=300)
    with pytest.raises(ThrottlingException) as caught:
        sdk(cloud).get_secret_parameter(GetSecretParameterRequest(name="app-db-password"))
    assert caught.value.code == "Throttling.User" and caught.value.retry_after == 300


def test_parameters_change_through_admin_api_and_seed(cloud: FakeCloud, oos: Oos) -> None:
    admin = FakeCloudAdmin(cloud.admin_url)
    assert admin.put_secret_parameter("app-db-password", "third") == 3
    value = oos.get_secret_parameter(alice(), here(cloud), "app-db-password")
    assert (value.data, value.version_id) == (b"third", "3")
    seed.apply(cloud, {"secretParameters": {"app-token": {"versions": ["old", "new"]},
                                            "app-plain": "hello"}})
    assert admin.secret_parameter_names() == ["app-db-password", "app-plain", "app-token"]
    assert oos.get_secret_parameter(alice(), here(cloud), "app-token", "1").data == b"old"
    assert oos.get_secret_parameter(alice(), here(cloud), "app-plain").data == b"hello"
    assert admin.delete_secret_parameter("app-plain") is True
    with pytest.raises(FetchError) as gone:
        oos.get_secret_parameter(alice(), here(cloud), "app-plain")
    assert gone.value.kind == Kind.NOT_FOUND


# --- the controller's reader --------------------------------------------------------------


def test_reader_returns_the_fetchers_secret_value(cloud: FakeCloud, oos: Oos) -> None:
    value = oos.get_secret_value(alice(), here(cloud), "app-db-password", "1")
    assert (value.name, value.data, value.data_type, value.version_id, value.stages) == (
        "app-db-password", b"first", "text", "1", ())
    with pytest.raises(FetchError) as staged:
        oos.get_secret_value(alice(), here(cloud), "app-db-password", version_stage="ACSCurrent")
    assert staged.value.kind == Kind.CONFIG and "versionStage" in str(staged.value)
    with pytest.raises(FetchError) as bad_version:
        oos.get_secret_parameter(alice(), here(cloud), "app-db-password", "v1")
    assert bad_version.value.code == "InvalidParameterVersion"
    assert cloud.calls(service="oos") == 1  # refused before any call


def test_reader_classifies_refusals(cloud: FakeCloud, oos: Oos) -> None:
    wrong = Identity(kind=ACCESS_KEY, access_key_id=AK, access_key_secret="wrong",
                     source="SecretStore default/oos")
    with pytest.raises(FetchError) as auth:
        oos.get_secret_parameter(wrong, here(cloud), "app-db-password")
    assert (auth.value.kind, auth.value.code) == (Kind.AUTH, "SignatureDoesNotMatch")
    assert "OOS refused the credentials of AccessKey (SecretStore default/oos)" in str(auth.value)
    cloud.deny(ALICE, "app-db-*")
    with pytest.raises(FetchError) as denied:
        oos.get_secret_parameter(alice(), here(cloud), "app-db-password")
    assert denied.value.kind == Kind.DENIED and "oos:GetSecretParameter" in str(denied.value)
    assert "RequestId" not in str(denied.value) and "second" not in str(denied.value)
    assert cloud.calls(service="oos") == 2  # final errors are not retried


def test_reader_retries_throttling_and_5xx_then_gives_up(cloud: FakeCloud, oos: Oos) -> None:
    cloud.inject("GetSecretParameter", "app-db-password", "throttling", times=1,
                 retry_after_ms=50)
    cloud.inject("GetSecretParameter", "app-db-password", "unavailable", times=1)
    assert oos.get_secret_parameter(alice(), here(cloud), "app-db-password").data == b"second"
    assert cloud.calls("GetSecretParameter", service="oos") == 3
    cloud.inject("GetSecretParameter", "app-db-password", "throttling", times=None,
                 retry_after_ms=10)
    with pytest.raises(FetchError) as throttled:
        oos.get_secret_parameter(alice(), here(cloud), "app-db-password")
    assert throttled.value.kind == Kind.THROTTLED
    assert "--max-concurrent-oos-secret-pulls" in str(throttled.value)
    assert cloud.calls("GetSecretParameter", service="oos") == 3 + oos.policy.max_attempts


def test_reader_survives_latency_and_dropped_connections(cloud: FakeCloud, oos: Oos) -> None:
    cloud.inject("GetSecretParameter", None, "drop", times=1)  # faults apply in order
    cloud.inject("GetSecretParameter", None, "latency", times=1, seconds=0.3)
    assert oos.get_secret_parameter(alice(), here(cloud), "app-db-password").data == b"second"
    durations = [e["duration"] for e in cloud.request_log if e["service"] == "oos"]
    assert max(durations) >= 0.3 and len(durations) == 2


def test_reader_as_an_assumed_role_rebuilds_after_token_expiry(
    cloud: FakeCloud, oos: Oos, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in cloud.trust_env().items():  # STS is https with the fake CA
        monkeypatch.setenv(name, value)
    cloud.add_role(ROLE, trust=Trust(principals=(ALICE,)))
    role = Identity(kind=RAM_ROLE_ARN, access_key_id=AK, access_key_secret=SK, role_arn=ROLE,
                    sts_endpoint=cloud.sts_endpoint, source="SecretStore default/oos-role")
    assert oos.get_secret_parameter(role, here(cloud), "app-db-password").data == b"second"
    assert cloud.calls("GetSecretParameter", identity=ROLE, service="oos") == 1
    cloud.expire_all_tokens()
    assert oos.get_secret_parameter(role, here(cloud), "app-db-password").data == b"second"
    assert cloud.calls("AssumeRole") == 2  # the expired credentials were replaced once


def test_endpoint_from_region_or_explicit() -> None:
    assert endpoint_for("cn-shanghai") == Endpoint(host="oos.cn-shanghai.aliyuncs.com")
    assert endpoint_for("cn-shanghai", vpc=True).host == "oos-vpc.cn-shanghai.aliyuncs.com"
    assert endpoint_for("cn-shanghai", host="oos-vpc.example:443").host == "oos-vpc.example:443"
    with pytest.raises(FetchError) as missing:
        endpoint_for("")
    assert missing.value.kind == Kind.CONFIG and "--region" in str(missing.value)
