"""KMS instance by client key: the real KMS instance SDK (``alibabacloud-dkms-gcs``) and the
controller's ``providers.alibaba.kms_instance`` against the fake cloud's instance gateway.

The SDK proves the fake speaks the protocol Alibaba's client speaks (its RSA signature is
verified, its protobuf parsed, its errors decoded); the controller's client is then held to
the same fake: good path, wrong or revoked client key, wrong password, wrong or missing CA,
``ignore_ssl``, throttling, 5xx, not found, denied, changes visible.

The SDK cannot be installed with its declared requirements here (protobuf<4 and
pyOpenSSL<23.3 against this project's protobuf 7 and cryptography 50; see
``controller/providers/alibaba/kms_instance.py``). Install it for these tests with
``pip install --no-deps alibabacloud-dkms-gcs==1.0.2 alibabacloud_darabonba_stream
alibabacloud_darabonba_number pyopenssl``; it then runs in a subprocess with pure-Python
protobuf (its generated code predates protobuf 4). Without it the SDK tests are skipped.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import http.client
import importlib.metadata
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controller.providers.alibaba.errors import FetchError, Kind
from controller.providers.alibaba.kms_instance import (
    ClientKey,
    InstanceEndpoint,
    KmsInstance,
    encode,
    load_client_key,
    signed_headers,
)
from controller.providers.alibaba.pool import CallPolicy
from tests.fakecloud import FakeCloud, FakeCloudAdmin
from tests.fakecloud import dkms as fake_dkms

REPO = Path(__file__).resolve().parents[2]
APP = "app-access-point"


def _sdk_installed() -> bool:
    try:
        importlib.metadata.version("alibabacloud-dkms-gcs")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_sdk = pytest.mark.skipif(not _sdk_installed(),
                               reason="alibabacloud-dkms-gcs not installed (see module doc)")


@pytest.fixture
def cloud() -> Iterator[FakeCloud]:
    with FakeCloud(admin=True) as fake:
        fake.put_secret("app-db", "s3cret", version_id="v1")
        fake.put_secret("app-blob", b"\x00\xffbin")
        yield fake
    assert fake.leftover_connections == 0
    assert not [t for t in threading.enumerate() if t.name == "fakecloud-dkms"]


@pytest.fixture
def client_key(cloud: FakeCloud) -> fake_dkms.ClientKey:
    return cloud.dkms.create_client_key(APP, "client-key-password")


@pytest.fixture
def reader() -> Iterator[KmsInstance]:
    instance = KmsInstance(CallPolicy(max_retry_seconds=5))
    yield instance
    instance.close()


def key_of(created: fake_dkms.ClientKey) -> ClientKey:
    return load_client_key(created.content, created.password, source="SecretStore default/dk",
                           on_secret=None)


def at(cloud: FakeCloud, **options: Any) -> InstanceEndpoint:
    return InstanceEndpoint(cloud.dkms_endpoint, ca_pem=options.pop("ca_pem", cloud.ca_pem),
                            **options)


def other_ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM).decode()


# --- the real SDK against the fake ---------------------------------------------------------

SDK_PROBE = r"""
import json, sys
from openapi.models import Config
from sdk.client import Client
from sdk.models import GetSecretValueRequest
job = json.load(sys.stdin)
out = []
for case in job["cases"]:
    config = Config(protocol="https", endpoint=job["endpoint"], ca_file_path=job["ca_file"])
    if "content" in case:
        config.client_key_content, config.password = case["content"], case["password"]
    else:
        config.access_key_id, config.private_key = case["key_id"], case["private_key"]
    try:
        client = Client(config)
        from openapi_util.models import RuntimeOptions
        resp = client.get_secret_value_with_options(GetSecretValueRequest(
            secret_name=case["secret"], version_id=case.get("version_id"),
            version_stage=case.get("version_stage")), RuntimeOptions(autoretry=False))
        out.append({"data": resp.secret_data, "type": resp.secret_data_type,
                    "version": resp.version_id, "stages": list(resp.version_stages)})
    except Exception as exc:
        data = getattr(exc, "data", None) or {}
        out.append({"error": type(exc).__name__, "code": getattr(exc, "code", None),
                    "http": data.get("httpCode") if isinstance(data, dict) else None})
print(json.dumps(out))
"""


def run_sdk(cloud: FakeCloud, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    job = {"endpoint": cloud.dkms_endpoint, "ca_file": cloud.ca_file, "cases": cases}
    done = subprocess.run([sys.executable, "-c", SDK_PROBE], input=json.dumps(job),
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result: list[dict[str, Any]] = json.loads(done.stdout)
    return result


def raw_key(created: fake_dkms.ClientKey) -> dict[str, str]:
    """The SDK's (KeyId, private key) form: PKCS#1 body without PEM armour."""
    body = "".join(created.private_key_pem.strip().splitlines()[1:-1])
    return {"key_id": created.key_id, "private_key": body}


