"""The one place that reads command-line flags and the environment.

Flag names follow ack-secret-manager's so an existing Deployment or Helm release keeps working;
flags it had that this controller does not need are accepted and ignored (and said so in
--help). Everything else in the program receives a frozen `Settings`.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from controller import __version__, model


def parse_duration(text: str) -> float:
    """A Go duration ("120s", "1m30s", "500ms") or, leniently, plain seconds ("120")."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    return model.parse_duration(text)


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class Credentials:
    """Controller-wide identity material from the environment (never logged)."""

    access_key_id: str = ""
    access_key_secret: str = field(default="", repr=False)
    role_arn: str = ""
    role_session_name: str = ""
    role_session_expiration: int = 3600
    oidc_provider_arn: str = ""
    oidc_token_file: str = ""
    remote_role_arn: str = ""
    remote_role_session_name: str = ""
    sts_endpoint: str = ""


@dataclass(frozen=True)
class Settings:
    polling_interval: float = 120.0
    disable_polling: bool = False
    region: str = "cn-hangzhou"
    kms_endpoint: str = ""
    kms_endpoint_type: str = "vpc"
    kms_protocol: str = "https"
    max_concurrent_kms_secret_pulls: int = 10
    oos_endpoint: str = ""
    max_concurrent_oos_secret_pulls: int = 10
    enable_worker_role: bool = False
    watch_namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ()
    enable_cross_namespace_secret_store: bool = False
    workers: int = 8
    kubeconfig: str = ""
    metrics_bind_address: str = ":8080"
    health_probe_bind_address: str = ":8081"
    leader_elect: bool = False
    leader_election_namespace: str = ""
    leader_election_id: str = "ack-secret-manager"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    log_format: str = "text"
    log_level: str = "info"
    sts_endpoint: str = ""
    metadata_proxy: str = ""
    credentials: Credentials = field(default_factory=Credentials)
    shutdown_timeout: float = 25.0
    # Tenant bounds (see docs/security.md)
    min_refresh_interval: float = 10.0
    max_refresh_interval: float = 30 * 24 * 3600.0
    # None: every namespace may use the controller's own identity (ack-secret-manager's rule)
    controller_identity_namespaces: tuple[str, ...] | None = None
    require_cluster_store_conditions: bool = False
    allowed_endpoints: tuple[str, ...] = ()
    allow_http_endpoints: bool = False
    allow_insecure_kms_instance_tls: bool = False

    def refresh_floor(self) -> float:
        """The shortest refreshInterval a tenant gets: --min-refresh-interval, or the operator's
        own --polling-interval when that is shorter."""
        return min(self.min_refresh_interval, self.polling_interval)

    def controller_identity_allowed(self, namespace: str) -> bool:
        allowed = self.controller_identity_namespaces
        return allowed is None or namespace in allowed

    def default_oos_endpoint(self) -> str:
        """--oos-endpoint if set, else the region's VPC (or public) OOS endpoint."""
        if self.oos_endpoint:
            return self.oos_endpoint
        prefix = "oos-vpc" if self.kms_endpoint_type == "vpc" else "oos"
        return f"{prefix}.{self.region}.aliyuncs.com"

    def default_kms_endpoint(self) -> str:
        """--kms-endpoint if set, else the region's VPC (or public) KMS endpoint."""
        if self.kms_endpoint:
            return self.kms_endpoint
        prefix = "kms-vpc" if self.kms_endpoint_type == "vpc" else "kms"
        return f"{prefix}.{self.region}.aliyuncs.com"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ack-secret-manager",
        description="Keeps Kubernetes Secrets in step with Alibaba Cloud KMS Secrets Manager.",
    )
    p.add_argument("--version", action="version", version=f"ack-secret-manager {__version__}")
    a = p.add_argument
    a("--polling-interval", type=_duration_arg, default=120.0,
      help="how often every ExternalSecret is re-read from KMS (default 120s)")
    a("--disable-polling", action="store_true", help="sync on change only, never poll")
    a("--region", default="", help="Alibaba Cloud region (default cn-hangzhou when empty)")
    a("--kms-endpoint", default="", help="KMS endpoint host[:port]; overrides --region")
    a("--kms-endpoint-type", choices=["vpc", "public"], default="vpc",
      help="endpoint derived from --region: kms-vpc.<region> (default) or kms.<region>")
    a("--kms-protocol", choices=["https", "http"], default="https", help=argparse.SUPPRESS)
    a("--max-concurrent-kms-secret-pulls", type=int, default=10,
      help="KMS GetSecretValue calls per second per endpoint (also the concurrency cap)")
    a("--oos-endpoint", default="",
      help="OOS endpoint host[:port] for provider: oos; default oos-vpc.<region> (or "
      "oos.<region> with --kms-endpoint-type public)")
    a("--max-concurrent-oos-secret-pulls", type=int, default=10,
      help="OOS GetSecretParameter calls per second per endpoint (also the concurrency cap)")
    a("--enable-worker-role", action="store_true",
      help="use the node's ECS RAM role when nothing else is configured")
    a("--watch-namespaces", type=_csv, default=None,
      help="comma-separated namespaces to watch (default all; env WATCH_NAMESPACE)")
    a("--exclude-namespaces", type=_csv, default=(), help="comma-separated namespaces to skip")
    a("--enable-cross-namespace-secret-store", action="store_true",
      help="allow SecretStores and credential Secrets from another namespace")
    a("--workers", type=int, default=8, help="parallel syncs")
    a("--kubeconfig", default="", help="kubeconfig file (default: in-cluster, then ~/.kube)")
    a("--metrics-bind-address", default=":8080", help="metrics endpoint; 0 disables")
    a("--health-probe-bind-address", default=":8081", help="/healthz and /readyz; 0 disables")
    a("--leader-elect", action="store_true", help="run active/standby with a Lease")
    a("--leader-election-namespace", default="", help="namespace of the Lease")
    a("--leader-election-id", default="ack-secret-manager", help="name of the Lease")
    a("--lease-duration", type=_duration_arg, default=15.0)
    a("--renew-deadline", type=_duration_arg, default=10.0)
    a("--retry-period", type=_duration_arg, default=2.0)
    a("--log-format", choices=["text", "json"], default="text")
    a("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    a("--sts-endpoint", default="", help="STS endpoint (env ALIBABA_CLOUD_STS_ENDPOINT)")
    a("--metadata-proxy", default="", help=argparse.SUPPRESS)  # tests: fake ECS metadata
    a("--shutdown-timeout", type=_duration_arg, default=25.0,
      help="the whole stop after SIGTERM, Lease release included (default 25s: keep it under "
      "the Pod's terminationGracePeriodSeconds)")
    # Tenant bounds: what an ExternalSecret or SecretStore may ask for (docs/security.md).
    a("--min-refresh-interval", type=_duration_arg, default=10.0,
      help="shortest refreshInterval honoured; shorter ones are raised to it (default 10s, "
      "or --polling-interval when that is shorter)")
    a("--max-refresh-interval", type=_duration_arg, default=30 * 24 * 3600.0,
      help="longest refreshInterval honoured; longer ones are lowered to it (default 720h)")
    a("--controller-identity-namespaces", type=_csv, default=None,
      help="namespaces whose ExternalSecrets may use the controller's own identity (entries "
      "without a store, stores without credentials); default: all, as ack-secret-manager; "
      "'' allows none")
    a("--require-cluster-store-conditions", action="store_true",
      help="a ClusterSecretStore without spec.conditions admits no namespace")
    a("--allowed-endpoints", type=_csv, default=(),
      help="hosts (or *.suffix patterns) that stores and entries may name as KMS endpoints, "
      "besides *.aliyuncs.com")
    a("--allow-insecure-kms-instance-tls", action="store_true",
      help="honour dedicatedKMSAuth.ignoreSSL (TLS verification of a KMS instance off); "
      "without it such a store is refused")
    a("--allow-http-endpoints", action="store_true",
      help="let stores and entries name plain http:// KMS endpoints (tests and demos only)")
    # ack-secret-manager flags that this controller accepts and does not need.
    for legacy in ("--backend", "--reconcile-period", "--reconcile-count",
                   "--token-rotation-period"):
        a(legacy, default=None, nargs="?", const="true",
          help="accepted for ack-secret-manager compatibility; no effect")
    a("--cleanup-secret-on-failure", default="false", nargs="?", const="true",
      help="ack-secret-manager's deletion of a Secret when every source fails: refused unless "
      "false (a failed fetch keeps the last good data)")
    return p


CLEANUP_REFUSED = (
    "--cleanup-secret-on-failure={value} is refused: ack-secret-manager then deletes an "
    "ExternalSecret's Secret whenever all its sources fail, transient KMS or network errors "
    "included, so one outage would delete Secrets workloads need; this controller keeps the "
    "last good data instead (docs/security.md). Remove the flag or set it to false.")


def _refuse_cleanup_on_failure(value: str) -> None:
    """Go's bool spellings of false are accepted; anything else stops the start-up."""
    if value not in ("false", "False", "FALSE", "f", "F", "0"):
        raise SystemExit(CLEANUP_REFUSED.format(value=value[:20]))


def _credentials(env: Mapping[str, str]) -> Credentials:
    def first(*names: str) -> str:
        return next((env[n] for n in names if env.get(n)), "")

    expiration = first("ALICLOUD_ROLE_SESSION_EXPIRATION", "ALIBABA_CLOUD_ROLE_SESSION_EXPIRATION")
    return Credentials(
        access_key_id=first("ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_ID"),
        access_key_secret=first("SECRET_ACCESS_KEY", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
        role_arn=first("ALICLOUD_ROLE_ARN", "ALIBABA_CLOUD_ROLE_ARN"),
        role_session_name=first("ALICLOUD_ROLE_SESSION_NAME", "ALIBABA_CLOUD_ROLE_SESSION_NAME"),
        role_session_expiration=int(expiration) if expiration.isdigit() else 3600,
        oidc_provider_arn=first("ALICLOUD_OIDC_PROVIDER_ARN", "ALIBABA_CLOUD_OIDC_PROVIDER_ARN"),
        oidc_token_file=first("ALICLOUD_OIDC_TOKEN_FILE_PATH", "ALICLOUD_OIDC_TOKEN_FILE",
                              "ALIBABA_CLOUD_OIDC_TOKEN_FILE"),
        remote_role_arn=first("ALICLOUD_REMOTE_ROLE_ARN"),
        remote_role_session_name=first("ALICLOUD_REMOTE_ROLE_SESSION_NAME"),
        sts_endpoint=first("ALIBABA_CLOUD_STS_ENDPOINT"),
    )


def load(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Parse flags and environment into Settings (raises SystemExit on bad flags)."""
    env = os.environ if env is None else env
    ns = build_parser().parse_args(argv)
    _refuse_cleanup_on_failure(ns.cleanup_secret_on_failure)
    watch = ns.watch_namespaces
    if watch is None:
        watch = _csv(env.get("WATCH_NAMESPACE", ""))
    creds = _credentials(env)
    return Settings(
        polling_interval=ns.polling_interval,
        disable_polling=ns.disable_polling,
        # An empty --region= (the old chart renders one) must not wipe the default.
        region=ns.region or env.get("ALIBABA_CLOUD_REGION_ID", "") or "cn-hangzhou",
        kms_endpoint=ns.kms_endpoint,
        kms_endpoint_type=ns.kms_endpoint_type,
        kms_protocol=ns.kms_protocol,
        max_concurrent_kms_secret_pulls=max(1, ns.max_concurrent_kms_secret_pulls),
        oos_endpoint=ns.oos_endpoint,
        max_concurrent_oos_secret_pulls=max(1, ns.max_concurrent_oos_secret_pulls),
        enable_worker_role=ns.enable_worker_role,
        watch_namespaces=tuple(watch),
        exclude_namespaces=tuple(ns.exclude_namespaces),
        enable_cross_namespace_secret_store=ns.enable_cross_namespace_secret_store,
        workers=max(1, ns.workers),
        kubeconfig=ns.kubeconfig or env.get("KUBECONFIG", ""),
        metrics_bind_address=ns.metrics_bind_address,
        health_probe_bind_address=ns.health_probe_bind_address,
        leader_elect=ns.leader_elect,
        leader_election_namespace=ns.leader_election_namespace or env.get("POD_NAMESPACE", ""),
        leader_election_id=ns.leader_election_id,
        lease_duration=ns.lease_duration,
        renew_deadline=ns.renew_deadline,
        retry_period=ns.retry_period,
        log_format=ns.log_format,
        log_level=ns.log_level,
        sts_endpoint=ns.sts_endpoint or creds.sts_endpoint,
        metadata_proxy=ns.metadata_proxy,
        credentials=creds,
        shutdown_timeout=max(1.0, ns.shutdown_timeout),
        min_refresh_interval=max(0.0, ns.min_refresh_interval),
        max_refresh_interval=max(ns.max_refresh_interval, ns.min_refresh_interval, 1.0),
        controller_identity_namespaces=(None if ns.controller_identity_namespaces is None
                                        else tuple(ns.controller_identity_namespaces)),
        require_cluster_store_conditions=ns.require_cluster_store_conditions,
        allowed_endpoints=tuple(ns.allowed_endpoints),
        allow_http_endpoints=ns.allow_http_endpoints,
        allow_insecure_kms_instance_tls=ns.allow_insecure_kms_instance_tls,
    )
