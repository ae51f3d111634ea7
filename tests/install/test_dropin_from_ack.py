"""A Deployment rendered by ack-secret-manager's own chart, at each released version, runs
this controller when only the image changes (docs/install.md, "Switching from
ack-secret-manager by changing only the image").

The container `command:` lines of the original chart are facts recorded below per version
(from its history: charts/ack-secret-manager/templates/deployment.yaml); the v0.6 lines are
assembled from that version's flags (cmd/manager/main.go) and the value keys of its chart
(tests/install/values/marketplace-v0.6.yaml), its template not being at hand. Each is put
into a one-template chart, rendered by `helm template` with that version's default values
and with the marketplace values, and the rendered command is started against the test
control plane until /readyz answers 200: caches synced, ready to work.
"""

from __future__ import annotations

import http.client
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from controller import settings
from tests.cluster import ControlPlane, ensure_tools
from tests.cluster.controlplane import free_port
from tests.cluster.tools import REPO
from tests.install.conftest import VALUES_DIR, Helm, run
from tests.waiting import wait_for

pytestmark = pytest.mark.cluster


def _lines(*flags: str) -> list[str]:
    """`--flag={{ .Values.command.key }}` lines; "flag:key" where the key is not camelCase
    of the flag."""
    out = []
    for spec in flags:
        flag, _, key = spec.partition(":")
        if not key:
            head, *rest = flag.split("-")
            key = head + "".join(part.title() for part in rest)
        out.append(f"--{flag}={{{{ .Values.command.{key} }}}}")
    return out


# version -> (command lines after `ack-secret-manager`, the chart's default `command` values)
COMMON_2020 = {"backend": "alicloud-kms", "reconcilePeriod": "5s", "reconcileCount": 1,
               "tokenRotationPeriod": "120s", "disablePolling": False,
               "pollingInterval": "120s"}
VERSIONS: dict[str, tuple[list[str], dict[str, Any]]] = {
    # chart 1.0.0 (2020): leader election flags, region defaulting to cn-hangzhou
    "v0.1": (_lines("backend", "enable-leader-election", "leader-election-namespace",
                    "reconcile-period", "reconcile-count", "token-rotation-period",
                    "polling-interval", "disable-polling", "region"),
             {**COMMON_2020, "region": "cn-hangzhou", "enableLeaderElection": True,
              "leaderElectionNamespace": "kube-system"}),
    # chart 0.3.0 as first published (2022-05): an empty region
    "v0.3.0-2022-05": (_lines("backend", "enable-leader-election", "leader-election-namespace",
                              "reconcile-period", "reconcile-count", "token-rotation-period",
                              "polling-interval", "disable-polling", "region"),
                       {**COMMON_2020, "region": None, "enableLeaderElection": True,
                        "leaderElectionNamespace": "kube-system"}),
    # chart 0.3.0 after leader-for-life (2022-12): the leader election flags went away
    "v0.3.0": (_lines("backend", "reconcile-period", "reconcile-count",
                      "token-rotation-period", "polling-interval", "disable-polling",
                      "region"),
               {**COMMON_2020, "region": None}),
    "v0.5.0": (_lines("backend", "token-rotation-period", "reconcile-period",
                      "reconcile-count", "polling-interval", "disable-polling", "region"),
               {**COMMON_2020, "region": None}),
    "v0.5.5": (_lines("token-rotation-period", "reconcile-period", "reconcile-count",
                      "polling-interval", "disable-polling", "region",
                      "max-concurrent-kms-secret-pulls", "max-concurrent-oos-secret-pulls"),
               {"reconcilePeriod": "5s", "reconcileCount": 1, "tokenRotationPeriod": "120s",
                "region": None, "disablePolling": False, "pollingInterval": "120s",
                "maxConcurrentKmsSecretPulls": 10, "maxConcurrentOosSecretPulls": 10}),
    "v0.5.8": (_lines("token-rotation-period", "reconcile-period", "reconcile-count",
                      "polling-interval", "disable-polling", "region", "kms-endpoint",
                      "max-concurrent-kms-secret-pulls", "max-concurrent-oos-secret-pulls",
                      "enable-worker-role"),
               {"reconcilePeriod": "5s", "reconcileCount": 1, "tokenRotationPeriod": "120s",
                "region": None, "kmsEndpoint": None, "disablePolling": False,
                "pollingInterval": "120s", "maxConcurrentKmsSecretPulls": 10,
                "maxConcurrentOosSecretPulls": 10, "enableWorkerRole": True}),
    "v0.6": (_lines("token-rotation-period", "reconcile-period", "reconcile-count",
                    "polling-interval", "disable-polling", "region", "kms-endpoint",
                    "max-concurrent-secret-pulls", "max-concurrent-kms-secret-pulls",
                    "max-concurrent-oos-secret-pulls", "enable-worker-role",
                    "cleanup-secret-on-failure", "process-cluster-secret-store",
                    "process-cluster-external-secret", "enable-cross-namespace-secret-store",
                    "enable-cross-namespace-auth-ref", "uid:aliuid", "cluster-id:clusterId",
                    "watch-namespaces", "exclude-namespaces"),
             {"reconcilePeriod": "5s", "reconcileCount": 1, "tokenRotationPeriod": "120s",
              "region": None, "kmsEndpoint": None, "disablePolling": False,
              "pollingInterval": "120s", "maxConcurrentSecretPulls": 10,
              "maxConcurrentKmsSecretPulls": 10, "maxConcurrentOosSecretPulls": 10,
              "enableWorkerRole": False, "cleanupSecretOnFailure": False,
              "processClusterSecretStore": True, "processClusterExternalSecret": True,
              "enableCrossNamespaceSecretStore": False, "enableCrossNamespaceAuthRef": False,
              "aliuid": "", "clusterId": "", "watchNamespaces": "",
              "excludeNamespaces": ""}),
}
MARKETPLACE = {"v0.1": "v0.3.0", "v0.3.0-2022-05": "v0.3.0", "v0.3.0": "v0.3.0",
               "v0.5.0": "v0.3.0", "v0.5.5": "v0.5.8", "v0.5.8": "v0.5.8", "v0.6": "v0.6"}
