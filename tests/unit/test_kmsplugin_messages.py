"""The plugin against the fake cloud (no apiserver): `--key-id alias/<name>` resolved and
followed when re-pointed, the fake's alias API itself, and messages that say what happened
(a slow KMS timed out, an oversize Encrypt is refused before KMS, a socket path under a regular
file exits 2 in one line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from controller.kmsplugin import keyids
from controller.kmsplugin import settings as plugin_settings
from controller.kmsplugin.app import Plugin
from controller.kmsplugin.proto import api_pb2, api_pb2_grpc
from controller.providers.alibaba.identity import ACCESS_KEY, Identity, IdentityPool
from controller.providers.alibaba.kms import Endpoint, Kms
from controller.providers.alibaba.kms_crypto import CryptoError, KmsCrypto
from tests.cluster.controlplane import free_port
from tests.cluster.tools import REPO
from tests.fakecloud import FakeCloud
from tests.fakecloud.wire import ApiError

AK, SK = "LTAI5tPluginMessages1", "plugin-messages-secret-1"
CONTEXT = {"kubernetes-cluster": "unit"}


@pytest.fixture
def cloud(plugin_cloud: FakeCloud) -> FakeCloud:
    """The fake cloud with this module's AccessKey, no proxies (tests/conftest.py)."""
    return plugin_cloud




def crypto(cloud: FakeCloud, budget: float = 2.5) -> KmsCrypto:
    return KmsCrypto(Kms(IdentityPool(), region="cn-hangzhou"),
                     Identity(ACCESS_KEY, access_key_id=AK, access_key_secret=SK),
                     Endpoint(cloud.kms_endpoint, "http"), budget=budget)


def stub(plugin: Plugin) -> tuple[grpc.Channel, api_pb2_grpc.KeyManagementServiceStub]:
    channel = grpc.insecure_channel(f"unix://{plugin.cfg.socket_path}")
    return channel, api_pb2_grpc.KeyManagementServiceStub(channel)


# --- aliases --------------------------------------------------------------------------------

def test_fake_kms_aliases_answer_with_the_real_key_id(cloud: FakeCloud) -> None:
    first, second = cloud.keys.create_key(), cloud.keys.create_key()
    cloud.keys.create_alias("alias/etcd", first)
    kms = crypto(cloud)
    assert kms.describe_key("alias/etcd").key_id == first
    assert kms.encrypt("alias/etcd", b"x", CONTEXT).key_id == first
    arn = f"acs:kms:cn-hangzhou:{cloud.keys.account_id}:alias/etcd"
    assert kms.describe_key(arn).key_id == first
    cloud.keys.update_alias("alias/etcd", second)
    wrapped = kms.encrypt("alias/etcd", b"y", CONTEXT)
    assert wrapped.key_id == second
    assert kms.decrypt("alias/etcd", wrapped.ciphertext, CONTEXT).key_id == second
    with pytest.raises(ApiError) as refused:
        cloud.keys.create_alias("alias/etcd", first)
    assert refused.value.code == "Rejected.AliasExists"
    cloud.keys.delete_alias("alias/etcd")
    with pytest.raises(CryptoError) as err:
        kms.describe_key("alias/etcd")
    assert err.value.code == "Forbidden.AliasNotFound" and "CreateAlias" in err.value.reason
    assert cloud.keys.key_ids() == sorted([first, second])  # deleting an alias keeps the key


def test_plugin_with_an_alias_follows_a_repointed_alias(cloud: FakeCloud,
                                                        socket_dir: Path) -> None:
    first, second = cloud.keys.create_key(), cloud.keys.create_key()
    cloud.keys.create_alias("alias/etcd", first)
    port = free_port()
    cfg = plugin_settings.load(
        ["--key-id", "alias/etcd", "--path-to-unix-socket", str(socket_dir / "kms.sock"),
         "--cluster-name", "unit", "--kms-endpoint", cloud.kms_endpoint, "--kms-protocol",
         "http", "--key-refresh-interval", "1s", "--health-probe-bind-address",
         f"127.0.0.1:{port}", "--metrics-bind-address", f"127.0.0.1:{port}"],
        {"ACCESS_KEY_ID": AK, "SECRET_ACCESS_KEY": SK})
    plugin = Plugin(cfg)
    plugin.start()
    channel, kms = stub(plugin)
    try:
        status = kms.Status(api_pb2.StatusRequest(), timeout=5)
        assert status.healthz == "ok"
        old = kms.Encrypt(api_pb2.EncryptRequest(plaintext=b"a" * 32), timeout=5)
        assert old.key_id == status.key_id  # the apiserver accepts the seed only then
        assert old.annotations[keyids.KEY_ANNOTATION] == first.encode()

        cloud.keys.update_alias("alias/etcd", second)
        plugin.keys.refresh()  # what the 1 s refresh does; called here to be deterministic
        moved = kms.Status(api_pb2.StatusRequest(), timeout=5)
        assert moved.key_id != status.key_id and moved.healthz == "ok"
        new = kms.Encrypt(api_pb2.EncryptRequest(plaintext=b"b" * 32), timeout=5)
        assert new.key_id == moved.key_id
        assert new.annotations[keyids.KEY_ANNOTATION] == second.encode()
        for wrapped, plain in ((old, b"a" * 32), (new, b"b" * 32)):
            back = kms.Decrypt(api_pb2.DecryptRequest(
                ciphertext=wrapped.ciphertext, key_id=wrapped.key_id,
                annotations=wrapped.annotations), timeout=5)
            assert back.plaintext == plain
    finally:
        channel.close()
        plugin.stop()


