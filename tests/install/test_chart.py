"""The Helm chart without a cluster: lint, render, and check the rendered objects.

Rendered container args are parsed by the controller's own flag parser
(`controller.settings.load`), so a flag the controller does not know, or a value it would
reject, fails here rather than in a crash-looping Pod.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import pytest
import yaml

import controller
from controller import settings
from tests.cluster.tools import ensure_helm3
from tests.install.conftest import (
    CHART,
    MARKETPLACE_VALUES,
    Helm,
    container,
    find,
    run,
    set_args,
)

TOKEN_DIR = "/var/run/secrets/tokens"
TOKEN_FILE = f"{TOKEN_DIR}/ack-secret-manager"

# Representative values: (id, helm args).
AK_FROM_SECRET = {
    "envVarsFromSecret.ACCESS_KEY_ID.secretKeyRef": "alibaba-credentials",
    "envVarsFromSecret.ACCESS_KEY_ID.key": "id",
    "envVarsFromSecret.SECRET_ACCESS_KEY.secretKeyRef": "alibaba-credentials",
    "envVarsFromSecret.SECRET_ACCESS_KEY.key": "secret",
}
CASES: list[tuple[str, list[str]]] = [
    ("defaults", []),
    ("rrsa", set_args({"rrsa.enable": "true", "command.region": "cn-beijing"})),
    ("access-keys-from-secret", set_args(AK_FROM_SECRET)),
    ("two-replicas", set_args({"replicaCount": "2", "podDisruptionBudget.enabled": "true"})),
    ("watch-namespaces", set_args({"command.watchNamespaces": "team-a\\,team-b",
                                   "command.excludeNamespaces": "kube-system"})),
    ("everything-on", set_args({
        "metrics.serviceMonitor.enabled": "true", "podDisruptionBudget.enabled": "true",
        "replicaCount": "3", "rrsa.enable": "true", "command.disablePolling": "true",
        "command.enableWorkerRole": "true", "command.kmsEndpointType": "public",
        "command.enableCrossNamespaceSecretStore": "true", "logging.format": "text",
        "logging.level": "debug", "workers": "4"})),
    *[(p.stem, ["-f", str(p)]) for p in MARKETPLACE_VALUES],
]
CASE_IDS = [c[0] for c in CASES]


def args_of(objs: list[dict[str, Any]]) -> list[str]:
    return list(container(objs)["args"])


def env_of(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(objs).get("env", [])}


def literal_env(objs: list[dict[str, Any]]) -> dict[str, str]:
    return {k: v["value"] for k, v in env_of(objs).items() if "value" in v}


def load_settings(objs: list[dict[str, Any]], **extra_env: str) -> settings.Settings:
    """What the controller would run with: the rendered args and literal env."""
    return settings.load(args_of(objs), {**literal_env(objs), **extra_env})


# --------------------------------------------------------------------------- chart basics


def test_chart_metadata_matches_the_controller() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "ack-secret-manager"
    assert meta["appVersion"] == controller.__version__
    assert meta["kubeVersion"] == ">=1.24.0-0"
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    assert schema["properties"]["command"]["additionalProperties"] is False


def test_every_default_value_is_described_by_the_schema() -> None:
    """values.yaml and values.schema.json list the same keys (two levels deep)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]
    for key, value in values.items():
        assert key in schema, f"values.yaml key {key} is not in values.schema.json"
        if isinstance(value, dict) and schema[key].get("additionalProperties") is False:
            for sub in value:
                assert sub in schema[key]["properties"], f"{key}.{sub} missing from the schema"


@pytest.fixture(params=["helm4", "helm3"])
def any_helm(request: pytest.FixtureRequest, tools: Helm) -> Helm:
    """Helm 4 (from the tools cache) and Helm 3 (built from the Go module proxy): most
    marketplace users still run Helm 3."""
    if request.param == "helm4":
        return tools
    return Helm(ensure_helm3(), tools.kubectl_bin)


@pytest.mark.parametrize(("case", "args"), CASES, ids=CASE_IDS)
def test_lint_strict(any_helm: Helm, case: str, args: list[str]) -> None:
    out = run([any_helm.helm_bin, "lint", "--strict", CHART, *args]).stdout
    assert "0 chart(s) failed" in out, out


