"""Least privilege, proven from the apiserver's audit log.

A control plane of this module's own runs kube-apiserver with an audit policy (every request
at Metadata level). The chart is installed, and the controller runs as the chart's
ServiceAccount with the rendered args (as tests/install/test_e2e.py does) through a workload
that takes every path that talks to the API: an AccessKey SecretStore, a ClusterSecretStore
whose credentials live in another namespace, per-ServiceAccount RRSA (token minting),
ack-secret-manager's finalizer, status (of ExternalSecrets, and every store's Ready
condition), Events, a ClusterExternalSecret (its ExternalSecret created, then renamed: the old
one deleted), leader election with a Lease, and a clean stop that releases it. Then every
(verb, resource, subresource, namespace) the ServiceAccount used is read from the audit log
and compared with what the chart granted: the test fails when the chart grants a verb that
was never used, or when the controller used (or was refused) one that is not granted. Both
RBAC layouts are checked: cluster-wide, and Roles in the watched namespaces
(`command.watchNamespaces`).

A server-side apply that creates an object is logged as `patch` (answer 201) but is
authorized as `create` too, so such a patch counts as both.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.cluster import ControlPlane, free_port
from tests.cluster.tools import REPO
from tests.fakecloud import DEFAULT_ACCOUNT_ID, FakeCloud, Trust
from tests.install.conftest import CHART, Helm, set_args
from tests.install.test_e2e import (
    local_args,
    pod_env,
    rendered_deployment,
    service_account_kubeconfig,
)
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not importlib.util.find_spec("controller.app"),
                       reason="engine not yet merged"),
]

GROUP, VERSION = "alibabacloud.com", "v1alpha1"
AK_ID, AK_SECRET = "LTAI5tAuditKey000001", "AuditSecretValue00000000001"
PROVIDER = f"acs:ram::{DEFAULT_ACCOUNT_ID}:oidc-provider/ack-rrsa-local"
ROLE_ANNOTATION = "ack.alibabacloud.com/role-arn"
ACK_FINALIZER = "finalizer.ack.secrets-manager.alibabacloud.com"
POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
"""
CRDS = REPO / "helm/ack-secret-manager/crds"

Use = tuple[str, str, str, str, str]  # verb, apiGroup, resource[/subresource], namespace, name


