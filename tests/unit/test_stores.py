"""Unit tests for controller.secretstore.stores with the Alibaba provider behind it
(controller.providers.alibaba.stores): which identity and which endpoint a data entry uses
(the documented priority order, the environment names, the overrides), and every refusal
naming the store and the fix. Plain fakes: stores and Secrets are dicts."""

from __future__ import annotations

import base64
import pathlib
import urllib.parse
from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from controller import api, settings
from controller.providers.alibaba.identity import (
    ACCESS_KEY,
    ECS_RAM_ROLE,
    OIDC_ROLE_ARN,
    RAM_ROLE_ARN,
)
from controller.providers.alibaba.provider import Alibaba
from controller.providers.alibaba.shape import SHAPE as ALIBABA
from controller.providers.alibaba.stores import (
    DEFAULT_OIDC_TOKEN_FILE,
    ENDPOINT_PATTERN,
    Source,
    operator_endpoints,
    parse_endpoint,
)
from controller.providers.registry import Providers
from controller.secretstore.cas import PrivateCas
from controller.secretstore.stores import StoreProblem, StoreResolver, ca_identities
from tests import shaped

NS = "team-a"
PROVIDER = "acs:ram::1:oidc-provider/ack-rrsa"
ROLE, REMOTE = "acs:ram::1:role/app", "acs:ram::2:role/remote"


class FakeSecrets:
    def __init__(self, data: Mapping[tuple[str, str], Mapping[str, str]]) -> None:
        self.data = data

    def read_secret_key(self, namespace: str, name: str, key: str) -> bytes | None:
        value = self.data.get((namespace, name), {}).get(key)
        return None if value is None else value.encode()


class FakeTokens:
    """Stands in for kube.tokens.ServiceAccountTokens."""

    def __init__(self, roles: Mapping[tuple[str, str], str]) -> None:
        self.roles = roles
        self.asked: list[tuple[str, str, tuple[str, ...]]] = []

    def __call__(self, ref: api.ServiceAccountRef, default_ns: str) -> tuple[str, str]:
        self.asked.append((ref.namespace, ref.name, ref.audiences))
        role = self.roles.get((ref.namespace, ref.name))
        if role is None:
            raise _Problem("CredentialsNotFound", f"ServiceAccount {ref.namespace}/{ref.name} "
                           "has no annotation ack.alibabacloud.com/role-arn")
        return f"/tokens/{ref.namespace}-{ref.name}", role


class _Problem(Exception):
    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


AK = {("team-a", "ak"): {"id": "LTAI-id", "secret": "ak-secret-value"},
      ("platform", "ak"): {"id": "LTAI-platform", "secret": "platform-secret"},
      ("platform", "ca"): {"ca.pem": "-----BEGIN CERTIFICATE-----\nXYZ\n"}}
AK_REFS = {"accessKey": {"name": "ak", "key": "id"},
           "accessKeySecret": {"name": "ak", "key": "secret"}}


def alibaba(cfg: settings.Settings, **kw: Any) -> Providers:
    """The registry of the controller: the Alibaba provider (no readers: nothing is read)."""
    providers = Providers()
    providers.register(Alibaba(cfg, **kw), shape=ALIBABA)
    return providers


def _settings(argv: list[str] | None = None, env: Mapping[str, str] | None = None
              ) -> settings.Settings:
    return settings.load(argv or [], env or {})


def _store(name: str, kms: dict[str, Any], kind: str = "SecretStore",
           namespace: str = NS, **spec: Any) -> dict[str, Any]:
    meta = {"name": name, "uid": f"uid-{name}", "resourceVersion": "1"}
    if kind == "SecretStore":
        meta["namespace"] = namespace
    return {"kind": kind, "metadata": meta, "spec": {"KMS": kms, **spec}}


class World:
    def __init__(self, cfg: settings.Settings, stores: list[dict[str, Any]],
                 tokens: FakeTokens | None = None, cas: PrivateCas | None = None) -> None:
        self.stores = {(s["kind"], s["metadata"].get("namespace", ""), s["metadata"]["name"]): s
                       for s in stores}
        self.credentials: list[str] = []
        self.tokens = tokens or FakeTokens({(NS, "app"): ROLE})
        self.resolver = StoreResolver(
            cfg, self._get, FakeSecrets(AK), lambda _ns: {}, alibaba(cfg, tokens=self.tokens),
            on_credential=self.credentials.append, cas=cas)

    def _get(self, kind: api.StoreKind, namespace: str, name: str) -> dict[str, Any] | None:
        return self.stores.get((str(kind), namespace, name))

    def resolve(self, ref: dict[str, Any] | None = None, **entry: Any) -> Source:
        raw_entry: dict[str, Any] = {"key": "db", **entry}
        if ref is not None:
            raw_entry["secretStoreRef"] = ref
        es = shaped.parse_external_secret({
            "metadata": {"name": "app", "namespace": NS, "uid": "u"},
            "spec": {"data": [raw_entry]}})
        source = self.resolver.resolve(es, es.spec.data[0])
        assert isinstance(source, Source)
        return source


def _problem(world: World, ref: dict[str, Any] | None, reason: str, *parts: str) -> str:
    with pytest.raises(StoreProblem) as err:
        world.resolve(ref)
    assert err.value.reason == reason
    for part in parts:
        assert part in str(err.value)
    return str(err.value)


# --------------------------------------------------------------------------- priority