@needs_sdk
def test_real_sdk_reads_through_the_fake_and_sees_its_refusals(
    cloud: FakeCloud, client_key: fake_dkms.ClientKey
) -> None:
    stranger = cloud.dkms.create_client_key("stranger")
    cloud.dkms.revoke(stranger.key_id)
    impostor = {**raw_key(cloud.dkms.create_client_key("other")), "key_id": client_key.key_id}
    cloud.deny(APP, "app-blob")
    cases = [
        {**raw_key(client_key), "secret": "app-db"},
        {**raw_key(client_key), "secret": "app-db", "version_stage": "ACSCurrent"},
        {**raw_key(client_key), "secret": "missing"},
        {**raw_key(client_key), "secret": "app-blob"},
        {**impostor, "secret": "app-db"},  # right KeyId, another key pair's signature
        {**raw_key(stranger), "secret": "app-db"},  # revoked client key
        {"content": client_key.content, "password": client_key.password, "secret": "app-db"},
    ]
    good, staged, missing, denied, impostor_result, revoked, content = run_sdk(cloud, cases)
    assert good == {"data": "s3cret", "type": "text", "version": "v1", "stages": ["ACSCurrent"]}
    assert staged["data"] == "s3cret"
    assert (missing["code"], missing["http"]) == ("Forbidden.ResourceNotFound", 404)
    assert (denied["code"], denied["http"]) == ("Forbidden.NoPermission", 403)
    assert (impostor_result["code"], impostor_result["http"]) == ("SignatureDoesNotMatch", 401)
    assert (revoked["code"], revoked["http"]) == ("InvalidAccessKeyId", 401)
    # Fact behind kms_instance.py's own client: the SDK's client-key path needs
    # OpenSSL.crypto.load_pkcs12, gone since pyOpenSSL 23.3.
    assert content["error"] == "AttributeError"
    assert cloud.calls("GetSecretValue", "app-db", APP, service="kms-instance") == 2


@needs_sdk
def test_real_sdk_decodes_injected_throttling_and_server_errors(
    cloud: FakeCloud, client_key: fake_dkms.ClientKey
) -> None:
    cloud.inject("GetSecretValue", "app-db", "internal", times=1)
    cloud.inject("GetSecretValue", "app-db", "unavailable", times=1)
    results = run_sdk(cloud, [{**raw_key(client_key), "secret": "app-db"}] * 2)
    assert [(r["code"], r["http"]) for r in results] == [
        ("InternalFailure", 500), ("ServiceUnavailableTemporary", 503)]


# --- the controller's client against the fake ---------------------------------------------


def test_reads_text_binary_and_versions(cloud: FakeCloud, client_key: fake_dkms.ClientKey,
                                        reader: KmsInstance) -> None:
    key = key_of(client_key)
    value = reader.get_secret_value(key, at(cloud), "app-db")
    assert (value.data, value.data_type, value.version_id, value.stages) == (
        b"s3cret", "text", "v1", ("ACSCurrent",))
    assert reader.get_secret_value(key, at(cloud), "app-blob").data == b"\x00\xffbin"
    cloud.put_secret("app-db", "rotated", version_id="v2")
    assert reader.get_secret_value(key, at(cloud), "app-db").data == b"rotated"
    assert reader.get_secret_value(key, at(cloud), "app-db", version_id="v1").data == b"s3cret"
    previous = reader.get_secret_value(key, at(cloud), "app-db", version_stage="ACSPrevious")
    assert previous.version_id == "v1"
    assert cloud.calls("GetSecretValue", identity=APP, service="kms-instance") == 5


def test_wrong_revoked_or_foreign_client_keys_are_refused(
    cloud: FakeCloud, client_key: fake_dkms.ClientKey, reader: KmsInstance
) -> None:
    with pytest.raises(FetchError) as password:
        load_client_key(client_key.content, "not-the-password", on_secret=None)
    assert (password.value.kind, password.value.code) == (Kind.AUTH, "ClientKeyPasswordWrong")
    assert "dedicatedKMSAuth.password" in str(password.value)
    assert client_key.password not in str(password.value)
    with pytest.raises(FetchError) as garbled:
        load_client_key('{"KeyId": "KAAP.x"}', "pw", source="SecretStore a/b", on_secret=None)
    assert garbled.value.code == "InvalidClientKey" and "SecretStore a/b" in str(garbled.value)
    foreign = FakeCloud()  # a key pair this instance never saw
    other = foreign.dkms.create_client_key(APP, "pw")
    with pytest.raises(FetchError) as unknown:
        reader.get_secret_value(load_client_key(other.content, "pw", on_secret=None),
                                at(cloud), "app-db")
    assert (unknown.value.kind, unknown.value.code) == (Kind.AUTH, "InvalidAccessKeyId")
    key = key_of(client_key)
    admin = FakeCloudAdmin(cloud.admin_url)
    assert admin.revoke_client_key(client_key.key_id) is True
    with pytest.raises(FetchError) as revoked:
        reader.get_secret_value(key, at(cloud), "app-db")
    assert revoked.value.kind == Kind.AUTH and "clientKeyContent" in str(revoked.value)
    assert cloud.calls(service="kms-instance") == 2  # a wrong password never reaches it