@pytest.fixture(scope="module")
def audited() -> Iterator[ControlPlane]:
    cp = ControlPlane(crds=[CRDS], with_controller_manager=False,
                      files={"audit-policy.yaml": POLICY},
                      extra_apiserver_args=["--audit-policy-file={dir}/audit-policy.yaml",
                                            "--audit-log-path={dir}/audit.log"])
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def admin(audited: ControlPlane) -> Iterator[Any]:
    from kubernetes import config

    api = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(audited.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@dataclass
class Grant:
    verb: str
    group: str
    resource: str
    namespace: str  # "" for a ClusterRole: every namespace
    names: tuple[str, ...]

    def covers(self, use: Use) -> bool:
        verb, group, resource, namespace, name = use
        return (verb == self.verb and group == self.group and resource == self.resource
                and self.namespace in ("", namespace)
                and (not self.names or name in self.names))


def grants(manifest: list[dict[str, Any]], subject: dict[str, str]) -> list[Grant]:
    """Every (verb, group, resource, scope) the rendered RBAC gives `subject`."""
    roles = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
             for o in manifest if o["kind"] in ("ClusterRole", "Role")}
    out: list[Grant] = []
    for binding in manifest:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if not any(s.get("name") == subject["name"] and s.get("namespace") ==
                   subject["namespace"] for s in binding["subjects"]):
            continue
        scope = binding["metadata"].get("namespace", "")
        ref = binding["roleRef"]
        role = roles[(ref["kind"], scope if ref["kind"] == "Role" else "", ref["name"])]
        for rule in role["rules"]:
            for verb in rule["verbs"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        out.append(Grant(verb, group, resource, scope,
                                         tuple(rule.get("resourceNames") or ())))
    return out


def audit_uses(log: pathlib.Path, username: str) -> tuple[set[Use], set[Use]]:
    """(requests answered, requests refused with 403) of `username`, from the audit log."""
    used: set[Use] = set()
    refused: set[Use] = set()
    for line in log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef")
        if event.get("user", {}).get("username") != username or not ref:
            continue
        resource = ref.get("resource", "")
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        code = int(event.get("responseStatus", {}).get("code", 0))
        verbs = [event["verb"]]
        if event["verb"] == "patch" and code == 201:
            verbs.append("create")  # server-side apply creating the object
        for verb in verbs:
            use = (verb, ref.get("apiGroup", ""), resource, ref.get("namespace", ""),
                   ref.get("name", ""))
            (refused if code == 403 else used).add(use)
    return used, refused


@dataclass
class Setup:
    release_ns: str
    workload: str
    credentials: str


def create_workload(admin: Any, cloud: FakeCloud, cluster: ControlPlane, s: Setup) -> None:
    from kubernetes import client

    core: Any = client.CoreV1Api(admin)
    objs: Any = client.CustomObjectsApi(admin)
    cloud.put_secret("db-password", "audit-pw")
    cloud.set_oidc_jwks(PROVIDER, cluster.jwks, issuer=cluster.issuer)
    for ns in (s.workload, s.credentials):
        role = f"acs:ram::{DEFAULT_ACCOUNT_ID}:role/audit-{ns}"
        cloud.add_role(role, trust=Trust(oidc_provider_arn=PROVIDER,
                                         subjects=(f"system:serviceaccount:{ns}:app",)))
        core.create_namespaced_service_account(ns, {"metadata": {
            "name": "app", "annotations": {ROLE_ANNOTATION: role}}})
        core.create_namespaced_secret(ns, {"metadata": {"name": "cred"},
                                           "stringData": {"id": AK_ID, "secret": AK_SECRET}})

    def create(plural: str, body: dict[str, Any]) -> None:
        objs.create_namespaced_custom_object(GROUP, VERSION, s.workload, plural,
                                             {"apiVersion": f"{GROUP}/{VERSION}", **body})

    ak = {"accessKey": {"name": "cred", "key": "id"},
          "accessKeySecret": {"name": "cred", "key": "secret"}}
    create("secretstores", {"kind": "SecretStore", "metadata": {"name": "ak"},
                            "spec": {"KMS": {"KMSAuth": ak}}})
    create("secretstores", {"kind": "SecretStore", "metadata": {"name": "sa"},
                            "spec": {"KMS": {"KMSAuth": {"serviceAccountRef": {"name": "app"}}}}})
    objs.create_cluster_custom_object(GROUP, VERSION, "clustersecretstores", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterSecretStore",
        "metadata": {"name": f"shared-{s.workload}"},
        "spec": {"KMS": {"KMSAuth": {
            "accessKey": {"name": "cred", "namespace": s.credentials, "key": "id"},
            "accessKeySecret": {"name": "cred", "namespace": s.credentials, "key": "secret"}}},
            "conditions": [{"namespaces": [s.workload]}]}})
    objs.create_cluster_custom_object(GROUP, VERSION, "clustersecretstores", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterSecretStore",
        "metadata": {"name": f"shared-sa-{s.workload}"},
        "spec": {"KMS": {"KMSAuth": {"serviceAccountRef": {"name": "app",
                                                           "namespace": s.credentials}}},
                 "conditions": [{"namespaces": [s.workload]}]}})
    refs = {"ak": {"name": "ak"}, "sa": {"name": "sa"},
            "shared": {"name": f"shared-{s.workload}", "kind": "ClusterSecretStore"},
            "shared-sa": {"name": f"shared-sa-{s.workload}", "kind": "ClusterSecretStore"}}
    for name, ref in refs.items():
        create("externalsecrets", {"kind": "ExternalSecret", "metadata": {"name": name},
                                   "spec": {"data": [{"key": "db-password", "name": "pw",
                                                      "secretStoreRef": ref}]}})
    # templateFrom: a ConfigMap of the workload namespace (the "get configmaps" grant).
    core.create_namespaced_config_map(s.workload, {
        "metadata": {"name": "templates"}, "data": {"dsn": "db://{{ .pw }}"}})
    create("externalsecrets", {"kind": "ExternalSecret", "metadata": {"name": "templated"},
                               "spec": {"data": [{"key": "db-password", "name": "pw",
                                                  "secretStoreRef": refs["ak"]}],
                                        "target": {"template": {"templateFrom": [{
                                            "configMap": {"name": "templates",
                                                          "items": [{"key": "dsn"}]}}]}}}})
    create("externalsecrets", {"kind": "ExternalSecret", "metadata": {
        "name": "legacy", "finalizers": [ACK_FINALIZER]},
        "spec": {"data": [{"key": "db-password", "name": "pw", "secretStoreRef": refs["ak"]}]}})
    objs.create_cluster_custom_object(GROUP, VERSION, "clusterexternalsecrets", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterExternalSecret",
        "metadata": {"name": f"stamped-{s.workload}"},
        "spec": {"externalSecretName": "from-ces",
                 "conditions": [{"namespaces": [s.workload]}],
                 "externalSecretSpec": {"data": [{"key": "db-password", "name": "pw",
                                                  "secretStoreRef": refs["ak"]}]}}})


