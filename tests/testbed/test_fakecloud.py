"""The fake Alibaba Cloud behaves like the real one as seen through the real SDKs.

Every test talks to ``tests.fakecloud`` with the unmodified
``alibabacloud_kms20160120`` client and ``alibabacloud_credentials`` providers,
and asserts what a controller would see: values, SDK exception classes,
``.code``, ``.status_code``, ``.retry_after``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_credentials.models import Config as CredentialConfig
from alibabacloud_credentials.utils import auth_util
from alibabacloud_kms20160120.client import Client as KmsClient
from alibabacloud_kms20160120.models import GetSecretValueRequest, GetSecretValueResponseBody
from alibabacloud_tea_openapi.exceptions import (
    ClientException,
    ServerException,
    ThrottlingException,
)
from alibabacloud_tea_openapi.models import Config
from alibabacloud_tea_openapi.utils import Utils
from darabonba.exceptions import UnretryableException

from tests.fakecloud import (
    CloudState,
    FakeCloud,
    FakeCloudAdmin,
    OidcIssuer,
    Trust,
    seed,
    service_account_subject,
)
from tests.fakecloud.wire import Request

REPO = Path(__file__).resolve().parents[2]
AK, SK, ALICE = "LTAI5tFakeAccessKey01", "fake-secret-key-0001", "alice"
ACCOUNT = "1234567890123456"
ROLE = f"acs:ram::{ACCOUNT}:role/secret-reader"
PROVIDER = f"acs:ram::{ACCOUNT}:oidc-provider/ack-rrsa-test"
SUBJECT = service_account_subject("platform", "secret-manager")
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK honours HTTP(S)_PROXY but not NO_PROXY: a proxy would swallow 127.0.0.1.
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def cloud() -> Iterator[FakeCloud]:
    fake = FakeCloud()
    with fake:
        fake.add_access_key(AK, SK, ALICE)
        ports = [int(ep.rsplit(":", 1)[1]) for ep in (fake.kms_endpoint, fake.sts_endpoint)]
        tmpdir = Path(fake.ca_file).parent
        yield fake
    # Cleanup is part of the contract: no open connections, ports closed, temp dir gone.
    assert fake.leftover_connections == 0
    assert not tmpdir.exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("fakecloud-")]
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.fixture(scope="module")
def issuer() -> OidcIssuer:
    return OidcIssuer()


def kms(cloud: FakeCloud, ak: str = AK, sk: str = SK, **options: Any) -> KmsClient:
    options.setdefault("endpoint", cloud.kms_endpoint)
    options.setdefault("protocol", "http")
    return KmsClient(Config(access_key_id=ak, access_key_secret=sk, **options))


def kms_with(cloud: FakeCloud, credential: CredentialClient) -> KmsClient:
    return KmsClient(Config(credential=credential, endpoint=cloud.kms_endpoint, protocol="http"))


def read(client: KmsClient, name: str, **selector: str) -> GetSecretValueResponseBody:
    return client.get_secret_value(GetSecretValueRequest(secret_name=name, **selector)).body


def replay(cloud: FakeCloud, req: Request, query: str | None = None) -> tuple[int, dict[str, Any]]:
    """Send a captured request again byte for byte (optionally with another query)."""
    host, port = cloud.kms_endpoint.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        target = f"{req.path}?{req.query if query is None else query}"
        conn.putrequest(req.method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in req.headers.items():
            conn.putheader(name, value)
        conn.endheaders(req.body)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


# --- AccessKey signatures -----------------------------------------------------


@pytest.mark.parametrize("algorithm", [None, "v2"], ids=["acs3-hmac-sha256", "rpc-hmac-sha1"])
def test_access_key_reads_secret_with_both_signatures(
    cloud: FakeCloud, algorithm: str | None
) -> None:
    cloud.put_secret("db-password", "s3cret")
    body = read(kms(cloud, signature_algorithm=algorithm), "db-password")
    assert (body.secret_name, body.secret_data, body.secret_data_type) == (
        "db-password",
        "s3cret",
        "text",
    )
    assert body.version_stages.version_stage == ["ACSCurrent"]
    assert body.request_id and body.create_time.endswith("Z")
    [entry] = cloud.request_log
    assert (entry["identity"], entry["status"], entry["secret"]) == (ALICE, 200, "db-password")


@pytest.mark.parametrize("algorithm", [None, "v2"], ids=["acs3-hmac-sha256", "rpc-hmac-sha1"])
def test_wrong_secret_key_is_signature_does_not_match(
    cloud: FakeCloud, algorithm: str | None
) -> None:
    cloud.put_secret("db-password", "s3cret")
    with pytest.raises(ClientException) as caught:
        read(kms(cloud, sk="not-the-secret", signature_algorithm=algorithm), "db-password")
    assert (caught.value.code, caught.value.status_code) == ("SignatureDoesNotMatch", 400)


def test_unknown_access_key_is_not_found(cloud: FakeCloud) -> None:
    with pytest.raises(ClientException) as caught:
        read(kms(cloud, ak="LTAI5tNobodyHasThisKey"), "anything")
    assert (caught.value.code, caught.value.status_code) == ("InvalidAccessKeyId.NotFound", 404)


def test_tampered_request_is_refused(cloud: FakeCloud) -> None:
    cloud.put_secret("app-config", "public")
    cloud.put_secret("root-password", "private")
    read(kms(cloud), "app-config")
    signed = cloud.recent_requests()[-1]
    assert "SecretName=app-config" in signed.query
    status, body = replay(cloud, signed, signed.query.replace("app-config", "root-password"))
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")
    assert "private" not in json.dumps(body)


def test_replayed_request_is_refused(cloud: FakeCloud) -> None:
    cloud.put_secret("app-config", "public")
    read(kms(cloud), "app-config")
    status, body = replay(cloud, cloud.recent_requests()[-1])
    assert (status, body["Code"]) == (400, "SignatureNonceUsed")


def test_clock_skew_over_fifteen_minutes_is_refused(
    cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud.put_secret("db-password", "s3cret")
    stale = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 16 * 60))
    monkeypatch.setattr(Utils, "get_timestamp", staticmethod(lambda: stale))
    with pytest.raises(ClientException) as caught:
        read(kms(cloud), "db-password")
    assert caught.value.code == "InvalidTimeStamp.Expired"


def test_kms_instance_endpoint_needs_its_ca(cloud: FakeCloud) -> None:
    cloud.put_secret("db-password", "s3cret")
    # Untrusted first: once a client passed ca= for an endpoint, the SDK's process-wide
    # session for that endpoint keeps trusting the CA, even for clients without ca=.
    untrusted = kms(cloud, endpoint=cloud.kms_tls_endpoint, protocol="https")
    with pytest.raises(UnretryableException, match="CERTIFICATE_VERIFY_FAILED"):
        read(untrusted, "db-password")
    trusted = kms(cloud, endpoint=cloud.kms_tls_endpoint, protocol="https", ca=cloud.ca_file)
    assert read(trusted, "db-password").secret_data == "s3cret"
    assert cloud.calls("GetSecretValue", service="kms-instance") == 1


# --- secrets: versions, stages, binary, absence, permissions -------------------


def test_versions_and_stages_are_selected_like_kms(cloud: FakeCloud) -> None:
    cloud.put_secret("api-key", "old", version_id="v1")
    cloud.put_secret("api-key", "new", version_id="v2")
    cloud.put_secret("api-key", "next", version_id="v3", stages=("ACSPending",))
    client = kms(cloud)
    current = read(client, "api-key")
    assert (current.version_id, current.secret_data) == ("v2", "new")
    assert read(client, "api-key", version_stage="ACSPrevious").secret_data == "old"
    assert read(client, "api-key", version_stage="ACSPending").version_id == "v3"
    assert read(client, "api-key", version_id="v1").version_stages.version_stage == ["ACSPrevious"]
    with pytest.raises(ClientException) as caught:
        read(client, "api-key", version_stage="NoSuchStage")
    assert caught.value.code == "Forbidden.ResourceNotFound"


def test_binary_secret_is_served_base64(cloud: FakeCloud) -> None:
    blob = bytes(range(256))
    cloud.put_secret("keystore", blob)
    body = read(kms(cloud), "keystore")
    assert body.secret_data_type == "binary"
    assert base64.b64decode(body.secret_data) == blob


def test_missing_secret_is_404_with_request_id_in_message(cloud: FakeCloud) -> None:
    with pytest.raises(ClientException) as caught:
        read(kms(cloud), "nope")
    err = caught.value
    assert (err.code, err.status_code) == ("Forbidden.ResourceNotFound", 404)
    assert err.request_id == err.data["RequestId"]
    assert err.request_id in err.data["Message"]
    assert {"RequestId", "HostId", "Code", "Message", "Recommend"} <= set(err.data)


def test_access_rules_forbid_with_403(cloud: FakeCloud) -> None:
    cloud.put_secret("team-a-db", "a")
    cloud.put_secret("team-b-db", "b")
    cloud.allow(ALICE, "team-a-*")
    cloud.add_access_key("LTAI5tBob", "bob-secret", "bob")  # no rules: reads everything
    assert read(kms(cloud), "team-a-db").secret_data == "a"
    with pytest.raises(ClientException) as caught:
        read(kms(cloud), "team-b-db")
    assert (caught.value.code, caught.value.status_code) == ("Forbidden.NoPermission", 403)
    assert read(kms(cloud, "LTAI5tBob", "bob-secret"), "team-b-db").secret_data == "b"


# --- injected faults ----------------------------------------------------------


def test_throttling_with_and_without_retry_after(cloud: FakeCloud) -> None:
    cloud.put_secret("db-password", "s3cret")
    client = kms(cloud)
    cloud.inject(secret="db-password", fault="throttling", retry_after_ms=1500)
    with pytest.raises(ThrottlingException) as throttled:
        read(client, "db-password")
    assert (throttled.value.code, throttled.value.retry_after) == ("Rejected.Throttling", 1500)
    cloud.inject(fault="throttling")
    with pytest.raises(ClientException) as plain:
        read(client, "db-password")
    assert not isinstance(plain.value, ThrottlingException)
    assert (plain.value.code, plain.value.status_code) == ("Rejected.Throttling", 400)
    assert read(client, "db-password").secret_data == "s3cret"  # faults were one-shot


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [("unavailable", 503, "ServiceUnavailableTemporary"), ("internal", 500, "InternalFailure")],
)
def test_server_errors_are_server_exceptions(
    cloud: FakeCloud, fault: str, status: int, code: str
) -> None:
    cloud.put_secret("db-password", "s3cret")
    cloud.inject(fault=fault, times=2)
    client = kms(cloud)
    for _ in range(2):
        with pytest.raises(ServerException) as caught:
            read(client, "db-password")
        assert (caught.value.status_code, caught.value.code) == (status, code)
    assert read(client, "db-password").secret_data == "s3cret"


@pytest.mark.parametrize("fault", ["non_json", "drop"])
def test_broken_responses_are_unretryable_exceptions(cloud: FakeCloud, fault: str) -> None:
    cloud.put_secret("db-password", "s3cret")
    client = kms(cloud)
    assert read(client, "db-password").secret_data == "s3cret"  # a pooled connection exists
    cloud.inject(fault=fault)
    with pytest.raises(UnretryableException) as caught:
        read(client, "db-password")
    assert getattr(caught.value, "code", None) is None
    assert read(client, "db-password").secret_data == "s3cret"


def test_latency_runs_concurrently_and_is_counted(cloud: FakeCloud) -> None:
    cloud.put_secret("db-password", "s3cret")
    client = kms(cloud)
    read(client, "db-password")
    cloud.reset_counters()
    cloud.latency = 0.4
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(read(client, "db-password").secret_data))
        for _ in range(8)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert results == ["s3cret"] * 8
    assert elapsed < 2.0, f"8 calls with 0.4 s latency took {elapsed:.2f}s: serialised?"
    assert cloud.peak_concurrency >= 4
    assert cloud.calls("GetSecretValue", "db-password", ALICE) == 8
    assert cloud.calls(identity="somebody-else") == 0
    assert cloud.peak_rate(window=1.0) >= 8
    assert all(e["duration"] >= 0.4 for e in cloud.request_log)


# --- STS and RRSA ---------------------------------------------------------------


def oidc_credential(cloud: FakeCloud, token_file: Path) -> CredentialClient:
    return CredentialClient(
        CredentialConfig(
            type="oidc_role_arn",
            role_arn=ROLE,
            oidc_provider_arn=PROVIDER,
            oidc_token_file_path=str(token_file),
            role_session_name="secret-manager",
            sts_endpoint=cloud.sts_endpoint,
        )
    )


@pytest.fixture
def rrsa(cloud: FakeCloud, issuer: OidcIssuer, monkeypatch: pytest.MonkeyPatch) -> FakeCloud:
    # The credentials library has no CA option for STS; SSL_CERT_FILE is read when the
    # https session for this (new) endpoint is first created.
    for name, value in cloud.trust_env().items():
        monkeypatch.setenv(name, value)
    cloud.set_oidc_jwks(PROVIDER, lambda: issuer.jwks, issuer=issuer.issuer)
    cloud.add_role(ROLE, trust=Trust(oidc_provider_arn=PROVIDER, subjects=(SUBJECT,)))
    cloud.put_secret("db-password", "s3cret")
    return cloud


def test_rrsa_token_gets_sts_credentials_that_read_kms(
    rrsa: FakeCloud, issuer: OidcIssuer, tmp_path: Path
) -> None:
    token = issuer.write_token(tmp_path / "token", SUBJECT)
    credential = oidc_credential(rrsa, token)
    assert credential.get_credential().access_key_id.startswith("STS.")
    assert read(kms_with(rrsa, credential), "db-password").secret_data == "s3cret"
    assert rrsa.calls("AssumeRoleWithOIDC", identity=ROLE) == 1
    assert rrsa.calls("GetSecretValue", identity=ROLE) == 1


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (
            lambda i: i.token(SUBJECT, audience="kubernetes.default.svc"),
            "AuthenticationFail.OIDCToken.AudienceNotMatch",
        ),
        (
            lambda i: i.token(service_account_subject("default", "intruder")),
            "AuthenticationFail.NoPermission",
        ),
        (
            lambda i: OidcIssuer(kid=i.kid).token(SUBJECT),
            "AuthenticationFail.OIDCToken.InvalidSignature",
        ),
        (lambda i: i.token(SUBJECT, expires_in=-60), "AuthenticationFail.OIDCToken.Expired"),
        (
            lambda i: i.token(SUBJECT, issuer="https://elsewhere"),
            "AuthenticationFail.OIDCToken.IssuerNotMatch",
        ),
    ],
    ids=["wrong-audience", "untrusted-subject", "foreign-key", "expired", "wrong-issuer"],
)
def test_rrsa_bad_tokens_are_refused(
    rrsa: FakeCloud,
    issuer: OidcIssuer,
    tmp_path: Path,
    make_token: Callable[[OidcIssuer], str],
    code: str,
) -> None:
    token = tmp_path / "token"
    token.write_text(make_token(issuer))
    with pytest.raises(Exception, match=code.replace(".", r"\.")) as caught:
        oidc_credential(rrsa, token).get_credential()
    assert "http_code: 401" in str(caught.value)
    assert rrsa.calls("GetSecretValue") == 0


def test_server_side_expiry_gives_invalid_security_token_expired(
    rrsa: FakeCloud, issuer: OidcIssuer, tmp_path: Path
) -> None:
    client = kms_with(rrsa, oidc_credential(rrsa, issuer.write_token(tmp_path / "t", SUBJECT)))
    assert read(client, "db-password").secret_data == "s3cret"
    assert rrsa.expire_all_tokens() == 1
    with pytest.raises(ClientException) as caught:
        read(client, "db-password")
    assert (caught.value.code, caught.value.status_code) == ("InvalidSecurityToken.Expired", 400)


def test_short_lived_credentials_expire_on_their_own(rrsa: FakeCloud) -> None:
    rrsa.add_role(f"{ROLE}-short", trust=Trust(principals=(ALICE,)), lifetime_seconds=1)
    credential = CredentialClient(
        CredentialConfig(
            type="ram_role_arn",
            access_key_id=AK,
            access_key_secret=SK,
            role_arn=f"{ROLE}-short",
            role_session_name="short",
            sts_endpoint=rrsa.sts_endpoint,
        )
    ).get_credential()
    sts = CredentialClient(
        CredentialConfig(
            type="sts",
            access_key_id=credential.access_key_id,
            access_key_secret=credential.access_key_secret,
            security_token=credential.security_token,
        )
    )
    client = kms_with(rrsa, sts)
    record = rrsa.lookup_key(credential.access_key_id)
    assert record is not None and record.expires_at is not None
    with pytest.raises(ClientException) as caught:
        while True:  # poll until the 1 s lifetime runs out
            read(client, "db-password")
            assert time.time() < record.expires_at + 1, "token never expired"
            time.sleep(0.05)
    assert caught.value.code == "InvalidSecurityToken.Expired"


def test_assume_role_with_access_key_and_role_chain(rrsa: FakeCloud) -> None:
    second = f"acs:ram::{ACCOUNT}:role/cross-account-reader"
    rrsa.add_role(ROLE, trust=[Trust(principals=(ALICE,))])
    rrsa.add_role(second, trust=Trust(principals=(ROLE,)))
    rrsa.allow(second, "db-*")
    first = CredentialClient(
        CredentialConfig(
            type="ram_role_arn",
            access_key_id=AK,
            access_key_secret=SK,
            role_arn=ROLE,
            role_session_name="first-hop",
            sts_endpoint=rrsa.sts_endpoint,
        )
    )
    assert read(kms_with(rrsa, first), "db-password").secret_data == "s3cret"
    hop = first.get_credential()
    chained = CredentialClient(
        CredentialConfig(
            type="ram_role_arn",
            access_key_id=hop.access_key_id,
            access_key_secret=hop.access_key_secret,
            security_token=hop.security_token,
            role_arn=second,
            role_session_name="second-hop",
            sts_endpoint=rrsa.sts_endpoint,
        )
    )
    assert read(kms_with(rrsa, chained), "db-password").secret_data == "s3cret"
    assert rrsa.calls("GetSecretValue", identity=second) == 1
    assert rrsa.calls("AssumeRole", identity=ROLE) == 1  # the hop signed with STS creds


def test_assume_role_refuses_untrusted_caller_and_bad_signature(rrsa: FakeCloud) -> None:
    rrsa.add_access_key("LTAI5tMallory", "mallory-secret", "mallory")
    rrsa.add_role(ROLE, trust=Trust(principals=(ALICE,)))

    def assume(ak: str, sk: str) -> None:
        CredentialClient(
            CredentialConfig(
                type="ram_role_arn",
                access_key_id=ak,
                access_key_secret=sk,
                role_arn=ROLE,
                role_session_name="attempt",
                sts_endpoint=rrsa.sts_endpoint,
            )
        ).get_credential()

    with pytest.raises(Exception, match=r"http_code: 403.*\"NoPermission\""):
        assume("LTAI5tMallory", "mallory-secret")
    with pytest.raises(Exception, match=r"http_code: 400.*SignatureDoesNotMatch"):
        assume(AK, "wrong")


# --- ECS instance metadata ------------------------------------------------------


def metadata_get(cloud: FakeCloud, path: str, token: str | None = None) -> int:
    host, port = cloud.metadata_proxy.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        headers = {"X-aliyun-ecs-metadata-token": token} if token else {}
        conn.request("GET", f"http://100.100.100.200{path}", headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_ecs_ram_role_through_metadata_proxy(
    cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    # alibabacloud_credentials read these at import time; make the test independent of them.
    monkeypatch.setattr(auth_util, "environment_ecs_metadata_disabled", "false")
    monkeypatch.setattr(auth_util, "environment_ecs_metadata", None)
    monkeypatch.setattr(auth_util, "environment_imds_v1_disabled", "true")
    cloud.set_ecs_role("worker-role")
    cloud.put_secret("db-password", "s3cret")
    credential = CredentialClient(CredentialConfig(type="ecs_ram_role", proxy=cloud.metadata_proxy))
    assert read(kms_with(cloud, credential), "db-password").secret_data == "s3cret"
    worker = f"acs:ram::{ACCOUNT}:role/worker-role"
    assert cloud.calls("GetSecretValue", identity=worker) == 1
    assert cloud.calls("MetadataCredentials", identity=worker) == 1
    assert cloud.calls("MetadataToken") >= 1
    path = "/latest/meta-data/ram/security-credentials/worker-role"
    assert metadata_get(cloud, path) == 403  # IMDSv2 enforced: no token, no credentials
    assert metadata_get(cloud, path, token="forged") == 401


# --- running alone: admin API and CLI -------------------------------------------


def test_admin_client_drives_a_running_fake() -> None:
    with FakeCloud(admin=True) as cloud:
        admin = FakeCloudAdmin(cloud.admin_url)
        admin.seed({"accessKeys": [{"id": AK, "secret": SK, "identity": ALICE}]})
        assert admin.put_secret("blob", b"\x00\xff") == "v1"
        assert admin.put_secret("db-password", "s3cret") == "v1"
        client = kms(cloud)
        assert base64.b64decode(read(client, "blob").secret_data) == b"\x00\xff"
        admin.inject(secret="db-password", fault="throttling", retry_after_ms=250)
        with pytest.raises(ThrottlingException):
            read(client, "db-password")
        assert admin.calls("GetSecretValue", "db-password") == 1
        counters = admin.counters()
        assert counters["calls"] == 2 and counters["peak_concurrency"] >= 1
        assert [e["code"] for e in admin.request_log()] == [None, "Rejected.Throttling"]
        admin.reset_counters()
        assert admin.calls() == 0
        assert admin.delete_secret("blob") is True
        assert admin.secret_names() == ["db-password"]


def test_cli_serves_a_secrets_file_until_sigterm(tmp_path: Path) -> None:
    secrets_file = tmp_path / "secrets.yaml"
    secrets_file.write_text(
        "secrets:\n"
        "  plain: hello\n"
        "  as-json: {json: {user: app, password: pw}}\n"
        "  rotated:\n"
        "    versions:\n"
        "      - {id: v1, data: old}\n"
        "      - {id: v2, data: new}\n"
        "rules:\n"
        "  - {identity: alice, allow: ['*'], deny: [rotated]}\n"
    )
    env = {k: v for k, v in os.environ.items() if k.upper() not in PROXY_VARS}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakecloud",
            "--secrets",
            str(secrets_file),
            "--access-key",
            f"{AK}:{SK}:{ALICE}",
            "--latency",
            "0.01",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        client = KmsClient(
            Config(
                access_key_id=AK,
                access_key_secret=SK,
                endpoint=info["kms_endpoint"],
                protocol="http",
            )
        )
        assert read(client, "plain").secret_data == "hello"
        assert json.loads(read(client, "as-json").secret_data) == {"user": "app", "password": "pw"}
        with pytest.raises(ClientException) as caught:
            read(client, "rotated")
        assert caught.value.code == "Forbidden.NoPermission"
        admin = FakeCloudAdmin(info["admin_url"])
        assert admin.counters(identity=ALICE)["calls"] == 3
        assert Path(info["ca_file"]).exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert not Path(info["ca_file"]).exists()


def test_secrets_file_configures_every_part(tmp_path: Path, issuer: OidcIssuer) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps(issuer.jwks))
    path = tmp_path / "fake.yaml"
    path.write_text(
        f"""
