"""Failure never loses data: a failed entry keeps its last good keys while the others sync; the
status and Events say which entry failed and why, with no request ids and no values; bad specs
are refused by the apiserver or reported with the field and the fix; throttling is retried."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.fakecloud import FakeCloud
from tests.integration.conftest import K8s
from tests.waiting import wait_for


def _es(name: str, entries: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    for e in entries:
        e.setdefault("secretStoreRef", {"name": "store"})
    return {"kind": "ExternalSecret", "metadata": {"name": name},
            "spec": {"data": entries, **spec}}


def _cond(k8s: K8s, ns: str, name: str) -> dict[str, Any]:
    return k8s.ready(ns, name) or {}


def test_failed_entry_keeps_its_last_value_while_others_sync(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("db", "db-v1")
    cloud.put_secret("api", "api-v1")
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "1s")
    k8s.create(namespace, "externalsecrets", _es("app", [{"key": "db"}, {"key": "api"}]))
    wait_for(lambda: k8s.secret_data(namespace, "app") == {"db": "db-v1", "api": "api-v1"},
             what="first sync")
    cloud.deny("app", "db")  # the store's identity loses access to one secret
    cloud.put_secret("api", "api-v2")
    wait_for(lambda: _cond(k8s, namespace, "app").get("reason") == "AccessDenied"
             and k8s.secret_data(namespace, "app") == {"db": "db-v1", "api": "api-v2"},
             what="AccessDenied, db kept, api updated")
    cond = _cond(k8s, namespace, "app")
    assert cond["status"] == "False"
    assert "data[0] (KMS secret db)" in cond["message"]
    assert "Forbidden.NoPermission" in cond["message"]
    assert "1 key(s) keep their last synced value" in cond["message"]
    assert not re.search(r"(?i)request ?id", cond["message"])
    status = k8s.get(namespace, "externalsecrets", "app")["status"]
    results = {r["entry"]: r for r in status["dataSyncResults"]}
    assert results["data[0]"]["status"] == "Failed"
    assert results["data[1]"]["status"] == "Synced"
    # The Event is posted after the status: await it.
    warnings = wait_for(lambda: [e for e in k8s.events(namespace, "app")
                                 if e.type == "Warning"], what="a Warning Event")
    assert all("db-v1" not in e.message for e in warnings)
    # The same failure on every poll: the status does not churn and Events are not repeated.
    rv = k8s.get(namespace, "externalsecrets", "app")["metadata"]["resourceVersion"]
    polls = cloud.calls("GetSecretValue", secret="db")
    wait_for(lambda: cloud.calls("GetSecretValue", secret="db") >= polls + 3, timeout=30,
             what="more failing reads")
    assert k8s.get(namespace, "externalsecrets", "app")["metadata"]["resourceVersion"] == rv
    assert len([e for e in k8s.events(namespace, "app") if e.type == "Warning"]) == \
        len(warnings)
    # Access restored: Ready again.
    cloud.clear_rules("app")
    wait_for(lambda: _cond(k8s, namespace, "app").get("reason") == "Synced", timeout=30,
             what="recovered")


def test_missing_kms_secret_is_reported_and_nothing_is_created(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    k8s.create(namespace, "externalsecrets", _es("app", [{"key": "nope"}]))
    wait_for(lambda: _cond(k8s, namespace, "app").get("reason") == "FetchFailed",
             what="FetchFailed")
    assert "Forbidden.ResourceNotFound" in _cond(k8s, namespace, "app")["message"]
    assert k8s.secret(namespace, "app") is None


def test_throttling_is_retried_until_it_succeeds(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("db", "pw")
    cloud.inject(secret="db", fault="throttling", times=2, retry_after_ms=200)
    cloud.inject(secret="db", fault="unavailable", times=1)
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    k8s.create(namespace, "externalsecrets", _es("app", [{"key": "db"}]))
    wait_for(lambda: k8s.secret_data(namespace, "app") == {"db": "pw"}, what="synced")
    assert cloud.calls("GetSecretValue", secret="db") == 4  # 2 throttled, 1 503, 1 success
    # The status is written after the Secret: await it (CI once read it in between).
    wait_for(lambda: _cond(k8s, namespace, "app").get("reason") == "Synced", what="Synced")


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"key": "db", "name": "bad/key"}, "spec.data[0].name"),
        ({"key": ""}, "spec.data[0].key"),
        ({"key": "db", "jmesPath": [{"path": "a", "objectAlias": "no spaces"}]},
         "spec.data[0].jmesPath[0].objectAlias"),
    ],
)
def test_apiserver_refuses_invalid_objects_naming_the_field(
    k8s: K8s, namespace: str, entry: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiException) as err:
        k8s.create(namespace, "externalsecrets", _es("bad", [entry]))
    assert err.value.status == 422
    assert field in str(err.value.body)


def test_store_with_two_providers_is_refused(k8s: K8s, namespace: str) -> None:
    with pytest.raises(ApiException) as err:
        k8s.create(namespace, "secretstores", {"kind": "SecretStore", "metadata": {"name": "s"},
                                               "spec": {"KMS": {}, "OOS": {}}})
    assert err.value.status == 422
    assert "exactly one provider" in str(err.value.body)


@pytest.mark.parametrize(
    ("spec_entry", "field"),
    [
        ({"key": "db", "jmesPath": [{"path": "[unclosed", "objectAlias": "x"}]},
         "spec.data[0].jmesPath[0].path"),
    ],
)
def test_invalid_expression_is_reported_with_field_and_fix_and_nothing_is_lost(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
    spec_entry: dict[str, Any], field: str,
) -> None:
    cloud.put_secret("db", '{"user": "app"}')
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    k8s.create(namespace, "externalsecrets", _es("app", [{"key": "db"}]))
    wait_for(lambda: k8s.secret_data(namespace, "app") == {"db": '{"user": "app"}'},
             what="first sync")
    k8s.patch(namespace, "externalsecrets", "app", {"spec": {"data": [
        {**spec_entry, "secretStoreRef": {"name": "store"}}]}})
    wait_for(lambda: _cond(k8s, namespace, "app").get("reason") == "InvalidSpec",
             what="InvalidSpec")
    cond = _cond(k8s, namespace, "app")
    assert field in cond["message"]
    assert f"ExternalSecret {namespace}/app" in cond["message"]
    assert k8s.secret_data(namespace, "app") == {"db": '{"user": "app"}'}  # nothing lost
    assert any(e.reason == "InvalidSpec" and e.type == "Warning"
               for e in k8s.events(namespace, "app"))


def test_invalid_replace_rule_regex_is_reported(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("conf", '{"a": "1"}')
    k8s.access_key_store(namespace)
    start_controller("--kms-endpoint", cloud.kms_endpoint)
    k8s.create(namespace, "externalsecrets", {
        "kind": "ExternalSecret", "metadata": {"name": "app"},
        "spec": {"dataProcess": [{"extract": {"key": "conf",
                                              "secretStoreRef": {"name": "store"}},
                                  "replaceRule": [{"source": "([a-", "target": "x"}]}]}})
    wait_for(lambda: _cond(k8s, namespace, "app").get("reason") == "InvalidSpec",
             what="InvalidSpec")
    assert "spec.dataProcess[0].replaceRule[0].source" in _cond(k8s, namespace, "app")["message"]
