"""The plugin in-process (`kmsplugin.app.Plugin`) against the fake cloud, over its real unix
socket: every identity it supports (AccessKey, AssumeRole on top, ECS worker role), a KMS
instance endpoint with its CA, and what /metrics, /readyz and the log show (never data)."""

from __future__ import annotations

import logging
import urllib.request
from pathlib import Path

import grpc
import pytest
from alibabacloud_credentials.utils import auth_util

from controller.kmsplugin import settings as plugin_settings
from controller.kmsplugin.app import Plugin
from controller.kmsplugin.proto import api_pb2, api_pb2_grpc
from tests.cluster.controlplane import free_port
from tests.fakecloud import FakeCloud, Trust

AK, SK = "LTAI5tPluginIdentity1", "plugin-identity-secret-1"
ROLE = "acs:ram::1234567890123456:role/kms-plugin"


@pytest.fixture
def cloud(plugin_cloud: FakeCloud) -> FakeCloud:
    """The fake cloud with this module's AccessKey, no proxies (tests/conftest.py)."""
    return plugin_cloud




def run_plugin(cloud: FakeCloud, socket_dir: Path, *flags: str,
               **env: str) -> tuple[Plugin, str]:
    key = cloud.keys.create_key()
    port = free_port()
    argv = ["--key-id", key, "--path-to-unix-socket", str(socket_dir / "kms.sock"),
            "--cluster-name", "unit", "--health-probe-bind-address", f"127.0.0.1:{port}",
            "--metrics-bind-address", f"127.0.0.1:{port}", *flags]
    if not any(f.startswith("--kms-endpoint") for f in flags):
        argv += ["--kms-endpoint", cloud.kms_endpoint, "--kms-protocol", "http"]
    plugin = Plugin(plugin_settings.load(argv, env))
    plugin.start()
    return plugin, f"http://127.0.0.1:{port}"


def round_trip(plugin: Plugin) -> api_pb2.StatusResponse:
    with grpc.insecure_channel(f"unix://{plugin.cfg.socket_path}") as channel:
        stub = api_pb2_grpc.KeyManagementServiceStub(channel)
        status = stub.Status(api_pb2.StatusRequest(), timeout=5)
        out = stub.Encrypt(api_pb2.EncryptRequest(plaintext=b"k" * 32), timeout=5)
        assert out.key_id == status.key_id
        back = stub.Decrypt(api_pb2.DecryptRequest(ciphertext=out.ciphertext, key_id=out.key_id,
                                                   annotations=out.annotations), timeout=5)
        assert back.plaintext == b"k" * 32
        return status


def get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_access_key_metrics_health_and_clean_logs(
    cloud: FakeCloud, socket_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    plugin, base = run_plugin(cloud, socket_dir, ACCESS_KEY_ID=AK, SECRET_ACCESS_KEY=SK)
    try:
        status = round_trip(plugin)
        assert status.healthz == "ok" and status.version == "v2"
        assert cloud.calls("Encrypt", identity="plugin-user") == 1
        assert (socket_dir / "kms.sock").stat().st_mode & 0o077 == 0  # owner only
        code, metrics = get(base + "/metrics")
        assert code == 200 and f'key_id_info{{key_id="{status.key_id}"}} 1.0' in metrics
        assert 'kms_request_duration_seconds_count{operation="Encrypt"} 1.0' in metrics
        assert 'grpc_requests_total{method="Decrypt",result="ok"} 1.0' in metrics
        assert get(base + "/readyz")[0] == 200 and get(base + "/healthz")[0] == 200
    finally:
        plugin.stop()
    assert not (socket_dir / "kms.sock").exists()
    text = caplog.text
    assert status.key_id in text and SK not in text and "kkkk" not in text


def test_assume_role_on_top_of_the_access_key(
    cloud: FakeCloud, socket_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in cloud.trust_env().items():
        monkeypatch.setenv(name, value)
    cloud.add_role(ROLE, trust=Trust(principals=("plugin-user",)))
    plugin, _ = run_plugin(cloud, socket_dir, "--role-arn", ROLE, "--sts-endpoint",
                           cloud.sts_endpoint, ACCESS_KEY_ID=AK, SECRET_ACCESS_KEY=SK)
    try:
        assert round_trip(plugin).healthz == "ok"
    finally:
        plugin.stop()
    assert cloud.calls("Encrypt", identity=ROLE) == 1


def test_worker_role_from_instance_metadata(
    cloud: FakeCloud, socket_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_util, "environment_ecs_metadata_disabled", "false")
    monkeypatch.setattr(auth_util, "environment_ecs_metadata", None)
    cloud.set_ecs_role("master-role")
    plugin, _ = run_plugin(cloud, socket_dir, "--enable-worker-role", "--metadata-proxy",
                           cloud.metadata_proxy)
    try:
        assert round_trip(plugin).healthz == "ok"
    finally:
        plugin.stop()
    assert cloud.calls("Decrypt", identity="acs:ram::1234567890123456:role/master-role") == 1


def test_kms_instance_endpoint_with_its_ca(cloud: FakeCloud, socket_dir: Path) -> None:
    plugin, _ = run_plugin(cloud, socket_dir, "--kms-endpoint", cloud.kms_tls_endpoint,
                           "--kms-ca-file", cloud.ca_file, ACCESS_KEY_ID=AK, SECRET_ACCESS_KEY=SK)
    try:
        assert round_trip(plugin).healthz == "ok"
    finally:
        plugin.stop()
    assert cloud.calls("Encrypt", service="kms-instance") == 1


def test_kms_outage_makes_status_unhealthy_not_a_crash(cloud: FakeCloud,
                                                       socket_dir: Path) -> None:
    cloud.inject("DescribeKey", None, "unavailable", times=None)
    plugin, base = run_plugin(cloud, socket_dir, ACCESS_KEY_ID=AK, SECRET_ACCESS_KEY=SK)
    try:
        with grpc.insecure_channel(f"unix://{plugin.cfg.socket_path}") as channel:
            status = api_pb2_grpc.KeyManagementServiceStub(channel).Status(
                api_pb2.StatusRequest(), timeout=5)
        assert status.healthz != "ok" and "ServiceUnavailableTemporary" in status.healthz
        code, body = get(base + "/readyz")
        assert code == 500 and "kms-key" in body
    finally:
        plugin.stop()
        cloud.clear_faults()
