"""The one place that reads command-line flags and the environment.

Flag names, forms and defaults follow ack-secret-manager's (every flag of every released
version, in Go's syntax: controller/goflags.py), so a Deployment rendered by its chart keeps
working when only the image changes; flags it had that this controller has no use for are
type-checked as the original checked them and said to have no effect in --help. Every value
is checked here, before anything is contacted (`validate`): a bad one is one FlagError line.
Everything else in the program receives a frozen `Settings`.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from controller import __version__, api
from controller.goflags import FlagError, GoFlagParser, parse_go_int

__all__ = ["Credentials", "FlagError", "Settings", "build_parser", "load", "parse_duration"]


def parse_duration(text: str) -> float:
    """A Go duration ("120s", "1m30s", "500ms") or, leniently, plain seconds ("120")."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    return api.parse_duration(text)


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not a Go duration such as 30s, 5m or 1h30m") from None


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
    store_recheck_interval: float = 0.0  # 0: --polling-interval
    disable_polling: bool = False
    region: str = "cn-hangzhou"
    kms_endpoint: str = ""
    kms_endpoint_type: str = "vpc"
    kms_protocol: str = "https"
    max_concurrent_kms_secret_pulls: int = 10
    oos_endpoint: str = ""
    max_concurrent_oos_secret_pulls: int = 10
    enable_worker_role: bool = True  # ack-secret-manager v0.5's default
    watch_namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ()
    enable_cross_namespace_secret_store: bool = False
    enable_cross_namespace_auth_ref: bool = False
    process_cluster_secret_store: bool = True
    process_cluster_external_secret: bool = True
    cleanup_secret_on_failure: bool = False
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
    # Distinct private CAs (with their endpoint hosts) one namespace's SecretStores may keep
    # in use at once; 0: no bound (docs/security.md, 4b)
    max_cas_per_namespace: int = 8
    # One sync of one ExternalSecret: templates and fetched-value parsing (docs/security.md)
    sync_budget_bytes: int = 16 << 20
    namespace_cache_bytes: int = 8 << 20
    value_cache_bytes: int = 32 << 20
    sync_budget_steps: int = 200_000

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