def test_store_priority_service_account_then_rrsa_then_assume_role_then_access_key() -> None:
    everything = {"serviceAccountRef": {"name": "app"}, "oidcProviderARN": PROVIDER,
                  "ramRoleARN": ROLE, "oidcTokenFilePath": "/t", **AK_REFS}
    without_sa = {k: v for k, v in everything.items() if k != "serviceAccountRef"}
    world = World(_settings(), [
        _store("all", {"KMSAuth": everything}),
        _store("rrsa", {"KMSAuth": without_sa}),
        _store("assume", {"KMSAuth": {**AK_REFS, "ramRoleARN": ROLE,
                                      "ramRoleSessionName": "tenant-a"}}),
        _store("ak", {"KMSAuth": AK_REFS}),
    ])
    sa = world.resolve({"name": "all"}).identity
    assert (sa.kind, sa.role_arn, sa.oidc_token_file) == (OIDC_ROLE_ARN, ROLE, "/tokens/team-a-app")
    assert "ServiceAccount team-a/app" in sa.describe()
    rrsa = world.resolve({"name": "rrsa"}).identity
    assert (rrsa.kind, rrsa.oidc_token_file, rrsa.oidc_provider_arn) == (OIDC_ROLE_ARN, "/t",
                                                                         PROVIDER)
    assume = world.resolve({"name": "assume"}).identity
    assert (assume.kind, assume.access_key_id, assume.role_arn) == (RAM_ROLE_ARN, "LTAI-id",
                                                                    ROLE)
    assert assume.role_session_name == "tenant-a"
    ak = world.resolve({"name": "ak"}).identity
    assert (ak.kind, ak.access_key_secret, ak.role_arn) == (ACCESS_KEY, "ak-secret-value", "")
    assert "ak-secret-value" in world.credentials  # handed to the log redactor
    assert "ak-secret-value" not in repr(ak) and "ak-secret-value" not in ak.describe()


@pytest.mark.parametrize(("env", "argv", "kind"), [
    ({"ALIBABA_CLOUD_ROLE_ARN": ROLE, "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": PROVIDER,
      "ALIBABA_CLOUD_OIDC_TOKEN_FILE": "/var/run/ack/token", "ACCESS_KEY_ID": "x",
      "SECRET_ACCESS_KEY": "y"}, ["--enable-worker-role"], OIDC_ROLE_ARN),
    ({"ALICLOUD_ROLE_ARN": ROLE, "ACCESS_KEY_ID": "x", "SECRET_ACCESS_KEY": "y"},
     ["--enable-worker-role"], RAM_ROLE_ARN),
    ({"ACCESS_KEY_ID": "x", "SECRET_ACCESS_KEY": "y"}, ["--enable-worker-role"], ACCESS_KEY),
    ({}, ["--enable-worker-role", "--metadata-proxy", "http://proxy"], ECS_RAM_ROLE),
])
def test_controller_identity_priority_from_the_environment(
    env: dict[str, str], argv: list[str], kind: str
) -> None:
    world = World(_settings(argv, env), [])
    identity = world.resolve(None).identity
    assert identity.kind == kind
    if kind == ECS_RAM_ROLE:
        assert identity.metadata_proxy == "http://proxy"
    if kind == OIDC_ROLE_ARN:
        assert identity.oidc_token_file == "/var/run/ack/token"


def test_ack_secret_manager_names_and_sts_endpoint_from_the_environment() -> None:
    env = {"ALICLOUD_ROLE_ARN": ROLE, "ALICLOUD_OIDC_PROVIDER_ARN": PROVIDER,
           "ALICLOUD_ROLE_SESSION_NAME": "asm", "ALICLOUD_ROLE_SESSION_EXPIRATION": "600",
           "ALICLOUD_REMOTE_ROLE_ARN": REMOTE, "ALICLOUD_REMOTE_ROLE_SESSION_NAME": "far",
           "ALIBABA_CLOUD_STS_ENDPOINT": "sts-vpc.cn-beijing.aliyuncs.com"}
    identity = World(_settings([], env), []).resolve(None).identity
    assert identity.kind == OIDC_ROLE_ARN
    assert identity.oidc_token_file == DEFAULT_OIDC_TOKEN_FILE  # rrsa.enable's projected token
    assert identity.sts_endpoint == "sts-vpc.cn-beijing.aliyuncs.com"
    assert (identity.role_session_name, identity.session_seconds) == ("asm", 900)
    assert (identity.remote_role_arn, identity.remote_role_session_name) == (REMOTE, "far")
    flag = World(_settings(["--sts-endpoint", "sts.example"], env), []).resolve(None).identity
    assert flag.sts_endpoint == "sts.example"


def test_no_credentials_and_no_worker_role_names_every_way_out() -> None:
    world = World(_settings(["--enable-worker-role=false"]), [_store("empty", {})])
    for ref in (None, {"name": "empty"}):
        _problem(world, ref, "NoCredentials", "--enable-worker-role", "ACCESS_KEY_ID",
                 "ALICLOUD_ROLE_ARN", "secretStoreRef")


def test_cross_account_role_goes_on_top_of_any_identity() -> None:
    env = {"ACCESS_KEY_ID": "env-id", "SECRET_ACCESS_KEY": "env-secret"}
    world = World(_settings([], env), [
        _store("ak-remote", {"KMSAuth": {**AK_REFS, "remoteRamRoleARN": REMOTE,
                                         "remoteRamRoleSessionName": "far"}}),
        _store("only-remote", {"KMSAuth": {"remoteRamRoleARN": REMOTE}}),
        _store("sa-remote", {"KMSAuth": {"serviceAccountRef": {"name": "app"},
                                         "oidcProviderARN": PROVIDER, "ramRoleARN": ROLE,
                                         "remoteRamRoleARN": REMOTE}}),
    ])
    ak = world.resolve({"name": "ak-remote"}).identity
    assert (ak.kind, ak.remote_role_arn, ak.remote_role_session_name) == (ACCESS_KEY, REMOTE,
                                                                          "far")
    on_env = world.resolve({"name": "only-remote"}).identity
    assert (on_env.kind, on_env.access_key_id, on_env.remote_role_arn) == (ACCESS_KEY, "env-id",
                                                                           REMOTE)
    assert "SecretStore team-a/only-remote" in on_env.describe()
    sa = world.resolve({"name": "sa-remote"}).identity
    assert (sa.kind, sa.remote_role_arn) == (OIDC_ROLE_ARN, REMOTE)
    assert sa.describe().startswith(f"cross-account role {REMOTE} assumed with RRSA")


