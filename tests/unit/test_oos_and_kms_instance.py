"""Pure parts of the OOS and KMS-instance readers: error classification per product, parameter
versions, the client key file (and the bound on what opening it costs), the protobuf codec and
the string the client key signs."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import ssl
import time

import pytest
from alibabacloud_tea_openapi.exceptions import (
    ClientException,
    ServerException,
    ThrottlingException,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from controller.providers.alibaba import kms_instance, pfx
from controller.providers.alibaba.dedicated import DedicatedReader
from controller.providers.alibaba.errors import FetchError, Kind, classify, service_error
from controller.providers.alibaba.identity import CLIENT_KEY, Identity
from controller.providers.alibaba.kms import Endpoint, SecretValue
from controller.providers.alibaba.oos import parameter_version

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


# ------------------------------------------------ client keys: opened under a bound

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pkcs12(rounds: int | None = None, legacy: bool = False, password: bytes = b"pw") -> bytes:
    """A PKCS#12 as cryptography writes it; `rounds` sets the PBE/PBKDF2 iteration count."""
    if rounds is None:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password))
    else:
        algorithm = (pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC if legacy
                     else pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                      .kdf_rounds(rounds).key_cert_algorithm(algorithm)
                      .hmac_hash(hashes.SHA1() if legacy else hashes.SHA256())
                      .build(password))
    return pkcs12.serialize_key_and_certificates(b"k", _RSA, None, None, encryption)


def _json(blob: bytes) -> str:
    return json.dumps({"KeyId": "KAAP.k", "PrivateKeyData": base64.b64encode(blob).decode()})