def build_parser() -> GoFlagParser:
    p = GoFlagParser(
        prog="ack-secret-manager",
        description="Keeps Kubernetes Secrets in step with Alibaba Cloud KMS Secrets Manager. "
        "Flags take Go's forms as ack-secret-manager did (--x=v, --x v, -x=v; booleans as "
        "--x or --x=true|false).",
        epilog="subcommands: 'ack-secret-manager kms-plugin --help' (KMS v2 encryption-at-rest "
        "plugin for the kube-apiserver), 'ack-secret-manager reencrypt --help' (rewrite "
        "stored Secrets under the current KMS key). Without a subcommand: the controller.",
    )
    p.add_argument("--version", action="version", version=version_line())
    a, b = p.add_argument, p.add_bool
    a("--polling-interval", type=_duration_arg, default=120.0,
      help="how often every ExternalSecret is re-read from KMS (default 120s)")
    a("--store-recheck-interval", type=_duration_arg, default=0.0,
      help="how often the Ready condition of a store whose credentials live in Secrets is "
           "checked again (credential Secrets are not watched; 60s while not Ready, if "
           "shorter); default: --polling-interval")
    b("--disable-polling", default=False, help="sync on change only, never poll")
    a("--region", default="", help="Alibaba Cloud region (default cn-hangzhou when empty)")
    a("--kms-endpoint", default="", help="KMS endpoint host[:port]; overrides --region")
    a("--kms-endpoint-type", choices=["vpc", "public"], default="vpc",
      help="endpoint derived from --region: kms-vpc.<region> (default) or kms.<region>")
    a("--kms-protocol", choices=["https", "http"], default="https", help=argparse.SUPPRESS)
    a("--max-concurrent-kms-secret-pulls", type=parse_go_int, default=None,
      help="KMS GetSecretValue calls per second per endpoint (also the concurrency cap; "
      "default 10)")
    a("--max-concurrent-secret-pulls", type=parse_go_int, default=None,
      help="deprecated name of --max-concurrent-kms-secret-pulls (used when that is absent)")
    a("--oos-endpoint", default="",
      help="OOS endpoint host[:port] for provider: oos; default oos-vpc.<region> (or "
      "oos.<region> with --kms-endpoint-type public)")
    a("--max-concurrent-oos-secret-pulls", type=parse_go_int, default=10,
      help="OOS GetSecretParameter calls per second per endpoint (also the concurrency cap)")
    b("--enable-worker-role", default=True,
      help="use the node's ECS RAM role when nothing else is configured (default true, as "
      "ack-secret-manager v0.5; --enable-worker-role=false turns it off)")
    a("--watch-namespaces", type=_csv, default=None,
      help="comma-separated namespaces to watch (default all; env WATCH_NAMESPACE)")
    a("--exclude-namespaces", type=_csv, default=(), help="comma-separated namespaces to skip")
    b("--enable-cross-namespace-secret-store", default=False,
      help="allow SecretStores from another namespace (and, as in earlier releases of this "
      "controller, their credential Secrets and ServiceAccounts)")
    b("--enable-cross-namespace-auth-ref", default=False,
      help="allow a SecretStore's credential Secret, CA Secret or ServiceAccount from another "
      "namespace (without allowing cross-namespace stores)")
    b("--process-cluster-secret-store", default=True,
      help="serve ClusterSecretStores (false: entries naming one fail with "
      "ClusterSecretStoreDisabled)")
    b("--process-cluster-external-secret", default=True,
      help="serve ClusterExternalSecrets (false: they are left alone)")
    b("--cleanup-secret-on-failure", default=False,
      help="delete an ExternalSecret's own Secret when EVERY one of its sources fails "
      "(never on a partial failure, never a merged-into Secret); off by default: an outage "
      "would then delete Secrets workloads need (docs/usage.md)")
    a("--workers", type=parse_go_int, default=8, help="parallel syncs (1-1000)")
    a("--kubeconfig", default="", help="kubeconfig file (default: in-cluster, then ~/.kube)")
    a("--metrics-bind-address", default=":8080", help="metrics endpoint; 0 disables")
    a("--health-probe-bind-address", default=":8081", help="/healthz and /readyz; 0 disables")
    b("--leader-elect", "--enable-leader-election", dest="leader_elect", default=False,
      help="run active/standby with a Lease (--enable-leader-election is ack-secret-manager's "
      "name)")
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
    b("--require-cluster-store-conditions", default=False,
      help="a ClusterSecretStore without spec.conditions admits no namespace")
    a("--allowed-endpoints", type=_csv, default=(),
      help="hosts (or *.suffix patterns) that stores and entries may name as KMS endpoints, "
      "besides *.aliyuncs.com")
    b("--allow-insecure-kms-instance-tls", default=False,
      help="honour dedicatedKMSAuth.ignoreSSL (TLS verification of a KMS instance off); "
      "without it such a store is refused")
    b("--allow-http-endpoints", default=False,
      help="let stores and entries name plain http:// KMS endpoints (tests and demos only)")
    a("--max-cas-per-namespace", type=parse_go_int, default=8,
      help="distinct private CAs (spec.KMS.ca, caSecretRef, dedicatedKMSAuth.ca; one per CA "
      "and endpoint host) the SecretStores of one namespace may use at once: the oldest "
      "stores' CAs first, later stores with another CA are refused (default 8; 0: no bound)")
    a("--sync-budget-bytes", type=parse_go_int, default=16 << 20,
      help="bytes one sync of one ExternalSecret may build in its templates and while parsing "
      "its fetched values (JSON, YAML), all together (default 16 MiB, at least 1 MiB; keep it "
      "times --workers well under the memory limit)")
    a("--namespace-cache-bytes", type=parse_go_int, default=8 << 20,
      help="bytes (as JSON) one namespace's ExternalSecrets may take in the controller's "
      "cache, and as much its SecretStores and its Secrets the controller writes; objects "
      "past it are reported (NamespaceCacheFull) or read uncached (Secrets) (default 8 MiB, "
      "at least 1 MiB; 0: no bound)")
    a("--value-cache-bytes", type=parse_go_int, default=32 << 20,
      help="bytes the values read from KMS and OOS may take in the controller's cache, all "
      "together; past it the largest holder's (a namespace's) least recently used value is let "
      "go and read again when needed (default 32 MiB, at least 1 MiB)")
    a("--sync-budget-steps", type=parse_go_int, default=200_000,
      help="evaluation steps one sync of one ExternalSecret may take in its templates and "
      "parsing, all together (default 200000, at least 10000)")
    # ack-secret-manager flags this controller has no use for: checked as the original
    # checked them (a malformed value fails here as it failed there), otherwise no effect.
    a("--backend", choices=["alicloud-kms", ""], default="alicloud-kms",
      help="ack-secret-manager's backend (only alicloud-kms); no effect")
    a("--reconcile-period", type=_duration_arg, default=5.0,
      help="ack-secret-manager's requeue period; no effect (syncs follow events and "
      "--polling-interval)")
    a("--reconcile-count", type=parse_go_int, default=1,
      help="ack-secret-manager's concurrency; no effect (see --workers)")
    a("--token-rotation-period", type=_duration_arg, default=120.0,
      help="ack-secret-manager's token check period; no effect (credentials refresh before "
      "they expire)")
    a("--cluster-id", default="", help="ack-secret-manager's cluster ID; no effect")
    a("--uid", default="", help="ack-secret-manager's Alibaba Cloud account ID; no effect")
    return p