def test_role_alone_is_rrsa_with_the_controllers_provider_or_a_clear_refusal() -> None:
    store = _store("role", {"KMSAuth": {"ramRoleARN": ROLE}})
    with_provider = World(_settings([], {"ALICLOUD_OIDC_PROVIDER_ARN": PROVIDER}), [store])
    identity = with_provider.resolve({"name": "role"}).identity
    assert (identity.kind, identity.role_arn, identity.oidc_provider_arn) == (
        OIDC_ROLE_ARN, ROLE, PROVIDER)
    _problem(World(_settings(), [store]), {"name": "role"}, "InvalidStore",
             "SecretStore team-a/role", "ramRoleARN", "oidcProviderARN", "accessKey")


@pytest.mark.parametrize(("text", "seconds"), [
    ("", 3600), ("600", 900), ("7200", 7200), ("2h", 7200), ("100000", 43200), ("soon", 3600)])
def test_role_session_expiration_stays_within_what_sts_accepts(text: str, seconds: int) -> None:
    world = World(_settings(), [_store("s", {"KMSAuth": {
        **AK_REFS, "ramRoleARN": ROLE, "roleSessionExpiration": text}})])
    assert world.resolve({"name": "s"}).identity.session_seconds == seconds


# ------------------------------------------------------------------- service accounts


def test_service_account_in_another_namespace_needs_the_flag() -> None:
    stores = [_store("cross", {"KMSAuth": {"serviceAccountRef": {
        "name": "app", "namespace": "platform"}, "oidcProviderARN": PROVIDER,
        "ramRoleARN": ROLE}})]
    tokens = FakeTokens({("platform", "app"): ROLE})
    refused = World(_settings(), stores, tokens)
    _problem(refused, {"name": "cross"}, "CrossNamespaceRefused", "ServiceAccount platform/app",
             "--enable-cross-namespace-auth-ref")
    assert tokens.asked == []  # refused before any token is minted
    # ack-secret-manager's own switch for credential references; the store switch of earlier
    # releases of this controller allows them too.
    for flag in ("--enable-cross-namespace-auth-ref", "--enable-cross-namespace-secret-store"):
        allowed = World(_settings([flag]), stores, tokens)
        assert allowed.resolve({"name": "cross"}).identity.oidc_token_file == \
            "/tokens/platform-app"


def test_cluster_secret_store_names_the_service_accounts_namespace() -> None:
    store = _store("shared", {"KMSAuth": {"serviceAccountRef": {
        "name": "app", "namespace": NS, "audiences": ["sts.example"]},
        "oidcProviderARN": PROVIDER, "ramRoleARN": ROLE}}, kind="ClusterSecretStore")
    world = World(_settings(), [store])
    identity = world.resolve({"name": "shared", "kind": "ClusterSecretStore"}).identity
    assert identity.role_arn == ROLE
    assert world.tokens.asked == [(NS, "app", ("sts.example",))]


def test_service_account_problems_name_the_store_and_keep_their_reason() -> None:
    world = World(_settings(), [
        _store("plain", {"KMSAuth": {"serviceAccountRef": {"name": "plain"},
                                     "oidcProviderARN": PROVIDER, "ramRoleARN": ROLE}}),
        _store("no-provider", {"KMSAuth": {"serviceAccountRef": {"name": "app"}}}),
    ])
    _problem(world, {"name": "plain"}, "CredentialsNotFound", "SecretStore team-a/plain",
             "spec.KMS.KMSAuth.serviceAccountRef", "ack.alibabacloud.com/role-arn")
    _problem(world, {"name": "no-provider"}, "InvalidStore", "oidcProviderARN",
             "ALIBABA_CLOUD_OIDC_PROVIDER_ARN")
    env = World(_settings([], {"ALIBABA_CLOUD_OIDC_PROVIDER_ARN": PROVIDER}),
                [_store("no-provider", {"KMSAuth": {"serviceAccountRef": {"name": "app"}}})])
    assert env.resolve({"name": "no-provider"}).identity.oidc_provider_arn == PROVIDER


# ---------------------------------------------------------------------------- endpoints


@pytest.mark.parametrize(("argv", "env", "host"), [
    ([], {}, "kms-vpc.cn-hangzhou.aliyuncs.com"),
    (["--region="], {}, "kms-vpc.cn-hangzhou.aliyuncs.com"),  # empty --region from a chart
    (["--region="], {"ALIBABA_CLOUD_REGION_ID": "cn-beijing"}, "kms-vpc.cn-beijing.aliyuncs.com"),
    (["--region", "cn-shanghai", "--kms-endpoint-type", "public"], {},
     "kms.cn-shanghai.aliyuncs.com"),
    (["--region", "cn-shanghai", "--kms-endpoint", "kms.example:8443"], {}, "kms.example:8443"),
])
def test_default_endpoint_from_region_and_flags(
    argv: list[str], env: dict[str, str], host: str
) -> None:
    world = World(_settings(argv, {"ACCESS_KEY_ID": "x", "SECRET_ACCESS_KEY": "y", **env}), [
        _store("ak", {"KMSAuth": AK_REFS})])
    for ref in (None, {"name": "ak"}):
        endpoint = world.resolve(ref).endpoint
        assert (endpoint.host, endpoint.protocol) == (host, "https")


