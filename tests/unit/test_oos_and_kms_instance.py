"""Pure parts of the OOS and KMS-instance readers: error classification per product, parameter
versions, the client key file, the protobuf codec and the string the client key signs."""

from __future__ import annotations

import base64
import json
import ssl

import pytest
from alibabacloud_tea_openapi.exceptions import (
    ClientException,
    ServerException,
    ThrottlingException,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from controller.alicloud import kms_instance
from controller.alicloud.errors import FetchError, Kind, classify, service_error
from controller.alicloud.oos import parameter_version

WHO = "AccessKey (SecretStore default/oos)"


def test_oos_errors_are_classified_with_oos_words() -> None:
    missing = classify(ClientException(code="EntityNotExists.SecretParameter", status_code=404),
                       product="OOS")
    assert missing.kind == Kind.NOT_FOUND and "does not exist in OOS" in str(missing)
    denied = classify(ClientException(code="Forbidden.NoPermission", status_code=403),
                      who=WHO, product="OOS")
    assert denied.kind == Kind.DENIED
    assert str(denied) == (f"Forbidden.NoPermission: {WHO} may not read this parameter; grant "
                           "it oos:GetSecretParameter on the parameter and kms:GetSecretValue "
                           "(RAM policy)")
    throttled = classify(ThrottlingException(code="Throttling.User", status_code=400,
                                             retry_after=1500), product="OOS")
    assert (throttled.kind, throttled.retry_after) == (Kind.THROTTLED, 1.5)
    assert "--max-concurrent-oos-secret-pulls" in str(throttled)
    down = classify(ServerException(code="ServiceUnavailable", status_code=503), product="OOS")
    assert down.kind == Kind.TRANSIENT and down.retryable
    auth = classify(ClientException(code="InvalidAccessKeyId.NotFound", status_code=404),
                    who=WHO, product="OOS")
    assert auth.kind == Kind.AUTH and str(auth).startswith(
        "InvalidAccessKeyId.NotFound: OOS refused the credentials of")


def test_kms_wording_is_unchanged_by_products() -> None:
    denied = classify(ClientException(code="Forbidden.NoPermission", status_code=403), who=WHO)
    assert str(denied) == (f"Forbidden.NoPermission: {WHO} may not read this secret; grant it "
                           "kms:GetSecretValue and kms:Decrypt on the secret (RAM policy)")


@pytest.mark.parametrize(("code", "status", "kind"), [
    ("InvalidAccessKeyId", 401, Kind.AUTH),
    ("SignatureDoesNotMatch", 401, Kind.AUTH),
    ("SomethingNew", 401, Kind.AUTH),
    ("RequestTimeTooSkewed", 400, Kind.AUTH),
    ("Rejected.Throttling", 429, Kind.THROTTLED),
    ("Forbidden.ResourceNotFound", 404, Kind.NOT_FOUND),
    ("Forbidden.NoPermission", 403, Kind.DENIED),
    ("InternalFailure", 500, Kind.TRANSIENT),
    ("InvalidParameter", 400, Kind.CONFIG),
])
def test_kms_instance_answers_are_classified(code: str, status: int, kind: Kind) -> None:
    error = service_error(code, status, who="client key KAAP.1", product="KMS instance")
    assert error.kind == kind
    assert "KMS instance" in str(error) or kind == Kind.DENIED
    if kind == Kind.AUTH:
        assert "clientKeyContent" in str(error)


def test_an_untrusted_certificate_is_a_ca_problem_not_a_credential_one() -> None:
    # ssl.SSLCertVerificationError is also a ValueError: it must not read as bad credentials.
    exc = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                                          "verify failed")
    error = classify(exc, endpoint="kst-1.cryptoservice.kms.aliyuncs.com",
                     product="KMS instance")
    assert (error.kind, error.code) == (Kind.CONFIG, "TLSVerifyFailed")
    assert "dedicatedKMSAuth.ca" in str(error)


