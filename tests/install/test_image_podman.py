"""The built image (`make image`) run the way the chart runs it, with podman.

What only the real image shows: that it starts at all on an empty base (no shell, a read-only
root, no capabilities, uid 65532), that the chart's exact arguments work in it, that it syncs
an ExternalSecret end to end (in-cluster config from a mounted ServiceAccount token, as in a
Pod; the test control plane and the fake cloud on 127.0.0.1, reached with --network host),
that it serves its probes and metrics, and that `podman stop` (SIGTERM) ends it within the
chart's grace period in every phase. Skipped, with the reason, only where podman cannot run a
container at all.
"""

from __future__ import annotations

import base64
import json
import pathlib
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.cluster import ControlPlane, free_port
from tests.cluster.tools import Image, ensure_image
from tests.fakecloud import FakeCloud
from tests.install.conftest import CHART, Helm, set_args
from tests.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

GROUP, VERSION = "alibabacloud.com", "v1alpha1"
AK_ID, AK_SECRET = "LTAI5tImageTestKey0001", "ImageTestSecretValue00000001"
GRACE = 30  # the chart's terminationGracePeriodSeconds
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SIZE_LIMIT = 200 * 1000 * 1000  # bytes, uncompressed, as podman reports it


def podman_unusable() -> str:
    """Why podman cannot run a container here, or "" when it can."""
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        return "podman is not installed and apt-get is not available to install it"
    return ""


@pytest.fixture(scope="module")
def image() -> Image:
    reason = podman_unusable()
    if reason:
        pytest.skip(f"image tests need podman: {reason}")
    built = ensure_image()
    if built.engine != "podman":
        pytest.skip(f"image tests drive podman; the image was built with {built.engine}")
    return built


def podman(image: Image, *args: str, check: bool = True,
           timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True,
                          timeout=timeout, env=image.env())
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def labels(image: Image) -> dict[str, str]:
    out = podman(image, "image", "inspect", "--format", "{{json .Labels}}", image.ref).stdout
    return dict(json.loads(out))


# ----------------------------------------------------------------- the image itself
def test_version_matches_the_label(image: Image) -> None:
    out = podman(image, "run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL",
                 image.ref, "--version").stdout.strip()
    lab = labels(image)
    revision = lab["org.opencontainers.image.revision"]
    commit = revision if re.fullmatch(r"[0-9a-f]{7,64}(-dirty)?", revision) else "unknown"
    assert out == (f"ack-secret-manager {lab['org.opencontainers.image.version']} "
                   f"(commit {commit})")
    assert image.tag.startswith(f"{image.version}-")


def test_labels_size_sbom_and_no_shell(image: Image) -> None:
    lab = labels(image)
    for key in ("version", "revision", "created", "source", "title", "licenses", "base.name"):
        assert lab.get(f"org.opencontainers.image.{key}"), key
    size = int(podman(image, "image", "inspect", "--format", "{{.Size}}", image.ref).stdout)
    assert size <= SIZE_LIMIT, f"image is {size / 1e6:.0f} MB, the target is <= 200 MB"
    # No shell and no package manager in the image: only the interpreter and the virtualenv.
    for exe in ("/bin/sh", "/usr/bin/apt-get", "/usr/bin/dpkg"):
        proc = podman(image, "run", "--rm", "--network", "none", "--entrypoint", exe,
                      image.ref, "--help", check=False)
        assert proc.returncode != 0, f"{exe} is in the image"
    bom = json.loads(image.sbom.read_text())
    names = {c["name"].lower() for c in bom["components"]}
    assert {"kubernetes", "alibabacloud-kms20160120", "ack-secret-manager"} <= names
    assert "pytest" not in names and "pip" not in names


def test_build_ca_bundle_is_not_in_the_image(image: Image) -> None:
    root = pathlib.Path(podman(image, "image", "mount", image.ref).stdout.strip())
    try:
        assert not (root / "run/build-ca.crt").exists()
        assert (root / "etc/ssl/certs/ca-certificates.crt").is_file()
        assert not list((root / "opt/ack-secret-manager/bin").glob("pip*"))
    finally:
        podman(image, "image", "unmount", image.ref, check=False)


