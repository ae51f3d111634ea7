"""docs/encryption-at-rest.md's runbook, followed as printed: from a control plane without
encryption to a rotated (by re-pointing the KMS alias the plugin is given) and re-encrypted
cluster, then read back after plugin and apiserver restarts.

The shell blocks marked `<!-- runbook: step N -->` are extracted in order and run with bash,
each seeing the variables the earlier ones exported. What differs from a real control-plane
node is only what the doc's step 0 makes a variable, plus three stand-ins:
- the doc's commands need bash, curl and jq (from the system) and kubectl (the cached one);
- `aliyun` is tests/fakecloud/aliyun_cli.py (the same `kms <Action> --<Param>` calls, signed,
  to the fake KMS); `ack-secret-manager` is this checkout's command;
- a kubelet stand-in runs the static pod the doc's step 3 writes to $MANIFESTS: the
  container's args with each volume's mountPath mapped to its host directory (the socket
  directory is a short temporary one), the plugin's 127.0.0.1:8095 replaced by
  $KMS_PLUGIN_ADDR, the fake KMS's endpoint added (it replaces --region), and
  --key-refresh-interval 1s instead of 30s to keep the test short;
- the doc's step 5 is a YAML edit of kube-apiserver.yaml: the test applies it by restarting
  its apiserver with --encryption-provider-config naming the file of step 4 (socket path
  mapped like the plugin's). While `reencrypt --wait-for-key-rotation` waits, the test asks
  /readyz/kms-providers every 2 s, as a load balancer's health check would; that makes the
  apiserver call Status sooner than its 60 s interval.
What the doc cannot show (the raw etcd value) is checked by the test itself.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cluster import ControlPlane
from tests.cluster.controlplane import free_port
from tests.cluster.tools import REPO, ensure_tools
from tests.fakecloud import FakeCloud
from tests.integration.test_encryption_at_rest import etcd_raw, kms_readyz, stored
from tests.waiting import terminate

pytestmark = pytest.mark.cluster

DOC = REPO / "docs/encryption-at-rest.md"
ADMIN = ("LTAI5tRunbookAdmin0001", "runbook-admin-secret-0001")
PLUGIN = ("LTAI5tRunbookPlugin001", "runbook-plugin-secret-001")
ALIAS = "alias/k8s-etcd"
_STEP = re.compile(r"<!-- runbook: step (\d+) -->\s*```sh\n(.*?)```", re.S)


def runbook_steps(text: str) -> list[str]:
    """The doc's marked shell blocks, checked to be steps 0..N in order."""
    found = [(int(n), body) for n, body in _STEP.findall(text)]
    assert [n for n, _ in found] == list(range(len(found))), [n for n, _ in found]
    return [body for _, body in found]


def _parses(text: bytes) -> bool:
    try:
        return isinstance(yaml.safe_load(text), dict)
    except yaml.YAMLError:
        return False