def cluster_external_secret_renamed(admin: Any, s: Setup) -> None:
    """The ClusterExternalSecret's ExternalSecret exists; rename it, so the old one is deleted
    (the delete verb) and a new one created."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    objs: Any = client.CustomObjectsApi(admin)

    def exists(name: str) -> bool:
        try:
            objs.get_namespaced_custom_object(GROUP, VERSION, s.workload, "externalsecrets",
                                              name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    wait_for(lambda: exists("from-ces"), what="the ClusterExternalSecret's ExternalSecret")
    objs.patch_cluster_custom_object(GROUP, VERSION, "clusterexternalsecrets",
                                     f"stamped-{s.workload}",
                                     {"spec": {"externalSecretName": "from-ces-2"}})
    wait_for(lambda: exists("from-ces-2") and not exists("from-ces"),
             what="the renamed ExternalSecret, the old one deleted")


def workload_done(admin: Any, s: Setup) -> bool:
    from kubernetes import client

    objs: Any = client.CustomObjectsApi(admin)
    # Every store's Ready condition written (the secretstores/status and
    # clustersecretstores/status grants).
    stores = [objs.get_namespaced_custom_object(GROUP, VERSION, s.workload, "secretstores",
                                                name) for name in ("ak", "sa")]
    stores += [objs.get_cluster_custom_object(GROUP, VERSION, "clustersecretstores", name)
               for name in (f"shared-{s.workload}", f"shared-sa-{s.workload}")]
    for store in stores:
        conditions = (store.get("status") or {}).get("conditions") or []
        if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            return False
    for name in ("ak", "sa", "shared", "shared-sa", "legacy", "templated"):
        es = objs.get_namespaced_custom_object(GROUP, VERSION, s.workload, "externalsecrets",
                                               name)
        conditions = (es.get("status") or {}).get("conditions") or []
        if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            return False
        if ACK_FINALIZER in (es["metadata"].get("finalizers") or []):
            return False
    return True


def run_controller(k: Helm, admin: Any, cluster: ControlPlane, cloud: FakeCloud, s: Setup,
                   workdir: pathlib.Path) -> tuple[subprocess.Popen[bytes], pathlib.Path]:
    from kubernetes import client

    core: Any = client.CoreV1Api(admin)
    dep = rendered_deployment(k, "asm", s.release_ns)
    pod = dep["spec"]["template"]["spec"]
    token = core.create_namespaced_service_account_token(
        pod["serviceAccountName"], s.release_ns,
        {"spec": {"audiences": [cluster.issuer], "expirationSeconds": 3600}}).status.token
    kubeconfig = workdir / "sa.kubeconfig"
    service_account_kubeconfig(cluster, token, kubeconfig)
    args = local_args(pod["containers"][0]["args"], kubeconfig=kubeconfig,
                      metrics=free_port(), health=free_port(),
                      kms_endpoint=cloud.kms_endpoint)
    env = {"PATH": os.environ["PATH"], "HOME": str(workdir), "TMPDIR": str(workdir),
           "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
           "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": PROVIDER, **cloud.trust_env(),
           **pod_env(dep, core, s.release_ns)}
    log_path = workdir / "controller.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller", *args, f"--sts-endpoint={cloud.sts_endpoint}"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    return proc, log_path


@pytest.mark.parametrize("layout", ["cluster-wide", "watched-namespaces"])
def test_the_chart_grants_exactly_what_the_controller_uses(
        audited: ControlPlane, admin: Any, tools: Helm, layout: str) -> None:
    from kubernetes import client

    core: Any = client.CoreV1Api(admin)
    suffix = uuid.uuid4().hex[:5]
    s = Setup(f"asm-{suffix}", f"work-{suffix}", f"creds-{suffix}")
    for ns in (s.release_ns, s.workload, s.credentials):
        core.create_namespace({"metadata": {"name": ns}})
    values = {"replicaCount": "2"}
    if layout == "watched-namespaces":
        values |= {"command.watchNamespaces": s.workload,
                   "rbac.credentialNamespaces[0]": s.credentials}
    k = Helm(tools.helm_bin, tools.kubectl_bin, audited.kubeconfig)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="asm-rbac-audit-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        with FakeCloud() as cloud:
            cloud.add_access_key(AK_ID, AK_SECRET, "app")
            k.helm("install", "asm", CHART, "-n", s.release_ns, *set_args(values))
            create_workload(admin, cloud, audited, s)
            proc, log_path = run_controller(k, admin, audited, cloud, s, workdir)

            def done() -> bool:
                assert proc is not None and proc.poll() is None, \
                    f"controller exited:\n{log_path.read_text()[-4000:]}"
                return workload_done(admin, s)

            try:
                wait_for(done, timeout=60, what="every ExternalSecret Ready")
                cluster_external_secret_renamed(admin, s)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{log_path.read_text()[-4000:]}") from None
            proc.send_signal(signal.SIGTERM)  # the stop releases the Lease: an update
            assert proc.wait(30) == 0, log_path.read_text()[-4000:]
        manifest = [d for d in yaml.safe_load_all(
            k.helm("get", "manifest", "asm", "-n", s.release_ns).stdout) if d]
        subject = {"name": rendered_deployment(k, "asm", s.release_ns)["spec"]["template"]
                   ["spec"]["serviceAccountName"], "namespace": s.release_ns}
        used, refused = audit_uses(audited.dir / "audit.log",
                                   f"system:serviceaccount:{s.release_ns}:{subject['name']}")
        granted = grants(manifest, subject)
        assert not refused, f"the controller was refused: {sorted(refused)}"
        not_granted = sorted(u for u in used if not any(g.covers(u) for g in granted))
        assert not not_granted, f"used without a grant from the chart: {not_granted}"
        unused = [g for g in granted if not any(g.covers(u) for u in used)]
        assert not unused, f"granted but never used: {unused}"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        k.helm("uninstall", "asm", "-n", s.release_ns, "--ignore-not-found", check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_comparison_catches_unused_grants_and_ungranted_uses() -> None:
    """The checks above can fail: a grant nobody used, a use nobody granted, names, scope."""
    manifest = [
        {"kind": "ClusterRole", "metadata": {"name": "c"}, "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "update"]}]},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "c"},
         "roleRef": {"kind": "ClusterRole", "name": "c"},
         "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "r"}]},
        {"kind": "Role", "metadata": {"name": "l", "namespace": "r"}, "rules": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": ["mine"], "verbs": ["update"]}]},
        {"kind": "RoleBinding", "metadata": {"name": "l", "namespace": "r"},
         "roleRef": {"kind": "Role", "name": "l"},
         "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "r"}]},
    ]
    granted = grants(manifest, {"name": "sa", "namespace": "r"})
    used: set[Use] = {("get", "", "secrets", "any", "x"),
                      ("update", "coordination.k8s.io", "leases", "r", "mine")}
    assert [g.verb for g in granted if not any(g.covers(u) for u in used)] == ["update"]
    assert not [u for u in used if not any(g.covers(u) for g in granted)]
    for stray in [("update", "coordination.k8s.io", "leases", "r", "other"),
                  ("update", "coordination.k8s.io", "leases", "elsewhere", "mine"),
                  ("patch", "", "secrets", "any", "x")]:
        assert not any(g.covers(stray) for g in granted), stray
