"""A real node for the test control plane: containerd + kubelet, so Deployments get real Pods.

Why: probes, restarts, projected tokens, security contexts, leader failover between Pods and
SIGTERM from the kubelet only exist where a kubelet runs Pods. Opt-in per test (the `node`
fixture of tests/install/test_realnode.py): it needs root, containerd, runc and the CNI
plugins (apt), and the kubelet, kube-scheduler and pause built by hack/build-node.sh.

What `Node.start()` adds to a running `ControlPlane`, all under the node's own directory:
- containerd with its own root, state and socket (CRI `restrict_oom_score_adj`: root here has
  no CAP_SYS_RESOURCE), a CNI bridge `asmtest0` on 10.244.0.0/24 (host-local IPAM state in
  the directory), and a `pause` sandbox image imported from a one-layer OCI archive;
- a kubelet named `localhost` (so `kubectl logs/exec` reach it on 127.0.0.1; it refuses a
  loopback node IP) with a client certificate `system:node:localhost` in `system:nodes`,
  bound to ClusterRole `system:node`; `failCgroupV1: false` for cgroup v1 hybrid hosts;
- kube-scheduler and a second kube-controller-manager (deployment, replicaset,
  root-ca-certificate-publisher, node-lifecycle controllers);
- "front doors" on the bridge's gateway address 10.244.0.1, because Pods on the bridge cannot
  reach 127.0.0.1 and there is no kube-proxy: a TLS front door for the apiserver (its
  certificate, for 10.244.0.1, is signed by the cluster CA; bearer tokens pass through) and
  plain TCP forwarders for anything else (the fake cloud). Pods are pointed at them with
  KUBERNETES_SERVICE_HOST/PORT and endpoint flags; see docs/install.md.
`stop()` deletes the node's Pods through the kubelet, kills what is left, stops every
process, restores the three kernel tunables the kubelet changes (vm.overcommit_memory,
kernel.panic, kernel.panic_on_oops), removes the hard-coded paths it created
(/var/lib/kubelet/device-plugins, /var/log/containers, /run/containerd/s, CNI netns), the
bridge and the kubepods cgroups, and the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import io
import ipaddress
import json
import os
import pathlib
import shutil
import ssl
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cluster.controlplane import ControlPlane, _stop_process, free_port
from tests.cluster.tools import REPO

BRIDGE = "asmtest0"
SUBNET = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
NODE_NAME = "localhost"
READY_TIMEOUT = 120.0
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
HOST_PATHS = (pathlib.Path("/var/lib/kubelet"), pathlib.Path("/var/log/containers"),
              pathlib.Path("/var/log/pods"), pathlib.Path("/run/containerd"))
APT_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "gcc", "libc6-dev")
CNI_BIN = pathlib.Path("/usr/lib/cni")


@dataclass(frozen=True)
class NodeBinaries:
    kubelet: pathlib.Path
    kube_scheduler: pathlib.Path
    pause: pathlib.Path


def unavailable() -> str:
    """Why a real node cannot run on this machine ("" when it can)."""
    if os.geteuid() != 0:
        return "a real node needs root (kubelet, containerd, a network bridge)"
    missing = [c for c in ("containerd", "ctr", "runc", "ip") if shutil.which(c) is None]
    if not (CNI_BIN / "bridge").exists():
        missing.append(str(CNI_BIN / "bridge"))
    if missing:
        return (f"missing {', '.join(missing)}: apt-get install -y --no-install-recommends "
                f"{' '.join(APT_PACKAGES)} (.ci/run does)")
    return ""


def ensure_node_binaries() -> NodeBinaries:
    """Build (first time only) and return kubelet, kube-scheduler and pause."""
    out = subprocess.run(["bash", str(REPO / "hack/build-node.sh"), "node"], check=True,
                         stdout=subprocess.PIPE, text=True, timeout=3600).stdout
    bin_dir = pathlib.Path(dict(line.split("=", 1) for line in out.splitlines())["bin"])
    return NodeBinaries(bin_dir / "kubelet", bin_dir / "kube-scheduler", bin_dir / "pause")


# ------------------------------------------------------------------ certificates
def _sign(ca_cert: pathlib.Path, ca_key: pathlib.Path, cn: str, org: str | None,
          ip: str | None, out: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    issuer = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    issuer_key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(issuer_key, ec.EllipticCurvePrivateKey), "the test CA key is EC"
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(x509.Name(attrs))
               .issuer_name(issuer.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    crt, pem = out.with_suffix(".crt"), out.with_suffix(".key")
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    pem.chmod(0o600)
    return crt, pem


# ------------------------------------------------------------------ front doors
class Forwarder:
    """TCP forwarder listen_host:port -> 127.0.0.1:target, optionally re-originating TLS.

    With `tls=(server_ctx, client_ctx)` it terminates TLS with server_ctx and dials the target
    with client_ctx: the apiserver front door, whose certificate names the gateway address.
    asyncio in a thread of its own: one loop owns every TLS object (OpenSSL connections must
    not be read and written from two threads at once).
    """

    def __init__(self, listen_host: str, target_port: int,
                 tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None) -> None:
        self.target_port = target_port
        self.tls = tls
        self.loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name=f"forward-{target_port}")
        self._thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, listen_host, 0,
                                 ssl=tls[0] if tls else None), self.loop).result(10)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            client = self.tls[1] if self.tls else None
            up_r, up_w = await asyncio.open_connection(
                "127.0.0.1", self.target_port, ssl=client,
                server_hostname="127.0.0.1" if client else None)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
        finally:
            if task is not None:
                self._tasks.discard(task)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                dst.close()

    def close(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.sleep(0)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


# ------------------------------------------------------------------ the node
class Node:
    """containerd + kubelet + kube-scheduler + a second kube-controller-manager."""

    def __init__(self, cp: ControlPlane, workdir: pathlib.Path | None = None) -> None:
        self.cp = cp
        self._own_dir = workdir is None
        self.dir = workdir or pathlib.Path(tempfile.mkdtemp(prefix="asm-node-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.forwarders: list[Forwarder] = []
        self.sysctls: dict[str, str] = {}
        self.existing: dict[pathlib.Path, bool] = {}
        self.netns_before: set[str] = set()
        self.netns_existed = True
        self.bins: NodeBinaries | None = None
        self.kubelet_port = free_port()
        self.healthz_port = free_port()
        self.apiserver_port = 0  # the front door's port on GATEWAY

    @property
    def socket(self) -> pathlib.Path:
        return self.dir / "containerd/containerd.sock"

    # ---------------------------------------------------------- public
    def start(self) -> Node:
        try:
            self.bins = ensure_node_binaries()
            self._remember_host_state()
            self._bridge_up()
            self._start_containerd()
            self._import_pause()
            self._node_rbac()
            self._start_front_door()
            self._start_kubelet()
            self._start_control_loops()
            self._wait(self._node_ready, "kubelet")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._drain()
        for name in ("kube-scheduler", "kube-controller-manager-2", "kubelet"):
            _stop_process(self.procs.pop(name, None), grace=30)
        self._kill_leftover_tasks()
        _stop_process(self.procs.pop("containerd", None))
        for f in self.forwarders:
            f.close()
        self.forwarders.clear()
        self._restore_host_state()
        self._unmount_all()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def forward(self, target_port: int) -> int:
        """A plain TCP port on GATEWAY that Pods can reach, forwarded to 127.0.0.1:target."""
        f = Forwarder(GATEWAY, target_port)
        self.forwarders.append(f)
        return f.port

    def import_image(self, archive: pathlib.Path) -> None:
        """`ctr images import` of a docker or OCI archive into the CRI namespace."""
        self.ctr("images", "import", str(archive), timeout=300)

    def ctr(self, *args: str, timeout: float = 60.0) -> str:
        proc = subprocess.run(["ctr", "--address", str(self.socket), "-n", "k8s.io", *args],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------- host state
    def _remember_host_state(self) -> None:
        for key in SYSCTLS:
            self.sysctls[key] = pathlib.Path("/proc/sys", key).read_text().strip()
        self.existing = {p: p.exists() for p in HOST_PATHS}
        self.existing[pathlib.Path("/var/lib/kubelet/device-plugins")] = pathlib.Path(
            "/var/lib/kubelet/device-plugins").exists()
        netns = pathlib.Path("/run/netns")
        self.netns_existed = netns.exists()
        self.netns_before = {p.name for p in netns.iterdir()} if netns.exists() else set()

    def _restore_host_state(self) -> None:
        for key, value in self.sysctls.items():
            with contextlib.suppress(OSError):
                pathlib.Path("/proc/sys", key).write_text(value)
        netns = pathlib.Path("/run/netns")
        if netns.exists():
            for p in netns.iterdir():
                if p.name.startswith("cni-") and p.name not in self.netns_before:
                    subprocess.run(["ip", "netns", "delete", p.name], capture_output=True,
                                   check=False)
            if not self.netns_existed:
                with contextlib.suppress(OSError):
                    netns.rmdir()  # only when empty: other tools share it
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
        for path, existed in sorted(self.existing.items(), key=lambda kv: -len(str(kv[0]))):
            if not existed:
                shutil.rmtree(path, ignore_errors=True)
        self._remove_cgroups()

    def _unmount_all(self) -> None:
        """The kubelet bind-mounts its root directory (and volumes) under the node's dir."""
        prefix = str(self.dir.resolve())
        mounts = [line.split()[1] for line in
                  pathlib.Path("/proc/mounts").read_text().splitlines()]
        for target in sorted((m for m in mounts if m == prefix or m.startswith(prefix + "/")),
                             key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)

    @staticmethod
    def _remove_cgroups() -> None:
        root = pathlib.Path("/sys/fs/cgroup")
        for hierarchy in [root, *root.iterdir()] if root.exists() else []:
            for top in ("kubepods", "kubepods.slice", "k8s.io"):
                base = hierarchy / top
                if not base.is_dir():
                    continue
                dirs = sorted((p for p in base.rglob("*") if p.is_dir()),
                              key=lambda p: -len(p.parts))
                for d in [*dirs, base]:
                    with contextlib.suppress(OSError):
                        d.rmdir()

    def _bridge_up(self) -> None:
        """The bridge with its gateway address exists before the first Pod: the front doors
        listen on it (the CNI bridge plugin adopts an existing bridge)."""
        for cmd in (["ip", "link", "add", BRIDGE, "type", "bridge"],
                    ["ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE],
                    ["ip", "link", "set", BRIDGE, "up"]):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0 and "File exists" not in proc.stderr:
                raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")

    # ---------------------------------------------------------- processes
    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.procs[name] = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()})
        finally:
            log.close()

    def _start_containerd(self) -> None:
        d = self.dir / "containerd"
        cni = self.dir / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        (cni / "net.d/10-asmtest.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "asmtest", "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]],
                          "dataDir": str(cni / "ipam")}}]}))
        d.mkdir(parents=True, exist_ok=True)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (d / "config.toml").write_text(f"""version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{cni}/net.d"
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
""")
        self._spawn("containerd", ["containerd", "--config", str(d / "config.toml")])
        self._wait(lambda: self.socket.exists() and self._ctr_ok(), "containerd")

    def _ctr_ok(self) -> bool:
        try:
            self.ctr("version", timeout=5)
        except (RuntimeError, subprocess.TimeoutExpired):
            return False
        return True

    def _import_pause(self) -> None:
        assert self.bins is not None
        archive = self.dir / "pause.oci.tar"
        write_oci_archive(archive, PAUSE_IMAGE, {"pause": self.bins.pause.read_bytes()},
                          entrypoint=["/pause"])
        self.ctr("images", "import", str(archive))

    def _admin_request(self, method: str, path: str, body: object) -> None:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.cp.url + path, data=json.dumps(body).encode(),
                                     method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.cp.ssl_context(), timeout=10):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise

    def _node_rbac(self) -> None:
        """No Node authorizer here: RBAC's system:node role for the kubelet's group."""
        self._admin_request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
            "metadata": {"name": "asm-test-system-nodes"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:node"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                          "name": "system:nodes"}]})

    def tls_front_door(self, target_port: int, target_ca: pathlib.Path | str) -> int:
        """A TLS port on GATEWAY, its certificate signed by the cluster CA (what a Pod trusts
        through its ServiceAccount's ca.crt), re-encrypting to 127.0.0.1:target_port."""
        crt, key = _sign(self.cp.pki["ca.crt"], self.cp.pki["ca.key"], "asm-front-door", None,
                         GATEWAY, self.dir / f"front-door-{target_port}")
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(str(crt), str(key))
        client = ssl.create_default_context(cafile=str(target_ca))
        door = Forwarder(GATEWAY, target_port, tls=(server, client))
        self.forwarders.append(door)
        return door.port

    def _start_front_door(self) -> None:
        self.apiserver_port = self.tls_front_door(self.cp.port, self.cp.ca_file)

    def _kubeconfig(self, name: str, crt: pathlib.Path, key: pathlib.Path) -> pathlib.Path:
        path = self.dir / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": self.cp.url, "certificate-authority": str(self.cp.ca_file)}}],
            "users": [{"name": name, "user": {"client-certificate": str(crt),
                                              "client-key": str(key)}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": name}}],
            "current-context": "local"}))
        path.chmod(0o600)
        return path

    def _start_kubelet(self) -> None:
        assert self.bins is not None
        k = self.dir / "kubelet"
        k.mkdir(parents=True, exist_ok=True)
        crt, key = _sign(self.cp.pki["ca.crt"], self.cp.pki["ca.key"],
                         f"system:node:{NODE_NAME}", "system:nodes", None, k / "client")
        kubeconfig = self._kubeconfig("kubelet", crt, key)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": "127.0.0.1", "port": self.kubelet_port, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": self.healthz_port,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "makeIPTablesUtilChains": False, "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%"},
            "volumePluginDir": str(k / "volume-plugins"), "podLogsDir": str(k / "pod-logs"),
            "resolvConf": "/etc/resolv.conf", "registerNode": True,
            "nodeStatusUpdateFrequency": "4s", "syncFrequency": "10s",
            "fileCheckFrequency": "10s", "shutdownGracePeriod": "0s",
        }
        (k / "config.yaml").write_text(yaml.safe_dump(config))
        self._spawn("kubelet", [
            str(self.bins.kubelet), f"--config={k / 'config.yaml'}",
            f"--kubeconfig={kubeconfig}", f"--root-dir={k / 'root'}",
            f"--cert-dir={k / 'pki'}", f"--hostname-override={NODE_NAME}", "--v=1"])

    def _start_control_loops(self) -> None:
        assert self.bins is not None
        admin = str(self.cp.kubeconfig)
        self._spawn("kube-scheduler", [str(self.bins.kube_scheduler), f"--kubeconfig={admin}",
                                       "--secure-port=0", "--leader-elect=false", "--v=0"])
        assert self.cp.bins is not None
        self._spawn("kube-controller-manager-2", [
            str(self.cp.bins.kube_controller_manager), f"--kubeconfig={admin}",
            "--controllers=deployment-controller,replicaset-controller,"
            "root-ca-certificate-publisher-controller,node-lifecycle-controller",
            "--secure-port=0", "--leader-elect=false",
            f"--root-ca-file={self.cp.ca_file}", "--node-monitor-grace-period=20s", "--v=0"])

    def _node_ready(self) -> bool:
        import urllib.error

        try:
            node = self.cp.get_json(f"/api/v1/nodes/{NODE_NAME}")
        except (urllib.error.URLError, OSError):
            return False
        ready = any(c["type"] == "Ready" and c["status"] == "True"
                    for c in node.get("status", {}).get("conditions", []))
        taints = [t["key"] for t in node.get("spec", {}).get("taints", []) or []]
        return ready and "node.kubernetes.io/not-ready" not in taints

    def _wait(self, check: object, name: str) -> None:
        assert callable(check)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            for pname, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{pname} exited with {proc.returncode}:\n"
                                       f"{self.log_tail(pname)}")
            if check():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {READY_TIMEOUT}s:\n{self.log_tail(name)}")

    # ---------------------------------------------------------- way down
    def _drain(self) -> None:
        """Delete the node's Pods (grace 0) and wait a little for the kubelet to stop them."""
        import urllib.error

        if "kubelet" not in self.procs or self.procs["kubelet"].poll() is not None:
            return
        try:
            pods = self.cp.get_json(f"/api/v1/pods?fieldSelector=spec.nodeName={NODE_NAME}")
            for pod in pods.get("items", []):
                m = pod["metadata"]
                self._admin_request(
                    "DELETE", f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}",
                    {"gracePeriodSeconds": 0})
        except (urllib.error.URLError, OSError):
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                if not self.ctr("tasks", "ls", "-q", timeout=10).split():
                    return
            time.sleep(0.5)

    def _kill_leftover_tasks(self) -> None:
        if "containerd" not in self.procs:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            for task in self.ctr("tasks", "ls", "-q", timeout=10).split():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.ctr("tasks", "kill", "-s", "SIGKILL", task, timeout=10)
                    self.ctr("tasks", "delete", "-f", task, timeout=10)
            for c in self.ctr("containers", "ls", "-q", timeout=10).split():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.ctr("containers", "delete", c, timeout=10)


def write_oci_archive(path: pathlib.Path, name: str, files: dict[str, bytes],
                      entrypoint: list[str]) -> None:
    """A one-layer OCI image archive (what `ctr images import` reads) holding `files`."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as layer:
        for fname, data in files.items():
            info = tarfile.TarInfo(fname)
            info.size, info.mode = len(data), 0o755
            layer.addfile(info, io.BytesIO(data))
    layer_bytes = layer_buf.getvalue()

    def blob(data: bytes) -> tuple[str, bytes]:
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    layer_digest, _ = blob(layer_bytes)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Entrypoint": entrypoint},
                         "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
    config_digest, _ = blob(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": len(layer_bytes)}]}).encode()
    manifest_digest, _ = blob(manifest)
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": len(manifest),
        "annotations": {"io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}]}).encode()
    with tarfile.open(path, "w") as out:
        entries = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index}
        for data in (layer_bytes, config, manifest):
            entries[f"blobs/sha256/{hashlib.sha256(data).hexdigest()}"] = data
        for fname, data in entries.items():
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


@contextlib.contextmanager
def running(cp: ControlPlane) -> Iterator[Node]:
    node = Node(cp)
    node.start()
    try:
        yield node
    finally:
        node.stop()