@pytest.mark.parametrize(("case", "args"), CASES, ids=CASE_IDS)
def test_rendered_args_are_accepted_by_the_controller(
    any_helm: Helm, case: str, args: list[str]
) -> None:
    objs = any_helm.template(*args)
    cfg = load_settings(objs)
    assert cfg.health_probe_bind_address == ":8081"
    assert cfg.region == "cn-hangzhou" or case in ("rrsa", "marketplace-v0.6")
    # Flags the controller ignores are not rendered: the Deployment says only what matters.
    legacy = ("--backend", "--reconcile-period", "--reconcile-count",
              "--token-rotation-period", "--cleanup-secret-on-failure")
    assert not [a for a in args_of(objs) if a.startswith(legacy)]
    assert cfg.max_concurrent_oos_secret_pulls == 10  # in effect now: provider oos


# --------------------------------------------------------------------------- defaults


def test_defaults_are_secure_and_probed(tools: Helm) -> None:
    objs = tools.template()
    dep = find(objs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = container(objs)

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}

    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                              "limits": {"memory": "256Mi"}}
    # A read-only root needs a writable /tmp (KMS instance CAs, ServiceAccount tokens).
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert c["image"] == f"ack-secret-manager:{controller.__version__}"
    assert dep["spec"]["replicas"] == 1

    args = c["args"]
    assert not [a for a in args if a.startswith("--region")]
    assert "--leader-elect" not in args
    assert "--metrics-bind-address=:8080" in args
    assert "--health-probe-bind-address=:8081" in args
    assert "--log-format=json" in args
    env = env_of(objs)
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert "WATCH_NAMESPACE" not in env  # empty values render nothing

    svc = find(objs, "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service",
                     "ServiceAccount"]


def test_selector_matches_the_marketplace_chart(tools: Helm) -> None:
    """Deployment selectors are immutable: an in-place upgrade needs the old ones."""
    dep = find(tools.template(release="ack-secret-manager"), "Deployment")
    assert dep["metadata"]["name"] == "ack-secret-manager"
    assert dep["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "ack-secret-manager",
        "app.kubernetes.io/instance": "ack-secret-manager"}


# --------------------------------------------------------------------------- values -> flags


def test_values_map_onto_flags(tools: Helm) -> None:
    objs = tools.template(*set_args({
        "command.region": "cn-shanghai",
        "command.kmsEndpoint": "kst-sha123.cryptoservice.kms.aliyuncs.com",
        "command.kmsEndpointType": "public",
        "command.disablePolling": "true",
        "command.pollingInterval": "5m",
        "command.maxConcurrentKmsSecretPulls": "25",
        "command.enableWorkerRole": "true",
        "command.excludeNamespaces": "kube-system\\,kube-public",
        "command.enableCrossNamespaceSecretStore": "true",
        "command.extraArgs[0]": "--sts-endpoint=sts-vpc.cn-shanghai.aliyuncs.com",
        "workers": "16",
        "metrics.port": "9090",
        "health.port": "9091",
        "logging.format": "text",
        "logging.level": "debug",
    }), "--set-string", "command.watchNamespaces=team-a\\,team-b")
    cfg = load_settings(objs)
    assert cfg.region == "cn-shanghai"
    assert cfg.kms_endpoint == "kst-sha123.cryptoservice.kms.aliyuncs.com"
    assert cfg.kms_endpoint_type == "public"
    assert cfg.disable_polling is True
    assert cfg.polling_interval == 300.0
    assert cfg.max_concurrent_kms_secret_pulls == 25
    assert cfg.enable_worker_role is True
    assert cfg.watch_namespaces == ("team-a", "team-b")
    assert cfg.exclude_namespaces == ("kube-system", "kube-public")
    assert cfg.enable_cross_namespace_secret_store is True
    assert cfg.sts_endpoint == "sts-vpc.cn-shanghai.aliyuncs.com"
    assert cfg.workers == 16
    assert cfg.metrics_bind_address == ":9090"
    assert cfg.health_probe_bind_address == ":9091"
    assert (cfg.log_format, cfg.log_level) == ("text", "debug")
    c = container(objs)
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 9090,
                                                                  "health": 9091}
    assert find(objs, "Service")["spec"]["ports"][0]["port"] == 9090