def test_store_endpoint_overrides_the_flag_and_entry_overrides_the_store() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nABC\n"
    world = World(_settings(["--kms-endpoint", "http://kms.flag:80"]), [
        _store("plain", {"KMSAuth": AK_REFS}),
        _store("instance", {"KMSAuth": AK_REFS, "ca": pem,
                            "endpoint": "kst-1.cryptoservice.kms.aliyuncs.com"}),
    ])
    assert world.resolve({"name": "plain"}).endpoint.host == "kms.flag:80"
    assert world.resolve({"name": "plain"}).endpoint.protocol == "http"
    instance = world.resolve({"name": "instance"}).endpoint
    assert (instance.host, instance.protocol, instance.ca_pem) == (
        "kst-1.cryptoservice.kms.aliyuncs.com", "https", pem)
    entry = world.resolve({"name": "instance"}, kmsEndpoint="https://kst-2.cryptoservice.kms.aliyuncs.com/").endpoint
    assert (entry.host, entry.protocol, entry.ca_pem) == (
        "kst-2.cryptoservice.kms.aliyuncs.com", "https", pem)


def test_ca_from_a_secret_follows_the_cross_namespace_rule() -> None:
    store = _store("instance", {"KMSAuth": AK_REFS,
                                "endpoint": "kst-1.cryptoservice.kms.aliyuncs.com",
                                "caSecretRef": {"name": "ca", "namespace": "platform",
                                                "key": "ca.pem"}})
    _problem(World(_settings(), [store]), {"name": "instance"}, "CrossNamespaceRefused",
             "spec.KMS.caSecretRef", "platform/ca")
    allowed = World(_settings(["--enable-cross-namespace-secret-store"]), [store])
    assert allowed.resolve({"name": "instance"}).endpoint.ca_pem.startswith("-----BEGIN")
    missing = _store("missing", {"KMSAuth": AK_REFS, "caSecretRef": {"name": "nope",
                                                                     "key": "ca.pem"}})
    _problem(World(_settings(), [missing]), {"name": "missing"}, "CredentialsNotFound",
             "caSecretRef", f"{NS}/nope", "CA certificate")


def test_identity_values_are_equal_across_stores_with_the_same_credentials() -> None:
    world = World(_settings(), [_store("one", {"KMSAuth": AK_REFS}),
                                _store("two", {"KMSAuth": AK_REFS})])
    one, two = (world.resolve({"name": n}).identity for n in ("one", "two"))
    assert one == two and hash(one) == hash(two)  # one credentials client, one KMS read
    assert base64.b64encode(b"ak-secret-value").decode() not in one.fingerprint()


# ------------------------------------------------------------- tenant boundaries


def test_the_controller_identity_is_lent_only_to_allowed_namespaces() -> None:
    env = {"ACCESS_KEY_ID": "LTAI-env", "SECRET_ACCESS_KEY": "env-secret"}
    stores = [_store("bare", {}), _store("rrsa", {"KMSAuth": {
        "ramRoleARN": ROLE, "oidcProviderARN": PROVIDER,
        "oidcTokenFilePath": "/var/run/secrets/kubernetes.io/serviceaccount/token"}}),
        _store("own", {"KMSAuth": AK_REFS})]
    open_world = World(_settings([], env), stores)
    assert open_world.resolve().identity.access_key_id == "LTAI-env"  # ack's default: all
    closed = World(_settings(["--controller-identity-namespaces", "platform"], env), stores)
    for ref, what in ((None, "spec.data[0] has no secretStoreRef"),
                      ({"name": "bare"}, f"SecretStore {NS}/bare names no credentials"),
                      ({"name": "rrsa"}, f"SecretStore {NS}/rrsa names no credentials")):
        _problem(closed, ref, "ControllerIdentityRefused", what, f"namespace {NS}",
                 "--controller-identity-namespaces")
    assert closed.resolve({"name": "own"}).identity.access_key_id == "LTAI-id"
    none = World(_settings(["--controller-identity-namespaces="], env), stores)
    _problem(none, None, "ControllerIdentityRefused")


def test_cluster_stores_without_conditions_can_be_closed() -> None:
    store = _store("shared", {"KMSAuth": {**AK_REFS, "accessKey": {
        "name": "ak", "namespace": "platform", "key": "id"}, "accessKeySecret": {
        "name": "ak", "namespace": "platform", "key": "secret"}}}, kind="ClusterSecretStore")
    ref = {"name": "shared", "kind": "ClusterSecretStore"}
    assert World(_settings(), [store]).resolve(ref).identity.access_key_id == "LTAI-platform"
    _problem(World(_settings(["--require-cluster-store-conditions"]), [store]), ref,
             "StoreNotAllowed", "no spec.conditions", "--require-cluster-store-conditions")


@pytest.mark.parametrize(("endpoint", "argv", "allowed"), [
    ("kms.cn-shanghai.aliyuncs.com", [], True),
    ("https://kst-9.cryptoservice.kms.aliyuncs.com:443", [], True),
    ("https://kms.attacker.example", [], False),
    ("https://aliyuncs.com.attacker.example", [], False),
    ("http://kms.cn-hangzhou.aliyuncs.com", [], False),
    ("http://kms.cn-hangzhou.aliyuncs.com", ["--allow-http-endpoints"], True),
    ("https://127.0.0.1:8443", ["--allowed-endpoints", "127.0.0.1:8443"], True),
    ("https://127.0.0.1:9443", ["--allowed-endpoints", "127.0.0.1:8443"], False),
    ("https://kms.corp.example", ["--allowed-endpoints", "*.corp.example"], True),
])
def test_endpoint_rules(endpoint: str, argv: list[str], allowed: bool) -> None:
    world = World(_settings(argv), [_store("s", {"KMSAuth": AK_REFS, "endpoint": endpoint})])
    if allowed:
        world.resolve({"name": "s"})
    else:
        _problem(world, {"name": "s"}, "EndpointRefused", "spec.KMS.endpoint", f"{NS}/s")