# ----------------------------------------------------------------- running as the chart does
@dataclass
class Container:
    name: str
    image: Image
    health: int
    metrics: int

    def logs(self) -> str:
        proc = podman(self.image, "logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def running(self) -> bool:
        out = podman(self.image, "inspect", "--format", "{{.State.Running}}", self.name,
                     check=False).stdout.strip()
        return out == "true"

    def stop(self) -> tuple[float, int]:
        """`podman stop` with the chart's grace period: (seconds taken, exit code)."""
        start = time.monotonic()
        podman(self.image, "stop", "-t", str(GRACE), self.name, timeout=GRACE + 30)
        took = time.monotonic() - start
        code = podman(self.image, "inspect", "--format", "{{.State.ExitCode}}",
                      self.name).stdout.strip()
        return took, int(code)


def http_status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@dataclass
class Chart:
    namespace: str
    args: list[str]
    token_dir: pathlib.Path
    health: int
    metrics: int


@pytest.fixture(scope="module")
def cloud() -> Iterator[FakeCloud]:
    with FakeCloud() as c:
        c.add_access_key(AK_ID, AK_SECRET, "app")
        yield c


@pytest.fixture(scope="module")
def chart(cluster: ControlPlane, kube: Any, tools: Helm, cloud: FakeCloud,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chart]:
    """The chart installed (RBAC, ServiceAccount) with free ports and the fake KMS endpoint;
    its rendered args and a token directory laid out as the kubelet mounts it."""
    from kubernetes import client

    k = Helm(tools.helm_bin, tools.kubectl_bin, cluster.kubeconfig)
    core: Any = client.CoreV1Api(kube)
    ns = f"t-image-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns}})
    health, metrics = free_port(), free_port()
    values = {"health.port": str(health), "metrics.port": str(metrics),
              "command.kmsEndpoint": f"http://{cloud.kms_endpoint}",
              "command.pollingInterval": "2s"}
    try:
        k.helm("install", "asm", CHART, "-n", ns, *set_args(values))
        manifest = k.helm("get", "manifest", "asm", "-n", ns).stdout
        dep = next(d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "Deployment")
        pod = dep["spec"]["template"]["spec"]
        token = core.create_namespaced_service_account_token(
            pod["serviceAccountName"], ns,
            {"spec": {"audiences": [cluster.issuer], "expirationSeconds": 3600}}).status.token
        token_dir = tmp_path_factory.mktemp("sa")
        token_dir.chmod(0o755)
        for name, content in (("token", token), ("namespace", ns),
                              ("ca.crt", cluster.ca_file.read_text())):
            (token_dir / name).write_text(content)
            (token_dir / name).chmod(0o644)
        yield Chart(ns, list(pod["containers"][0]["args"]), token_dir, health, metrics)
    finally:
        k.helm("uninstall", "asm", "-n", ns, "--ignore-not-found", check=False)
        core.delete_namespace(ns)


@pytest.fixture
def run_container(image: Image, cluster: ControlPlane,
                  chart: Chart) -> Iterator[Callable[..., Container]]:
    """run_container(api_port=None, args=None) -> a detached container, removed afterwards."""
    started: list[str] = []

    def run(api_port: int | None = None, args: list[str] | None = None) -> Container:
        name = f"asm-image-{uuid.uuid4().hex[:8]}"
        started.append(name)
        podman(image, "run", "-d", "--name", name, "--network", "host",
               "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
               "--user", "65532:65532", "--tmpfs", "/tmp:size=16m",
               "-v", f"{chart.token_dir}:{SA_DIR}:ro",
               "-e", "KUBERNETES_SERVICE_HOST=127.0.0.1",
               "-e", f"KUBERNETES_SERVICE_PORT={api_port or cluster.port}",
               "-e", f"POD_NAME={name}", "-e", f"POD_NAMESPACE={chart.namespace}",
               "-e", "ALIBABA_CLOUD_ECS_METADATA_DISABLED=true",
               image.ref, *(args if args is not None else chart.args))
        return Container(name, image, chart.health, chart.metrics)

    yield run
    for name in started:
        podman(image, "rm", "-f", "-t", "0", name, check=False)


def create_store_and_secret(kube: Any, ns: str, name: str, key: str) -> None:
    from kubernetes import client

    core: Any = client.CoreV1Api(kube)
    objs: Any = client.CustomObjectsApi(kube)
    ak = f"{name}-ak"
    core.create_namespaced_secret(ns, {"metadata": {"name": ak},
                                       "stringData": {"id": AK_ID, "secret": AK_SECRET}})
    objs.create_namespaced_custom_object(GROUP, VERSION, ns, "secretstores", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SecretStore", "metadata": {"name": name},
        "spec": {"KMS": {"KMSAuth": {"accessKey": {"name": ak, "key": "id"},
                                     "accessKeySecret": {"name": ak, "key": "secret"}}}}})
    objs.create_namespaced_custom_object(GROUP, VERSION, ns, "externalsecrets", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ExternalSecret", "metadata": {"name": name},
        "spec": {"data": [{"key": key, "name": "value", "secretStoreRef": {"name": name}}]}})