secrets:
  blob: {{binary: "AP8="}}
  rotated:
    versions:
      - {{id: a, data: one}}
      - {{id: b, data: two, stages: [ACSCurrent, Custom]}}
accessKeys: [{{id: AK2, secret: SK2, identity: bob}}]
rules: [{{identity: bob, deny: [blob]}}]
oidcProviders: [{{arn: "{PROVIDER}", jwksFile: jwks.json, issuer: "{issuer.issuer}"}}]
roles:
  - arn: "{ROLE}"
    lifetimeSeconds: 120
    trust:
      - principals: [bob]
      - {{oidcProviderArn: "{PROVIDER}", subjects: ["system:serviceaccount:platform:*"]}}
ecsRole: {{name: worker, lifetimeSeconds: 60}}
latency: 0.005
"""
    )
    state = CloudState()
    seed.load_file(state, path)
    blob = state.lookup_secret("blob")
    assert blob is not None and blob[1].data_type == "binary" and blob[1].data == "AP8="
    custom = state.lookup_secret("rotated", version_stage="Custom")
    assert custom is not None and custom[1].version_id == "b"
    previous = state.lookup_secret("rotated", version_stage="ACSPrevious")
    assert previous is not None and previous[1].version_id == "a"
    assert not state.may_read("bob", "blob") and state.may_read("bob", "rotated")
    role = state.role(ROLE)
    assert role is not None and role.lifetime_seconds == 120
    assert role.trusts_principal("bob") and role.trusts_subject(PROVIDER, SUBJECT)
    provider = state.oidc_provider(PROVIDER)
    assert provider is not None and provider.issuer == issuer.issuer
    assert provider.jwks() == issuer.jwks
    ecs = state.ecs_role()
    assert ecs is not None and ecs.identity == f"acs:ram::{ACCOUNT}:role/worker"
    assert state.latency == 0.005
    with pytest.raises(ValueError, match="unknown keys"):
        seed.apply(state, {"secret": {}})