def test_a_dedicated_kms_auth_store_uses_its_client_key() -> None:
    dedicated = {"endpoint": "kst-1.cryptoservice.kms.aliyuncs.com", "ca": "PEM",
                 "clientKeyContent": {"name": "ak", "key": "id"},
                 "password": {"name": "ak", "key": "secret"}}
    env = {"ACCESS_KEY_ID": "LTAI-env", "SECRET_ACCESS_KEY": "s"}
    world = World(_settings([], env), [_store("dkms", {"dedicatedKMSAuth": dedicated})])
    source = world.resolve({"name": "dkms"})
    assert source.provider == "dkms" and source.identity.kind == "client_key"
    assert (source.identity.client_key_content, source.identity.client_key_password) == (
        "LTAI-id", "ak-secret-value")
    assert not source.identity.borrowed  # never the controller's identity
    assert (source.endpoint.host, source.endpoint.ca_pem, source.endpoint.insecure) == (
        "kst-1.cryptoservice.kms.aliyuncs.com", "PEM", False)
    insecure = _store("dkms", {"dedicatedKMSAuth": {**dedicated, "ignoreSSL": True}})
    _problem(World(_settings([], env), [insecure]), {"name": "dkms"}, "InsecureTLSRefused",
             "--allow-insecure-kms-instance-tls")
    allowed = World(_settings(["--allow-insecure-kms-instance-tls"], env), [insecure])
    assert allowed.resolve({"name": "dkms"}).endpoint.insecure
    elsewhere = _store("dkms", {"dedicatedKMSAuth": {**dedicated, "endpoint": "evil.example"}})
    _problem(World(_settings([], env), [elsewhere]), {"name": "dkms"}, "EndpointRefused")


def test_cluster_secret_stores_can_be_switched_off() -> None:
    store = _store("shared", {"KMSAuth": {"accessKey": {
        "name": "ak", "namespace": "platform", "key": "id"}, "accessKeySecret": {
        "name": "ak", "namespace": "platform", "key": "secret"}}}, kind="ClusterSecretStore")
    ref = {"name": "shared", "kind": "ClusterSecretStore"}
    assert World(_settings(["--process-cluster-secret-store=true"]), [store]).resolve(ref)
    _problem(World(_settings(["--process-cluster-secret-store=false"]), [store]), ref,
             "ClusterSecretStoreDisabled", "ClusterSecretStore shared",
             "--process-cluster-secret-store=false")


# ------------------------------------------------- endpoints: parsed, never matched

ATTACKS = [
    "https://attacker.example/x.aliyuncs.com",
    "https://attacker.example?x.aliyuncs.com",
    "https://attacker.example#x.aliyuncs.com",
    "https://attacker.example/?.aliyuncs.com",
    "https://x.aliyuncs.com@attacker.example",
    "https://user@kms.cn-hangzhou.aliyuncs.com",
    "https://127.0.0.1:8443/x:.aliyuncs.com",
    "attacker.example/x.aliyuncs.com",
    "https://attacker.example\\x.aliyuncs.com",
    "https://kms.cn-hangzhou.aliyuncs.com/path",
    "https://kms.cn-hangzhou.aliyuncs.com:99999",
    "https://kms.cn-hangzhou.aliyuncs.com:0",
    "https://kms.cn-hangzhou.aliyuncs.com:",
    "https://:443",
    "https://",
    "ftp://kms.cn-hangzhou.aliyuncs.com",
    "https://kms.cn-hangzhou.aliyuncs.com.",
    "https://kms.cn-hangzhou.aliyuncs.com\n",
    " kms.cn-hangzhou.aliyuncs.com",
    "https://kms\t.aliyuncs.com",
    "https://kms..aliyuncs.com",
    "https://-kms.aliyuncs.com",
    "https://kms.aliyuncs.com\u200b",
    "https://[::1]/x.aliyuncs.com",
    "https://[zz::1]:8443",
    "https://aliyuncs.com",
    "https://xaliyuncs.com",
]


@pytest.mark.parametrize("endpoint", ATTACKS)
def test_endpoints_with_more_than_scheme_host_and_port_are_refused(endpoint: str) -> None:
    """The issue's attacks (path, query, fragment, userinfo, a colon in the path) and their
    relatives: none resolves, whatever the allow-list, and the message does not echo them."""
    argv = ["--allowed-endpoints", "127.0.0.1:8443,attacker.example,::1"]
    for where in ("store", "entry", "dedicated"):
        if where == "store":
            world = World(_settings(argv), [_store("s", {"KMSAuth": AK_REFS,
                                                         "endpoint": endpoint})])
            entry: dict[str, Any] = {}
        elif where == "entry":
            world = World(_settings(argv), [_store("s", {"KMSAuth": AK_REFS})])
            entry = {"kmsEndpoint": endpoint}
        else:
            world = World(_settings(argv), [_store("s", {"dedicatedKMSAuth": {
                "endpoint": endpoint, "clientKeyContent": {"name": "ak", "key": "id"},
                "password": {"name": "ak", "key": "secret"}}})])
            entry = {}
        with pytest.raises(StoreProblem) as err:
            world.resolve({"name": "s"}, **entry)
        assert err.value.reason == "EndpointRefused", (where, str(err.value))
        assert "attacker" not in str(err.value) and "/x" not in str(err.value)


