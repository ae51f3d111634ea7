"""Flags and environment of `ack-secret-manager kms-plugin`, read once into `PluginSettings`.

Why separate from controller/settings.py: the plugin runs as a static pod on a control-plane
node, beside the kube-apiserver, with its own flags (the key, the socket, the cluster name
that binds every ciphertext). Names follow the old ack-kms-plugin where it had them
(`--key-id`, `--path-to-unix-socket`, env `ACK_KMS_REGION_ID`, `ACK_KMS_DOMAIN`) and the
controller's for identities (env `ACCESS_KEY_ID` / `SECRET_ACCESS_KEY` or the
`ALIBABA_CLOUD_*` names, `ALICLOUD_ROLE_ARN`, `ALIBABA_CLOUD_STS_ENDPOINT`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import yaml

from controller.goflags import FlagError, GoFlagParser
from controller.settings import check_address, parse_duration, version_line

DEFAULT_SOCKET = "/var/run/kmsplugin/grpc.sock"
CONTEXT_KEY = "kubernetes-cluster"
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class SettingsError(ValueError):
    """A flag or file that cannot work; the text names it and the fix."""


@dataclass(frozen=True)
class PluginSettings:
    key_id: str
    socket_path: str = DEFAULT_SOCKET
    cluster_name: str = "kubernetes"
    region: str = "cn-hangzhou"
    kms_endpoint: str = ""
    kms_endpoint_type: str = "vpc"
    kms_protocol: str = "https"
    kms_ca_file: str = ""
    key_refresh_interval: float = 30.0
    kms_timeout: float = 2.5
    metrics_bind_address: str = "127.0.0.1:8095"
    health_probe_bind_address: str = "127.0.0.1:8095"
    access_key_id: str = ""
    access_key_secret: str = field(default="", repr=False)
    role_arn: str = ""
    role_session_name: str = "ack-kms-plugin"
    enable_worker_role: bool = False
    worker_role_name: str = ""
    sts_endpoint: str = ""
    metadata_proxy: str = ""
    log_format: str = "text"
    log_level: str = "info"

    @property
    def endpoint_host(self) -> str:
        """--kms-endpoint if set, else the region's VPC (or public) KMS endpoint."""
        if self.kms_endpoint:
            return self.kms_endpoint
        prefix = "kms-vpc" if self.kms_endpoint_type == "vpc" else "kms"
        return f"{prefix}.{self.region}.aliyuncs.com"

    @property
    def encryption_context(self) -> dict[str, str]:
        """What KMS binds every ciphertext to: a blob of another cluster does not decrypt."""
        return {CONTEXT_KEY: self.cluster_name}


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser(env: Mapping[str, str]) -> GoFlagParser:
    p = GoFlagParser(
        prog="ack-secret-manager kms-plugin",
        description="Kubernetes KMS v2 provider plugin: encrypts Secrets at rest in etcd with "
        "an Alibaba Cloud KMS key.")
    p.add_argument("--version", action="version", version=version_line())
    a = p.add_argument
    a("--key-id", default=env.get("ACK_KMS_KEY_ID", ""),
      help="the KMS key (KeyId, or alias/<name>) that wraps the apiserver's DEKs "
      "(env ACK_KMS_KEY_ID)")
    a("--path-to-unix-socket", "--listen", dest="socket_path", default=DEFAULT_SOCKET,
      help=f"unix socket to serve on (default {DEFAULT_SOCKET}); the kube-apiserver's "
      "EncryptionConfiguration names it as unix://<path>")
    a("--cluster-name", default=env.get("ACK_KMS_CLUSTER_NAME", "kubernetes"),
      help="bound into every ciphertext as the KMS EncryptionContext; never change it while "
      "data is encrypted (env ACK_KMS_CLUSTER_NAME)")
    a("--region", default=env.get("ACK_KMS_REGION_ID", "") or "cn-hangzhou",
      help="Alibaba Cloud region (env ACK_KMS_REGION_ID; default cn-hangzhou)")
    a("--kms-endpoint", default=env.get("ACK_KMS_DOMAIN", ""),
      help="KMS endpoint host[:port], e.g. a KMS instance <id>.cryptoservice.kms.aliyuncs.com "
      "(env ACK_KMS_DOMAIN); overrides --region")
    a("--kms-endpoint-type", choices=["vpc", "public"], default="vpc",
      help="endpoint derived from --region: kms-vpc.<region> (default) or kms.<region>")
    a("--kms-protocol", choices=["https", "http"], default="https", help=argparse.SUPPRESS)
    a("--kms-ca-file", default="", help="PEM CA of a KMS instance endpoint")
    a("--key-refresh-interval", type=_duration, default=30.0,
      help="how often DescribeKey is asked for the key's state and primary version "
      "(default 30s); Status answers from this cache")
    a("--kms-timeout", type=_duration, default=2.5,
      help="time budget of one KMS operation, retries included (default 2.5s; keep it under "
      "the EncryptionConfiguration's timeout, 3s by default)")
    a("--metrics-bind-address", default="127.0.0.1:8095", help="/metrics; 0 disables")
    a("--health-probe-bind-address", default="127.0.0.1:8095",
      help="/healthz and /readyz for the static pod's probes; 0 disables")
    a("--access-key-file", default="",
      help="YAML or JSON file with accessKeyId and accessKeySecret (instead of the env "
      "ACCESS_KEY_ID / SECRET_ACCESS_KEY)")
    a("--role-arn",
      default=env.get("ALICLOUD_ROLE_ARN", "") or env.get("ALIBABA_CLOUD_ROLE_ARN", ""),
      help="assume this RAM role with the AccessKey (env ALICLOUD_ROLE_ARN)")
    a("--role-session-name", default="ack-kms-plugin")
    p.add_bool("--enable-worker-role", default=False,
               help="use the node's ECS RAM role (instance metadata) when no AccessKey is "
               "configured")
    a("--worker-role-name", default="", help="the ECS RAM role's name (default: discovered)")
    a("--sts-endpoint", default=env.get("ALIBABA_CLOUD_STS_ENDPOINT", ""),
      help="STS endpoint for AssumeRole (env ALIBABA_CLOUD_STS_ENDPOINT)")
    a("--metadata-proxy", default="", help=argparse.SUPPRESS)  # tests: fake ECS metadata
    a("--log-format", choices=["text", "json"], default="text")
    a("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    return p


def read_access_key_file(path: str) -> tuple[str, str]:
    """(id, secret) from a YAML/JSON file with accessKeyId + accessKeySecret."""
    try:
        with open(path) as fh:
            doc = yaml.safe_load(fh)
    except OSError as exc:
        raise SettingsError(f"--access-key-file {path}: cannot read it ({exc.strerror}); "
                            "mount the file or fix the path") from None
    except yaml.YAMLError:
        raise SettingsError(f"--access-key-file {path}: not YAML or JSON; write "
                            '{"accessKeyId": ..., "accessKeySecret": ...}') from None
    if not isinstance(doc, dict) or not doc.get("accessKeyId") or not doc.get("accessKeySecret"):
        raise SettingsError(f"--access-key-file {path}: needs the fields accessKeyId and "
                            "accessKeySecret")
    return str(doc["accessKeyId"]), str(doc["accessKeySecret"])


def _validate(ns: argparse.Namespace) -> None:
    if not ns.key_id:
        raise SettingsError("--key-id is required: the KMS key that wraps the DEKs "
                            "(or env ACK_KMS_KEY_ID)")
    if not _CLUSTER_NAME.fullmatch(ns.cluster_name):
        raise SettingsError(f"--cluster-name {ns.cluster_name!r}: use 1-128 letters, digits, "
                            "'.', '_' or '-'")
    if not ns.socket_path or not os.path.isabs(ns.socket_path):
        raise SettingsError(f"--path-to-unix-socket {ns.socket_path!r}: give an absolute path")
    if not 1.0 <= ns.key_refresh_interval <= 3600:
        raise SettingsError("--key-refresh-interval must be between 1s and 1h")
    if not 0.5 <= ns.kms_timeout <= 30:
        raise SettingsError("--kms-timeout must be between 500ms and 30s")
    try:
        check_address("--metrics-bind-address", ns.metrics_bind_address)
        check_address("--health-probe-bind-address", ns.health_probe_bind_address)
    except FlagError as exc:
        raise SettingsError(str(exc)) from None


def load(argv: Sequence[str] | None = None,
         environ: Mapping[str, str] | None = None) -> PluginSettings:
    """Parse flags (--help and --version exit 0); SettingsError (one line) for a malformed
    flag or values that cannot work together."""
    env = os.environ if environ is None else environ
    try:
        ns = build_parser(env).parse_args(argv)
    except FlagError as exc:
        raise SettingsError(str(exc)) from None
    _validate(ns)
    ak_id = env.get("ACCESS_KEY_ID") or env.get("ALIBABA_CLOUD_ACCESS_KEY_ID", "")
    ak_secret = env.get("SECRET_ACCESS_KEY") or env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "")
    if ns.access_key_file:
        ak_id, ak_secret = read_access_key_file(ns.access_key_file)
    if bool(ak_id) != bool(ak_secret):
        raise SettingsError("an AccessKey needs both ACCESS_KEY_ID and SECRET_ACCESS_KEY")
    if not ak_id and not ns.enable_worker_role:
        raise SettingsError("no identity: set ACCESS_KEY_ID + SECRET_ACCESS_KEY (or "
                            "--access-key-file), or --enable-worker-role on ECS")
    if ns.role_arn and not ak_id:
        raise SettingsError("--role-arn needs an AccessKey to assume it with")
    return PluginSettings(
        key_id=ns.key_id, socket_path=ns.socket_path, cluster_name=ns.cluster_name,
        region=ns.region, kms_endpoint=ns.kms_endpoint, kms_endpoint_type=ns.kms_endpoint_type,
        kms_protocol=ns.kms_protocol, kms_ca_file=ns.kms_ca_file,
        key_refresh_interval=ns.key_refresh_interval, kms_timeout=ns.kms_timeout,
        metrics_bind_address=ns.metrics_bind_address,
        health_probe_bind_address=ns.health_probe_bind_address,
        access_key_id=ak_id, access_key_secret=ak_secret, role_arn=ns.role_arn,
        role_session_name=ns.role_session_name, enable_worker_role=ns.enable_worker_role,
        worker_role_name=ns.worker_role_name, sts_endpoint=ns.sts_endpoint,
        metadata_proxy=ns.metadata_proxy, log_format=ns.log_format, log_level=ns.log_level)


def describe(settings: PluginSettings) -> str:
    """One log line of what the plugin runs with (no secrets)."""
    return json.dumps({"key": settings.key_id, "socket": settings.socket_path,
                       "cluster": settings.cluster_name, "endpoint": settings.endpoint_host,
                       "refresh": settings.key_refresh_interval})