class Kubelet:
    """Runs the kms-plugin static pod from $MANIFESTS as the kubelet would (see docstring)."""

    def __init__(self, manifests: Path, host_dirs: dict[str, Path], addr: str, kms: str,
                 log: Path) -> None:
        self.manifests, self.host_dirs, self.addr, self.kms = manifests, host_dirs, addr, kms
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="kubelet", daemon=True)

    def start(self) -> Kubelet:
        self._thread.start()
        return self

    def _watch(self) -> None:
        """Start the pod once its manifest is whole: the doc's step writes it with a shell
        redirect, which creates the file empty before sed writes it, so a manifest is used
        only when it parses and reads the same at two looks a tick apart (a loaded CI run
        read the empty file, and this thread died on it: the plugin never started)."""
        path, seen = self.manifests / "kms-plugin.yaml", b""
        while self.proc is None and not self._stop.wait(0.2):
            text = path.read_bytes() if path.exists() else b""
            if text and text == seen and _parses(text):
                self.run_pod()
            seen = text

    def command(self) -> list[str]:
        pod = yaml.safe_load((self.manifests / "kms-plugin.yaml").read_text())
        container = pod["spec"]["containers"][0]
        volumes = {v["name"]: v["hostPath"]["path"] for v in pod["spec"]["volumes"]}
        mounts = {m["mountPath"]: self.host_dirs[volumes[m["name"]]]
                  for m in container["volumeMounts"]}
        args = []
        for arg in container["args"]:
            for mount_path, host in mounts.items():
                arg = arg.replace(mount_path, str(host))
            arg = arg.replace("127.0.0.1:8095", self.addr)
            if arg.startswith("--key-refresh-interval="):
                arg = "--key-refresh-interval=1s"
            args.append(arg)
        return [sys.executable, "-m", "controller", *args, "--kms-endpoint", self.kms,
                "--kms-protocol", "http"]

    def run_pod(self) -> None:
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()
               and not k.startswith(("ALIBABA_CLOUD", "ACCESS_KEY", "SECRET_ACCESS"))}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         env=env, cwd=str(REPO))

    def restart_pod(self) -> None:
        self.stop_pod()
        self.run_pod()

    def stop_pod(self) -> None:
        terminate(self.proc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.stop_pod()


class Node:
    """The directories, variables and stand-ins of one control-plane node."""

    def __init__(self, root: Path, socket_dir: Path, cloud: FakeCloud, cp: ControlPlane) -> None:
        self.root, self.cp, self.cloud = root, cp, cloud
        self.socket_dir = socket_dir
        self.state = root / "runbook.env"
        bin_dir = root / "bin"
        bin_dir.mkdir()
        for name, module in (("aliyun", "tests.fakecloud.aliyun_cli"),
                             ("ack-secret-manager", "controller")):
            script = bin_dir / name
            script.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" '
                              f'-m {module} "$@"\n')
            script.chmod(0o755)
        self.dirs = {name: root / name for name in ("manifests", "kms-plugin", "enc")}
        for path in self.dirs.values():
            path.mkdir()
        self.addr = f"127.0.0.1:{free_port()}"
        self.env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        kubectl_dir = ensure_tools().kubectl.parent  # the cached kubectl, matching the apiserver
        self.env.update(
            PATH=f"{bin_dir}:{kubectl_dir}:{os.environ['PATH']}", KUBECONFIG=str(cp.kubeconfig),
            MANIFESTS=str(self.dirs["manifests"]), KMS_PLUGIN_DIR=str(self.dirs["kms-plugin"]),
            ENC_DIR=str(self.dirs["enc"]), KMS_PLUGIN_ADDR=self.addr,
            PLUGIN_ACCESS_KEY_ID=PLUGIN[0], PLUGIN_ACCESS_KEY_SECRET=PLUGIN[1],
            ALIBABA_CLOUD_ACCESS_KEY_ID=ADMIN[0], ALIBABA_CLOUD_ACCESS_KEY_SECRET=ADMIN[1],
            FAKECLOUD_KMS_ENDPOINT=cloud.kms_endpoint)
        self.kubelet = Kubelet(self.dirs["manifests"], {
            "/var/run/kmsplugin": socket_dir, "/etc/kubernetes/kms-plugin": self.dirs["kms-plugin"],
        }, self.addr, cloud.kms_endpoint, root / "kms-plugin.log").start()

    def run(self, step: str, timeout: float = 120) -> str:
        script = (f'set -euo pipefail\n[ -f "{self.state}" ] && source "{self.state}"\n'
                  f'{step}\nexport -p > "{self.state}"\n')
        try:
            out = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                                 env=self.env, cwd=str(REPO), timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:  # say why: the step, its output, the plugin's
            pytest.fail(f"runbook step still running after {timeout:g}s:\n{step}\n"
                        f"stdout: {exc.stdout!r}\nstderr: {exc.stderr!r}\n"
                        f"kms-plugin log:\n{self.plugin_log()}")
        assert out.returncode == 0, (step, out.stdout, out.stderr, self.plugin_log())
        return out.stdout

    def plugin_log(self) -> str:
        log = self.root / "kms-plugin.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else ""

    def configure_apiserver(self) -> None:
        """The doc's kube-apiserver.yaml edit: the flag, and the mounts (paths mapped)."""
        config = (self.dirs["enc"] / "encryption.yaml").read_text()
        self.cp.files["encryption.yaml"] = config.replace("/var/run/kmsplugin",
                                                          str(self.socket_dir))
        (self.cp.dir / "encryption.yaml").write_text(self.cp.files["encryption.yaml"])
        self.cp.extra_apiserver_args = ["--encryption-provider-config={dir}/encryption.yaml"]
        self.cp.restart_apiserver()


