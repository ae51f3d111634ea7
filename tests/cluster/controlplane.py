"""Start, stop and restart etcd + kube-apiserver + kube-controller-manager on 127.0.0.1.

One `ControlPlane` owns a temporary directory (certificates, etcd data, logs, kubeconfig) and
three processes. `stop()` always ends the processes (SIGTERM, then SIGKILL after a grace period)
and removes the directory, so nothing outlives a test session.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml

from tests.cluster.pki import write_pki
from tests.cluster.tools import Binaries, ensure_binaries

READY_TIMEOUT = 90.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


class ControlPlane:
    """A real local control plane.

    `extra_apiserver_args` may contain `{dir}`, replaced by the directory where `files`
    (name -> content) are written, e.g. an EncryptionConfiguration.
    """

    def __init__(
        self,
        *,
        extra_apiserver_args: Sequence[str] = (),
        files: Mapping[str, str] | None = None,
        workdir: pathlib.Path | None = None,
        with_controller_manager: bool = True,
        crds: Sequence[pathlib.Path] = (),
    ) -> None:
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.files = dict(files or {})
        self.with_controller_manager = with_controller_manager
        self.crds = list(crds)
        self._own_dir = workdir is None
        self.dir = workdir or pathlib.Path(tempfile.mkdtemp(prefix="asm-cluster-"))
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.bins: Binaries | None = None
        self.pki: dict[str, pathlib.Path] = {}

    # ---------------------------------------------------------------- public
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.dir / "admin.kubeconfig"

    @property
    def ca_file(self) -> pathlib.Path:
        return self.pki["ca.crt"]

    @property
    def issuer(self) -> str:
        return self.url

    def start(self, *, detach: bool = False) -> ControlPlane:
        """Start all processes and wait until the apiserver is ready."""
        try:
            self.bins = ensure_binaries()
            self.pki = write_pki(self.dir)
            for name, content in self.files.items():
                (self.dir / name).write_text(content)
            self._write_kubeconfig()
            self._start_etcd(detach)
            self.start_apiserver(detach=detach)
            # CRDs installed before kube-controller-manager starts are known to its garbage
            # collector at once; installed later, it learns of them only on its next
            # discovery pass (about 30 s).
            self.apply_crds(self.crds)
            if self.with_controller_manager:
                self._start_controller_manager(detach)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """End every process and remove the working directory."""
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            _stop_process(self.procs.pop(name, None))
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def stop_apiserver(self) -> None:
        _stop_process(self.procs.pop("kube-apiserver", None))

    def start_apiserver(self, *, detach: bool = False) -> None:
        assert self.bins is not None
        args = [str(self.bins.kube_apiserver), *self._apiserver_args()]
        self.procs["kube-apiserver"] = self._spawn("kube-apiserver", args, detach)
        self._wait_ready()

    def restart_apiserver(self) -> None:
        """Stop and start kube-apiserver on the same port (watches see 410s and resets)."""
        self.stop_apiserver()
        self.start_apiserver()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get_json(self, path: str, accept: str = "application/json") -> Any:
        """GET a path as the admin (urllib, no Kubernetes client needed)."""
        req = urllib.request.Request(self.url + path, headers={"Accept": accept})
        with urllib.request.urlopen(req, context=self.ssl_context(), timeout=10) as resp:
            return json.loads(resp.read())

    def jwks(self) -> dict[str, Any]:
        """The ServiceAccount issuer's public keys, as an OIDC verifier fetches them."""
        result: dict[str, Any] = self.get_json("/openid/v1/jwks", "application/jwk-set+json")
        return result

    def apply_crds(self, paths: Sequence[pathlib.Path]) -> None:
        """Server-side apply every CRD in the given files/directories; wait until Established."""
        names = []
        for path in paths:
            files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
            for file in files:
                for doc in yaml.safe_load_all(file.read_text()):
                    if doc and doc.get("kind") == "CustomResourceDefinition":
                        name = doc["metadata"]["name"]
                        self._request(
                            "PATCH",
                            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                            f"{name}?fieldManager=test-harness&force=true",
                            json.dumps(doc).encode(), "application/apply-patch+yaml")
                        names.append(name)

        def established() -> bool:
            for name in names:
                crd = self.get_json(
                    f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
                conditions = crd.get("status", {}).get("conditions", [])
                if not any(c["type"] == "Established" and c["status"] == "True"
                           for c in conditions):
                    return False
            return True

        self._wait(established, "kube-apiserver")

    def _request(self, method: str, path: str, body: bytes, content_type: str) -> Any:
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": content_type,
                                              "Accept": "application/json"})
        with urllib.request.urlopen(req, context=self.ssl_context(), timeout=10) as resp:
            return json.loads(resp.read())

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki["ca.crt"]))
        ctx.load_cert_chain(str(self.pki["admin.crt"]), str(self.pki["admin.key"]))
        return ctx

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # --------------------------------------------------------------- private
    def _spawn(self, name: str, args: list[str], detach: bool) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            return subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=detach,
                env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
            )
        finally:
            log.close()

    def _start_etcd(self, detach: bool) -> None:
        assert self.bins is not None
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        args = [
            str(self.bins.etcd),
            "--name=default",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
        self.procs["etcd"] = self._spawn("etcd", args, detach)
        self._wait(lambda: self._http_ok(f"{client}/health"), "etcd")

    def _apiserver_args(self) -> list[str]:
        p = self.pki
        args = [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.dir / 'certs'}",
            f"--tls-cert-file={p['apiserver.crt']}",
            f"--tls-private-key-file={p['apiserver.key']}",
            f"--client-ca-file={p['ca.crt']}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={p['sa.pub']}",
            f"--service-account-signing-key-file={p['sa.key']}",
            f"--service-account-issuer={self.issuer}",
            "--service-cluster-ip-range=10.96.0.0/24",
            # The loopback address cannot back the kubernetes Service; no endpoints needed.
            "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            "--v=0",
        ]
        return args + [a.replace("{dir}", str(self.dir)) for a in self.extra_apiserver_args]

    def _start_controller_manager(self, detach: bool) -> None:
        assert self.bins is not None
        args = [
            str(self.bins.kube_controller_manager),
            f"--kubeconfig={self.kubeconfig}",
            "--controllers=garbagecollector,namespace,serviceaccount",
            "--secure-port=0",
            "--leader-elect=false",
            f"--root-ca-file={self.pki['ca.crt']}",
            "--concurrent-gc-syncs=5",
            "--v=0",
        ]
        self.procs["kube-controller-manager"] = self._spawn("kube-controller-manager", args, detach)
        time.sleep(0.2)
        if self.procs["kube-controller-manager"].poll() is not None:
            raise RuntimeError(
                "kube-controller-manager exited:\n" + self.log_tail("kube-controller-manager")
            )

    def _write_kubeconfig(self) -> None:
        def b64(name: str) -> str:
            return base64.b64encode(self.pki[name].read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": self.url, "certificate-authority-data": b64("ca.crt")}}],
            "users": [{"name": "admin", "user": {
                "client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
            "current-context": "local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def _http_ok(self, url: str, ctx: ssl.SSLContext | None = None) -> bool:
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _wait_ready(self) -> None:
        ctx = self.ssl_context()
        self._wait(lambda: self._http_ok(f"{self.url}/readyz", ctx), "kube-apiserver")

    def _wait(self, check: Any, name: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            if check():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{name} not ready after {READY_TIMEOUT}s:\n{self.log_tail(name)}")


@contextlib.contextmanager
def running(**kwargs: Any) -> Iterator[ControlPlane]:
    cp = ControlPlane(**kwargs)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()
