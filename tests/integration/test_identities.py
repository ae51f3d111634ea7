"""Who the controller is to Alibaba Cloud, and where it sends its calls, end to end: the real
controller process, the real SDKs against the fake cloud's STS, metadata and KMS servers, and
for per-ServiceAccount RRSA the real kube-apiserver's TokenRequest API, whose JWKS the fake
STS checks. Each identity has a denial case; credentials refresh about once per lifetime,
not once per KMS call; an expired security token is replaced and the read retried; KMS calls
per endpoint stay within --max-concurrent-kms-secret-pulls; no credential ever reaches a log,
an Event or a status."""

from __future__ import annotations

import http.client
import itertools
import re
import select
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.cluster import ControlPlane
from tests.fakecloud import DEFAULT_ACCOUNT_ID, FakeCloud, Trust
from tests.fakecloud.tls import write_tls_files
from tests.integration.conftest import AK_ID, AK_SECRET, K8s
from tests.waiting import wait_for

PROVIDER = f"acs:ram::{DEFAULT_ACCOUNT_ID}:oidc-provider/ack-rrsa-local"
ROLE_ANNOTATION = "ack.alibabacloud.com/role-arn"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.")


def _role(name: str) -> str:
    return f"acs:ram::{DEFAULT_ACCOUNT_ID}:role/{name}"


def _sub(namespace: str, sa: str) -> str:
    return f"system:serviceaccount:{namespace}:{sa}"


def _es(name: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "ExternalSecret", "metadata": {"name": name}, "spec": {"data": list(entries)}}


def _entry(key: str, store: str | None = None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"key": key, **extra}
    if store is not None:
        entry["secretStoreRef"] = {"name": store}
    return entry


def _store(k8s: K8s, ns: str, name: str, kms: dict[str, Any]) -> None:
    k8s.create(ns, "secretstores", {"kind": "SecretStore", "metadata": {"name": name},
                                    "spec": {"KMS": kms}})


def _ak_secret(k8s: K8s, ns: str, name: str, ak_id: str = AK_ID,
               ak_secret: str = AK_SECRET) -> dict[str, Any]:
    k8s.core.create_namespaced_secret(ns, {"metadata": {"name": name},
                                           "stringData": {"id": ak_id, "secret": ak_secret}})
    return {"accessKey": {"name": name, "key": "id"},
            "accessKeySecret": {"name": name, "key": "secret"}}


def _service_account(k8s: K8s, ns: str, name: str, role_arn: str | None) -> None:
    annotations = {ROLE_ANNOTATION: role_arn} if role_arn else {}
    k8s.core.create_namespaced_service_account(
        ns, {"metadata": {"name": name, "annotations": annotations}})


def _cond(k8s: K8s, ns: str, name: str) -> dict[str, Any]:
    return k8s.ready(ns, name) or {}


def _synced(k8s: K8s, ns: str, name: str, data: dict[str, str]) -> Callable[[], bool]:
    return lambda: k8s.secret_data(ns, name) == data


def _failed(k8s: K8s, ns: str, name: str, reason: str, *parts: str) -> dict[str, Any]:
    """Wait for a Ready=False condition with `reason` whose message holds every part."""
    def check() -> dict[str, Any] | None:
        cond = _cond(k8s, ns, name)
        message = str(cond.get("message", ""))
        if cond.get("reason") == reason and all(p in message for p in parts):
            return cond
        return None

    cond: dict[str, Any] = wait_for(check, what=f"{ns}/{name}: {reason} with {parts}")
    assert cond["status"] == "False"
    return cond


def _texts(k8s: K8s, ns: str, names: list[str], log: str) -> list[str]:
    """Everything the controller said: its log, and the status and Events of `names`."""
    out = [log]
    for name in names:
        out.append(str(k8s.get(ns, "externalsecrets", name).get("status")))
        out += [f"{e.reason} {e.message}" for e in k8s.events(ns, name)]
    return out


def _assert_no_credentials(texts: list[str], cloud: FakeCloud, *secrets: str) -> None:
    """No AccessKey secret, security token or JWT (ServiceAccount token) anywhere."""
    issued = [v for r in cloud.iam.keys.values() if r.security_token
              for v in (r.secret, r.security_token)]
    assert issued or secrets, "nothing to look for: the test did not use credentials"
    for text in texts:
        assert not JWT.search(text), "a JWT (ServiceAccount token) leaked"
        for value in (*secrets, *issued):
            assert value not in text, "a credential leaked"