CASES = [(v, which) for v in VERSIONS for which in ("defaults", "marketplace")]

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: ack-secret-manager
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels: {app: ack-secret-manager}
  template:
    metadata:
      labels: {app: ack-secret-manager}
    spec:
      containers:
        - name: ack-secret-manager
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
          command:
            - ack-secret-manager
%s
          env:
            - name: WATCH_NAMESPACE
              value: {{ .Values.env.WATCH_NAMESPACE | quote }}
"""


def render(tools: Helm, tmp: pathlib.Path, version: str, which: str) -> dict[str, Any]:
    """The container of the Deployment the original chart renders."""
    lines, defaults = VERSIONS[version]
    chart = tmp / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "v2", "name": "ack-secret-manager", "version": "0.0.1"}))
    (chart / "values.yaml").write_text(yaml.safe_dump({
        "command": defaults, "env": {"WATCH_NAMESPACE": None}, "replicaCount": 2,
        "image": {"repository": "registry.example.com/ack-secret-manager", "tag": "swapped"}}))
    (chart / "templates/deployment.yaml").write_text(
        DEPLOYMENT % "\n".join(f"            - {line}" for line in lines))
    extra = ["-f", str(VALUES_DIR / f"marketplace-{MARKETPLACE[version]}.yaml")] \
        if which == "marketplace" else []
    out = run([tools.helm_bin, "template", "asm", chart, *extra]).stdout
    dep = next(d for d in yaml.safe_load_all(out) if d and d.get("kind") == "Deployment")
    return dict(dep["spec"]["template"]["spec"]["containers"][0])


@pytest.fixture(scope="module")
def crds(cluster: ControlPlane) -> None:
    run([ensure_tools().kubectl, "--kubeconfig", cluster.kubeconfig, "apply",
         "--server-side", "-f", REPO / "helm/ack-secret-manager/crds"])
    run([ensure_tools().kubectl, "--kubeconfig", cluster.kubeconfig, "wait",
         "--for=condition=Established", "--timeout=60s",
         "crd/externalsecrets.alibabacloud.com", "crd/secretstores.alibabacloud.com",
         "crd/clustersecretstores.alibabacloud.com"])


@pytest.fixture
def swapped(cluster: ControlPlane, crds: None, tmp_path: pathlib.Path,
            ) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@pytest.mark.parametrize(("version", "which"), CASES, ids=[f"{v}-{w}" for v, w in CASES])
def test_the_originals_deployment_runs_with_only_the_image_changed(
    tools: Helm, cluster: ControlPlane, swapped: list[subprocess.Popen[bytes]],
    tmp_path: pathlib.Path, version: str, which: str,
) -> None:
    container = render(tools, tmp_path, version, which)
    command = list(container["command"])
    assert command[0] == "ack-secret-manager"  # on the image's PATH
    env = {e["name"]: e.get("value") or "" for e in container.get("env", [])}
    # What the Deployment's arguments mean here, before any process starts.
    cfg = settings.load(command[1:], env)
    assert cfg.polling_interval == 120.0 and cfg.disable_polling is False
    v06_marketplace = (version, which) == ("v0.6", "marketplace")
    assert cfg.region == ("cn-beijing" if v06_marketplace else "cn-hangzhou")
    # Rendered true by v0.5.8 and false by v0.6; absent before: the original's default, true.
    assert cfg.enable_worker_role is (version != "v0.6")
    assert cfg.leader_elect is (version in ("v0.1", "v0.3.0-2022-05"))
    assert cfg.exclude_namespaces == (("kube-public",) if v06_marketplace else ())
    # Started as the Pod would start it; out of cluster, so a kubeconfig, and probes on
    # loopback only (the Pod's defaults bind every interface).
    port = free_port()
    log = tmp_path / "controller.log"
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("ALIBABA_CLOUD", "ALICLOUD", "ACCESS_KEY", "SECRET_ACCESS"))
               and "proxy" not in k.lower()}
    environ.update(env, ALIBABA_CLOUD_ECS_METADATA_DISABLED="true")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller", *command[1:], "--kubeconfig",
             str(cluster.kubeconfig), "--metrics-bind-address=0",
             f"--health-probe-bind-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, env=environ, cwd=REPO)
    swapped.append(proc)
    wait_for(lambda: proc.poll() is not None or _ready(port), timeout=60,
             what=f"{version} ({which}) ready")
    assert proc.poll() is None, log.read_text()[-3000:]
    assert _ready(port)
