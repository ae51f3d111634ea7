"""Certificates and keys for the local control plane: a CA, the apiserver's serving cert, an
admin client cert (group system:masters) and the ServiceAccount token signing key."""

from __future__ import annotations

import datetime
import ipaddress
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def write_pki(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    """Write every file the control plane needs into `directory`; return their paths by role."""
    ca_key = _key()
    ca_name = _name("asm-test-ca")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    srv_key = _key()
    srv = _cert(_name("kube-apiserver"), srv_key, ca_name, ca_key, ca=False, server=True)
    adm_key = _key()
    adm = _cert(_name("asm-admin", "system:masters"), adm_key, ca_name, ca_key, ca=False)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    files: dict[str, bytes] = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "ca.key": _pem_key(ca_key),
        "apiserver.crt": srv.public_bytes(serialization.Encoding.PEM),
        "apiserver.key": _pem_key(srv_key),
        "admin.crt": adm.public_bytes(serialization.Encoding.PEM),
        "admin.key": _pem_key(adm_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    paths = {}
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        paths[name] = path
    return paths