def _sts_calls(cloud: FakeCloud) -> int:
    return cloud.calls("AssumeRole") + cloud.calls("AssumeRoleWithOIDC")


@pytest.fixture
def rrsa(cloud: FakeCloud, cluster: ControlPlane) -> FakeCloud:
    """The fake cloud with the real apiserver registered as the RRSA OIDC provider."""
    cloud.set_oidc_jwks(PROVIDER, cluster.jwks, issuer=cluster.issuer)
    return cloud


# ------------------------------------------------------------------------------ identities


def test_service_account_rrsa_reads_as_the_tenants_own_role(
    k8s: K8s, rrsa: FakeCloud, namespace: str, make_namespace: Callable[..., str],
    start_controller: Callable[..., Any], tmp_path: Path,
) -> None:
    cloud = rrsa
    reader, remote = _role(f"reader-{namespace}"), _role(f"remote-{namespace}")
    cloud.add_role(reader, trust=Trust(oidc_provider_arn=PROVIDER,
                                       subjects=(_sub(namespace, "app"),)))
    cloud.add_role(remote, trust=Trust(principals=(reader,)))
    cloud.put_secret("tenant-db", "tenant-pw")
    cloud.put_secret("forbidden", "nope")
    cloud.deny(reader, "forbidden")
    _service_account(k8s, namespace, "app", reader)
    _service_account(k8s, namespace, "plain", None)
    _service_account(k8s, namespace, "intruder", reader)  # annotated, but not trusted
    elsewhere = make_namespace("elsewhere")
    _service_account(k8s, elsewhere, "app", reader)
    # The OIDC provider comes from the controller's environment (as ACK's RRSA webhook sets
    # it). NOTE: providers/alibaba/blocks.py refuses oidcProviderARN in a store without
    # ramRoleARN even with serviceAccountRef (the role comes from the annotation); see the report.
    for store, sa in (("sa", "app"), ("plain", "plain"), ("intruder", "intruder")):
        _store(k8s, namespace, store, {"KMSAuth": {"serviceAccountRef": {"name": sa}}})
    _store(k8s, namespace, "cross", {"KMSAuth": {
        "serviceAccountRef": {"name": "app", "namespace": elsewhere}}})
    _store(k8s, namespace, "remote", {"KMSAuth": {
        "serviceAccountRef": {"name": "app"},
        "remoteRamRoleARN": remote, "remoteRamRoleSessionName": "tenant-remote"}})
    scratch = tmp_path / "controller-tmp"
    scratch.mkdir()
    proc = start_controller("--kms-endpoint", cloud.kms_endpoint, "--log-level", "debug",
                            "--sts-endpoint", cloud.sts_endpoint,
                            env={**cloud.trust_env(), "TMPDIR": str(scratch),
                                 "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": PROVIDER})
    for name, store in (("app", "sa"), ("plain", "plain"), ("intruder", "intruder"),
                        ("cross", "cross"), ("remote", "remote")):
        k8s.create(namespace, "externalsecrets", _es(name, _entry("tenant-db", store)))
    k8s.create(namespace, "externalsecrets", _es("denied", _entry("forbidden", "sa")))

    wait_for(_synced(k8s, namespace, "app", {"tenant-db": "tenant-pw"}), what="SA RRSA sync")
    assert cloud.calls("AssumeRoleWithOIDC", identity=reader) >= 1
    assert cloud.calls("GetSecretValue", secret="tenant-db", identity=reader) >= 1
    wait_for(_synced(k8s, namespace, "remote", {"tenant-db": "tenant-pw"}),
             what="cross-account role on top of SA RRSA")
    assert cloud.calls("GetSecretValue", secret="tenant-db", identity=remote) >= 1
    assert any(r.session_name == "tenant-remote" for r in cloud.iam.keys.values())
    _failed(k8s, namespace, "plain", "CredentialsNotFound", f"SecretStore {namespace}/plain",
            f"ServiceAccount {namespace}/plain", ROLE_ANNOTATION)
    _failed(k8s, namespace, "intruder", "FetchFailed", "AuthenticationFail.NoPermission",
            "trust policy", f"SecretStore {namespace}/intruder")
    _failed(k8s, namespace, "cross", "CrossNamespaceRefused",
            f"ServiceAccount {elsewhere}/app", "--enable-cross-namespace-auth-ref")
    _failed(k8s, namespace, "denied", "AccessDenied", "Forbidden.NoPermission",
            f"SecretStore {namespace}/sa", "kms:GetSecretValue", "kms:Decrypt")
    for name in ("plain", "intruder", "cross", "denied"):
        assert k8s.secret(namespace, name) is None

    # The minted tokens are private to the controller and gone when it stops.
    token_dirs = list(scratch.glob("asm-sa-tokens-*"))
    assert len(token_dirs) == 1
    assert stat.S_IMODE(token_dirs[0].stat().st_mode) == 0o700
    tokens = list(token_dirs[0].iterdir())
    assert tokens and all(stat.S_IMODE(t.stat().st_mode) == 0o600 for t in tokens)
    texts = _texts(k8s, namespace, ["app", "plain", "intruder", "cross", "remote", "denied"],
                   "")
    assert proc.stop() == 0
    assert not token_dirs[0].exists()
    _assert_no_credentials([*texts, proc.log], cloud)