def _tlv(tag: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _int(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes((value.bit_length() + 8) // 8, "big"))


def _oid(text: str) -> bytes:
    first, second, *rest = (int(p) for p in text.split("."))
    out = bytearray([40 * first + second])
    for value in rest:
        chunk = [value & 0x7F]
        while value := value >> 7:
            chunk.append(0x80 | value & 0x7F)
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def _seq(*parts: bytes) -> bytes:
    return _tlv(0x30, *parts)


def _octets(data: bytes) -> bytes:
    return _tlv(0x04, data)


def _explicit(data: bytes) -> bytes:
    return _tlv(0xA0, data)


DATA, SHROUDED = "1.2.840.113549.1.7.1", "1.2.840.113549.1.12.10.1.2"
PBES2, PBKDF2, AES256 = ("1.2.840.113549.1.5.13", "1.2.840.113549.1.5.12",
                         "2.16.840.1.101.3.4.1.42")


def _pbes2(iterations: int, kdf: str = PBKDF2) -> bytes:
    return _seq(_oid(PBES2), _seq(_seq(_oid(kdf), _seq(_octets(b"s" * 8), _int(iterations))),
                                  _seq(_oid(AES256), _octets(b"i" * 16))))


def _hostile(mac_iterations: int = 2048, key_iterations: int | None = None,
             keys: int = 1, kdf: str = PBKDF2) -> bytes:
    """A PKCS#12 built by hand: MacData with `mac_iterations`; with `key_iterations`,
    `keys` shrouded key bags whose PBES2 asks for that many (the encrypted bytes are junk:
    nothing reaches them)."""
    bags = b"".join(_seq(_oid(SHROUDED), _explicit(_seq(_pbes2(key_iterations, kdf),
                                                         _octets(b"x" * 32))))
                    for _ in range(keys if key_iterations is not None else 0))
    contents = _seq(_seq(_oid(DATA), _explicit(_octets(_seq(bags)))))
    mac = _seq(_seq(_seq(_oid("2.16.840.1.101.3.4.2.1"), b"\x05\x00"), _octets(b"m" * 32)),
               _octets(b"salt" * 2), _int(mac_iterations))
    return _seq(_int(3), _seq(_oid(DATA), _explicit(_octets(contents))), mac)


@pytest.mark.parametrize(("rounds", "legacy"), [(None, False), (5000, False), (3000, True),
                                                (pfx.MAX_ITERATIONS, False)])
def test_client_keys_as_tools_write_them_are_within_the_ceiling(rounds: int | None,
                                                                legacy: bool) -> None:
    blob = _pkcs12(rounds, legacy)
    assert 0 < pfx.check(blob) <= pfx.MAX_TOTAL_ITERATIONS
    key = kms_instance.load_client_key(_json(blob), "pw", on_secret=None)
    assert key.key_id == "KAAP.k"


@pytest.mark.parametrize(("blob", "words"), [
    (_hostile(2**31 - 1), ["integrity MAC", "2,147,483,647", "100,000"]),
    (_hostile(key_iterations=2**31 - 1), ["private key", "2,147,483,647"]),
    (_hostile(key_iterations=2**80), ["private key", "more than 2^63"]),
    (_hostile(key_iterations=pfx.MAX_ITERATIONS, keys=5), ["in all"]),
    (_hostile(key_iterations=1, kdf="1.3.6.1.4.1.11591.4.11"), ["scrypt"]),
    (_hostile(key_iterations=1, keys=pfx.MAX_ITEMS + 1), ["1,000 contents and bags"]),
])
def test_hostile_client_keys_cost_milliseconds_and_name_the_fix(blob: bytes,
                                                                words: list[str]) -> None:
    """The issue's file (2^31-1 iterations, a wrong password on purpose) took ~11 minutes of
    GIL per attempt; refused before deriving anything, it takes milliseconds."""
    start = time.perf_counter()
    with pytest.raises(FetchError) as refused:
        kms_instance.load_client_key(_json(blob), "wrong", source="SecretStore t/s",
                                     on_secret=None)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, elapsed  # measured: ~1 ms; the bound leaves room for a busy machine
    assert (refused.value.kind, refused.value.code) == (Kind.CONFIG, "ClientKeyRefused")
    message = str(refused.value)
    for word in ["SecretStore t/s", "dedicatedKMSAuth.clientKeyContent", "new client key",
                 *words]:
        assert word in message, (word, message)


def test_a_file_above_the_ceiling_written_by_cryptography_is_refused() -> None:
    blob = _pkcs12(pfx.MAX_ITERATIONS + 1)
    with pytest.raises(pfx.Refused, match="private key"):
        pfx.check(blob)


def test_ber_indefinite_lengths_and_constructed_octet_strings_are_followed() -> None:
    """Some writers use BER: indefinite lengths, OCTET STRINGs in pieces. The reader follows
    them, so a hostile count cannot hide behind BER."""
    inner = _seq(_seq(_oid(SHROUDED), _explicit(_seq(_pbes2(2**31 - 1), _octets(b"x")))))
    contents = _seq(_seq(_oid(DATA), _explicit(_octets(inner))))
    pieces = _tlv(0x24, _octets(contents[:7]), _octets(contents[7:]))  # constructed
    ber = (b"\x30\x80" + _int(3) + b"\x30\x80" + _oid(DATA) + b"\xa0\x80" + pieces
           + b"\x00\x00" + b"\x00\x00" + b"\x00\x00")
    with pytest.raises(pfx.Refused, match="private key"):
        pfx.check(ber)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_files_are_refused_or_measured_never_crash(data: st.DataObject) -> None:
    """Whatever the bytes (a real file with bytes changed, cut or inserted; noise), the check
    answers quickly with a count within the ceiling or `Refused`, nothing else."""
    base = data.draw(st.sampled_from([_BEST, _hostile(2**31 - 1), _hostile(key_iterations=7)]))
    blob = bytearray(base)
    for _ in range(data.draw(st.integers(0, 4))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        action = data.draw(st.sampled_from(["set", "cut", "insert"]))
        byte = data.draw(st.integers(0, 255))
        if action == "set":
            blob[pos] = byte
        elif action == "cut":
            del blob[pos:pos + data.draw(st.integers(1, 8))]
        else:
            blob.insert(pos, byte)
        if not blob:
            break
    if data.draw(st.booleans()):
        blob = bytearray(data.draw(st.binary(max_size=64)))
    start = time.perf_counter()
    password = data.draw(st.sampled_from([None, b"pw", b"wrong"]))
    with contextlib.suppress(pfx.Refused):
        assert pfx.check(bytes(blob), password) <= pfx.MAX_TOTAL_ITERATIONS
    assert time.perf_counter() - start < 0.5


_BEST = _pkcs12()


def _encrypted_content(inner: bytes, password: bytes, iterations: int = 2048) -> bytes:
    """An EncryptedData ContentInfo holding `inner` (SafeContents), PBES2 AES-256-CBC."""
    salt, iv = b"s" * 8, b"i" * 16
    key = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(password)
    padder = sym_padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    data = encryptor.update(padder.update(inner) + padder.finalize()) + encryptor.finalize()
    algorithm = _seq(_oid(PBES2), _seq(
        _seq(_oid(PBKDF2), _seq(_octets(salt), _int(iterations),
                                _seq(_oid("1.2.840.113549.2.9"), b"\x05\x00"))),
        _seq(_oid(AES256), _octets(iv))))
    return _seq(_oid("1.2.840.113549.1.7.6"), _explicit(_seq(
        _int(0), _seq(_oid(DATA), algorithm, _tlv(0x80, data)))))


def test_key_bags_inside_an_encrypted_content_are_checked_too() -> None:
    """Whoever knows the password can hide the key bag inside an encrypted content, where
    only decryption shows its parameters: the check decrypts (within the ceiling) and looks."""
    bag = _seq(_oid(SHROUDED), _explicit(_seq(_pbes2(2**31 - 1), _octets(b"x" * 32))))
    content = _encrypted_content(_seq(bag), b"pw")
    mac = _seq(_seq(_seq(_oid("2.16.840.1.101.3.4.2.1"), b"\x05\x00"), _octets(b"m" * 32)),
               _octets(b"salt" * 2), _int(2048))
    blob = _seq(_int(3), _seq(_oid(DATA), _explicit(_octets(_seq(content)))), mac)
    assert pfx.check(blob) == 2048 + 2048  # without the password: the outer layer only
    start = time.perf_counter()
    with pytest.raises(pfx.Refused, match="private key asks for 2,147,483,647"):
        pfx.check(blob, b"pw")
    assert time.perf_counter() - start < 0.5
    with pytest.raises(FetchError, match="ClientKeyRefused"):
        kms_instance.load_client_key(_json(blob), "pw", on_secret=None)
    assert pfx.check(blob, b"wrong") == 4096  # cannot decrypt: the loader cannot either


@pytest.mark.parametrize(("rounds", "legacy"), [(None, False), (3000, True)])
def test_encrypted_contents_as_cryptography_writes_them_are_decrypted(
    rounds: int | None, legacy: bool,
) -> None:
    """The decryption is right (3DES with the PKCS#12 KDF, PBES2 AES): the certificate
    content of a real file decrypts to DER with the password, and not with another one."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(_RSA.public_key()).serial_number(1)
            .not_valid_before(datetime.datetime(2020, 1, 1))
            .not_valid_after(datetime.datetime(2040, 1, 1)).sign(_RSA, hashes.SHA256()))
    algorithm = (pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC if legacy
                 else pkcs12.PBES.PBESv2SHA256AndAES256CBC)
    builder = serialization.PrivateFormat.PKCS12.encryption_builder().key_cert_algorithm(
        algorithm)
    if rounds is not None:
        builder = builder.kdf_rounds(rounds)
    blob = pkcs12.serialize_key_and_certificates(b"k", _RSA, cert, None, builder.build(b"pw"))
    safe = pfx.read(pfx.read(blob).children()[1].children()[1].body)  # [0] OCTET STRING
    contents = pfx.read(safe.body).children()  # AuthenticatedSafe
    encrypted = [c for c in contents if c.children()[0].oid() == "1.2.840.113549.1.7.6"]
    assert encrypted
    info = pfx.read(encrypted[0].children()[1].body).children()[1].children()
    plain = pfx._decrypt(info[1], info[2].body, b"pw")
    assert plain is not None and pfx.read(plain).tag == pfx.SEQUENCE
    assert pfx._decrypt(info[1], info[2].body, b"other") is None


class _Instance:
    """Stands in for KmsInstance: answers every read."""

    def get_secret_value(self, key: kms_instance.ClientKey, endpoint: object, name: str,
                         version_id: str = "", version_stage: str = "") -> SecretValue:
        return SecretValue(name=name, data=b"v", data_type="text", version_id="1")


def test_a_failed_decode_is_remembered_until_the_key_material_changes() -> None:
    reader = DedicatedReader(_Instance())  # type: ignore[arg-type]
    endpoint = Endpoint("kst-1.cryptoservice.kms.aliyuncs.com")

    def read(content: str, password: str) -> SecretValue:
        identity = Identity(CLIENT_KEY, client_key_content=content,
                            client_key_password=password, source="SecretStore t/s")
        return reader.get_secret_value(identity, endpoint, "db")

    good = _json(_BEST)
    for attempt in range(3):
        with pytest.raises(FetchError) as wrong:
            read(good, "wrong")
        assert wrong.value.code == "ClientKeyPasswordWrong"
        assert reader.decodes == 1, attempt  # the 2nd and 3rd attempts derive nothing
    hostile = _json(_hostile(2**31 - 1))
    for _ in range(2):
        with pytest.raises(FetchError, match="ClientKeyRefused"):
            read(hostile, "wrong")
    assert reader.decodes == 2
    assert read(good, "pw").data == b"v"  # the right password: a new attempt, and it opens
    assert reader.decodes == 3
    assert read(good, "pw").data == b"v" and reader.decodes == 3  # decoded once


def test_releasing_a_dedicated_read_forgets_the_key_and_closes_the_pool() -> None:
    instance = kms_instance.KmsInstance()
    reader = DedicatedReader(instance)
    identity = Identity(CLIENT_KEY, client_key_content=_json(_BEST), client_key_password="pw")
    endpoint = Endpoint("kst-1.cryptoservice.kms.aliyuncs.com", ca_pem="")
    reader._key(identity)
    instance._pool(kms_instance.InstanceEndpoint(endpoint.host))
    assert instance.sizes()["pools"] == 1 and reader.decodes == 1
    assert reader.release(identity, endpoint)
    assert instance.sizes()["pools"] == 0
    reader._key(identity)
    assert reader.decodes == 2  # the key was forgotten: decoded again on the next read