@pytest.mark.parametrize(("text", "host", "protocol"), [
    ("kms.cn-shanghai.aliyuncs.com", "kms.cn-shanghai.aliyuncs.com", "https"),
    ("HTTPS://KMS.CN-SHANGHAI.ALIYUNCS.COM", None, None),  # the scheme is lower case
    ("https://KST-1.CryptoService.kms.aliyuncs.com:8443/",
     "kst-1.cryptoservice.kms.aliyuncs.com:8443", "https"),
    ("http://127.0.0.1:08080", "127.0.0.1:8080", "http"),
    ("https://[::1]:8443", "[::1]:8443", "https"),
    ("https://[0:0::1]", "[::1]", "https"),
])
def test_parse_endpoint_keeps_scheme_host_and_port_only(text: str, host: str | None,
                                                         protocol: str | None) -> None:
    if host is None:
        with pytest.raises(ValueError):
            parse_endpoint(text, "https")
        return
    parsed = parse_endpoint(text, "https")
    assert (parsed.host, parsed.protocol) == (host, protocol)


@pytest.mark.parametrize(("endpoint", "argv", "allowed"), [
    ("https://kms.corp.example.evil", ["--allowed-endpoints", "*.corp.example"], False),
    ("https://corp.example", ["--allowed-endpoints", "*.corp.example"], False),
    ("https://xcorp.example", ["--allowed-endpoints", "*.corp.example"], False),
    ("https://a.b.corp.example:9443", ["--allowed-endpoints", "*.corp.example"], True),
    ("https://kms.example:8443", ["--allowed-endpoints", "kms.example"], True),
    ("https://kms.example", ["--allowed-endpoints", "kms.example:8443"], False),
    ("https://KMS.Example:8443", ["--allowed-endpoints", "kms.example:8443"], True),
    ("https://[::1]:8443", ["--allowed-endpoints", "[::1]:8443"], True),
    ("https://127.0.0.1:8443", ["--allowed-endpoints", "127.0.0.1:8443/x"], False),
    ("https://127.0.0.2", ["--allowed-endpoints", "*.0.0.2"], True),  # the operator's choice
])
def test_allow_list_entries_compare_parsed_hostnames(endpoint: str, argv: list[str],
                                                     allowed: bool) -> None:
    world = World(_settings(argv), [_store("s", {"KMSAuth": AK_REFS, "endpoint": endpoint})])
    if allowed:
        assert world.resolve({"name": "s"}).endpoint.host == parse_endpoint(endpoint,
                                                                             "https").host
    else:
        _problem(world, {"name": "s"}, "EndpointRefused", "spec.KMS.endpoint")


_PIECES = st.sampled_from([
    "https://", "http://", "ftp://", "//", "/", "?", "#", "@", ":", "::", ".", "..", "\\",
    "[", "]", "%2f", "%40", "attacker.example", "x.aliyuncs.com", ".aliyuncs.com",
    "kms.cn-hangzhou.aliyuncs.com", "aliyuncs.com", "127.0.0.1", "::1", "8443", "443", "0",
    "99999", "corp.example", "kms.corp.example", "user", " ", "\t", "\n", "\x00", "é",
])
_ENDPOINT_TEXT = st.one_of(st.lists(_PIECES, max_size=8).map("".join),
                           st.text(max_size=40))
_FLAGS = ["--allowed-endpoints", "127.0.0.1:8443,*.corp.example", "--allow-http-endpoints"]


@settings_(max_examples=400, deadline=None)
@given(text=_ENDPOINT_TEXT)
def test_the_host_an_sdk_gets_is_the_allowed_host_that_was_checked(text: str) -> None:
    """Whatever the text: either it is refused, or the host[:port] handed on holds nothing but
    a host and a port, a URL built from it (as the SDKs do) reaches exactly that host, and that
    host is one the allow-list admits. (An empty text means the operator's endpoint.)"""
    assume(text != "")
    world = World(_settings(_FLAGS), [_store("s", {"KMSAuth": AK_REFS, "endpoint": text})])
    try:
        endpoint = world.resolve({"name": "s"}).endpoint
    except StoreProblem as exc:
        assert exc.reason == "EndpointRefused"
        return
    assert set(endpoint.host) <= set("abcdefghijklmnopqrstuvwxyz0123456789-.:[]")
    url = urllib.parse.urlsplit(f"{endpoint.protocol}://{endpoint.host}/secret")
    assert (url.username, url.query, url.fragment, url.path) == (None, "", "", "/secret")
    hostname, port = url.hostname or "", url.port
    assert hostname == parse_endpoint(text, "https").hostname
    assert (hostname.endswith(".aliyuncs.com") or hostname.endswith(".corp.example")
            or (hostname, port) == ("127.0.0.1", 8443))
    # And the text itself, read as a URL the way a suffix match would, names the same host.
    full = text if "://" in text else f"https://{text}"
    assert (urllib.parse.urlsplit(full).hostname or "") == hostname


def test_the_crd_carries_the_endpoint_pattern() -> None:
    crds = pathlib.Path(__file__).resolve().parents[2] / "helm/ack-secret-manager/crds"
    found: list[str] = []

    def walk(node: Any, name: str = "") -> None:
        if isinstance(node, dict):
            if name in ("endpoint", "kmsEndpoint") and node.get("type") == "string":
                found.append(node.get("pattern", ""))
            for key, value in node.items():
                walk(value, key)
        elif isinstance(node, list):
            for value in node:
                walk(value, name)

    for path in crds.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            walk(doc)
    assert len(found) >= 4 and set(found) == {ENDPOINT_PATTERN}, found