def test_parameter_versions() -> None:
    assert parameter_version("") is None
    assert parameter_version("1") == 1
    assert parameter_version(100) == 100
    for bad in ("0", "101", "v1", "-1", "1.5"):
        with pytest.raises(FetchError) as refused:
            parameter_version(bad)
        assert (refused.value.kind, refused.value.code) == (Kind.CONFIG, "InvalidParameterVersion")


def _content(key: object, password: str, key_id: str = "KAAP.test") -> str:
    blob = pkcs12.serialize_key_and_certificates(
        b"k", key, None, None,  # type: ignore[arg-type]
        serialization.BestAvailableEncryption(password.encode()))
    return json.dumps({"KeyId": key_id, "PrivateKeyData": base64.b64encode(blob).decode()})


def test_client_key_file_is_decoded_once_and_its_secrets_registered() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    content = _content(private, "pw-123")
    seen: list[str] = []
    key = kms_instance.load_client_key(content, "pw-123", source="SecretStore a/b",
                                       on_secret=seen.append)
    assert key.key_id == "KAAP.test" and seen == ["pw-123", content]
    assert "PRIVATE" not in repr(key) and "pw-123" not in repr(key)
    again = kms_instance.load_client_key(content, "pw-123", on_secret=None)
    assert again == key and hash(again) == hash(key)  # same pair: same reads
    other = kms_instance.load_client_key(
        _content(rsa.generate_private_key(public_exponent=65537, key_size=2048), "pw"), "pw",
        on_secret=None)
    assert other != key  # same KeyId, another pair
    assert key.describe() == "client key KAAP.test (SecretStore a/b)"


def test_client_key_refusals_name_the_field() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(FetchError) as not_rsa:
        kms_instance.load_client_key(_content(ec_key, "pw"), "pw", on_secret=None)
    assert str(not_rsa.value).startswith(
        "InvalidClientKey: client key KAAP.test (the SecretStore) holds no RSA key")
    for garbage in ("", "not json", '{"KeyId": "K"}', '{"KeyId": "K", "PrivateKeyData": "@@"}',
                    "[]"):
        with pytest.raises(FetchError) as refused:
            kms_instance.load_client_key(garbage, "pw", on_secret=None)
        assert refused.value.kind == Kind.CONFIG
        assert "dedicatedKMSAuth.clientKeyContent" in str(refused.value)


def test_protobuf_codec_round_trip_and_malformed_input() -> None:
    data = kms_instance.encode([(1, "name"), (2, ""), (3, "v1é")])
    assert data == b"\n\x04name\x1a\x04v1\xc3\xa9"  # the empty field is left out
    assert kms_instance.decode(data) == {1: [b"name"], 3: ["v1é".encode()]}
    assert kms_instance.decode(b"\x08\x96\x01") == {1: [150]}  # a varint field
    for bad in (b"\x0a\x05ab", b"\x08", b"\x0b"):
        with pytest.raises(ValueError):
            kms_instance.decode(bad)


def test_error_answers_without_a_protobuf_body() -> None:
    key = kms_instance.ClientKey("KAAP.1", "f", None, "")  # type: ignore[arg-type]
    gateway = kms_instance._error_answer(502, b"<html>Bad Gateway</html>", key)
    assert (gateway.kind, gateway.code) == (Kind.TRANSIENT, "UnexpectedResponse")
    assert kms_instance._error_answer(404, b"", key).kind == Kind.CONFIG
    coded = kms_instance.encode([(2, "Rejected.Throttling"), (3, "slow down")])
    assert kms_instance._error_answer(429, coded, key).kind == Kind.THROTTLED


def test_string_to_sign_layout() -> None:
    headers = {"content-sha256": "ABC", "content-type": "application/x-protobuf",
               "date": "Thu, 06 Feb 2020 07:32:54 GMT", "x-kms-apiname": "GetSecretValue",
               "x-kms-acccesskeyid": " KAAP.1 ", "host": "h", "accept": "x"}
    assert kms_instance.string_to_sign("POST", headers) == (
        "POST\nABC\napplication/x-protobuf\nThu, 06 Feb 2020 07:32:54 GMT\n"
        "x-kms-acccesskeyid:KAAP.1\nx-kms-apiname:GetSecretValue\n/")
