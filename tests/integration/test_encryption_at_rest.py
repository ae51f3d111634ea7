"""Encryption at rest, end to end: a kube-apiserver of this module's own, started with
`--encryption-provider-config` naming the kms-plugin (a real process on a unix socket) backed
by the fake KMS; what lands in etcd is read raw through etcd's JSON gateway.

The EncryptionConfiguration has two KMS v2 providers: Secrets go to our plugin, ConfigMaps to
`PeerPlugin`, a stand-in for the old ack-kms-plugin's behaviour (its key_id is the configured
KMS key id, so it never changes on rotation), to show the flaw this plugin fixes.

Order matters inside the module (one control plane, started once): rotation runs after the
first writes, the outage after the rotation.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from kubernetes import client, config

from controller.kmsplugin.proto import api_pb2, api_pb2_grpc
from controller.providers.alibaba.identity import ACCESS_KEY, Identity, IdentityPool
from controller.providers.alibaba.kms import Endpoint, Kms
from controller.providers.alibaba.kms_crypto import KmsCrypto
from tests.cluster import ControlPlane
from tests.cluster.controlplane import free_port
from tests.cluster.tools import REPO
from tests.fakecloud import FakeCloud
from tests.integration.conftest import AK_ID, AK_SECRET, K8s
from tests.waiting import terminate, wait_for

pytestmark = pytest.mark.cluster

AK, SK = "LTAI5tEncryptionAtRest1", "encryption-at-rest-secret-01"
CLUSTER = "test-cluster"
OURS, PEER = "alibaba-kms", "peer-kms"
CONTEXT = {"kubernetes-cluster": CLUSTER}
CRDS = REPO / "helm/ack-secret-manager/crds"


# --- processes and helpers ------------------------------------------------------------------

class PluginProcess:
    """`python -m controller kms-plugin` on a unix socket, against the fake KMS."""

    def __init__(self, cloud: FakeCloud, key_id: str, socket_path: str, *,
                 cluster: str = CLUSTER) -> None:
        self.cloud, self.key_id, self.socket_path = cloud, key_id, socket_path
        self.cluster = cluster
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(socket_path).with_suffix(".log")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "controller", "kms-plugin", "--key-id", self.key_id,
                "--path-to-unix-socket", self.socket_path, "--cluster-name", self.cluster,
                "--kms-endpoint", self.cloud.kms_endpoint, "--kms-protocol", "http",
                "--key-refresh-interval", "1s",
                "--health-probe-bind-address", f"127.0.0.1:{self.health_port}",
                "--metrics-bind-address", f"127.0.0.1:{self.health_port}"]

    def start(self) -> PluginProcess:
        env = {k: v for k, v in os.environ.items()
               if "proxy" not in k.lower() and not k.startswith(("ALIBABA_CLOUD", "ACCESS_KEY"))}
        env.update(ACCESS_KEY_ID=AK, SECRET_ACCESS_KEY=SK)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         env=env, cwd=str(REPO))
        wait_for(lambda: self.http("/healthz")[0] == 200 or self.exited(), 30,
                 what="kms-plugin /healthz")
        assert not self.exited(), self.log
        return self

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self) -> None:
        terminate(self.proc)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def http(self, path: str) -> tuple[int, str]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{self.health_port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
        except OSError:
            return 0, ""

    def stub(self) -> Any:
        channel = grpc.insecure_channel(f"unix://{self.socket_path}")
        return api_pb2_grpc.KeyManagementServiceStub(channel)

    def status(self) -> Any:
        return self.stub().Status(api_pb2.StatusRequest(), timeout=5)


class PeerPlugin:
    """The peer's key_id scheme, in-process: key_id = the KMS key id, whatever its version."""

    def __init__(self, crypto: KmsCrypto, key_id: str, socket_path: str) -> None:
        self.crypto, self.key_id = crypto, key_id
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
            "Status": grpc.unary_unary_rpc_method_handler(
                self._status, api_pb2.StatusRequest.FromString,
                api_pb2.StatusResponse.SerializeToString),
            "Encrypt": grpc.unary_unary_rpc_method_handler(
                self._encrypt, api_pb2.EncryptRequest.FromString,
                api_pb2.EncryptResponse.SerializeToString),
            "Decrypt": grpc.unary_unary_rpc_method_handler(
                self._decrypt, api_pb2.DecryptRequest.FromString,
                api_pb2.DecryptResponse.SerializeToString),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("v2.KeyManagementService", handlers),))
        self.server.add_insecure_port(f"unix://{socket_path}")

    def _status(self, _request: Any, _context: Any) -> Any:
        return api_pb2.StatusResponse(version="v2", healthz="ok", key_id=self.key_id)

    def _encrypt(self, request: Any, _context: Any) -> Any:
        wrapped = self.crypto.encrypt(self.key_id, request.plaintext, CONTEXT)
        return api_pb2.EncryptResponse(ciphertext=wrapped.ciphertext.encode(),
                                       key_id=self.key_id)

    def _decrypt(self, request: Any, _context: Any) -> Any:
        out = self.crypto.decrypt(self.key_id, request.ciphertext.decode(), CONTEXT)
        return api_pb2.DecryptResponse(plaintext=out.plaintext)