def test_defaults_give_the_controller_its_own_defaults(tools: Helm) -> None:
    cfg = load_settings(tools.template())
    ref = settings.Settings()
    for name in ("polling_interval", "disable_polling", "region", "kms_endpoint",
                 "kms_endpoint_type", "max_concurrent_kms_secret_pulls",
                 "watch_namespaces", "exclude_namespaces", "enable_cross_namespace_secret_store",
                 "workers", "leader_elect", "max_cas_per_namespace"):
        assert getattr(cfg, name) == getattr(ref, name), name
    # The one exception, on purpose: the worker role is shared by every Pod on the node, so
    # the chart turns it off unless asked (the bare controller keeps ack-secret-manager's on).
    assert (cfg.enable_worker_role, ref.enable_worker_role) == (False, True)


@pytest.mark.parametrize("region", ["", None])
def test_empty_region_renders_no_flag(tools: Helm, tmp_path: pathlib.Path,
                                      region: str | None) -> None:
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"command": {"region": region, "kmsEndpoint": region}}))
    args = args_of(tools.template("-f", str(values)))
    assert not [a for a in args if a.startswith(("--region", "--kms-endpoint="))], args


def test_watch_namespaces_as_list_and_legacy_env(tools: Helm, tmp_path: pathlib.Path) -> None:
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"command": {"watchNamespaces": ["a", "b"],
                                                  "excludeNamespaces": ["c"]}}))
    cfg = load_settings(tools.template("-f", str(values)))
    assert (cfg.watch_namespaces, cfg.exclude_namespaces) == (("a", "b"), ("c",))

    objs = tools.template("--set-string", "env.WATCH_NAMESPACE=x\\,y")
    assert literal_env(objs)["WATCH_NAMESPACE"] == "x,y"
    assert load_settings(objs).watch_namespaces == ("x", "y")


def test_private_cas_per_namespace(tools: Helm) -> None:
    """security.maxCasPerNamespace: always rendered, so 0 (no bound) reaches the controller."""
    assert load_settings(tools.template()).max_cas_per_namespace == 8
    for value in (0, 3):
        objs = tools.template(*set_args({"security.maxCasPerNamespace": str(value)}))
        assert f"--max-cas-per-namespace={value}" in args_of(objs)
        assert load_settings(objs).max_cas_per_namespace == value


def test_cache_bounds(tools: Helm) -> None:
    """security.namespaceCacheBytes (0: no bound reaches the controller) and valueCacheBytes;
    the schema refuses a namespace bound under 1 MiB other than 0."""
    cfg = load_settings(tools.template())
    assert (cfg.namespace_cache_bytes, cfg.value_cache_bytes) == (8 << 20, 32 << 20)
    objs = tools.template(*set_args({"security.namespaceCacheBytes": "0",
                                     "security.valueCacheBytes": str(64 << 20)}))
    cfg = load_settings(objs)
    assert (cfg.namespace_cache_bytes, cfg.value_cache_bytes) == (0, 64 << 20)
    assert "--namespace-cache-bytes=0" in args_of(objs)
    with pytest.raises(Exception, match="namespaceCacheBytes"):
        tools.template(*set_args({"security.namespaceCacheBytes": "1000"}))


def test_cross_namespace_auth_ref_is_its_own_switch(tools: Helm) -> None:
    cfg = load_settings(tools.template(*set_args({"command.enableCrossNamespaceAuthRef": "true"})))
    assert cfg.enable_cross_namespace_auth_ref is True
    assert cfg.enable_cross_namespace_secret_store is False


# --------------------------------------------------------------------------- identity


def test_rrsa_projects_the_token_where_the_controller_reads_it(tools: Helm) -> None:
    objs = tools.template(*set_args({"rrsa.enable": "true"}))
    pod = find(objs, "Deployment")["spec"]["template"]["spec"]
    vol = next(v for v in pod["volumes"] if v["name"] == "rrsa-token")
    src = vol["projected"]["sources"][0]["serviceAccountToken"]
    assert src["audience"] == "sts.aliyuncs.com"
    assert src["path"] == "ack-secret-manager"
    mount = next(m for m in container(objs)["volumeMounts"] if m["name"] == "rrsa-token")
    assert mount == {"name": "rrsa-token", "mountPath": TOKEN_DIR, "readOnly": True}
    assert f"{mount['mountPath']}/{src['path']}" == TOKEN_FILE
    assert load_settings(objs).credentials.oidc_token_file == TOKEN_FILE
    # Without rrsa there is no token volume and no token path.
    plain = tools.template()
    assert "ALICLOUD_OIDC_TOKEN_FILE_PATH" not in env_of(plain)
    assert all(v["name"] != "rrsa-token"
               for v in find(plain, "Deployment")["spec"]["template"]["spec"]["volumes"])