def version_line() -> str:
    from controller.buildinfo import commit

    return f"ack-secret-manager {__version__} (commit {commit()})"


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]*")


def check_address(flag: str, value: str) -> None:
    """'0' (off), ':port', 'host:port' or '[ipv6]:port', port 0-65535."""
    if value == "0":
        return
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    fine = sep and port.isdigit() and int(port) <= 65535 and " " not in host and (
        not host or re.fullmatch(r"[A-Za-z0-9.:-]+", host))
    if not fine:
        raise FlagError(f"{flag} {value[:60]!r}: give host:port or :port (such as :8080), or "
                        "0 to disable")


def _check_namespaces(flag: str, names: Sequence[str]) -> None:
    for name in names:
        if len(name) > 63 or not _DNS_LABEL.fullmatch(name):
            raise FlagError(f"{flag}: {name[:70]!r} is not a namespace name (lowercase "
                            "letters, digits and '-', at most 63)")


def _positive(flag: str, value: float, minimum: float = 0.0) -> None:
    """A duration above zero (or at least `minimum` seconds)."""
    if value <= 0 or value < minimum:
        least = f"at least {minimum:g}s" if minimum else "more than 0s"
        raise FlagError(f"{flag} must be {least} (a Go duration such as 30s)")


def validate(ns: argparse.Namespace, watch: Sequence[str]) -> None:
    """Every value, before anything is contacted: FlagError names the first bad one."""
    check_address("--metrics-bind-address", ns.metrics_bind_address)
    check_address("--health-probe-bind-address", ns.health_probe_bind_address)
    if not 1 <= ns.workers <= 1000:
        raise FlagError(f"--workers {ns.workers}: give 1 to 1000 parallel syncs")
    for flag, value in (("--max-concurrent-kms-secret-pulls", ns.max_concurrent_kms_secret_pulls),
                        ("--max-concurrent-secret-pulls", ns.max_concurrent_secret_pulls),
                        ("--max-concurrent-oos-secret-pulls", ns.max_concurrent_oos_secret_pulls)):
        if value is not None and not 1 <= value <= 100000:
            raise FlagError(f"{flag} {value}: give 1 to 100000 calls per second")
    if ns.reconcile_count < 0:
        raise FlagError(f"--reconcile-count {ns.reconcile_count}: must not be negative")
    if ns.max_cas_per_namespace < 0:
        raise FlagError(f"--max-cas-per-namespace {ns.max_cas_per_namespace}: give 0 (no "
                        "bound) or more private CAs per namespace")
    if ns.sync_budget_bytes < 1 << 20:
        raise FlagError(f"--sync-budget-bytes {ns.sync_budget_bytes}: give at least 1048576")
    if ns.namespace_cache_bytes != 0 and ns.namespace_cache_bytes < 1 << 20:
        raise FlagError(f"--namespace-cache-bytes {ns.namespace_cache_bytes}: give at least "
                        "1048576, or 0 for no bound")
    if ns.value_cache_bytes < 1 << 20:
        raise FlagError(f"--value-cache-bytes {ns.value_cache_bytes}: give at least 1048576")
    if ns.sync_budget_steps < 10_000:
        raise FlagError(f"--sync-budget-steps {ns.sync_budget_steps}: give at least 10000")
    _positive("--polling-interval", ns.polling_interval)
    if ns.store_recheck_interval < 0:
        raise FlagError("--store-recheck-interval must not be negative (a Go duration such "
                        "as 10m; 0: --polling-interval)")
    _positive("--shutdown-timeout", ns.shutdown_timeout, 1.0)
    for flag in ("--lease-duration", "--renew-deadline", "--retry-period"):
        _positive(flag, getattr(ns, flag[2:].replace("-", "_")))
    # The elector's rule (controller/kube/leader.py check_timing, client-go's), checked here
    # before anything is contacted; not imported, as the kms-plugin shares this module.
    if ns.lease_duration <= ns.renew_deadline:
        raise FlagError(f"--lease-duration ({ns.lease_duration:g}s) must be longer than "
                        f"--renew-deadline ({ns.renew_deadline:g}s)")
    if ns.renew_deadline <= 1.2 * ns.retry_period:
        raise FlagError(f"--renew-deadline ({ns.renew_deadline:g}s) must be longer than 1.2 x "
                        f"--retry-period ({ns.retry_period:g}s)")
    if ns.min_refresh_interval < 0:
        raise FlagError("--min-refresh-interval must not be negative")
    if ns.max_refresh_interval < 1:
        raise FlagError("--max-refresh-interval must be at least 1s")
    if ns.min_refresh_interval > ns.max_refresh_interval:
        raise FlagError(f"--min-refresh-interval ({ns.min_refresh_interval:g}s) is above "
                        f"--max-refresh-interval ({ns.max_refresh_interval:g}s)")
    _check_namespaces("--watch-namespaces (or WATCH_NAMESPACE)", watch)
    _check_namespaces("--exclude-namespaces", ns.exclude_namespaces)
    _check_namespaces("--controller-identity-namespaces", ns.controller_identity_namespaces or ())
    both = sorted(set(watch) & set(ns.exclude_namespaces))
    if both:
        raise FlagError(f"namespace(s) {', '.join(both)[:200]} are both watched "
                        "(--watch-namespaces) and excluded (--exclude-namespaces); keep each "
                        "in one of them")
    if ns.leader_election_namespace:
        _check_namespaces("--leader-election-namespace", [ns.leader_election_namespace])
    if len(ns.leader_election_id) > 253 or not _DNS_SUBDOMAIN.fullmatch(ns.leader_election_id):
        raise FlagError(f"--leader-election-id {ns.leader_election_id[:60]!r}: not a valid "
                        "object name (lowercase letters, digits, '-' and '.')")
    if ns.region and not _REGION.fullmatch(ns.region):
        raise FlagError(f"--region {ns.region[:60]!r}: not a region ID such as cn-hangzhou")
    if ns.kubeconfig and not os.path.isfile(ns.kubeconfig):
        raise FlagError(f"--kubeconfig {ns.kubeconfig[:200]}: no such file; give a readable "
                        "kubeconfig, or omit the flag in a Pod")


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
    """Parse and check flags and environment into Settings. Raises FlagError (one line that
    names the flag) on a bad command line or value; --help and --version exit 0."""
    env = os.environ if env is None else env
    ns = build_parser().parse_args(argv)
    watch = ns.watch_namespaces
    if watch is None:
        watch = _csv(env.get("WATCH_NAMESPACE", ""))
    validate(ns, watch)
    creds = _credentials(env)
    kms_pulls = ns.max_concurrent_kms_secret_pulls
    if kms_pulls is None:  # the deprecated name counts only when the new one is absent
        kms_pulls = ns.max_concurrent_secret_pulls or 10
    return Settings(
        polling_interval=ns.polling_interval,
        store_recheck_interval=ns.store_recheck_interval,
        disable_polling=ns.disable_polling,
        # An empty --region= (the old chart renders one) must not wipe the default.
        region=ns.region or env.get("ALIBABA_CLOUD_REGION_ID", "") or "cn-hangzhou",
        kms_endpoint=ns.kms_endpoint,
        kms_endpoint_type=ns.kms_endpoint_type,
        kms_protocol=ns.kms_protocol,
        max_concurrent_kms_secret_pulls=kms_pulls,
        oos_endpoint=ns.oos_endpoint,
        max_concurrent_oos_secret_pulls=ns.max_concurrent_oos_secret_pulls,
        enable_worker_role=ns.enable_worker_role,
        watch_namespaces=tuple(watch),
        exclude_namespaces=tuple(ns.exclude_namespaces),
        enable_cross_namespace_secret_store=ns.enable_cross_namespace_secret_store,
        enable_cross_namespace_auth_ref=ns.enable_cross_namespace_auth_ref,
        process_cluster_secret_store=ns.process_cluster_secret_store,
        process_cluster_external_secret=ns.process_cluster_external_secret,
        cleanup_secret_on_failure=ns.cleanup_secret_on_failure,
        workers=ns.workers,
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
        shutdown_timeout=ns.shutdown_timeout,
        min_refresh_interval=ns.min_refresh_interval,
        max_refresh_interval=ns.max_refresh_interval,
        controller_identity_namespaces=(None if ns.controller_identity_namespaces is None
                                        else tuple(ns.controller_identity_namespaces)),
        require_cluster_store_conditions=ns.require_cluster_store_conditions,
        allowed_endpoints=tuple(ns.allowed_endpoints),
        allow_http_endpoints=ns.allow_http_endpoints,
        allow_insecure_kms_instance_tls=ns.allow_insecure_kms_instance_tls,
        max_cas_per_namespace=ns.max_cas_per_namespace,
        sync_budget_bytes=ns.sync_budget_bytes,
        namespace_cache_bytes=ns.namespace_cache_bytes,
        value_cache_bytes=ns.value_cache_bytes,
        sync_budget_steps=ns.sync_budget_steps,
    )