def encryption_config(ours: str, peer: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
        "resources": [
            {"resources": ["secrets"], "providers": [
                {"kms": {"apiVersion": "v2", "name": OURS, "endpoint": f"unix://{ours}",
                         "timeout": "3s"}},
                {"identity": {}}]},
            {"resources": ["configmaps"], "providers": [
                {"kms": {"apiVersion": "v2", "name": PEER, "endpoint": f"unix://{peer}",
                         "timeout": "3s"}},
                {"identity": {}}]},
        ]})


def etcd_raw(cp: ControlPlane, key: str) -> bytes:
    body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{cp.etcd_port}/v3/kv/range", data=body,
                                 method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=5) as resp:
        kvs = json.loads(resp.read()).get("kvs") or []
    assert kvs, f"{key} not in etcd"
    return base64.b64decode(kvs[0]["value"])


def _fields(data: bytes) -> dict[int, bytes]:
    """Length-delimited fields of a protobuf message (enough for EncryptedObject)."""
    out: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        tag, i = _varint(data, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            out.setdefault(number, data[i:i + size])
            i += size
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return out


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def stored(cp: ControlPlane, resource: str, ns: str, name: str,
           provider: str = OURS) -> tuple[str, bytes, bytes]:
    """(stored key_id, wrapped DEK seed, whole raw value) of an object in etcd."""
    raw = etcd_raw(cp, f"/registry/{resource}/{ns}/{name}")
    prefix = f"k8s:enc:kms:v2:{provider}:".encode()
    assert raw.startswith(prefix), raw[:40]
    fields = _fields(raw[len(prefix):])
    return fields[2].decode(), fields[3], raw


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cloud() -> Iterator[FakeCloud]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ.pop(name, None)
    with FakeCloud() as fake:
        fake.add_access_key(AK, SK, "kms-plugin")
        fake.add_access_key(AK_ID, AK_SECRET, "controller")  # K8s.access_key_store's key
        yield fake


@pytest.fixture(scope="module")
def sockets() -> Iterator[Path]:
    # Short path: a unix socket path must fit in 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="kmsp-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def key(cloud: FakeCloud) -> str:
    return cloud.keys.create_key(description="etcd encryption")


@pytest.fixture(scope="module")
def plugin(cloud: FakeCloud, key: str, sockets: Path) -> Iterator[PluginProcess]:
    proc = PluginProcess(cloud, key, str(sockets / "kms.sock")).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def peer(cloud: FakeCloud, key: str, sockets: Path) -> Iterator[PeerPlugin]:
    kms = Kms(IdentityPool(), region="cn-hangzhou")
    crypto = KmsCrypto(kms, Identity(ACCESS_KEY, access_key_id=AK, access_key_secret=SK),
                       Endpoint(cloud.kms_endpoint, "http"))
    server = PeerPlugin(crypto, key, str(sockets / "peer.sock"))
    server.server.start()
    try:
        yield server
    finally:
        server.server.stop(grace=1).wait(5)
        kms.close()


@pytest.fixture(scope="module")
def cp(plugin: PluginProcess, peer: PeerPlugin, sockets: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(
        extra_apiserver_args=["--encryption-provider-config={dir}/encryption.yaml"],
        files={"encryption.yaml": encryption_config(plugin.socket_path,
                                                    str(sockets / "peer.sock"))},
        with_controller_manager=False, crds=[CRDS])
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def api(cp: ControlPlane) -> Iterator[Any]:
    api_client = config.new_client_from_config(config_file=str(cp.kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture(scope="module")
def core(api: Any) -> Any:
    return client.CoreV1Api(api)


def new_namespace(core: Any, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    return name


def put_secret(core: Any, ns: str, name: str, value: str) -> None:
    core.create_namespaced_secret(ns, {"metadata": {"name": name},
                                       "stringData": {"value": value}})


def read_secret(core: Any, ns: str, name: str) -> str:
    data = core.read_namespaced_secret(name, ns).data
    return base64.b64decode(data["value"]).decode()


def kms_readyz(cp: ControlPlane) -> tuple[int, str]:
    req = urllib.request.Request(cp.url + "/readyz/kms-providers")
    try:
        with urllib.request.urlopen(req, context=cp.ssl_context(), timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def reencrypt(cp: ControlPlane, *args: str) -> dict[str, int]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    out = subprocess.run([sys.executable, "-m", "controller", "reencrypt", "--kubeconfig",
                          str(cp.kubeconfig), *args], capture_output=True, text=True,
                         env=env, cwd=str(REPO), timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    summary = out.stdout.strip().splitlines()[-1]
    return {k: int(float(v)) for k, v in (part.split("=") for part in summary.split())}


# --- the proofs ---------------------------------------------------------------------------------

def test_secret_is_encrypted_in_etcd_and_plain_through_the_api(
    cp: ControlPlane, core: Any, plugin: PluginProcess
) -> None:
    ns = new_namespace(core, "enc")
    plaintext = f"plaintext-{uuid.uuid4().hex}"
    put_secret(core, ns, "db", plaintext)
    key_id, _dek, raw = stored(cp, "secrets", ns, "db")
    assert plaintext.encode() not in raw and base64.b64encode(plaintext.encode()) not in raw
    assert key_id == plugin.status().key_id and key_id.startswith("alibaba-kms-")
    assert read_secret(core, ns, "db") == plaintext
    assert plaintext not in plugin.log


def test_secret_written_by_the_controller_is_encrypted(
    cp: ControlPlane, api: Any, core: Any, cloud: FakeCloud, tmp_path: Path
) -> None:
    ns = new_namespace(core, "es")
    value = f"from-kms-{uuid.uuid4().hex}"
    cloud.put_secret("app-password", value, version_id="v1")
    k8s = K8s(api)
    k8s.access_key_store(ns, "store")
    k8s.create(ns, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "app"},
        "spec": {"data": [{"key": "app-password", "name": "password",
                           "secretStoreRef": {"name": "store"}}]}})
    env = {k: v for k, v in os.environ.items()
           if "proxy" not in k.lower() and not k.startswith(("ALIBABA_CLOUD", "ACCESS_KEY"))}
    env["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] = "true"
    with open(tmp_path / "controller.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller", "--kubeconfig", str(cp.kubeconfig),
             "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
             "--kms-protocol", "http", "--kms-endpoint", cloud.kms_endpoint,
             "--watch-namespaces", ns],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    try:
        data = wait_for(lambda: k8s.secret_data(ns, "app"), 60, what="Secret app")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert data == {"password": value}
    _, _, raw = stored(cp, "secrets", ns, "app")
    assert value.encode() not in raw


def test_rotation_moves_key_id_and_reencrypt_rewrites_only_stale(
    cp: ControlPlane, core: Any, cloud: FakeCloud, key: str, plugin: PluginProcess
) -> None:
    ns, kept, probes = (new_namespace(core, prefix) for prefix in ("rot", "keep", "probe"))
    for i in range(5):
        put_secret(core, ns, f"s{i}", f"value-{i}")
    put_secret(core, kept, "old", "written-under-the-first-version")
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"a": "b"}})
    old_id = plugin.status().key_id
    peer_id, peer_dek, _ = stored(cp, "configmaps", ns, "cm", PEER)
    assert {stored(cp, "secrets", ns, f"s{i}")[0] for i in range(5)} == {old_id}

    cloud.keys.rotate_key(key)
    new_id = wait_for(lambda: (s := plugin.status().key_id) != old_id and s, 5,
                      what="Status key_id after rotation (refresh 1s)")

    def new_writes_use_new_key() -> bool:
        kms_readyz(cp)  # the apiserver's probe calls Status at most every 20 s, and rotates
        name = f"probe-{uuid.uuid4().hex[:6]}"
        put_secret(core, probes, name, "x")
        return stored(cp, "secrets", probes, name)[0] == new_id

    wait_for(new_writes_use_new_key, 60, interval=2, what="apiserver writing with the new key")
    assert stored(cp, "secrets", ns, "s0")[0] == old_id  # nothing re-wrapped by itself

    first = reencrypt(cp, "--namespace", ns)
    assert (first["rewritten"], first["unchanged"], first["failed"]) == (5, 0, 0), first
    assert {stored(cp, "secrets", ns, f"s{i}")[0] for i in range(5)} == {new_id}
    assert read_secret(core, ns, "s3") == "value-3"
    second = reencrypt(cp, "--namespace", ns)
    assert (second["rewritten"], second["unchanged"]) == (0, 5), second

    # The peer's flaw: its key_id never changes, so a no-op update is skipped and the DEK
    # stays wrapped under the old key version.
    peer_run = reencrypt(cp, "--namespace", ns, "--resources", "configmaps")
    assert peer_run["rewritten"] == 0
    assert stored(cp, "configmaps", ns, "cm", PEER)[:2] == (peer_id, peer_dek)

    # Data under the first version still decrypts after a plugin AND an apiserver restart.
    assert stored(cp, "secrets", kept, "old")[0] == old_id
    plugin.stop()
    plugin.start()
    cp.restart_apiserver()
    assert read_secret(core, kept, "old") == "written-under-the-first-version"
    assert read_secret(core, ns, "s4") == "value-4"


def test_plugin_outage_keeps_reads_and_recovers(
    cp: ControlPlane, core: Any, plugin: PluginProcess
) -> None:
    ns = new_namespace(core, "out")
    put_secret(core, ns, "before", "still-readable")
    assert read_secret(core, ns, "before") == "still-readable"
    plugin.stop()
    try:
        assert read_secret(core, ns, "before") == "still-readable"  # the apiserver's cache
        status, body = wait_for(lambda: (r := kms_readyz(cp))[0] != 200 and r, 40,
                                interval=1, what="/readyz/kms-providers failing")
        assert status == 500 and "kms-provider" in body
        assert read_secret(core, ns, "before") == "still-readable"
    finally:
        plugin.start()
    wait_for(lambda: kms_readyz(cp)[0] == 200, 40, interval=1, what="/readyz/kms-providers ok")
    put_secret(core, ns, "after", "written-after-recovery")
    assert read_secret(core, ns, "after") == "written-after-recovery"
    assert read_secret(core, ns, "before") == "still-readable"


def test_disabled_key_is_unhealthy_and_nothing_stored_is_lost(
    cp: ControlPlane, core: Any, cloud: FakeCloud, key: str, plugin: PluginProcess
) -> None:
    ns = new_namespace(core, "dis")
    put_secret(core, ns, "kept", "kept-value")
    cloud.keys.set_state(key, "Disabled")
    try:
        status = wait_for(lambda: (s := plugin.status()).healthz != "ok" and s, 5,
                          what="Status unhealthy")
        assert key in status.healthz and "Disabled" in status.healthz
        assert plugin.http("/readyz")[0] == 500 and plugin.http("/healthz")[0] == 200
        assert read_secret(core, ns, "kept") == "kept-value"
        assert not plugin.exited()
    finally:
        cloud.keys.set_state(key, "Enabled")
    wait_for(lambda: plugin.status().healthz == "ok", 5, what="Status ok again")
    assert read_secret(core, ns, "kept") == "kept-value"


def test_bad_input_gives_clear_errors(
    cp: ControlPlane, core: Any, cloud: FakeCloud, key: str, plugin: PluginProcess,
    sockets: Path
) -> None:
    ns = new_namespace(core, "bad")
    put_secret(core, ns, "safe", "safe-value")
    stub = plugin.stub()
    good = stub.Encrypt(api_pb2.EncryptRequest(plaintext=b"s" * 32, uid="1"), timeout=5)

    # A key_id this plugin never issued.
    with pytest.raises(grpc.RpcError) as err:
        stub.Decrypt(api_pb2.DecryptRequest(ciphertext=good.ciphertext, key_id="made-up",
                                            annotations=good.annotations), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "never issued" in err.value.details()

    # A ciphertext made for another cluster (same KMS key, other EncryptionContext).
    other = PluginProcess(cloud, key, str(sockets / "other.sock"), cluster="other-cluster")
    other.start()
    try:
        foreign = other.stub().Encrypt(api_pb2.EncryptRequest(plaintext=b"f" * 32), timeout=5)
    finally:
        other.stop()
    with pytest.raises(grpc.RpcError) as err:
        stub.Decrypt(api_pb2.DecryptRequest(ciphertext=foreign.ciphertext, key_id=foreign.key_id,
                                            annotations=foreign.annotations), timeout=5)
    assert "other-cluster" in err.value.details()
    relabelled = dict(foreign.annotations)
    relabelled["cluster.kms.alibabacloud.com"] = CLUSTER.encode()  # KMS still refuses
    with pytest.raises(grpc.RpcError) as err:
        stub.Decrypt(api_pb2.DecryptRequest(ciphertext=foreign.ciphertext, key_id=foreign.key_id,
                                            annotations=relabelled), timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "EncryptionContext" in err.value.details()

    # A wrong --key-id: the plugin runs, Status says what is wrong.
    wrong = PluginProcess(cloud, "00000000-0000-0000-0000-00000000dead",
                          str(sockets / "wrong.sock")).start()
    try:
        status = wrong.status()
        assert status.healthz != "ok" and "Forbidden.KeyNotFound" in status.healthz
        assert "00000000-0000-0000-0000-00000000dead" in status.healthz
    finally:
        wrong.stop()

    # Socket paths that cannot work: exit 2 with the reason, at once.
    (sockets / "regular-file").write_text("not a socket")
    for path, words in ((str(sockets / "missing" / "kms.sock"), "does not exist"),
                        (str(sockets / "regular-file"), "is not a socket"),
                        (str(sockets / "regular-file" / "kms.sock"),
                         "is a regular file, not a directory")):
        bad = PluginProcess(cloud, key, path)
        out = subprocess.run(bad.command(), capture_output=True, text=True, timeout=30,
                             env={**os.environ, "ACCESS_KEY_ID": AK, "SECRET_ACCESS_KEY": SK},
                             check=False)
        assert out.returncode == 2 and words in out.stdout + out.stderr, out
    assert read_secret(core, ns, "safe") == "safe-value"


def test_shipped_manifests_are_accepted(core: Any, api: Any) -> None:
    manifests = REPO / "manifests/kms-plugin"
    pod = yaml.safe_load((manifests / "kms-plugin.yaml").read_text())
    try:  # no kube-controller-manager here to make it; admission wants it even for dry-run
        core.create_namespaced_service_account("kube-system", {"metadata": {"name": "default"}})
    except client.exceptions.ApiException as exc:
        assert exc.status == 409
    created = core.create_namespaced_pod("kube-system", pod, dry_run="All")
    assert created.spec.priority_class_name == "system-node-critical"
    assert created.spec.containers[0].args[0] == "kms-plugin"
    # With the worker role no AccessKey file exists: a missing directory must not keep the
    # kubelet from starting the pod.
    types = {v.name: v.host_path.type for v in created.spec.volumes if v.host_path}
    assert types == {"socket": "DirectoryOrCreate", "config": "DirectoryOrCreate"}
    # reencrypt's least-privilege RBAC (docs/encryption-at-rest.md) is valid as shipped.
    from kubernetes import utils

    created_rbac = utils.create_from_yaml(api, str(manifests / "reencrypt-rbac.yaml"),
                                          dry_run="All")
    kinds = sorted(obj.kind for group in created_rbac for obj in group)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                     "ServiceAccount"]
    encryption = yaml.safe_load((manifests / "encryption-config.yaml").read_text())
    providers = encryption["resources"][0]["providers"]
    assert providers[0]["kms"]["apiVersion"] == "v2" and providers[-1] == {"identity": {}}
    assert providers[0]["kms"]["endpoint"].endswith(pod["spec"]["containers"][0]["args"][4]
                                                    .split("=", 1)[1])