@pytest.mark.parametrize("name", ["ALICLOUD_OIDC_TOKEN_FILE_PATH", "ALICLOUD_OIDC_TOKEN_FILE",
                                  "ALIBABA_CLOUD_OIDC_TOKEN_FILE"])
def test_rrsa_keeps_a_token_path_the_user_gave(tools: Helm, name: str) -> None:
    objs = tools.template(*set_args({
        "rrsa.enable": "true",
        f"envVarsFromSecret.{name}.secretKeyRef": "creds",
        f"envVarsFromSecret.{name}.key": "path"}))
    env = env_of(objs)
    assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "creds", "key": "path"}
    assert [e["name"] for e in container(objs)["env"]].count(name) == 1
    assert not {"ALICLOUD_OIDC_TOKEN_FILE_PATH", "ALICLOUD_OIDC_TOKEN_FILE",
                "ALIBABA_CLOUD_OIDC_TOKEN_FILE"} - {name} & set(env)


def test_env_vars_from_secret_reach_the_controller_credentials(tools: Helm) -> None:
    names = {
        "ACCESS_KEY_ID": "access_key_id", "SECRET_ACCESS_KEY": "access_key_secret",
        "ALICLOUD_ROLE_ARN": "role_arn", "ALICLOUD_ROLE_SESSION_NAME": "role_session_name",
        "ALICLOUD_ROLE_SESSION_EXPIRATION": "role_session_expiration",
        "ALICLOUD_OIDC_PROVIDER_ARN": "oidc_provider_arn",
        "ALICLOUD_REMOTE_ROLE_ARN": "remote_role_arn",
        "ALICLOUD_REMOTE_ROLE_SESSION_NAME": "remote_role_session_name",
    }
    values: dict[str, str] = {}
    for env_name in names:
        values[f"envVarsFromSecret.{env_name}.secretKeyRef"] = "alibaba-credentials"
        values[f"envVarsFromSecret.{env_name}.key"] = env_name.lower()
    objs = tools.template(*set_args(values))
    env = env_of(objs)
    for env_name in names:
        assert env[env_name]["valueFrom"] == {"secretKeyRef": {
            "name": "alibaba-credentials", "key": env_name.lower()}}
    # The kubelet resolves each secretKeyRef to a value; the controller reads these names.
    resolved = {n: ("1800" if n.endswith("EXPIRATION") else f"v-{n}") for n in names}
    creds = load_settings(objs, **resolved).credentials
    for env_name, field in names.items():
        want: Any = 1800 if field == "role_session_expiration" else f"v-{env_name}"
        assert getattr(creds, field) == want, env_name


def test_reserved_env_names_cannot_be_overridden(tools: Helm) -> None:
    objs = tools.template(*set_args({"env.POD_NAMESPACE": "evil", "env.EXTRA": "1"}))
    env = env_of(objs)
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["EXTRA"]["value"] == "1"
    assert [e["name"] for e in container(objs)["env"]].count("POD_NAMESPACE") == 1


# --------------------------------------------------------------------------- leader election


def test_two_replicas_turn_leader_election_on(tools: Helm) -> None:
    objs = tools.template(*set_args({"replicaCount": "2"}), release="r1", namespace="ns1")
    cfg = load_settings(objs)
    assert cfg.leader_elect is True
    assert cfg.leader_election_namespace == "ns1"
    assert cfg.leader_election_id == "r1-ack-secret-manager"
    role = find(objs, "Role")
    assert role["metadata"]["namespace"] == "ns1"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["r1-ack-secret-manager"], "verbs": ["get", "update"]},
    ]
    binding = find(objs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    # One replica: no election and no Lease permissions.
    one = tools.template(release="r1", namespace="ns1")
    assert load_settings(one).leader_elect is False
    assert not [o for o in one if o["kind"] in ("Role", "RoleBinding")]


def test_leader_election_legacy_values(tools: Helm) -> None:
    objs = tools.template(*set_args({"command.enableLeaderElection": "true",
                                     "command.leaderElectionNamespace": "kube-system"}),
                          release="r1", namespace="ns1")
    cfg = load_settings(objs)
    assert cfg.leader_elect is True
    assert cfg.leader_election_namespace == "kube-system"
    # Another namespace's Lease name carries the release namespace: no two releases share it.
    assert cfg.leader_election_id == "r1-ack-secret-manager-ns1"
    assert find(objs, "Role")["metadata"]["namespace"] == "kube-system"


def test_many_replicas_without_leader_election_is_refused(tools: Helm) -> None:
    proc = run([tools.helm_bin, "template", "x", CHART,
                *set_args({"replicaCount": "2", "leaderElection.enabled": "false"})],
               check=False)
    assert proc.returncode != 0
    assert "replicaCount > 1 needs leader election" in proc.stderr


# --------------------------------------------------------------------------- optional objects


def exported_series() -> set[str]:
    """Every series name the controller's /metrics can carry (histograms' _bucket, _sum and
    _count, counters' _total), from its own registry."""
    from controller.ops.metrics import Metrics

    return {sample.name for family in Metrics().registry.collect()
            for sample in family.samples} | {
        family.name + suffix for family in Metrics().registry.collect()
        for suffix in ("_bucket", "_sum", "_count", "_total", "")}


def used_series(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:ack_secret_manager|process)_[a-z_]+)", expr))