def secret_value(kube: Any, ns: str, name: str) -> str | None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        s = client.CoreV1Api(kube).read_namespaced_secret(name, ns)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    raw = (s.data or {}).get("value")
    return base64.b64decode(raw).decode() if raw else None


def test_syncs_serves_probes_and_stops_within_the_grace_period(
        run_container: Callable[..., Container], chart: Chart, kube: Any,
        cloud: FakeCloud) -> None:
    cloud.put_secret("image-db", "from-kms-via-the-image")
    create_store_and_secret(kube, chart.namespace, "db", "image-db")
    c = run_container()

    def synced() -> str | None:
        assert c.running(), f"container exited:\n{c.logs()[-4000:]}"
        return secret_value(kube, chart.namespace, "db")

    try:
        assert wait_for(synced, timeout=60, what="Secret db") == "from-kms-via-the-image"
        base = f"http://127.0.0.1:{c.health}"
        wait_for(lambda: http_status(f"{base}/readyz") == 200, timeout=30, what="/readyz 200")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ncontainer log:\n{c.logs()[-4000:]}") from None
    assert http_status(f"{base}/healthz") == 200
    assert http_status(f"http://127.0.0.1:{c.metrics}/metrics") == 200
    # A rotation in KMS reaches the Secret (the chart's polling interval is 2s here).
    cloud.put_secret("image-db", "rotated")
    wait_for(lambda: secret_value(kube, chart.namespace, "db") == "rotated", timeout=30,
             what="rotated value in Secret db")
    log = c.logs()
    assert "from-kms-via-the-image" not in log and "rotated" not in log
    assert "Traceback" not in log, log[-4000:]
    took, code = c.stop()
    assert took < GRACE and code == 0, f"stop took {took:.1f}s, exit {code}:\n{c.logs()[-3000:]}"


class BlackHole:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def __enter__(self) -> BlackHole:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()
        self.thread.join(5)


def test_stops_within_the_grace_period_while_caches_sync(
        run_container: Callable[..., Container]) -> None:
    """The apiserver address answers nothing (a listener that never accepts): the informers'
    first list hangs, so the controller is still syncing its caches when SIGTERM comes."""
    with BlackHole() as hole:
        c = run_container(api_port=hole.port)
        base = f"http://127.0.0.1:{c.health}"
        wait_for(lambda: http_status(f"{base}/healthz") == 200 or not c.running(),
                 timeout=30, what="controller up, its caches syncing")
        assert c.running(), c.logs()[-3000:]
        assert http_status(f"{base}/readyz") != 200, "ready without an apiserver"
        wait_for(lambda: hole.accepted, timeout=10, what="a connection to the apiserver")
        took, code = c.stop()
    assert took < GRACE and code == 0, f"stop took {took:.1f}s, exit {code}:\n{c.logs()[-3000:]}"


def test_stops_within_the_grace_period_while_kms_is_unreachable(
        run_container: Callable[..., Container], chart: Chart, kube: Any) -> None:
    """KMS accepts connections and never answers: a worker is inside a KMS call."""
    with BlackHole() as hole:
        args = [a for a in chart.args if not a.startswith("--kms-endpoint=")]
        args.append(f"--kms-endpoint=http://127.0.0.1:{hole.port}")
        create_store_and_secret(kube, chart.namespace, "hung", "hung-key")
        c = run_container(args=args)
        wait_for(lambda: http_status(f"http://127.0.0.1:{c.health}/healthz") == 200
                 or not c.running(), timeout=60, what="controller up")
        assert c.running(), c.logs()[-3000:]
        wait_for(lambda: hole.accepted, timeout=30, what="a KMS call to the black hole")
        took, code = c.stop()
    assert took < GRACE and code == 0, f"stop took {took:.1f}s, exit {code}:\n{c.logs()[-3000:]}"


def test_missing_in_cluster_config_is_one_clear_error(image: Image) -> None:
    """No ServiceAccount mount and no kubeconfig: an error that names the fix, no traceback."""
    proc = podman(image, "run", "--rm", "--network", "none", "--read-only", "--cap-drop",
                  "ALL", image.ref, "--health-probe-bind-address=127.0.0.1:0",
                  "--metrics-bind-address=0", check=False, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "kubeconfig" in out.lower() and "Traceback" not in out, out[-3000:]