def test_operator_endpoints_are_the_hosts_the_operator_named() -> None:
    cfg = _settings(["--kms-endpoint", "https://kms.flag.example:8443/", "--region", "cn-x",
                     "--allowed-endpoints", "127.0.0.1:9443,*.corp.example,bad/x"])
    assert operator_endpoints(cfg) == ("kms.flag.example:8443", "oos-vpc.cn-x.aliyuncs.com",
                                       "127.0.0.1:9443")


# ------------------------------------------------------------------ a store's own check


def test_a_store_is_checked_without_an_entry_with_the_reasons_an_entry_would_get() -> None:
    """check_store: the store's Ready condition gets the same reason and message as an
    ExternalSecret reading through it would; nothing is minted or called."""
    missing = {"accessKey": {"name": "nope", "key": "id"},
               "accessKeySecret": {"name": "nope", "key": "secret"}}
    world = World(_settings(["--enable-worker-role=false"]), [
        _store("ok", {"KMSAuth": AK_REFS}),
        _store("missing", {"KMSAuth": missing}),
        _store("far", {"KMSAuth": AK_REFS, "endpoint": "https://kms.example.com"}),
        _store("sa", {"KMSAuth": {"serviceAccountRef": {"name": "app"},
                                  "oidcProviderARN": PROVIDER}}),
        _store("borrow", {}),
        _store("shared", {"KMSAuth": {
            "accessKey": {"name": "ak", "namespace": "platform", "key": "id"},
            "accessKeySecret": {"name": "ak", "namespace": "platform", "key": "nokey"}}},
            kind="ClusterSecretStore"),
    ])
    check = world.resolver.check_store
    assert check(world.stores[("SecretStore", NS, "ok")]).name == "ok"
    assert check(world.stores[("SecretStore", NS, "sa")]).name == "sa"
    assert world.tokens.asked == []  # no token minted for a check
    cases = [(("SecretStore", NS, "missing"), "CredentialsNotFound",
              ["SecretStore team-a/missing", "spec.KMS.KMSAuth.accessKey", "Secret team-a/nope"]),
             (("SecretStore", NS, "far"), "EndpointRefused",
              ["spec.KMS.endpoint", "kms.example.com", "--allowed-endpoints"]),
             (("SecretStore", NS, "borrow"), "NoCredentials", ["--enable-worker-role"]),
             (("ClusterSecretStore", "", "shared"), "CredentialsNotFound",
              ["ClusterSecretStore shared", "key nokey of Secret platform/ak"])]
    for key, reason, parts in cases:
        with pytest.raises(StoreProblem) as err:
            check(world.stores[key])
        assert err.value.reason == reason, key
        for part in parts:
            assert part in str(err.value), (key, part)
        # the same as an ExternalSecret reading through it
        ref = {"name": key[2], "kind": key[0]}
        if key[0] == "SecretStore":
            assert _problem(world, ref, reason) == str(err.value)
        assert "platform-secret" not in str(err.value) and "LTAI" not in str(err.value)


def test_a_store_borrowing_the_controller_identity_is_checked_for_its_namespace() -> None:
    cfg = _settings(["--controller-identity-namespaces=platform"],
                    {"ACCESS_KEY_ID": "LTAI-env", "SECRET_ACCESS_KEY": "env-secret"})
    world = World(cfg, [_store("borrow", {}), _store("plat", {}, namespace="platform"),
                        _store("none", {}, kind="ClusterSecretStore")])
    with pytest.raises(StoreProblem) as err:
        world.resolver.check_store(world.stores[("SecretStore", NS, "borrow")])
    assert err.value.reason == "ControllerIdentityRefused"
    world.resolver.check_store(world.stores[("SecretStore", "platform", "plat")])
    # a ClusterSecretStore stands for its admin: which namespaces use it is its conditions'
    world.resolver.check_store(world.stores[("ClusterSecretStore", "", "none")])


def test_a_credential_secret_the_controller_may_not_read_is_the_stores_problem() -> None:
    class Forbidden(Exception):
        status = 403

    class Refusing(FakeSecrets):
        def read_secret_key(self, namespace: str, name: str, key: str) -> bytes | None:
            if namespace == "elsewhere":
                raise Forbidden("secrets is forbidden")
            return super().read_secret_key(namespace, name, key)

    refs = {"accessKey": {"name": "ak", "namespace": "elsewhere", "key": "id"},
            "accessKeySecret": {"name": "ak", "namespace": "elsewhere", "key": "secret"}}
    raw = _store("shared", {"KMSAuth": refs}, kind="ClusterSecretStore")
    resolver = StoreResolver(_settings(), lambda *_a: raw, Refusing(AK), lambda _ns: {},
                             alibaba(_settings()))
    with pytest.raises(StoreProblem) as err:
        resolver.check_store(raw)
    assert err.value.reason == "CredentialsNotReadable"
    assert "Secret elsewhere/ak" in str(err.value)
    assert "rbac.credentialNamespaces" in str(err.value)


@pytest.mark.parametrize("blank", ["", " ", "\n"])
def test_an_empty_credential_is_refused_never_passed_on(blank: str) -> None:
    """The credentials library reads an empty AccessKey as "not given" and takes the
    controller's own from its environment: an empty value must stop here (red team,
    2026-12-07: `accessKey` pointing at "" signed with the controller's AccessKey)."""
    world = World(_settings(), [_store("blank", {"KMSAuth": {
        "accessKey": {"name": "blank", "key": "id"},
        "accessKeySecret": {"name": "blank", "key": "secret"}}})])
    world.resolver.secrets = FakeSecrets({(NS, "blank"): {"id": blank, "secret": blank}})
    _problem(world, {"name": "blank"}, "CredentialsNotFound", "SecretStore team-a/blank",
             "spec.KMS.KMSAuth.accessKey", f"Secret {NS}/blank", "is empty")