@pytest.mark.parametrize(("interval", "seconds"), [
    ("120s", 360), ("5m", 900), ("1h30m", 16200), ("1.5h", 16200), ("90s500ms", 270)])
def test_the_prometheus_rule_follows_the_polling_interval(
        tools: Helm, interval: str, seconds: int) -> None:
    objs = tools.template(*set_args({"metrics.prometheusRule.enabled": "true",
                                     "command.pollingInterval": interval}))
    rule = find(objs, "PrometheusRule")
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(rules) == {"ExternalSecretNotSynced", "ExternalSecretNotReady", "KMSThrottling",
                          "ExternalSecretSyncFailures", "AckSecretManagerNoLeader"}
    assert rules["ExternalSecretNotSynced"]["expr"].endswith(f"> {seconds}")
    assert "{{ $labels.namespace }}" in rules["ExternalSecretNotReady"]["annotations"]["summary"]
    exported = exported_series()
    for r in rules.values():
        assert used_series(r["expr"]) <= exported, r["expr"]


def test_without_polling_no_not_synced_alert_and_off_by_default(tools: Helm) -> None:
    objs = tools.template(*set_args({"metrics.prometheusRule.enabled": "true",
                                     "command.disablePolling": "true"}))
    alerts = [r["alert"] for g in find(objs, "PrometheusRule")["spec"]["groups"]
              for r in g["rules"]]
    assert "ExternalSecretNotSynced" not in alerts and "ExternalSecretNotReady" in alerts
    defaults = tools.template()
    assert not [o for o in defaults if o["kind"] in ("PrometheusRule", "ConfigMap")]