def test_signature_body_digest_and_clock_are_checked(
    cloud: FakeCloud, client_key: fake_dkms.ClientKey
) -> None:
    key = key_of(client_key)
    body = encode([(1, "app-db")])
    good = signed_headers(key, cloud.dkms_endpoint, body)
    forged = {**good, "authorization": "Bearer " + base64.b64encode(b"x" * 256).decode()}
    other_body = {**good}  # signed for one body, sent with another
    stale = {**good, "date": email.utils.formatdate(0, usegmt=True)}
    cases = [(good, body, 200, ""), (forged, body, 401, "SignatureDoesNotMatch"),
             (other_body, encode([(1, "app-blob")]), 401, "SignatureDoesNotMatch"),
             (stale, body, 400, "RequestTimeTooSkewed"),
             ({**good, "x-kms-apiversion": "v0"}, body, 400, "InvalidApiVersion")]
    context = ssl.create_default_context(cadata=cloud.ca_pem)
    for headers, payload, status, code in cases:
        conn = http.client.HTTPSConnection(cloud.dkms_endpoint, context=context, timeout=10)
        try:
            conn.request("POST", "/", body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        assert resp.status == status
        if code:
            assert fake_dkms.text(fake_dkms.decode(data), 2) == code


def test_tls_needs_the_instance_ca_unless_ignore_ssl(
    cloud: FakeCloud, client_key: fake_dkms.ClientKey, reader: KmsInstance
) -> None:
    key = key_of(client_key)
    for endpoint in (at(cloud, ca_pem=other_ca_pem()), at(cloud, ca_pem="")):
        with pytest.raises(FetchError) as untrusted:
            reader.get_secret_value(key, endpoint, "app-db")
        assert (untrusted.value.kind, untrusted.value.code) == (Kind.CONFIG, "TLSVerifyFailed")
        assert "dedicatedKMSAuth.ca" in str(untrusted.value)
    with pytest.raises(FetchError) as garbage:
        reader.get_secret_value(key, at(cloud, ca_pem="not a certificate"), "app-db")
    assert garbage.value.code == "InvalidCA"
    insecure = at(cloud, ca_pem="", ignore_ssl=True)
    assert reader.get_secret_value(key, insecure, "app-db").data == b"s3cret"
    # A right CA for one endpoint does not widen another's trust (one context per endpoint).
    assert reader.get_secret_value(key, at(cloud), "app-db").data == b"s3cret"
    with pytest.raises(FetchError) as still_untrusted:
        reader.get_secret_value(key, at(cloud, ca_pem=other_ca_pem()), "app-db")
    assert still_untrusted.value.code == "TLSVerifyFailed"


def test_retries_throttling_and_5xx_then_classifies(
    cloud: FakeCloud, client_key: fake_dkms.ClientKey, reader: KmsInstance
) -> None:
    key = key_of(client_key)
    cloud.inject("GetSecretValue", "app-db", "throttling", times=1, retry_after_ms=50)
    cloud.inject("GetSecretValue", "app-db", "unavailable", times=1)
    cloud.inject("GetSecretValue", "app-db", "drop", times=1)
    assert reader.get_secret_value(key, at(cloud), "app-db").data == b"s3cret"
    assert cloud.calls("GetSecretValue", "app-db", APP, service="kms-instance") == 4
    cloud.inject("GetSecretValue", "app-db", "throttling", times=None, retry_after_ms=10)
    with pytest.raises(FetchError) as throttled:
        reader.get_secret_value(key, at(cloud), "app-db")
    assert (throttled.value.kind, throttled.value.code) == (Kind.THROTTLED, "Rejected.Throttling")
    cloud.clear_faults()
    with pytest.raises(FetchError) as missing:
        reader.get_secret_value(key, at(cloud), "missing")
    assert missing.value.kind == Kind.NOT_FOUND
    cloud.deny(APP, "app-db")
    with pytest.raises(FetchError) as denied:
        reader.get_secret_value(key, at(cloud), "app-db")
    assert denied.value.kind == Kind.DENIED and "s3cret" not in str(denied.value)
    cloud.inject("GetSecretValue", None, "non_json", times=None)
    with pytest.raises(FetchError) as proxy:
        reader.get_secret_value(key, at(cloud), "app-db")
    assert (proxy.value.kind, proxy.value.code) == (Kind.TRANSIENT, "UnexpectedResponse")


def test_connections_are_reused_and_closed(
    cloud: FakeCloud, client_key: fake_dkms.ClientKey
) -> None:
    key = key_of(client_key)
    reader = KmsInstance()
    for _ in range(5):
        reader.get_secret_value(key, at(cloud), "app-db")
    assert cloud.open_connections() == 1  # one keep-alive connection carried all five
    reader.close()
    from tests.waiting import wait_for

    wait_for(lambda: cloud.open_connections() == 0, timeout=5)