# ------------------------------------------------------------ private CAs per namespace

INSTANCE = "kst-1.cryptoservice.kms.aliyuncs.com"


def _pem(n: int) -> str:
    return f"-----BEGIN CERTIFICATE-----\nCA{n}\n-----END CERTIFICATE-----\n"


def _dated(raw: dict[str, Any], second: int) -> dict[str, Any]:
    raw["metadata"]["creationTimestamp"] = f"2026-12-07T10:00:{second:02d}Z"
    return raw


def _ca_world(argv: list[str], stores: list[dict[str, Any]]) -> World:
    """A resolver with the bound, its index fed as the SecretStore informer would."""
    cfg = _settings(argv)
    cas = PrivateCas(cfg.max_cas_per_namespace, ca_identities(alibaba(cfg)), shaped.SHAPE)
    for raw in stores:
        if raw["kind"] == "SecretStore":
            cas.observe("ADDED", raw)
    return World(cfg, stores, cas=cas)


def test_a_store_past_its_namespaces_private_cas_is_refused_before_anything_is_read() -> None:
    stores = [_dated(_store(f"s{i}", {"KMSAuth": AK_REFS, "endpoint": INSTANCE,
                                      "ca": _pem(i)}), i) for i in range(2)]
    # The refused store's CA Secret does not exist: it is refused before that is read.
    stores.append(_dated(_store("late", {"KMSAuth": AK_REFS, "endpoint": INSTANCE,
                                         "caSecretRef": {"name": "nope", "key": "ca"}}), 5))
    world = _ca_world(["--max-cas-per-namespace=2"], stores)
    assert world.resolve({"name": "s1"}).endpoint.ca_pem == _pem(1)
    message = _problem(world, {"name": "late"}, "PrivateCARefused", f"SecretStore {NS}/late",
                       "spec.KMS.caSecretRef", f"namespace {NS} already uses 2 distinct "
                       "private CAs", "--max-cas-per-namespace=2", "raise --max-cas-per-namespace")
    assert "BEGIN" not in message
    # The store's own Ready condition says the same.
    with pytest.raises(StoreProblem) as checked:
        world.resolver.check_store(world.stores[("SecretStore", NS, "late")])
    assert (checked.value.reason, str(checked.value)) == ("PrivateCARefused", message)
    # An entry naming another endpoint does not make the store's CA allowed.
    with pytest.raises(StoreProblem) as err:
        world.resolve({"name": "late"}, kmsEndpoint="kst-2.cryptoservice.kms.aliyuncs.com")
    assert err.value.reason == "PrivateCARefused"
    # 0: no bound.
    unbounded = _ca_world(["--max-cas-per-namespace=0"], stores)
    _problem(unbounded, {"name": "late"}, "CredentialsNotFound", f"{NS}/nope")


def test_what_counts_as_one_private_ca() -> None:
    """One CA per endpoint host (what keys an SDK session): stores sharing a CA and a host
    share a place; the same CA with another host, a KMS instance client key's CA, and a CA on
    the operator's endpoint (a store without one) are places of their own; a store without a
    CA and a ClusterSecretStore take none and are never refused."""
    key = {"clientKeyContent": {"name": "ak", "key": "id"},
           "password": {"name": "ak", "key": "secret"}}
    stores = [
        _dated(_store("a", {"KMSAuth": AK_REFS, "endpoint": INSTANCE, "ca": _pem(1)}), 0),
        _dated(_store("a-again", {"KMSAuth": AK_REFS, "endpoint": f"https://{INSTANCE}/",
                                  "ca": _pem(1)}), 1),
        _dated(_store("plain", {"KMSAuth": AK_REFS}), 2),
        _dated(_store("cluster", {"KMSAuth": {**AK_REFS}, "ca": _pem(7)},
                      kind="ClusterSecretStore"), 2),
        _dated(_store("other-host", {"KMSAuth": AK_REFS, "ca": _pem(1),
                                     "endpoint": "kst-2.cryptoservice.kms.aliyuncs.com"}), 3),
        _dated(_store("dkms", {"dedicatedKMSAuth": {"endpoint": INSTANCE, "ca": _pem(2),
                                                    **key}}), 4),
        _dated(_store("flag-host", {"KMSAuth": AK_REFS, "ca": _pem(3)}), 5),
        _dated(_store("last", {"KMSAuth": AK_REFS, "endpoint": INSTANCE, "ca": _pem(4)}), 6),
    ]
    for store in stores[3:4]:  # a ClusterSecretStore's Secret refs name their namespace
        store["spec"]["KMS"]["KMSAuth"] = {
            k: {**v, "namespace": "platform"} for k, v in AK_REFS.items()}
    world = _ca_world(["--max-cas-per-namespace=4"], stores)
    for name in ("a", "a-again", "plain", "other-host", "dkms", "flag-host"):
        world.resolve({"name": name})
    world.resolve({"name": "cluster", "kind": "ClusterSecretStore"})
    _problem(world, {"name": "last"}, "PrivateCARefused", "4 distinct private CAs")
    # Two places: the KMS instance store (the third CA) is refused too.
    tighter = _ca_world(["--max-cas-per-namespace=2"], stores)
    _problem(tighter, {"name": "flag-host"}, "PrivateCARefused", "spec.KMS.ca")
    _problem(tighter, {"name": "dkms"}, "PrivateCARefused", "spec.KMS.dedicatedKMSAuth.ca")
    tighter.resolve({"name": "cluster", "kind": "ClusterSecretStore"})