def test_the_grafana_dashboard_uses_only_exported_metrics(tools: Helm) -> None:
    objs = tools.template(*set_args({"metrics.grafanaDashboard.enabled": "true",
                                     "metrics.grafanaDashboard.namespace": "monitoring"}))
    cm = find(objs, "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["ack-secret-manager.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    exported = exported_series()
    for expr in exprs:
        assert used_series(expr), expr
        assert used_series(expr) <= exported, expr


def test_metrics_off_servicemonitor_and_pdb(tools: Helm) -> None:
    off = tools.template(*set_args({"metrics.enabled": "false"}))
    assert "--metrics-bind-address=0" in args_of(off)
    assert not [o for o in off if o["kind"] == "Service"]
    assert [p["name"] for p in container(off)["ports"]] == ["health"]

    on = tools.template(*set_args({"metrics.serviceMonitor.enabled": "true",
                                   "podDisruptionBudget.enabled": "true"}))
    sm = find(on, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["selector"]["matchLabels"] == find(on, "Service")["spec"]["selector"]
    pdb = find(on, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]

    both = run([tools.helm_bin, "template", "x", CHART, *set_args({
        "podDisruptionBudget.enabled": "true", "podDisruptionBudget.minAvailable": "1"})],
        check=False)
    assert both.returncode != 0 and "not both" in both.stderr


def test_existing_service_account_and_no_rbac(tools: Helm) -> None:
    objs = tools.template(*set_args({"serviceAccount.create": "false",
                                     "serviceAccount.name": "mine", "rbac.create": "false"}))
    assert sorted(o["kind"] for o in objs) == ["Deployment", "Service"]
    pod = find(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mine"


# --------------------------------------------------------------------------- RBAC and names


NAMESPACED = {"externalsecrets", "externalsecrets/status", "secretstores", "secrets", "events",
              "serviceaccounts", "serviceaccounts/token"}
DESTRUCTIVE = {"delete", "deletecollection", "escalate", "bind", "impersonate", "update", "*"}


def flat_rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


def roles_by_namespace(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["namespace"]: o for o in objs if o["kind"] == "Role"
            and not o["metadata"]["name"].endswith("-leader-election")}


# Which verbs the controller really uses is proven by tests/install/test_rbac_audit.py (the
# apiserver's audit log against the rendered grants); these tests check the chart's shape.
def test_cluster_role_grants_nothing_destructive(tools: Helm) -> None:
    flat = flat_rules(find(tools.template(), "ClusterRole"))
    # The one delete: ClusterExternalSecrets remove their own ExternalSecrets (ownerReference
    # to their uid, uid precondition) where a namespace is no longer selected.
    allowed = {("alibabacloud.com", "externalsecrets", "delete")}
    assert not [x for x in flat - allowed if "*" in x or x[2] in DESTRUCTIVE], flat
    off = flat_rules(find(tools.template(*set_args({"crds.createClusterExternalSecret":
                                                    "false"})), "ClusterRole"))
    assert not [x for x in off if "*" in x or x[2] in DESTRUCTIVE], off
    assert ("", "secrets", "get") in flat and ("", "secrets", "patch") in flat


@pytest.mark.parametrize("values", [{"command.watchNamespaces": "team-a\\,team-b"},
                                    {"env.WATCH_NAMESPACE": "team-a\\,team-b"}],
                         ids=["watchNamespaces", "WATCH_NAMESPACE"])
def test_watched_namespaces_get_roles_not_a_cluster_wide_secret_grant(
        tools: Helm, values: dict[str, str]) -> None:
    cluster_wide = flat_rules(find(tools.template(), "ClusterRole"))
    objs = tools.template(*set_args({**values, "rbac.credentialNamespaces[0]": "platform",
                                     "rbac.credentialNamespaces[1]": "team-a"}))
    cluster_role = flat_rules(find(objs, "ClusterRole"))
    assert not [x for x in cluster_role if x[1] in NAMESPACED], cluster_role
    roles = roles_by_namespace(objs)
    assert sorted(roles) == ["platform", "team-a", "team-b"]
    for ns in ("team-a", "team-b"):  # the same namespaced grants, in that namespace only
        assert flat_rules(roles[ns]) | cluster_role == cluster_wide
    assert {r for _, r, _ in flat_rules(roles["platform"])} == {
        "secrets", "serviceaccounts", "serviceaccounts/token"}
    assert ("", "secrets", "get") in flat_rules(roles["platform"])
    assert not [x for x in flat_rules(roles["platform"]) if x[1] == "secrets" and x[2] != "get"]
    bindings = {o["metadata"]["namespace"]: o for o in objs if o["kind"] == "RoleBinding"}
    for ns, role in roles.items():
        assert bindings[ns]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                           "kind": "Role", "name": role["metadata"]["name"]}
        assert bindings[ns]["subjects"][0]["name"] == "asm-ack-secret-manager"


def test_token_minting_can_be_limited_to_names_or_turned_off(tools: Helm) -> None:
    named = find(tools.template(*set_args({"rbac.serviceAccountNames[0]": "app"})),
                 "ClusterRole")
    token_rules = [r for r in named["rules"]
                   if set(r["resources"]) & {"serviceaccounts", "serviceaccounts/token"}]
    assert len(token_rules) == 2
    assert all(r["resourceNames"] == ["app"] for r in token_rules)
    off = flat_rules(find(tools.template(*set_args({"rbac.serviceAccountTokens": "false"})),
                          "ClusterRole"))
    assert not [x for x in off if x[1].startswith("serviceaccounts")]


def test_names_are_unique_per_release(tools: Helm) -> None:
    a = tools.template(release="asm", namespace="team-a")
    b = tools.template(release="asm", namespace="team-b")
    c = tools.template(release="other", namespace="team-a")
    cluster_kinds = ("ClusterRole", "ClusterRoleBinding")

    def cluster_names(objs: list[dict[str, Any]]) -> set[str]:
        return {o["metadata"]["name"] for o in objs if o["kind"] in cluster_kinds}

    def namespaced(objs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"])
                for o in objs if o["kind"] not in cluster_kinds}

    assert cluster_names(a) == {"asm-ack-secret-manager:team-a"}
    assert not cluster_names(a) & cluster_names(b)
    assert not cluster_names(a) & cluster_names(c)
    assert not namespaced(a) & namespaced(c)
    binding = find(a, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "asm-ack-secret-manager",
                                    "namespace": "team-a"}]


# --------------------------------------------------------------------------- compatibility


@pytest.mark.parametrize("values", MARKETPLACE_VALUES, ids=[p.stem for p in MARKETPLACE_VALUES])
def test_marketplace_values_work_unchanged(tools: Helm, values: pathlib.Path) -> None:
    objs = tools.template("-f", str(values), release="ack-secret-manager",
                          namespace="kube-system")
    c = container(objs)
    # The Go controller's image would not understand these flags: the chart's image runs.
    assert c["image"] == f"ack-secret-manager:{controller.__version__}"
    cfg = load_settings(objs)
    assert cfg.polling_interval == 120.0
    assert cfg.max_concurrent_kms_secret_pulls == 10
    assert cfg.leader_elect is True  # replicaCount 2 in every marketplace release
    assert cfg.leader_election_namespace == "kube-system"
    assert literal_env(objs).get("OPERATOR_NAME") == "ack-secret-manager"
    user = yaml.safe_load(values.read_text())
    assert c["resources"] == user["resources"]


def test_a_non_legacy_image_is_used_as_given(tools: Helm) -> None:
    objs = tools.template(*set_args({"image.repository": "registry.example/acs/ack-secret-manager",
                                     "image.tag": "v0.7.0"}))
    assert container(objs)["image"] == "registry.example/acs/ack-secret-manager:v0.7.0"


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "replicaCunt=2"], "additional properties 'replicaCunt' not allowed"),
    (["--set", "command.pollingIntervl=3s"],
     "at '/command': additional properties 'pollingIntervl' not allowed"),
    (["--set", "command.pollingInterval=3d"], "/command/pollingInterval"),
    (["--set", "replicaCount=two"], "at '/replicaCount': got string, want integer"),
    (["--set", "rrsa.enable=yes"], "at '/rrsa/enable': got string, want boolean"),
    (["--set", "command.kmsEndpointType=private"], "/command/kmsEndpointType"),
    (["--set", "logging.format=xml"], "/logging/format"),
    (["--set", "envVarsFromSecret.ACCESS_KEY_ID.secretKeyRef=ak"], "missing property 'key'"),
], ids=["top-level-typo", "command-typo", "bad-duration", "wrong-type", "wrong-bool",
        "bad-enum", "bad-log-format", "incomplete-secret-ref"])