@pytest.mark.parametrize("names", ["ack-webhook", "ack-secret-manager"])
def test_controller_rrsa_from_the_environment_and_from_a_store(
    k8s: K8s, rrsa: FakeCloud, namespace: str, start_controller: Callable[..., Any],
    mint_token: Callable[..., str], tmp_path: Path, names: str,
) -> None:
    cloud = rrsa
    own, store_role = _role(f"controller-{namespace}"), _role(f"store-{namespace}")
    for arn in (own, store_role):
        cloud.add_role(arn, trust=Trust(oidc_provider_arn=PROVIDER,
                                        subjects=(_sub(namespace, "controller"),)))
    cloud.put_secret("shared", "pw")
    cloud.put_secret("forbidden", "nope")
    cloud.deny(own, "forbidden")
    token = tmp_path / "token"
    token.write_text(mint_token(namespace, "controller"))
    wrong_audience = tmp_path / "wrong-audience"
    wrong_audience.write_text(mint_token(namespace, "controller",
                                         audiences=["https://kubernetes.default.svc"]))
    args = ["--kms-endpoint", cloud.kms_endpoint]
    if names == "ack-webhook":  # what ACK's RRSA webhook injects
        env = {"ALIBABA_CLOUD_ROLE_ARN": own, "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": PROVIDER,
               "ALIBABA_CLOUD_OIDC_TOKEN_FILE": str(token),
               "ALIBABA_CLOUD_STS_ENDPOINT": cloud.sts_endpoint}
    else:  # ack-secret-manager's chart: envVarsFromSecret + rrsa.enable
        env = {"ALICLOUD_ROLE_ARN": own, "ALICLOUD_OIDC_PROVIDER_ARN": PROVIDER,
               "ALICLOUD_OIDC_TOKEN_FILE_PATH": str(token)}
        args += ["--sts-endpoint", cloud.sts_endpoint]
    _store(k8s, namespace, "rrsa", {"KMSAuth": {
        "oidcProviderARN": PROVIDER, "ramRoleARN": store_role,
        "oidcTokenFilePath": str(token)}})
    _store(k8s, namespace, "wrong-audience", {"KMSAuth": {
        "oidcProviderARN": PROVIDER, "ramRoleARN": store_role,
        "oidcTokenFilePath": str(wrong_audience)}})
    proc = start_controller(*args, env={**cloud.trust_env(), **env})
    k8s.create(namespace, "externalsecrets", _es("own", _entry("shared")))
    k8s.create(namespace, "externalsecrets", _es("store", _entry("shared", "rrsa")))
    k8s.create(namespace, "externalsecrets", _es("denied", _entry("forbidden")))
    k8s.create(namespace, "externalsecrets", _es("refused", _entry("shared", "wrong-audience")))

    wait_for(_synced(k8s, namespace, "own", {"shared": "pw"}), what="controller RRSA sync")
    wait_for(_synced(k8s, namespace, "store", {"shared": "pw"}), what="store RRSA sync")
    assert cloud.calls("GetSecretValue", identity=own) >= 1
    assert cloud.calls("GetSecretValue", identity=store_role) >= 1
    _failed(k8s, namespace, "denied", "AccessDenied", "the controller's environment",
            "kms:GetSecretValue")
    _failed(k8s, namespace, "refused", "FetchFailed",
            "AuthenticationFail.OIDCToken.AudienceNotMatch",
            f"SecretStore {namespace}/wrong-audience")
    texts = _texts(k8s, namespace, ["own", "store", "denied", "refused"], "")
    proc.stop()
    _assert_no_credentials([*texts, proc.log], cloud)


