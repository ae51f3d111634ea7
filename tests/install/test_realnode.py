"""The chart on a real node: `helm install` with the image `make image` built, run by a kubelet.

What only real Pods show: the Deployment becomes Available through its real readiness probe;
the pod security context is enforced by the runtime; the RRSA projected token is mounted;
two replicas elect one leader and fail over when the leader's Pod is deleted; SIGTERM from
the kubelet ends the container within the grace period; `helm upgrade` rolls the Deployment
without a window in which Secrets stop syncing; liveness restarts a wedged (SIGSTOPped)
process. Pods reach the apiserver and the fake KMS through the node's front doors on the
bridge gateway (tests/cluster/node.py). Skipped, with the reason, only where the node or
podman cannot run at all.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.cluster import ControlPlane
from tests.cluster.node import GATEWAY, Node, unavailable
from tests.cluster.tools import save_image
from tests.fakecloud import FakeCloud
from tests.install.conftest import CHART, Helm, set_args
from tests.install.test_image_podman import podman_unusable
from tests.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

GROUP, VERSION = "alibabacloud.com", "v1alpha1"
AK_ID, AK_SECRET = "LTAI5tRealNodeKey00001", "RealNodeSecretValue000000001"
GRACE = 30  # the chart's terminationGracePeriodSeconds
RELEASE = "asm"
SELECTOR = "app.kubernetes.io/name=ack-secret-manager"


@dataclass
class Installed:
    namespace: str
    k: Helm
    values: dict[str, str]
    cloud: FakeCloud
    kube: Any

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.kube)

    def pods(self) -> list[Any]:
        items = self.core().list_namespaced_pod(self.namespace, label_selector=SELECTOR).items
        return [p for p in items if p.metadata.deletion_timestamp is None]

    def ready_pods(self) -> list[Any]:
        return [p for p in self.pods()
                if any(c.type == "Ready" and c.status == "True"
                       for c in (p.status.conditions or []))]

    def deployment(self) -> Any:
        from kubernetes import client

        apps: Any = client.AppsV1Api(self.kube)
        return apps.list_namespaced_deployment(self.namespace).items[0]

    def available(self, replicas: int) -> bool:
        d = self.deployment()
        st = d.status
        return bool(any(c.type == "Available" and c.status == "True"
                        for c in (st.conditions or []))
                    and st.ready_replicas == replicas and st.updated_replicas == replicas
                    and (st.replicas or 0) == replicas
                    and st.observed_generation == d.metadata.generation)

    def lease_holder(self) -> str:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            coordination: Any = client.CoordinationV1Api(self.kube)
            lease = coordination.read_namespaced_lease(
                self.deployment().metadata.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return ""
            raise
        # The controller's identity is "<pod name>_<random suffix>".
        return str(lease.spec.holder_identity or "").rsplit("_", 1)[0]

    def secret_value(self, name: str) -> str | None:
        from kubernetes.client.exceptions import ApiException

        try:
            s = self.core().read_namespaced_secret(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        raw = (s.data or {}).get("value")
        return base64.b64decode(raw).decode() if raw else None

    def exec_python(self, pod: str, code: str) -> str:
        return self.k.kubectl("exec", "-n", self.namespace, pod, "--", "python", "-c",
                              code).stdout

    @contextlib.contextmanager
    def following(self, pod: str) -> Iterator[dict[str, str]]:
        """`kubectl logs -f` of `pod` for the block (it ends with the container); the yielded
        dict has the log under "text" once the block is left."""
        import subprocess
        import tempfile

        assert self.k.kubeconfig
        with tempfile.NamedTemporaryFile("w+b", prefix=f"{pod}-", suffix=".log") as out:
            proc = subprocess.Popen([str(self.k.kubectl_bin), "--kubeconfig",
                                     str(self.k.kubeconfig), "logs", "-f", "-n",
                                     self.namespace, pod], stdout=out,
                                    stderr=subprocess.STDOUT)
            captured: dict[str, str] = {}
            try:
                yield captured
            finally:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                out.seek(0)
                captured["text"] = out.read().decode(errors="replace")

    def dump_stacks(self, pod: str) -> None:
        """Every thread's stack into the Pod's log (SIGQUIT: ops/stacks.py)."""
        self.k.kubectl("exec", "-n", self.namespace, pod, "--", "python", "-c",
                       "import os, signal; os.kill(1, signal.SIGQUIT)", check=False)

    def describe(self) -> str:
        out = self.k.kubectl("get", "pods,deploy,rs,events", "-n", self.namespace, "-o", "wide",
                             check=False)
        # The Pods' own lines before their stacks: a dump is ~400 lines per Pod, and a tail
        # taken after it held nothing else (a failed rollout's new leader said nothing).
        said = self.k.kubectl("logs", "-n", self.namespace, "-l", SELECTOR, "--tail=150",
                              "--prefix", check=False)
        for pod in self.pods():
            self.dump_stacks(pod.metadata.name)
        stacks = self.k.kubectl("logs", "-n", self.namespace, "-l", SELECTOR, "--tail=400",
                                "--prefix", check=False)
        # Restarts first: CI keeps the head and the tail of a long failure, not its middle.
        return (self._restarts() + out.stdout + out.stderr + stacks.stdout[-40000:]
                + "\n--- the Pods' last lines before their stacks:\n" + said.stdout[-30000:])

    def _restarts(self) -> str:
        """Why a container restarted (its last state) and the end of its previous log."""
        said = []
        for pod in self.pods():
            for status in pod.status.container_statuses or []:
                if not status.restart_count:
                    continue
                last = status.last_state.terminated if status.last_state else None
                why = f"{last.reason} exit {last.exit_code}" if last else "?"
                said.append(f"--- {pod.metadata.name} restarted {status.restart_count}x; "
                            f"last: {why}")
                previous = self.k.kubectl("logs", "-n", self.namespace, pod.metadata.name,
                                          "--previous", "--tail=60", check=False)
                # Its warnings and errors first (why it stopped), then the end of its log.
                lines = previous.stdout.splitlines()
                said += [line for line in lines if '"level":"info"' not in line][-20:]
                said.append("--- its previous log, last lines:")
                said.append(previous.stdout[-6000:] + previous.stderr[-2000:])
        return "\n".join(said) + "\n"


@pytest.fixture(scope="module")
def node(cluster: ControlPlane) -> Iterator[Node]:
    reason = unavailable() or podman_unusable()
    if reason:
        pytest.skip(f"real-node tests: {reason}")
    n = Node(cluster)
    n.start()
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture(scope="module")
def image_ref(node: Node) -> str:
    ref, archive = save_image("docker-archive")
    node.import_image(archive)
    names = node.ctr("images", "ls", "-q").split()
    assert ref in names, f"{ref} not among the node's images after the import: {names}"
    return ref


@pytest.fixture(scope="module")
def installed(node: Node, image_ref: str, cluster: ControlPlane, kube: Any,
              tools: Helm) -> Iterator[Installed]:
    from kubernetes import client

    k = Helm(tools.helm_bin, tools.kubectl_bin, cluster.kubeconfig)
    core: Any = client.CoreV1Api(kube)
    ns = f"t-realnode-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns}})
    repo, tag = image_ref.rsplit(":", 1)
    with FakeCloud() as cloud:
        cloud.add_access_key(AK_ID, AK_SECRET, "app")
        kms_port = int(cloud.kms_endpoint.rsplit(":", 1)[1])
        values = {
            "replicaCount": "2", "image.repository": repo, "image.tag": tag,
            "image.pullPolicy": "Never", "rrsa.enable": "true",
            "command.kmsEndpoint": f"http://{GATEWAY}:{node.forward(kms_port)}",
            "command.pollingInterval": "2s",
            # No kube-proxy on the test node: the apiserver's front door on the bridge.
            "env.KUBERNETES_SERVICE_HOST": GATEWAY,
            "env.KUBERNETES_SERVICE_PORT": str(node.apiserver_port),
            "env.ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
            # Every Pod's API traffic here passes a TLS front door in this test process
            # (tests/cluster/node.py). On a loaded 2-core CI machine it once held a new
            # leader's Lease reads for over 8 s, past the default 10 s renew deadline (the
            # leader stepped down: a 28 s gap). The Lease's timing is the operator's to fit
            # the API server's latency; this node's gets room. Hand-overs on SIGTERM release
            # the Lease and do not wait for it.
            "command.extraArgs": "{--lease-duration=40s,--renew-deadline=30s}",
        }
        inst = Installed(ns, k, values, cloud, kube)
        try:
            k.helm("install", RELEASE, CHART, "-n", ns, *set_args(values))
            yield inst
        finally:
            k.helm("uninstall", RELEASE, "-n", ns, "--ignore-not-found", "--wait",
                   "--timeout", "60s", check=False, timeout=90)
            core.delete_namespace(ns)


def create_store_and_secret(inst: Installed, name: str, key: str) -> None:
    from kubernetes import client

    objs: Any = client.CustomObjectsApi(inst.kube)
    ak = f"{name}-ak"
    inst.core().create_namespaced_secret(inst.namespace, {
        "metadata": {"name": ak}, "stringData": {"id": AK_ID, "secret": AK_SECRET}})
    objs.create_namespaced_custom_object(GROUP, VERSION, inst.namespace, "secretstores", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SecretStore", "metadata": {"name": name},
        "spec": {"KMS": {"KMSAuth": {"accessKey": {"name": ak, "key": "id"},
                                     "accessKeySecret": {"name": ak, "key": "secret"}}}}})
    objs.create_namespaced_custom_object(GROUP, VERSION, inst.namespace, "externalsecrets", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ExternalSecret", "metadata": {"name": name},
        "spec": {"data": [{"key": key, "name": "value", "secretStoreRef": {"name": name}}]}})


def wait_or_describe(inst: Installed, check: Any, timeout: float, what: str) -> Any:
    try:
        return wait_for(check, timeout=timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{inst.describe()}") from None


def test_deployment_available_through_readiness_and_syncs(installed: Installed) -> None:
    inst = installed
    wait_or_describe(inst, lambda: inst.available(2), 120, "Deployment Available, 2/2 ready")
    inst.cloud.put_secret("node-db", "from-a-real-pod")
    create_store_and_secret(inst, "db", "node-db")
    assert wait_or_describe(inst, lambda: inst.secret_value("db"), 60,
                            "Secret db") == "from-a-real-pod"
    inst.cloud.put_secret("node-db", "rotated-once")
    wait_or_describe(inst, lambda: inst.secret_value("db") == "rotated-once", 30,
                     "rotation reaches Secret db")
    logs = inst.k.kubectl("logs", "-n", inst.namespace, "-l", SELECTOR, "--tail=-1").stdout
    assert "from-a-real-pod" not in logs and "rotated-once" not in logs


def test_pod_security_context_is_enforced(installed: Installed) -> None:
    inst = installed
    wait_or_describe(inst, lambda: inst.available(2), 120, "Deployment Available")
    pod = inst.ready_pods()[0].metadata.name
    code = ("import json, os\n"
            "st = dict(l.split(':\\t', 1) for l in open('/proc/1/status').read().splitlines())\n"
            "try:\n"
            "    open('/opt/probe', 'w')\n"
            "    ro = False\n"
            "except OSError:\n"
            "    ro = True\n"
            "tok = open('/var/run/secrets/tokens/ack-secret-manager').read().split('.')[1]\n"
            "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'ro': ro,\n"
            "  'cap_eff': st['CapEff'].strip(), 'cap_bnd': st['CapBnd'].strip(),\n"
            "  'nnp': st['NoNewPrivs'].strip(), 'seccomp': st['Seccomp'].strip(),\n"
            "  'uid1': st['Uid'].split()[0], 'token': tok,\n"
            "  'oidc': os.environ.get('ALICLOUD_OIDC_TOKEN_FILE_PATH')}))\n")
    got = json.loads(inst.exec_python(pod, code))
    assert got["uid"] == 65532 and got["gid"] == 65532 and got["uid1"] == "65532", got
    assert got["ro"] is True, "the root filesystem is writable"
    assert int(got["cap_eff"], 16) == 0 and int(got["cap_bnd"], 16) == 0, got
    assert got["nnp"] == "1", "allowPrivilegeEscalation is not false"
    assert got["seccomp"] == "2", "not running under a seccomp filter (RuntimeDefault)"
    # The RRSA token: projected by the kubelet, audience sts.aliyuncs.com, this Pod's SA.
    assert got["oidc"] == "/var/run/secrets/tokens/ack-secret-manager"
    claims = json.loads(base64.urlsafe_b64decode(got["token"] + "=" * (-len(got["token"]) % 4)))
    assert claims["aud"] == ["sts.aliyuncs.com"], claims
    assert claims["kubernetes.io"]["pod"]["name"] == pod
    assert claims["sub"].startswith(f"system:serviceaccount:{inst.namespace}:")


def test_one_leader_fails_over_and_sigterm_ends_within_grace(installed: Installed) -> None:
    inst = installed
    wait_or_describe(inst, lambda: inst.available(2), 120, "Deployment Available")
    names = {p.metadata.name for p in inst.pods()}
    leader = wait_or_describe(inst, lambda: inst.lease_holder() in names and inst.lease_holder(),
                              30, "one of the two Pods holds the Lease")
    dumped = False

    def gone() -> bool:
        from kubernetes.client.exceptions import ApiException

        nonlocal dumped
        try:
            inst.core().read_namespaced_pod(leader, inst.namespace)
        except ApiException as exc:
            return bool(exc.status == 404)
        if not dumped and time.monotonic() - start > GRACE - 8:  # slow: show where it is
            inst.dump_stacks(leader)
            dumped = True
        return False

    with inst.following(leader) as captured:
        start = time.monotonic()
        inst.core().delete_namespaced_pod(leader, inst.namespace)
        wait_or_describe(inst, gone, GRACE + 30, f"Pod {leader} gone")
        took = time.monotonic() - start
    stop_log = captured["text"]
    tail = stop_log[stop_log.find("received signal"):] if "received signal" in stop_log \
        else stop_log[-20000:]
    assert took < GRACE, (f"the kubelet needed {took:.1f}s to stop {leader}; its log from "
                          f"SIGTERM on:\n{tail[-30000:]}")
    assert "stopped" in tail, f"{leader} did not log its clean stop:\n{tail[-30000:]}"
    new = wait_or_describe(inst, lambda: (h := inst.lease_holder()) not in ("", leader) and h,
                           60, "another Pod takes the Lease")
    assert new != leader
    inst.cloud.put_secret("node-db", "after-failover")
    wait_or_describe(inst, lambda: inst.secret_value("db") == "after-failover", 30,
                     "the new leader syncs")
    wait_or_describe(inst, lambda: inst.available(2), 120, "Deployment back to 2/2")


def test_helm_upgrade_rolls_without_a_sync_gap(installed: Installed) -> None:
    inst = installed
    wait_or_describe(inst, lambda: inst.available(2), 120, "Deployment Available")
    before = {p.metadata.name for p in inst.pods()}
    values = {**inst.values, "podAnnotations.rollout": uuid.uuid4().hex[:8]}
    worst, slowest = 0.0, ""
    with contextlib.ExitStack() as stack:
        logs = {pod: stack.enter_context(inst.following(pod)) for pod in sorted(before)}
        inst.k.helm("upgrade", RELEASE, CHART, "-n", inst.namespace, *set_args(values))
        deadline = time.monotonic() + 180
        n = 0
        while time.monotonic() < deadline:
            n += 1
            value = f"during-upgrade-{n}"
            inst.cloud.put_secret("node-db", value)
            t = time.monotonic()
            wait_or_describe(inst, lambda v=value: inst.secret_value("db") == v, 30,
                             f"value {n} synced during the rollout")
            if time.monotonic() - t > worst:
                worst, slowest = time.monotonic() - t, value
            pods = {p.metadata.name for p in inst.pods()}
            if not pods & before and inst.available(2):
                break
    assert inst.available(2), inst.describe()
    assert not {p.metadata.name for p in inst.pods()} & before, "the Deployment did not roll"
    # Polling is every 2s; a leader handover (Lease released on SIGTERM) adds a few seconds.
    old = "\n".join(f"--- {pod}\n{c['text'][-8000:]}" for pod, c in logs.items())
    assert worst < 15, (f"a KMS change ({slowest}) took {worst:.1f}s to reach the Secret during "
                        f"the rollout; {inst.describe()}\nthe old Pods' logs:\n{old}")


def test_rrsa_token_is_used_against_the_fake_sts(node: Node, image_ref: str,
                                                 cluster: ControlPlane, kube: Any,
                                                 tools: Helm) -> None:
    """rrsa.enable: the kubelet projects the token, the controller exchanges it at (fake) STS
    with AssumeRoleWithOIDC and reads KMS as that role. The Pod trusts the STS front door
    through SSL_CERT_FILE = its ServiceAccount's ca.crt (the front door's certificate is
    signed by the cluster CA); the fake STS verifies the token against the apiserver's JWKS."""
    from kubernetes import client

    from tests.fakecloud import DEFAULT_ACCOUNT_ID, Trust

    k = Helm(tools.helm_bin, tools.kubectl_bin, cluster.kubeconfig)
    ns = f"t-rrsa-{uuid.uuid4().hex[:5]}"
    provider = f"acs:ram::{DEFAULT_ACCOUNT_ID}:oidc-provider/ack-rrsa-realnode"
    role = f"acs:ram::{DEFAULT_ACCOUNT_ID}:role/realnode-{ns}"
    repo, tag = image_ref.rsplit(":", 1)
    with FakeCloud() as cloud:
        inst = Installed(ns, k, {}, cloud, kube)
        inst.core().create_namespace({"metadata": {"name": ns}})
        cloud.set_oidc_jwks(provider, cluster.jwks, issuer=cluster.issuer)
        sts_port = int(cloud.sts_endpoint.rsplit(":", 1)[1])
        kms_port = int(cloud.kms_endpoint.rsplit(":", 1)[1])
        values = {
            "image.repository": repo, "image.tag": tag, "image.pullPolicy": "Never",
            "rrsa.enable": "true", "command.pollingInterval": "2s",
            "command.kmsEndpoint": f"http://{GATEWAY}:{node.forward(kms_port)}",
            "command.extraArgs[0]":
                f"--sts-endpoint={GATEWAY}:{node.tls_front_door(sts_port, cloud.ca_file)}",
            "env.KUBERNETES_SERVICE_HOST": GATEWAY,
            "env.KUBERNETES_SERVICE_PORT": str(node.apiserver_port),
            "env.ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
            "env.ALICLOUD_ROLE_ARN": role, "env.ALICLOUD_OIDC_PROVIDER_ARN": provider,
            "env.SSL_CERT_FILE": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        }
        try:
            k.helm("install", RELEASE, CHART, "-n", ns, *set_args(values))
            sa = inst.deployment().spec.template.spec.service_account_name
            cloud.add_role(role, trust=Trust(oidc_provider_arn=provider,
                                             subjects=(f"system:serviceaccount:{ns}:{sa}",)))
            cloud.put_secret("rrsa-db", "read-as-the-rrsa-role")
            objs: Any = client.CustomObjectsApi(kube)
            objs.create_namespaced_custom_object(GROUP, VERSION, ns, "externalsecrets", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "ExternalSecret",
                "metadata": {"name": "db"},
                "spec": {"data": [{"key": "rrsa-db", "name": "value"}]}})
            assert wait_or_describe(inst, lambda: inst.secret_value("db"), 90,
                                    "Secret db via RRSA") == "read-as-the-rrsa-role"
            assert cloud.calls("AssumeRoleWithOIDC", identity=role) >= 1
            assert cloud.calls("GetSecretValue", identity=role) >= 1
        finally:
            k.helm("uninstall", RELEASE, "-n", ns, "--ignore-not-found", "--wait",
                   "--timeout", "60s", check=False, timeout=90)
            inst.core().delete_namespace(ns)