def test_schema_rejects_mistakes_clearly(tools: Helm, args: list[str], message: str) -> None:
    proc = run([tools.helm_bin, "template", "x", CHART, *args], check=False)
    assert proc.returncode != 0, proc.stdout[:500]
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


@pytest.mark.cluster
def test_install_upgrade_uninstall_on_helm_3_and_4(any_helm: Helm, cluster: Any,
                                                   kube: Any) -> None:
    """The release lifecycle on the real apiserver with each Helm major version."""
    import uuid

    from kubernetes import client

    k = Helm(any_helm.helm_bin, any_helm.kubectl_bin, cluster.kubeconfig)
    core: Any = client.CoreV1Api(kube)
    apps: Any = client.AppsV1Api(kube)
    ns = f"t-helm-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    try:
        k.helm("install", "asm", CHART, "-n", ns)
        dep = apps.list_namespaced_deployment(ns).items
        assert [d.spec.replicas for d in dep] == [1]
        k.helm("upgrade", "asm", CHART, "-n", ns, *set_args({"replicaCount": "2"}))
        assert apps.list_namespaced_deployment(ns).items[0].spec.replicas == 2
        status = json.loads(k.helm("status", "asm", "-n", ns, "-o", "json").stdout)
        assert status["version"] == 2 and status["info"]["status"] == "deployed"
        k.helm("uninstall", "asm", "-n", ns)
        assert apps.list_namespaced_deployment(ns).items == []
        rbac: Any = client.RbacAuthorizationV1Api(kube)
        names = [b.metadata.name for b in rbac.list_cluster_role_binding().items]
        assert not [n for n in names if n.startswith("asm-") and ns in n]
    finally:
        k.helm("uninstall", "asm", "-n", ns, "--ignore-not-found", check=False)
        core.delete_namespace(ns)