# --- messages -------------------------------------------------------------------------------

def test_a_slow_kms_is_a_timeout_not_unreachable(cloud: FakeCloud) -> None:
    key = cloud.keys.create_key()
    cloud.latency = 1.0
    with pytest.raises(CryptoError) as err:
        crypto(cloud, budget=0.5).encrypt(key, b"s" * 32, CONTEXT)
    assert err.value.code == "Timeout" and "did not answer within" in err.value.reason
    assert "could not reach" not in err.value.reason and key in err.value.reason
    unreachable = KmsCrypto(Kms(IdentityPool(), region="cn-hangzhou"),
                            Identity(ACCESS_KEY, access_key_id=AK, access_key_secret=SK),
                            Endpoint(f"127.0.0.1:{free_port()}", "http"), budget=0.5)
    with pytest.raises(CryptoError) as err:
        unreachable.encrypt(key, b"s" * 32, CONTEXT)
    assert err.value.code == "ConnectionRefused" and "refused the connection" in \
        err.value.reason


def test_kms_refusing_an_encrypt_is_not_blamed_on_a_ciphertext(cloud: FakeCloud) -> None:
    key = cloud.keys.create_key()
    with pytest.raises(CryptoError) as err:
        crypto(cloud).encrypt(key, b"p" * 6000, CONTEXT)  # over KMS's own 6 KB of base64
    assert err.value.code == "InvalidParameter" and "another key" not in err.value.reason
    assert "Plaintext is at most 6 KB" in err.value.reason


def test_encrypt_over_the_ceiling_never_reaches_kms(cloud: FakeCloud, socket_dir: Path) -> None:
    key = cloud.keys.create_key()
    port = free_port()
    plugin = Plugin(plugin_settings.load(
        ["--key-id", key, "--path-to-unix-socket", str(socket_dir / "kms.sock"),
         "--kms-endpoint", cloud.kms_endpoint, "--kms-protocol", "http",
         "--health-probe-bind-address", f"127.0.0.1:{port}", "--metrics-bind-address", "0"],
        {"ACCESS_KEY_ID": AK, "SECRET_ACCESS_KEY": SK}))
    plugin.start()
    channel, kms = stub(plugin)
    try:
        for size in (6000, 1 << 20):
            with pytest.raises(grpc.RpcError) as err:
                kms.Encrypt(api_pb2.EncryptRequest(plaintext=b"p" * size), timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"plaintext of {size} bytes exceeds" in (err.value.details() or "")
        assert cloud.calls("Encrypt") == 0
    finally:
        channel.close()
        plugin.stop()


@pytest.mark.parametrize("below", ["kms.sock", "sub/kms.sock"])
def test_socket_under_a_regular_file_exits_2_in_one_line(tmp_path: Path, below: str) -> None:
    (tmp_path / "file").write_text("not a directory")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(ACCESS_KEY_ID=AK, SECRET_ACCESS_KEY=SK)
    out = subprocess.run(
        [sys.executable, "-m", "controller", "kms-plugin", "--key-id", "k", "--kms-endpoint",
         f"127.0.0.1:{free_port()}", "--kms-protocol", "http",
         "--path-to-unix-socket", str(tmp_path / "file" / below),
         "--health-probe-bind-address", "0", "--metrics-bind-address", "0"],
        capture_output=True, text=True, timeout=60, env=env, cwd=str(REPO), check=False)
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode == 2, out
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert f"socket directory {tmp_path / 'file'}" in lines[0]
    assert "is a regular file, not a directory" in lines[0] and "does not exist" not in lines[0]
