"""A hostile or careless tenant, with create rights on ExternalSecrets and SecretStores in one
namespace, against the real controller process: it cannot crash or stall the controller, wipe
or take over another ExternalSecret's (or a user's) Secret, borrow the controller's identity
where the operator did not allow it, or send signed requests to a host of its choosing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.fakecloud import FakeCloud
from tests.integration.conftest import AK_ID, AK_SECRET, K8s
from tests.integration.tenancy import dkms_store, key_secret
from tests.waiting import wait_for


def _es(name: str, key: str, store: str | None = "store", **spec: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"key": key}
    if store:
        entry["secretStoreRef"] = {"name": store}
    return {"kind": "ExternalSecret", "metadata": {"name": name},
            "spec": {"data": [entry], **spec}}


def _cond(k8s: K8s, ns: str, name: str) -> dict[str, Any]:
    return k8s.ready(ns, name) or {}


def _reason_is(k8s: K8s, ns: str, name: str, reason: str, *parts: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        cond = _cond(k8s, ns, name)
        message = str(cond.get("message", ""))
        return cond if cond.get("reason") == reason and all(p in message for p in parts) \
            else None

    cond: dict[str, Any] = wait_for(check, what=f"{ns}/{name}: {reason} with {parts}")
    return cond


def _synced(k8s: K8s, ns: str, name: str) -> bool:
    return _cond(k8s, ns, name).get("status") == "True"


# ------------------------------------------------------------------ bounds and crashes


def test_an_overflowing_interval_never_stops_the_controller(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    """Before: every start-up with this object in the cluster exited 1 (a crash loop)."""
    cloud.put_secret("db", "pw")
    k8s.access_key_store(namespace)
    k8s.create(namespace, "externalsecrets",
               _es("overflow", "db", refreshInterval="9999999999999999h"))
    first = start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h")
    cond = _reason_is(k8s, namespace, "overflow", "InvalidSpec", "spec.refreshInterval",
                      "at most 720h")
    assert cond["status"] == "False"
    assert first.stop() == 0
    # A restart (an upgrade, a standby taking over) starts with the object already there.
    second = start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h")
    k8s.create(namespace, "externalsecrets", _es("fine", "db"))
    wait_for(lambda: k8s.secret_data(namespace, "fine") == {"db": "pw"},
             what="a healthy ExternalSecret synced after the restart")
    assert second.proc.poll() is None, second.log
    assert "Traceback" not in second.log


def test_a_tiny_interval_is_raised_to_the_floor(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("db", "pw")
    k8s.access_key_store(namespace)
    controller = start_controller("--kms-endpoint", cloud.kms_endpoint,
                                  "--polling-interval", "1h", "--min-refresh-interval", "3s",
                                  "--log-level", "debug")
    k8s.create(namespace, "externalsecrets", _es("eager", "db", refreshInterval="1ms"))
    cond = _reason_is(k8s, namespace, "eager", "Synced", "spec.refreshInterval (1ms)",
                      "minimum 3s", "--min-refresh-interval")
    assert cond["status"] == "True"
    start = cloud.calls("GetSecretValue", secret="db")
    # Polls come every 3 s (three within 15 s), and not the thousand a second 1ms asked for.
    # (Other tests' ExternalSecrets still being deleted may read the same secret at 1h: the
    # shorter interval must win, which once it did not.)
    began = time.monotonic()
    try:
        wait_for(lambda: cloud.calls("GetSecretValue", secret="db") >= start + 3, timeout=15,
                 what="three polls")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{controller.log[-12000:]}") from None
    calls = cloud.calls("GetSecretValue", secret="db") - start
    assert controller.proc.poll() is None, controller.log[-3000:]
    # Polls 3 s apart: at most one more than the seconds waited allow.
    assert calls <= (time.monotonic() - began) / 3 + 2, calls


# ---------------------------------------------------------------------------- ownership


def test_merge_into_another_external_secrets_secret_is_refused(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("db", "pw")
    cloud.put_secret("other", "theirs")
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h")
    owner = k8s.create(namespace, "externalsecrets", _es("owner", "db"))
    wait_for(lambda: k8s.secret_data(namespace, "owner") == {"db": "pw"}, what="owner synced")
    before = k8s.secret(namespace, "owner")
    k8s.create(namespace, "externalsecrets", _es(
        "intruder", "other", target={"name": "owner", "creationPolicy": "Merge"}))
    _reason_is(k8s, namespace, "intruder", "SecretConflict",
               f"belongs to ExternalSecret {namespace}/owner")
    after = k8s.secret(namespace, "owner")
    assert after.metadata.resource_version == before.metadata.resource_version
    assert k8s.secret_data(namespace, "owner") == {"db": "pw"}
    assert [r.uid for r in after.metadata.owner_references] == [owner["metadata"]["uid"]]
    assert _synced(k8s, namespace, "owner")
    # The Event is posted after the status: await it.
    wait_for(lambda: [e.reason for e in k8s.events(namespace, "intruder")
                      if e.type == "Warning"] == ["SecretConflict"], what="a SecretConflict Event")


def test_merge_then_owner_never_takes_a_users_secret(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    """Before: Merge wrote the managed-by label and the source annotation, the switch to Owner
    added an ownerReference, and deleting the ExternalSecret garbage-collected the Secret."""
    cloud.put_secret("db", "pw")
    k8s.access_key_store(namespace)
    k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "users"},
                                                  "stringData": {"a": "mine"}})
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h")
    k8s.create(namespace, "externalsecrets", _es(
        "app", "db", target={"name": "users", "creationPolicy": "Merge"}))
    wait_for(lambda: k8s.secret_data(namespace, "users") == {"a": "mine", "db": "pw"},
             what="merged")
    labels = k8s.secret(namespace, "users").metadata.labels or {}
    assert "app.kubernetes.io/managed-by" not in labels
    k8s.patch(namespace, "externalsecrets", "app",
              {"spec": {"target": {"name": "users", "creationPolicy": "Owner"}}})
    _reason_is(k8s, namespace, "app", "SecretConflict", "was not created by this ExternalSecret")
    assert not k8s.secret(namespace, "users").metadata.owner_references
    # A sentinel the garbage collector must remove shows that it ran after the deletes.
    k8s.create(namespace, "externalsecrets", _es("sentinel", "db"))
    wait_for(lambda: k8s.secret(namespace, "sentinel") is not None, what="sentinel synced")
    k8s.delete(namespace, "externalsecrets", "app")
    k8s.delete(namespace, "externalsecrets", "sentinel")
    wait_for(lambda: k8s.secret(namespace, "sentinel") is None, what="sentinel collected")
    assert k8s.secret_data(namespace, "users") == {"a": "mine", "db": "pw"}


def test_a_helm_managed_secret_is_never_relabelled(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("db", "pw")
    k8s.access_key_store(namespace)
    k8s.core.create_namespaced_secret(namespace, {
        "metadata": {"name": "chart", "labels": {"app.kubernetes.io/managed-by": "Helm"},
                     "annotations": {"meta.helm.sh/release-name": "web"}},
        "stringData": {"x": "from-helm"}})
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h")
    k8s.create(namespace, "externalsecrets", _es(
        "app", "db", target={"name": "chart", "creationPolicy": "Merge"}))
    wait_for(lambda: k8s.secret_data(namespace, "chart") == {"x": "from-helm", "db": "pw"},
             what="merged into the Helm Secret")
    meta = k8s.secret(namespace, "chart").metadata
    assert meta.labels["app.kubernetes.io/managed-by"] == "Helm"
    assert meta.annotations["meta.helm.sh/release-name"] == "web"
    assert not meta.owner_references


def test_two_external_secrets_racing_for_one_target_one_wins(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("a", "from-a")
    cloud.put_secret("b", "from-b")
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h",
                     "--workers", "4")
    uids = {}
    for name, key in (("first", "a"), ("second", "b")):
        uids[name] = k8s.create(namespace, "externalsecrets", _es(
            name, key, target={"name": "contested"}))["metadata"]["uid"]

    def settled() -> tuple[str, str] | None:
        reasons = {n: _cond(k8s, namespace, n).get("reason") for n in uids}
        winners = [n for n, r in reasons.items() if r == "Synced"]
        losers = [n for n, r in reasons.items() if r == "SecretConflict"]
        return (winners[0], losers[0]) if len(winners) == 1 and len(losers) == 1 else None

    winner, _loser = wait_for(settled, what="one winner and one conflict")
    secret = k8s.secret(namespace, "contested")
    assert [r.uid for r in secret.metadata.owner_references] == [uids[winner]]
    expected = {"first": {"a": "from-a"}, "second": {"b": "from-b"}}[winner]
    assert k8s.secret_data(namespace, "contested") == expected


def test_a_template_cannot_forge_an_ownership_annotation(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("db", "pw")
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h")
    k8s.create(namespace, "externalsecrets", _es("forger", "db", target={
        "name": "forged", "template": {"metadata": {"annotations": {
            "alibabacloud.com/external-secret-uid": "someone-elses-uid"}}}}))
    _reason_is(k8s, namespace, "forger", "InvalidSpec",
               "alibabacloud.com/external-secret-uid", "reserved")
    assert k8s.secret(namespace, "forged") is None


# ------------------------------------------------------------------------------ identity


def test_the_controllers_identity_serves_only_allowed_namespaces(
    k8s: K8s, cloud: FakeCloud, namespace: str, make_namespace: Callable[..., str],
    start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("db", "pw")
    allowed = make_namespace()
    k8s.create(namespace, "secretstores", {"kind": "SecretStore", "metadata": {"name": "bare"},
                                           "spec": {"KMS": {}}})
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h",
                     "--controller-identity-namespaces", allowed,
                     env={"ACCESS_KEY_ID": AK_ID, "SECRET_ACCESS_KEY": AK_SECRET})
    k8s.create(allowed, "externalsecrets", _es("ok", "db", store=None))
    wait_for(lambda: k8s.secret_data(allowed, "ok") == {"db": "pw"}, what="allowed namespace")
    reads = cloud.calls("GetSecretValue", secret="db")
    k8s.create(namespace, "externalsecrets", _es("no-store", "db", store=None))
    k8s.create(namespace, "externalsecrets", _es("bare-store", "db", store="bare"))
    for name, what in (("no-store", "spec.data[0] has no secretStoreRef"),
                       ("bare-store", f"SecretStore {namespace}/bare names no credentials")):
        _reason_is(k8s, namespace, name, "ControllerIdentityRefused", what,
                   f"namespace {namespace}", "--controller-identity-namespaces")
        assert k8s.secret(namespace, name) is None
    assert cloud.calls("GetSecretValue", secret="db") == reads


# ------------------------------------------------------------------------------ endpoints


def test_endpoints_outside_the_allow_list_and_plain_http_are_refused(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("refused-db", "pw")
    k8s.access_key_store(namespace, "elsewhere", endpoint="https://kms.attacker.example")
    k8s.access_key_store(namespace, "plain", endpoint="http://kms.cn-hangzhou.aliyuncs.com")
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h")
    k8s.create(namespace, "externalsecrets", _es("elsewhere", "refused-db", store="elsewhere"))
    k8s.create(namespace, "externalsecrets", _es("plain", "refused-db", store="plain"))
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "by-entry"}, "spec": {"data": [{
            "key": "refused-db", "secretStoreRef": {"name": "elsewhere"},
            "kmsEndpoint": "https://127.0.0.1:1"}]}})
    _reason_is(k8s, namespace, "elsewhere", "EndpointRefused", "spec.KMS.endpoint",
               "kms.attacker.example", "--allowed-endpoints")
    _reason_is(k8s, namespace, "plain", "EndpointRefused", "plain HTTP",
               "--allow-http-endpoints")
    _reason_is(k8s, namespace, "by-entry", "EndpointRefused", "spec.data[0].kmsEndpoint",
               "127.0.0.1:1")
    # (its own key: other tests' objects, still being deleted, may read "db")
    assert cloud.calls("GetSecretValue", secret="refused-db") == 0


def test_an_allowed_http_endpoint_works_when_the_operator_says_so(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("db", "pw")
    k8s.access_key_store(namespace, endpoint=f"http://{cloud.kms_endpoint}")
    start_controller("--polling-interval", "1h", "--allow-http-endpoints",
                     "--allowed-endpoints", cloud.kms_endpoint)
    k8s.create(namespace, "externalsecrets", _es("app", "db"))
    wait_for(lambda: k8s.secret_data(namespace, "app") == {"db": "pw"}, what="synced")


def _dkms_store(k8s: K8s, cloud: FakeCloud, ns: str, name: str, password: str,
                **extra: Any) -> None:
    key_secret(k8s, ns, name, cloud.dkms.create_client_key("app", "client-key-password").content,
               password)
    dkms_store(k8s, cloud, ns, name, **extra)


def test_a_dedicated_kms_auth_store_reads_with_its_client_key_never_another_identity(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
) -> None:
    """ack v0.5's dedicatedKMSAuth: before, parsed and ignored (read as the controller's own
    identity on the shared endpoint, reported Ready)."""
    cloud.put_secret("db", "from-the-instance")
    _dkms_store(k8s, cloud, namespace, "dkms", "client-key-password")
    _dkms_store(k8s, cloud, namespace, "wrong-password", "not-it")
    _dkms_store(k8s, cloud, namespace, "insecure", "client-key-password", ignoreSSL=True)
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1h",
                     "--allowed-endpoints", "127.0.0.1",
                     env={"ACCESS_KEY_ID": AK_ID, "SECRET_ACCESS_KEY": AK_SECRET})
    for name in ("dkms", "wrong-password", "insecure"):
        k8s.create(namespace, "externalsecrets", _es(name, "db", store=name))
    wait_for(lambda: k8s.secret_data(namespace, "dkms") == {"db": "from-the-instance"},
             what="read from the KMS instance with the client key")
    assert cloud.calls("GetSecretValue", service="kms") == 0  # never the shared gateway
    _reason_is(k8s, namespace, "wrong-password", "FetchFailed", "ClientKeyPasswordWrong",
               f"SecretStore {namespace}/wrong-password")
    _reason_is(k8s, namespace, "insecure", "InsecureTLSRefused", "ignoreSSL",
               "--allow-insecure-kms-instance-tls")
    for name in ("wrong-password", "insecure"):
        assert k8s.secret(namespace, name) is None


@pytest.mark.parametrize("provider", ["kms", "oos"])
def test_an_empty_access_key_never_signs_as_the_controller(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
    provider: str,
) -> None:
    """Found by a black-box attempt (2026-12-07): a store whose AccessKey Secret held "" or
    whitespace was read with the controller's own AccessKey when that sat in the environment
    under the SDK's names (the credentials library takes "" as "not given"), although no
    namespace might borrow the controller's identity."""
    controller_id, controller_secret = "LTAI5tCtrlKeyId0009", "CtrlKeySecretValue000000009"
    cloud.put_secret("db", "pw")
    cloud.oos.put("db", "pw")
    cloud.add_access_key(controller_id, controller_secret, "controller")
    k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": "ak"},
                                                  "stringData": {"id": " ", "secret": " "}})
    auth = {"accessKey": {"name": "ak", "key": "id"},
            "accessKeySecret": {"name": "ak", "key": "secret"}}
    spec = {"KMS": {"KMSAuth": auth}} if provider == "kms" else {"OOS": {"OOSAuth": auth}}
    k8s.create(namespace, "secretstores", {"kind": "SecretStore", "metadata": {"name": "store"},
                                           "spec": spec})
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--oos-endpoint", cloud.oos_endpoint,
                     "--polling-interval", "1h", "--controller-identity-namespaces", "",
                     env={"ALIBABA_CLOUD_ACCESS_KEY_ID": controller_id,
                          "ALIBABA_CLOUD_ACCESS_KEY_SECRET": controller_secret})
    es_spec: dict[str, Any] = {"data": [{"key": "db", "name": "db",
                                         "secretStoreRef": {"name": "store"}}]}
    if provider == "oos":
        es_spec["provider"] = "oos"
    k8s.create(namespace, "externalsecrets", {"kind": "ExternalSecret",
                                              "metadata": {"name": "borrow"}, "spec": es_spec})
    cond = wait_for(lambda: (c := k8s.ready(namespace, "borrow")) and
                    c.get("reason") == "CredentialsNotFound" and c, timeout=60,
                    what="CredentialsNotFound")
    assert "is empty" in cond["message"] and f"Secret {namespace}/ak" in cond["message"], cond
    assert cloud.calls(identity="controller") == 0
    assert k8s.secret(namespace, "borrow") is None
