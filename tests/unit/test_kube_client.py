"""The kubeconfig's credentials never stay on disk: the Kubernetes client writes inline
client-key-data (and the certificate and CA) to temporary files; `api_client` removes them
before it returns and keeps their content in memory-only files, so no exit path (a clean one,
os._exit, SIGKILL) leaves a key in $TMPDIR."""

from __future__ import annotations

import base64
import datetime
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]


def _kubeconfig(path: Path) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tenant-test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(datetime.datetime(2020, 1, 1))
            .not_valid_after(datetime.datetime(2040, 1, 1)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1",
                                               "certificate-authority-data": b64(cert_pem)}}],
        "users": [{"name": "u", "user": {"client-certificate-data": b64(cert_pem),
                                         "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))
    return key_pem, cert_pem


CHILD = """
import os, signal, sys
from controller.kube.client import api_client
api = api_client(sys.argv[1])
cfg = api.configuration
with open(cfg.key_file, "rb") as fh:
    assert fh.read() == open(sys.argv[2], "rb").read(), "the key reads back from memory"
assert cfg.key_file.startswith("/proc/self/fd/"), cfg.key_file
print(sorted(os.listdir(os.environ["TMPDIR"])), flush=True)
how = sys.argv[3]
if how == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
elif how == "_exit":
    os._exit(3)
"""


@pytest.mark.parametrize("how", ["exit", "_exit", "kill"])
def test_no_exit_path_leaves_the_client_key_in_tmpdir(tmp_path: Path, how: str) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    kubeconfig = tmp_path / "kubeconfig"
    key_pem, _cert = _kubeconfig(kubeconfig)
    (tmp_path / "key.pem").write_bytes(key_pem)
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(kubeconfig), str(tmp_path / "key.pem"), how],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    expected = {"exit": 0, "_exit": 3, "kill": -signal.SIGKILL}[how]
    assert done.returncode == expected, done.stderr
    assert done.stdout.strip() == "[]"  # already while running: nothing on disk
    assert list(tmpdir.iterdir()) == []