def test_liveness_restarts_a_wedged_process(installed: Installed, node: Node) -> None:
    """SIGSTOP the controller inside one Pod: /healthz stops answering, the kubelet's
    liveness probe (3 failures x 20s) restarts the container. Runs last: slow (~90s)."""
    inst = installed
    wait_or_describe(inst, lambda: inst.available(2), 120, "Deployment Available")
    pod = inst.ready_pods()[0]
    cid = pod.status.container_statuses[0].container_id.split("://", 1)[1]
    restarts = pod.status.container_statuses[0].restart_count
    pid = task_pid(node, cid)
    os.kill(pid, signal.SIGSTOP)

    def restarted() -> bool:
        p = inst.core().read_namespaced_pod(pod.metadata.name, inst.namespace)
        return bool(p.status.container_statuses[0].restart_count > restarts)

    try:
        wait_or_describe(inst, restarted, 150, f"liveness restart of {pod.metadata.name}")
    finally:
        resume(pid)
    events = inst.k.kubectl("get", "events", "-n", inst.namespace, "--field-selector",
                            f"involvedObject.name={pod.metadata.name}").stdout
    assert "Liveness probe failed" in events, events[-3000:]
    wait_or_describe(inst, lambda: inst.available(2), 120, "Deployment back to 2/2")


def task_pid(node: Node, container_id: str) -> int:
    """The host PID of a container's init process, from containerd's task list."""
    for line in node.ctr("tasks", "ls").splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == container_id:
            return int(fields[1])
    raise AssertionError(f"container {container_id} has no running task")


def resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
