"""A network failure says which: the real KMS SDK called against local sockets that refuse,
stay silent, present an untrusted certificate, or a name that does not resolve; the reason
names the endpoint, the failure and what to check, and never copies the SDK's text (which
carries the request URL)."""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.ops.neterrors import CONNECTION_REFUSED, DESCRIPTIONS, TIMEOUT, out_of_reach
from controller.providers.alibaba.errors import FetchError, Kind, classify

WHO = "SecretStore team-a/kms"


def sdk_failure(host: str, ca: str | None = None) -> BaseException:
    """What the real SDK raises for a GetSecretValue to `host` (https, 1 s timeouts)."""
    from alibabacloud_kms20160120 import models
    from alibabacloud_kms20160120.client import Client
    from alibabacloud_tea_openapi.models import Config

    config = Config(access_key_id="LTAI-test", access_key_secret="not-a-secret-value",
                    endpoint=host, protocol="https", region_id="cn-hangzhou",
                    connect_timeout=1000, read_timeout=1000, ca=ca)
    with pytest.raises(Exception) as caught:
        Client(config).get_secret_value(models.GetSecretValueRequest(secret_name="db"))
    return caught.value


def classified(exc: BaseException, host: str, ca_pem: str = "") -> FetchError:
    error = classify(exc, who=WHO, endpoint=host, ca_pem=ca_pem)
    assert host in error.reason
    assert "SecretName" not in error.reason and "LTAI-test" not in error.reason
    return error


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """Accepts connections into its backlog and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock


def test_connection_refused() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = f"127.0.0.1:{port}"
    error = classified(sdk_failure(host), host)
    assert (error.kind, error.code) == (Kind.TRANSIENT, "ConnectionRefused")
    assert "refused the connection" in error.reason


def test_a_name_that_does_not_resolve_and_the_vpc_endpoint_hint() -> None:
    host = "kms-vpc.cn-nowhere.invalid"
    error = classified(sdk_failure(host), host)
    assert (error.kind, error.code) == (Kind.TRANSIENT, "NameNotResolved")
    assert "DNS" in error.reason and "--kms-endpoint-type public" in error.reason
    plain = classified(sdk_failure("kms.cn-nowhere.invalid"), "kms.cn-nowhere.invalid")
    assert plain.code == "NameNotResolved" and "spelling and region" in plain.reason


def test_a_silent_endpoint_times_out(listener: socket.socket) -> None:
    host = f"127.0.0.1:{listener.getsockname()[1]}"
    error = classified(sdk_failure(host), host)
    assert (error.kind, error.code) == (Kind.TRANSIENT, "Timeout")
    assert "did not answer in time" in error.reason


def test_an_untrusted_certificate_names_the_ca_in_use(tmp_path: Path) -> None:
    cert, key, other_ca = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.settimeout(10)
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                with conn, contextlib.suppress(OSError, ssl.SSLError):
                    context.wrap_socket(conn, server_side=True).close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        host = f"127.0.0.1:{sock.getsockname()[1]}"
        try:
            system = classified(sdk_failure(host), host)
            assert (system.kind, system.code) == (Kind.CONFIG, "TLSVerifyFailed")
            assert "system's trusted CAs" in system.reason and "spec.KMS.ca" in system.reason
            pem = other_ca.read_text()
            private = classified(sdk_failure(host, ca=str(other_ca)), host, ca_pem=pem)
            assert private.code == "TLSVerifyFailed" and "private CA" in private.reason
            assert "BEGIN CERTIFICATE" not in private.reason
        finally:
            stop.set()
            sock.close()
            thread.join(5)


def _self_signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A server certificate for 127.0.0.1, and an unrelated CA certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def make(name: str) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=1))
                .sign(key, hashes.SHA256()))
        return (cert.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))

    server_cert, server_key = make("127.0.0.1")
    ca_cert, _ = make("some other CA")
    paths = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"
    for path, data in zip(paths, (server_cert, server_key, ca_cert), strict=True):
        path.write_bytes(data)
    return paths


def test_out_of_reach_is_one_rule_for_every_caller() -> None:
    """The reconciler and the store checks use the same rule for "the API server cannot be
    reached": network failures (under any wrapper), connection and timeout errors, urllib3's
    own; not any other OSError (the store checks took every OSError before)."""
    import urllib3

    wrapped = RuntimeError("wrapper")
    wrapped.__cause__ = ConnectionRefusedError(111, "refused")
    assert out_of_reach(wrapped) == DESCRIPTIONS[CONNECTION_REFUSED]
    assert out_of_reach(ConnectionResetError(104, "reset")) == "ConnectionResetError"
    assert out_of_reach(TimeoutError()) == DESCRIPTIONS[TIMEOUT]
    assert out_of_reach(urllib3.exceptions.ProtocolError("gone")) == "ProtocolError"
    assert out_of_reach(PermissionError(13, "denied")) is None
    assert out_of_reach(FileNotFoundError(2, "missing")) is None
    assert out_of_reach(ValueError("x")) is None