def test_access_key_with_assume_role_and_a_cross_account_role(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    tenant, remote = _role(f"tenant-{namespace}"), _role(f"remote-{namespace}")
    untrusting = _role(f"untrusting-{namespace}")
    cloud.add_role(tenant, trust=Trust(principals=("app",)))
    cloud.add_role(remote, trust=Trust(principals=(tenant,)))
    cloud.add_role(untrusting, trust=Trust(principals=("someone-else",)))
    cloud.put_secret("db", "pw")
    ak = _ak_secret(k8s, namespace, "ak")
    _store(k8s, namespace, "role", {"KMSAuth": {
        **ak, "ramRoleARN": tenant, "ramRoleSessionName": "tenant-a"}})
    _store(k8s, namespace, "remote", {"KMSAuth": {
        **ak, "ramRoleARN": tenant, "ramRoleSessionName": "tenant-a",
        "remoteRamRoleARN": remote, "remoteRamRoleSessionName": "tenant-a-remote"}})
    _store(k8s, namespace, "untrusted", {"KMSAuth": {**ak, "ramRoleARN": untrusting}})
    proc = start_controller("--kms-endpoint", cloud.kms_endpoint, "--log-level", "debug",
                            env={**cloud.trust_env(), "ALIBABA_CLOUD_STS_ENDPOINT":
                                 cloud.sts_endpoint})
    for name in ("role", "remote", "untrusted"):
        k8s.create(namespace, "externalsecrets", _es(name, _entry("db", name)))
    wait_for(_synced(k8s, namespace, "role", {"db": "pw"}), what="AK + AssumeRole sync")
    wait_for(_synced(k8s, namespace, "remote", {"db": "pw"}), what="cross-account sync")
    assert cloud.calls("GetSecretValue", identity=tenant) >= 1
    assert cloud.calls("GetSecretValue", identity=remote) >= 1
    sessions = {r.session_name for r in cloud.iam.keys.values()}
    assert {"tenant-a", "tenant-a-remote"} <= sessions
    _failed(k8s, namespace, "untrusted", "FetchFailed", "NoPermission", "trust policy",
            f"SecretStore {namespace}/untrusted", untrusting)
    texts = _texts(k8s, namespace, ["role", "remote", "untrusted"], "")
    proc.stop()
    _assert_no_credentials([*texts, proc.log], cloud, AK_SECRET)


def test_access_key_from_the_environment_and_a_wrong_key_in_a_store(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    remote = _role(f"remote-{namespace}")
    cloud.add_role(remote, trust=Trust(principals=("app",)))
    cloud.put_secret("db", "pw")
    wrong_secret = "WrongSecretValue00000000001"
    _store(k8s, namespace, "wrong", {"KMSAuth": _ak_secret(k8s, namespace, "wrong-ak",
                                                           ak_secret=wrong_secret)})
    # A store that only adds a cross-account role: on top of the controller's AccessKey.
    _store(k8s, namespace, "remote", {"KMSAuth": {
        "remoteRamRoleARN": remote, "remoteRamRoleSessionName": "platform"}})
    # As the chart's envVarsFromSecret sets them.
    proc = start_controller("--kms-endpoint", cloud.kms_endpoint, "--log-level", "debug",
                            "--sts-endpoint", cloud.sts_endpoint,
                            env={**cloud.trust_env(), "ACCESS_KEY_ID": AK_ID,
                                 "SECRET_ACCESS_KEY": AK_SECRET})
    k8s.create(namespace, "externalsecrets", _es("env", _entry("db")))
    k8s.create(namespace, "externalsecrets", _es("remote", _entry("db", "remote")))
    k8s.create(namespace, "externalsecrets", _es("wrong", _entry("db", "wrong")))
    wait_for(_synced(k8s, namespace, "env", {"db": "pw"}), what="environment AccessKey sync")
    wait_for(_synced(k8s, namespace, "remote", {"db": "pw"}), what="cross-account sync")
    assert cloud.calls("GetSecretValue", identity="app") >= 1
    assert cloud.calls("GetSecretValue", identity=remote) >= 1
    _failed(k8s, namespace, "wrong", "FetchFailed", "SignatureDoesNotMatch",
            f"SecretStore {namespace}/wrong")
    texts = _texts(k8s, namespace, ["env", "remote", "wrong"], "")
    proc.stop()
    _assert_no_credentials([*texts, proc.log], cloud, AK_SECRET, wrong_secret)


def test_worker_role_through_instance_metadata_with_imdsv2(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("db", "pw")
    cloud.metadata_require_token = True  # IMDSv1 reads are refused
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--enable-worker-role",
                     "--metadata-proxy", cloud.metadata_proxy, "--polling-interval", "1s",
                     env={"ALIBABA_CLOUD_ECS_METADATA_DISABLED": "false"})
    k8s.create(namespace, "externalsecrets", _es("app", _entry("db")))
    # Denial: the node has no RAM role attached yet.
    _failed(k8s, namespace, "app", "FetchFailed", "WorkerRoleUnavailable",
            "attach a RAM role")
    assert k8s.secret(namespace, "app") is None
    # 8 s credentials: refreshed when a quarter of the lifetime is left (2 s), so a request
    # delayed on a loaded machine still reaches the cloud before they expire.
    cloud.set_ecs_role("worker-role", lifetime_seconds=8)
    wait_for(_synced(k8s, namespace, "app", {"db": "pw"}), what="worker role sync")
    role = _role("worker-role")
    assert cloud.calls("GetSecretValue", identity=role) >= 1
    assert cloud.calls("MetadataToken", service="metadata") >= 1
    # Short-lived instance credentials: fetched about once per lifetime, not per poll (12
    # polls: 12 fetches). At most one per quarter lifetime, plus one: on a loaded CI machine
    # the credentials library refreshed twice within 1.5 s once (4 in 11.9 s; its expiry has
    # whole seconds and it refreshes ahead of it).
    reads = cloud.calls("GetSecretValue", identity=role)
    fetched = cloud.calls("MetadataCredentials", identity=role)
    started = time.monotonic()
    wait_for(lambda: cloud.calls("GetSecretValue", identity=role) >= reads + 12, timeout=30,
             what="12 more polls")
    elapsed = time.monotonic() - started
    more = cloud.calls("MetadataCredentials", identity=role) - fetched
    assert 1 <= more <= elapsed / 2 + 1, (
        f"{more} fetches in {elapsed:.1f}s:\n{_timeline(cloud, role)}")


def _timeline(cloud: FakeCloud, identity: str) -> str:
    """The fake cloud's log of `identity`'s calls (seconds, action, status, code, duration):
    what a failed bound on credential fetches needs to be understood."""
    entries = [e for e in cloud.request_log if e["identity"] == identity]
    t0 = entries[0]["time"] if entries else 0.0
    return "\n".join(f"{e['time'] - t0:7.3f} {e['action']} {e['status']} {e['code'] or ''} "
                     f"{e['duration']:.3f}s" for e in entries)


def test_without_credentials_and_worker_role_the_status_says_so(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    # The worker role is on by default (ack-secret-manager v0.5's default): turned off here.
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--enable-worker-role=false")
    k8s.create(namespace, "externalsecrets", _es("app", _entry("db")))
    _failed(k8s, namespace, "app", "NoCredentials", "--enable-worker-role", "ACCESS_KEY_ID",
            "ALICLOUD_ROLE_ARN")
    assert cloud.calls() == 0


# ------------------------------------------------------------------------------- endpoints


class ForwardProxy:
    """An HTTP forward proxy (absolute-URI requests and CONNECT) that sends every host to a
    local server, and records the hosts asked for: stands in for DNS in endpoint tests."""

    def __init__(self, route: Callable[[str, int], tuple[str, int]]) -> None:
        self.route = route
        self.hosts: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def do_CONNECT(self) -> None:
                host, _, port = self.path.rpartition(":")
                proxy.hosts.append(host)
                upstream = socket.create_connection(proxy.route(host, int(port)))
                self.send_response(200, "Connection established")
                self.end_headers()
                _pipe(self.connection, upstream)
                self.close_connection = True

            def _forward(self) -> None:
                url = urlsplit(self.path)
                proxy.hosts.append(url.hostname or "")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(*proxy.route(url.hostname or "",
                                                               url.port or 80), timeout=10)
                path = url.path + (f"?{url.query}" if url.query else "")
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-connection", "connection")}
                conn.request(self.command, path, body, headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> ForwardProxy:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while True:
            ready, _, _ = select.select([a, b], [], [], 30)
            if not ready:
                return
            for src in ready:
                data = src.recv(65536)
                if not data:
                    return
                (b if src is a else a).sendall(data)
    except OSError:
        return
    finally:
        b.close()


def _local(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def proxy(cloud: FakeCloud) -> Iterator[ForwardProxy]:
    """*.cryptoservice.kms.aliyuncs.com -> the fake's TLS KMS; other aliyuncs.com names -> its
    plain KMS; 127.0.0.1 -> itself."""
    def route(host: str, port: int) -> tuple[str, int]:
        if host.endswith(".cryptoservice.kms.aliyuncs.com"):
            return _local(cloud.kms_tls_endpoint)
        if host.endswith(".aliyuncs.com"):
            return _local(cloud.kms_endpoint)
        return host, port

    with ForwardProxy(route) as p:
        yield p


@pytest.mark.parametrize(("args", "host"), [
    (["--region="], "kms-vpc.cn-hangzhou.aliyuncs.com"),  # an empty --region from a chart
    (["--region", "cn-shanghai", "--kms-endpoint-type", "public"],
     "kms.cn-shanghai.aliyuncs.com"),
])
def test_region_gives_the_default_endpoint(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
    proxy: ForwardProxy, args: list[str], host: str,
) -> None:
    cloud.put_secret("db", "pw")
    k8s.access_key_store(namespace)
    start_controller(*args, env={"HTTP_PROXY": proxy.url})
    k8s.create(namespace, "externalsecrets", _es("app", _entry("db", "store")))
    wait_for(_synced(k8s, namespace, "app", {"db": "pw"}), what=f"sync through {host}")
    assert set(proxy.hosts) == {host}


def test_kms_endpoint_flag_store_and_entry_override_each_other(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    for name in ("via-flag", "via-store", "via-entry"):
        cloud.put_secret(name, "pw")
    k8s.access_key_store(namespace, "shared")
    k8s.access_key_store(namespace, "instance", endpoint=f"https://{cloud.kms_tls_endpoint}")
    k8s.patch(namespace, "secretstores", "instance", {"spec": {"KMS": {"ca": cloud.ca_pem}}})
    # The fake's endpoints are on 127.0.0.1, the entry's over plain http: the operator allows
    # both explicitly (by default only https on *.aliyuncs.com is accepted from a store).
    start_controller("--kms-endpoint", f"http://{cloud.kms_endpoint}",
                     "--polling-interval", "1h", "--allowed-endpoints", "127.0.0.1",
                     "--allow-http-endpoints")
    k8s.create(namespace, "externalsecrets", _es(
        "app", _entry("via-flag", "shared"), _entry("via-store", "instance"),
        _entry("via-entry", "instance", kmsEndpoint=f"http://{cloud.kms_endpoint}")))
    wait_for(_synced(k8s, namespace, "app",
                     {"via-flag": "pw", "via-store": "pw", "via-entry": "pw"}), what="sync")
    for secret, service, other in (("via-flag", "kms", "kms-instance"),
                                   ("via-store", "kms-instance", "kms"),
                                   ("via-entry", "kms", "kms-instance")):
        assert cloud.calls("GetSecretValue", secret=secret, service=service) >= 1
        assert cloud.calls("GetSecretValue", secret=secret, service=other) == 0


def test_kms_instance_endpoint_with_its_private_ca(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
    proxy: ForwardProxy, tmp_path: Path,
) -> None:
    cloud.put_secret("db", "pw")
    k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "instance-ca"},
                                                  "stringData": {"ca.pem": cloud.ca_pem}})
    # The instance's real host name (through the proxy), its CA in a Secret.
    k8s.access_key_store(namespace, "by-ref",
                         endpoint="https://kst-hzz65f1example.cryptoservice.kms.aliyuncs.com")
    k8s.patch(namespace, "secretstores", "by-ref", {"spec": {"KMS": {
        "caSecretRef": {"name": "instance-ca", "key": "ca.pem"}}}})
    # Another tenant's store names the same instance host with another CA: it must fail
    # closed even after the right CA has connected (each CA gets its own TLS session, so one
    # store's CA never widens another's trust).
    (tmp_path / "other").mkdir()
    other_ca = write_tls_files(tmp_path / "other").ca_pem
    host = "kst-hzz65f1example.cryptoservice.kms.aliyuncs.com"
    k8s.access_key_store(namespace, "wrong-ca", endpoint=f"https://{host}")
    k8s.patch(namespace, "secretstores", "wrong-ca", {"spec": {"KMS": {"ca": other_ca}}})
    start_controller("--polling-interval", "1h",
                     env={"HTTPS_PROXY": proxy.url, "NO_PROXY": "127.0.0.1,localhost"})
    k8s.create(namespace, "externalsecrets", _es("app", _entry("db", "by-ref")))
    wait_for(_synced(k8s, namespace, "app", {"db": "pw"}), what="sync over TLS")
    assert host in proxy.hosts
    assert cloud.calls("GetSecretValue", service="kms-instance") == 1
    k8s.create(namespace, "externalsecrets", _es("wrong", _entry("db", "wrong-ca")))
    _failed(k8s, namespace, "wrong", "FetchFailed", "TLSVerifyFailed", host,
            "spec.KMS.ca", f"SecretStore {namespace}/wrong-ca")
    assert k8s.secret(namespace, "wrong") is None
    assert cloud.calls("GetSecretValue", service="kms-instance") == 1  # nothing got through
    # The right CA fixes it.
    k8s.patch(namespace, "secretstores", "wrong-ca", {"spec": {"KMS": {"ca": cloud.ca_pem}}})
    wait_for(_synced(k8s, namespace, "wrong", {"db": "pw"}), what="sync after the CA fix")


# ----------------------------------------------------------------------- load and faults


def test_short_lived_credentials_are_refreshed_once_per_lifetime_not_per_call(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    role = _role(f"short-{namespace}")
    cloud.add_role(role, trust=Trust(principals=("app",)), lifetime_seconds=4)
    for i in range(10):
        cloud.put_secret(f"s{i}", f"v{i}")
    _store(k8s, namespace, "role", {"KMSAuth": {**_ak_secret(k8s, namespace, "ak"),
                                                "ramRoleARN": role}})
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1s",
                     "--sts-endpoint", cloud.sts_endpoint, env=cloud.trust_env())
    started = time.monotonic()
    for i in range(10):
        k8s.create(namespace, "externalsecrets", _es(f"app-{i}", _entry(f"s{i}", "role")))
    wait_for(lambda: cloud.calls("GetSecretValue", identity=role) >= 60, timeout=30,
             what="60 KMS reads")
    elapsed = time.monotonic() - started
    reads, sts = cloud.calls("GetSecretValue", identity=role), cloud.calls("AssumeRole")
    print(f"\nshort-lived credentials: {reads} KMS reads, {sts} AssumeRole in {elapsed:.1f}s")
    # Credentials live 4 s and are renewed with a quarter left: one STS call per ~3 s.
    assert sts <= elapsed / 2 + 2, (sts, reads, elapsed)
    assert sts * 5 < reads
    for i in range(10):
        assert k8s.secret_data(namespace, f"app-{i}") == {f"s{i}": f"v{i}"}


def test_expired_security_token_rebuilds_the_identity_and_retries_once(
    k8s: K8s, rrsa: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    cloud = rrsa
    role = _role(f"reader-{namespace}")
    cloud.add_role(role, trust=Trust(oidc_provider_arn=PROVIDER,
                                     subjects=(_sub(namespace, "app"),)))
    _service_account(k8s, namespace, "app", role)
    _store(k8s, namespace, "sa", {"KMSAuth": {"serviceAccountRef": {"name": "app"}}})
    for i in range(5):
        cloud.put_secret(f"s{i}", f"v{i}")
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1s",
                     "--sts-endpoint", cloud.sts_endpoint,
                     env={**cloud.trust_env(), "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": PROVIDER})
    for i in range(5):
        k8s.create(namespace, "externalsecrets", _es(f"app-{i}", _entry(f"s{i}", "sa")))
    for i in range(5):
        wait_for(_synced(k8s, namespace, f"app-{i}", {f"s{i}": f"v{i}"}), what=f"app-{i}")
    reads = cloud.calls("GetSecretValue", identity=role)
    wait_for(lambda: cloud.calls("GetSecretValue", identity=role) >= reads + 15,
             what="15 more polls")
    assert cloud.calls("AssumeRoleWithOIDC") == 1  # one hour credentials: one STS call
    since = {i: _cond(k8s, namespace, f"app-{i}")["lastTransitionTime"] for i in range(5)}

    assert cloud.expire_all_tokens() >= 1
    def expired() -> int:
        return sum(1 for e in cloud.request_log if e["code"] == "InvalidSecurityToken.Expired")
    wait_for(expired, what="a read with the expired token")
    reads = cloud.calls("GetSecretValue", identity=role)
    wait_for(lambda: cloud.calls("GetSecretValue", identity=role) >= reads + 10,
             what="10 more reads with the new credentials")
    assert cloud.calls("AssumeRoleWithOIDC") == 2  # rebuilt once, however many reads failed
    log = cloud.request_log
    last_expired = max(e["time"] for e in log if e["code"] == "InvalidSecurityToken.Expired")
    assert all(e["status"] == 200 for e in log
               if e["action"] == "GetSecretValue" and e["time"] > last_expired + 0.5)
    for i in range(5):  # never out of sync, never not Ready
        assert k8s.secret_data(namespace, f"app-{i}") == {f"s{i}": f"v{i}"}
        cond = _cond(k8s, namespace, f"app-{i}")
        assert cond["status"] == "True" and cond["lastTransitionTime"] == since[i]


def test_kms_calls_per_endpoint_stay_within_the_limit_under_a_burst(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    limit, fast, slow = 5, 40, 10
    for i in range(fast + slow):
        cloud.put_secret(f"s{i}", f"v{i}")
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h",
                     "--max-concurrent-kms-secret-pulls", str(limit), "--workers", "16")

    def burst(first: int, count: int) -> list[dict[str, Any]]:
        cloud.reset_counters()
        for i in range(first, first + count):
            k8s.create(namespace, "externalsecrets", _es(f"app-{i}", _entry(f"s{i}", "store")))
        for i in range(first, first + count):
            wait_for(_synced(k8s, namespace, f"app-{i}", {f"s{i}": f"v{i}"}), timeout=40,
                     what=f"app-{i}")
        # Every call counts against the limit, polls too (each secret's poll has its own slot
        # in the hour, which may fall within the test).
        log = [e for e in cloud.request_log if e["action"] == "GetSecretValue"]
        assert {f"s{i}" for i in range(first, first + count)} <= {e["secret"] for e in log}
        return log

    # Fast calls: the rate is what limits. Measured on arrival (when the fake starts handling
    # a call) in every sliding one-second window; completions (the fake's peak_rate) add the
    # handler's own scheduling jitter and are reported only. The limiter spaces starts so that
    # rate + 1 of them span 1.1 s: a call that reaches the service up to 100 ms late stays
    # within the rate. On a busy 2-core CI machine a call's way from its start time to the
    # fake's handler (the SDK's signing, HTTP, the fake's own threads) was once later than
    # that: 6 arrivals in a second (2026-12-07). One more than the rate is allowed for that;
    # rate + 2 would take 0.32 s of delay, and a limiter that let a burst through (a bucket
    # of `rate` tokens: 2 * rate - 1 in a window; none: all 40 at once) still fails.
    cloud.latency = 0.05
    log = burst(0, fast)
    arrivals = sorted(e["time"] - e["duration"] for e in log)
    arrival_peak = max(sum(1 for t in arrivals if start <= t < start + 1.0)
                       for start in arrivals)
    peak = cloud.peak_rate(window=1.0, action="GetSecretValue")
    print(f"\nburst of {fast} at 50 ms: peak {peak}/s on completion, {arrival_peak}/s on "
          f"arrival, over {arrivals[-1] - arrivals[0]:.1f}s")
    assert arrival_peak <= limit + 1
    assert arrival_peak >= limit - 1  # the burst did press against the limit
    # Slow calls: the concurrency cap is what limits.
    cloud.latency = 1.5
    burst(fast, slow)
    print(f"burst of {slow} at 1.5 s: {cloud.peak_concurrency} in flight at most")
    assert cloud.peak_concurrency == limit


def test_transient_failures_are_retried_and_final_ones_are_not(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("flaky", "pw")
    cloud.put_secret("denied", "nope")
    cloud.deny("app", "denied")
    cloud.inject(secret="flaky", fault="drop", times=1)
    cloud.inject(secret="flaky", fault="internal", times=1)
    cloud.inject(secret="flaky", fault="throttling", times=1, retry_after_ms=300)
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h")
    k8s.create(namespace, "externalsecrets", _es("flaky", _entry("flaky", "store")))
    k8s.create(namespace, "externalsecrets", _es("missing", _entry("missing", "store")))
    k8s.create(namespace, "externalsecrets", _es("denied", _entry("denied", "store")))
    wait_for(_synced(k8s, namespace, "flaky", {"flaky": "pw"}), what="flaky synced")
    assert cloud.calls("GetSecretValue", secret="flaky") == 4  # drop, 500, throttled, ok
    times = sorted(e["time"] for e in cloud.request_log if e["secret"] == "flaky")
    assert times[3] - times[2] >= 0.3  # x-acs-retry-after honoured
    _failed(k8s, namespace, "missing", "FetchFailed", "Forbidden.ResourceNotFound")
    _failed(k8s, namespace, "denied", "AccessDenied", "Forbidden.NoPermission")
    for secret in ("missing", "denied"):  # one call per sync: no retries within a fetch
        times = sorted(e["time"] for e in cloud.request_log if e["secret"] == secret)
        assert all(b - a > 1.0 for a, b in itertools.pairwise(times)), times