@pytest.fixture
def node() -> Iterator[Node]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ.pop(name, None)
    root = Path(tempfile.mkdtemp(prefix="runbook-"))
    socket_dir = Path(tempfile.mkdtemp(prefix="rbk-", dir="/tmp"))  # a unix socket's 108 bytes
    with FakeCloud() as cloud:
        cloud.add_access_key(*ADMIN, "admin")
        cloud.add_access_key(*PLUGIN, "kms-plugin")
        cp = ControlPlane(with_controller_manager=False)
        cp.start()
        made: Node | None = None
        try:
            made = Node(root, socket_dir, cloud, cp)
            yield made
        finally:
            if made is not None:
                made.kubelet.stop()
            cp.stop()
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(socket_dir, ignore_errors=True)


def kubectl(node: Node, *args: str) -> str:
    out = subprocess.run([str(ensure_tools().kubectl), *args], capture_output=True, text=True,
                         env=node.env, timeout=60, check=True)
    return out.stdout


def summary(output: str) -> dict[str, int]:
    line = [x for x in output.splitlines() if x.startswith("rewritten=")][-1]
    return {k: int(float(v)) for k, v in (part.split("=") for part in line.split())}


class Poker:
    """Asks /readyz/kms-providers every 2 s (a load balancer's health check) while alive."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(2):
            with contextlib.suppress(OSError):  # restarting: the next poke answers
                kms_readyz(self.cp)

    def __enter__(self) -> Poker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_the_runbook_from_a_blank_control_plane_to_a_rotated_cluster(node: Node) -> None:
    steps = runbook_steps(DOC.read_text())
    assert len(steps) == 9, "the test follows the doc's steps 0-8; update both together"
    cp = node.cp
    kubectl(node, "create", "secret", "generic", "before", "-n", "default",
            "--from-literal=k=written-before-encryption")
    assert etcd_raw(cp, "/registry/secrets/default/before").startswith(b"k8s\x00")  # plain

    for index in range(0, 4):  # variables, key + alias, AccessKey file, plugin static pod
        node.run(steps[index])
    first_key = node.cloud.keys.aliases()[ALIAS]
    node.run(steps[4])  # the EncryptionConfiguration
    node.configure_apiserver()  # the kube-apiserver.yaml edit of step 5
    node.run(steps[5])
    out = node.run(steps[6])  # reencrypt what was there
    assert summary(out)["failed"] == 0 and summary(out)["rewritten"] >= 1, out
    old_id, _, raw = stored(cp, "secrets", "default", "before")
    assert b"written-before-encryption" not in raw and first_key.encode() in raw

    assert node.run(steps[7]).strip().endswith("plain-value")  # a new Secret reads back
    assert stored(cp, "secrets", "default", "runbook-probe")[0] == old_id

    with Poker(cp):
        out = node.run(steps[8], timeout=240)  # re-point the alias, wait, reencrypt
    second_key = node.cloud.keys.aliases()[ALIAS]
    assert second_key != first_key
    counts = summary(out)
    assert counts["failed"] == 0 and counts["rewritten"] >= 2, out
    for name in ("before", "runbook-probe"):
        new_id, _, raw = stored(cp, "secrets", "default", name)
        assert new_id != old_id and second_key.encode() in raw and first_key.encode() not in raw

    # Read back after the plugin (kubelet restart) and the apiserver restart.
    node.kubelet.restart_pod()
    cp.restart_apiserver()
    value = kubectl(node, "get", "secret", "before", "-n", "default", "-o",
                    "jsonpath={.data.k}")
    assert base64.b64decode(value) == b"written-before-encryption"
    again = summary(node.run("ack-secret-manager reencrypt"))
    assert (again["rewritten"], again["failed"]) == (0, 0), again
    assert node.kubelet.proc is not None and node.kubelet.proc.poll() is None


def test_the_doc_names_what_the_runbook_test_relies_on() -> None:
    text = DOC.read_text()
    steps = runbook_steps(text)
    assert "--wait-for-key-rotation" in steps[8] and "UpdateAlias" in steps[8]
    assert "alias/k8s-etcd" in steps[3]
    assert "/readyz/kms-providers" in steps[5]
