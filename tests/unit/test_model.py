"""Unit tests for controller.api: parsing, defaults, and every SpecError naming its field."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
import yaml

from controller.api import (
    ClusterSecretStore,
    CreationPolicy,
    DeletionPolicy,
    FetchKey,
    SecretRef,
    SecretStore,
    SpecError,
    StoreKind,
    StoreRef,
    compile_go_regexp,
    key_name_problem,
    parse_duration,
)
from controller.providers.alibaba.blocks import kms_of, oos_of
from tests.shaped import (
    parse_cluster_secret_store,
    parse_external_secret,
    parse_secret_store,
    parse_store,
)

# The example users already have, byte for byte (one long line split for the linter).
COMPAT_EXAMPLE = """
apiVersion: alibabacloud.com/v1alpha1
kind: ExternalSecret
metadata: {name: esdemo, namespace: default}
spec:
  provider: kms
  data:
    - key: test1
      name: test1
      versionId: v1
      secretStoreRef: {name: scdemo, namespace: default}
      jmesPath:
        - {path: "name", objectAlias: "name"}
        - {path: "friends[0].name", objectAlias: "friendname"}
  dataProcess:
    - extract: {key: test1, name: extract, versionId: v1, """ \
    """secretStoreRef: {name: scdemo, namespace: default}}
      replaceRule:
        - {source: "^n.*e$", target: "alibabacloud"}
"""

COMPAT_STORE = """
apiVersion: alibabacloud.com/v1alpha1
kind: SecretStore
metadata: {name: scdemo, namespace: default}
spec:
  KMS:
    KMSAuth:
      oidcProviderARN: "acs:ram::{accountID}:oidc-provider/ack-rrsa-{clusterID}"
      ramRoleARN: "acs:ram::{accountID}:role/{roleName}"
"""


def external_secret(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    metadata = {"name": "es", "namespace": "team", **meta}
    return {"apiVersion": "alibabacloud.com/v1alpha1", "kind": "ExternalSecret",
            "metadata": metadata, "spec": spec}


def spec_error(obj: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_external_secret(obj)
    return caught.value


# ---------------------------------------------------------------- the compat example


def test_compat_example_parses_unchanged() -> None:
    es = parse_external_secret(yaml.safe_load(COMPAT_EXAMPLE))
    assert (es.namespace, es.name) == ("default", "esdemo")
    assert es.spec.provider == "kms"
    assert es.spec.type == "Opaque"
    (entry,) = es.spec.data
    assert entry.entry_id == "data[0]"
    assert (entry.key, entry.name, entry.version_id) == ("test1", "test1", "v1")
    assert entry.store_ref == StoreRef(StoreKind.SECRET_STORE, "default", "scdemo")
    assert [(j.path, j.object_alias) for j in entry.jmes_path] == [
        ("name", "name"), ("friends[0].name", "friendname")]
    (process,) = es.spec.data_process
    assert process.extract is not None
    assert process.extract.entry_id == "dataProcess[0].extract"
    assert process.extract.is_extract and not entry.is_extract
    assert [(r.source, r.target) for r in process.replace_rules] == [("^n.*e$", "alibabacloud")]
    assert es.spec.target.name == "esdemo"
    assert es.spec.target.creation_policy is CreationPolicy.OWNER
    assert es.spec.target.deletion_policy is DeletionPolicy.DELETE
    assert es.spec.refresh_interval is None


def test_compat_example_shares_one_fetch() -> None:
    es = parse_external_secret(yaml.safe_load(COMPAT_EXAMPLE))
    assert es.spec.fetch_keys == (
        FetchKey("SecretStore", "default", "scdemo", "", "test1", "v1", ""),)
    assert [e.entry_id for e in es.spec.entries] == ["data[0]", "dataProcess[0].extract"]


def test_parse_does_not_change_its_input() -> None:
    raw = yaml.safe_load(COMPAT_EXAMPLE)
    before = copy.deepcopy(raw)
    parse_external_secret(raw)
    assert raw == before


def test_models_are_frozen() -> None:
    es = parse_external_secret(yaml.safe_load(COMPAT_EXAMPLE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        es.name = "other"  # type: ignore[misc]


# ---------------------------------------------------------------- defaults


def test_metadata_is_kept() -> None:
    es = parse_external_secret(external_secret(
        {"data": [{"key": "k"}]}, uid="u-1", generation=4, resourceVersion="77",
        labels={"app": "x"}, annotations={"note": "y"}))
    assert (es.uid, es.generation, es.resource_version) == ("u-1", 4, "77")
    assert es.labels == {"app": "x"}
    assert es.annotations == {"note": "y"}
    assert es.qualified_name == "team/es"


def test_defaults_for_a_minimal_entry() -> None:
    es = parse_external_secret(external_secret({"data": [{"key": "db-pass"}]}))
    (entry,) = es.spec.data
    assert entry.name == "db-pass"
    assert entry.store_ref is None
    assert entry.fetch_key == FetchKey("", "", "", "", "db-pass", "", "")
    assert es.spec.provider == "kms"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ({"name": "s"}, StoreRef(StoreKind.SECRET_STORE, "team", "s")),
        ({"name": "s", "namespace": "other"}, StoreRef(StoreKind.SECRET_STORE, "other", "s")),
        ({"name": "c", "kind": "ClusterSecretStore", "namespace": "x"},
         StoreRef(StoreKind.CLUSTER_SECRET_STORE, "", "c")),
        ({}, None),
    ],
)
def test_secret_store_ref_defaults(ref: dict[str, str], expected: StoreRef | None) -> None:
    es = parse_external_secret(external_secret({"data": [{"key": "k", "secretStoreRef": ref}]}))
    assert es.spec.data[0].store_ref == expected


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        ({}, False),
        ({"versionId": "v2"}, True),
        ({"versionStage": "ACSPrevious"}, True),
        ({"kmsEndpoint": "kst-1.cryptoservice.kms.aliyuncs.com"}, True),
        ({"secretStoreRef": {"name": "other"}}, True),
        ({"name": "another-key-name"}, False),
    ],
)
def test_fetch_key_covers_what_changes_the_call(change: dict[str, Any], differs: bool) -> None:
    base = {"key": "k", "secretStoreRef": {"name": "s"}}
    es = parse_external_secret(external_secret({"data": [base, {**base, **change}]}))
    first, second = es.spec.data
    assert (first.fetch_key != second.fetch_key) is differs
    assert len(es.spec.fetch_keys) == (2 if differs else 1)


def test_alias_defaults_to_key_like_ack() -> None:
    es = parse_external_secret(external_secret(
        {"data": [{"key": "k", "jmesPath": [{"path": "a"}]}]}))
    assert es.spec.data[0].jmes_path[0].object_alias == "k"


@pytest.mark.parametrize(
    ("spec", "seconds"),
    [
        ({}, None),
        ({"refreshInterval": "1h"}, 3600.0),
        ({"refreshInterval": "0"}, 0.0),
        ({"rotationInterval": "30m"}, 1800.0),
        ({"refreshInterval": "1m30s", "rotationInterval": "2h"}, 90.0),
    ],
)
def test_refresh_interval(spec: dict[str, str], seconds: float | None) -> None:
    es = parse_external_secret(external_secret({"data": [{"key": "k"}], **spec}))
    assert es.spec.refresh_interval == seconds


def test_target_and_template() -> None:
    es = parse_external_secret(external_secret({
        "data": [{"key": "k"}],
        "target": {
            "name": "app-secret", "creationPolicy": "Merge", "deletionPolicy": "Retain",
            "template": {"type": "kubernetes.io/tls", "engineVersion": "v2",
                         "data": {"x": "{{ .k }}"},
                         "metadata": {"labels": {"a": "1"}, "annotations": {"b": "2"}}},
        },
    }))
    target = es.spec.target
    assert target.name == "app-secret"
    assert target.creation_policy is CreationPolicy.MERGE
    assert target.deletion_policy is DeletionPolicy.RETAIN
    assert target.template.labels == {"a": "1"}
    assert target.template.annotations == {"b": "2"}
    assert target.template.data == {"x": "{{ .k }}"}  # rendered now (docs/templates.md)
    assert target.template.extra == {}
    assert target.template.templated and target.template.merge_policy == "Replace"
    assert es.spec.secret_type == "kubernetes.io/tls"


def test_unknown_fields_and_empty_data_process_are_harmless() -> None:
    es = parse_external_secret(external_secret({
        "data": [{"key": "k", "futureField": 1}], "futureSpecField": {"x": 1},
        "dataProcess": [{"replaceRule": [{"source": "a", "target": "b"}]}],
    }))
    assert es.spec.data_process[0].extract is None
    assert [e.entry_id for e in es.spec.entries] == ["data[0]"]


# ---------------------------------------------------------------- every SpecError names its field


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"data": [{"name": "x"}]}, "spec.data[0].key"),
        ({"data": [{"key": ""}]}, "spec.data[0].key"),
        ({"data": [{"key": 5}]}, "spec.data[0].key"),
        ({"data": {"key": "k"}}, "spec.data"),
        ({"data": ["k"]}, "spec.data[0]"),
        ({"data": [{"key": "k", "name": "bad/name"}]}, "spec.data[0].name"),
        ({"data": [{"key": "path/like"}]}, "spec.data[0].name"),
        ({"data": [{"key": "k", "name": "x" * 254}]}, "spec.data[0].name"),
        ({"data": [{"key": "k", "name": ".."}]}, "spec.data[0].name"),
        ({"data": [{"key": "k"}, {"key": "k", "jmesPath": [{"path": "a[", "objectAlias": "a"}]}]},
         "spec.data[1].jmesPath[0].path"),
        ({"data": [{"key": "k", "jmesPath": [{"objectAlias": "a"}]}]},
         "spec.data[0].jmesPath[0].path"),
        ({"data": [{"key": "k", "jmesPath": [{"path": "a", "objectAlias": "no spaces"}]}]},
         "spec.data[0].jmesPath[0].objectAlias"),
        ({"data": [{"key": "k", "secretStoreRef": {"name": "s", "kind": "Vault"}}]},
         "spec.data[0].secretStoreRef.kind"),
        ({"data": [{"key": "k", "secretStoreRef": {"namespace": "team"}}]},
         "spec.data[0].secretStoreRef.name"),
        ({"dataProcess": [{"extract": {"name": "x"}}]}, "spec.dataProcess[0].extract.key"),
        ({"dataProcess": [{"extract": {"key": "k"},
                           "replaceRule": [{"source": "(", "target": ""}]}]},
         "spec.dataProcess[0].replaceRule[0].source"),
        ({"dataProcess": [{"extract": {"key": "k"},
                           "replaceRule": [{"source": "a**", "target": ""}]}]},
         "spec.dataProcess[0].replaceRule[0].source"),
        ({"target": {"creationPolicy": "Always"}}, "spec.target.creationPolicy"),
        ({"target": {"deletionPolicy": "Keep"}}, "spec.target.deletionPolicy"),
        ({"target": {"name": "Not_A_Name"}}, "spec.target.name"),
        ({"target": {"template": {"metadata": {"labels": {"a": 1}}}}},
         "spec.target.template.metadata.labels.a"),
        ({"type": "Opaque", "target": {"template": {"type": "kubernetes.io/tls"}}},
         "spec.target.template.type"),
        ({"refreshInterval": "1d"}, "spec.refreshInterval"),
        ({"refreshInterval": "-5m"}, "spec.refreshInterval"),
        ({"refreshInterval": 60}, "spec.refreshInterval"),
        ({"rotationInterval": "soon"}, "spec.rotationInterval"),
        ({"provider": "vault"}, "spec.provider"),
        ("not a mapping", "spec"),
    ],
)
def test_spec_error_names_field_and_fix(spec: Any, field: str) -> None:
    error = spec_error(external_secret(spec))
    assert error.field == field
    assert type(error) is SpecError
    assert error.message and error.fix
    text = str(error)
    assert text.startswith(f"ExternalSecret team/es: {field} ")
    assert error.fix.rstrip(".") in text


def test_spec_error_is_one_sentence() -> None:
    error = spec_error(external_secret({"data": [{"name": "x"}]}))
    assert str(error) == ("ExternalSecret team/es: spec.data[0].key is required; "
                          "set it to the name of the KMS secret to read.")


def test_all_problems_are_collected() -> None:
    error = spec_error(external_secret({
        "data": [{"name": "x"}, {"key": "k", "jmesPath": [{"path": "[", "objectAlias": "a"}]}],
        "target": {"deletionPolicy": "Keep"},
    }))
    assert [e.field for e in error.errors] == [
        "spec.data[0].key", "spec.data[1].jmesPath[0].path", "spec.target.deletionPolicy"]
    assert error.errors[0] is error
    assert "(2 more: spec.data[1].jmesPath[0].path, spec.target.deletionPolicy)" in str(error)


def test_oos_provider_reads_parameters_without_stages() -> None:
    es = parse_external_secret(external_secret({"provider": "oos", "data": [
        {"key": "my-param", "versionId": "2", "secretStoreRef": {"name": "oos"}}]}))
    assert es.spec.provider == "oos"
    assert (es.spec.data[0].key, es.spec.data[0].version_id) == ("my-param", "2")
    error = spec_error(external_secret({"provider": "oos", "data": [
        {"key": "p", "versionStage": "ACSCurrent"}]}))
    assert error.field == "spec.data[0].versionStage" and "OOS" in str(error)


# ---------------------------------------------------------------- durations, key names, regexps


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("1h", 3600.0), ("30s", 30.0), ("1m30s", 90.0), ("1h30m", 5400.0),
     ("500ms", 0.5), ("1.5h", 5400.0), (".5s", 0.5), ("2us", 2e-6), ("3µs", 3e-6),
     ("100ns", 1e-7), ("-2s", -2.0), ("+1m", 60.0), ("1h0m0s", 3600.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "1d", "1h1", "h", "1.h.", "1 h", "one", "-", "1e3s",
                                  "3000000h"])
def test_parse_duration_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("key", "valid"),
    [("tls.crt", True), (".dockerconfigjson", True), ("a-b_c.D9", True), ("x" * 253, True),
     ("", False), ("x" * 254, False), ("a/b", False), ("a b", False), ("ü", False),
     (".", False), ("..", False), ("..data", False)],
)
def test_key_name_problem(key: str, valid: bool) -> None:
    assert (key_name_problem(key) is None) is valid


@pytest.mark.parametrize(
    ("go_pattern", "text", "matched"),
    [
        (r"^n.*e$", "name", "name"),
        (r"[[:alpha:]]+", "ab1", "ab"),
        (r"[^[:digit:]]+", "ab1", "ab"),
        (r"ab\z", "xab", "ab"),
        (r"\Qa.b\E", "a.b", "a.b"),
        (r"\Qa.b\E", "axb", None),
        (r"(?<word>[a-z]+)", "abc", "abc"),
        (r"[]a]+", "]a]", "]a]"),
        (r"(?i)ABC", "abc", "abc"),
    ],
)
def test_go_regexp_translation(go_pattern: str, text: str, matched: str | None) -> None:
    found = compile_go_regexp(go_pattern).search(text)
    assert (found.group(0) if found else None) == matched


@pytest.mark.parametrize("go_pattern", ["(", r"[[:nope:]]", "a{2,1}", r"\8"])
def test_go_regexp_refuses_what_re2_refuses(go_pattern: str) -> None:
    with pytest.raises(ValueError):
        compile_go_regexp(go_pattern)


@pytest.mark.parametrize(("go_pattern", "text", "matched"), [
    (r"\p{Greek}+", "abc αβγ", "αβγ"), (r"(?U)a+", "aaa", "a"), ("a(?i)b", "aB", "aB")])
def test_go_regexp_is_re2_itself(go_pattern: str, text: str, matched: str) -> None:
    found = compile_go_regexp(go_pattern).search(text)
    assert found is not None and found.group(0) == matched


def test_a_catastrophic_pattern_cannot_stall_a_worker() -> None:
    """Python's re backtracks for ever on (a+)+$ against 'aaa…!' (a tenant's replaceRule on a
    long extracted key); RE2 cannot backtrack. Not a speed test: it either finishes or hangs."""
    import threading
    found: list[object] = []
    worker = threading.Thread(target=lambda: found.append(
        compile_go_regexp(r"(a+)+$").search("a" * 100_000 + "!")), daemon=True)
    worker.start()
    worker.join(60)
    assert found == [None]


# ---------------------------------------------------------------- SecretStore


def store(spec: Any, kind: str = "SecretStore") -> dict[str, Any]:
    return {"apiVersion": "alibabacloud.com/v1alpha1", "kind": kind,
            "metadata": {"name": "st", "namespace": "team"}, "spec": spec}


def store_error(obj: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_store(obj)
    return caught.value


def test_compat_secret_store_parses() -> None:
    parsed = parse_secret_store(yaml.safe_load(COMPAT_STORE))
    assert parsed.ref == StoreRef(StoreKind.SECRET_STORE, "default", "scdemo")
    kms, oos = kms_of(parsed), oos_of(parsed)
    assert kms is not None and kms.auth is not None
    assert kms.auth.ram_role_arn == "acs:ram::{accountID}:role/{roleName}"
    assert kms.auth.oidc_provider_arn.endswith("ack-rrsa-{clusterID}")
    assert oos is None


def test_service_account_store_takes_its_role_from_the_service_account() -> None:
    parsed = parse_secret_store(store({"KMS": {"KMSAuth": {
        "oidcProviderARN": "acs:ram::1:oidc-provider/ack-rrsa-c1",
        "serviceAccountRef": {"name": "app"},
    }}}))
    kms = kms_of(parsed)
    assert kms is not None and kms.auth is not None
    assert kms.auth.ram_role_arn == ""
    assert kms.auth.service_account_ref is not None


def test_oidc_provider_without_role_or_service_account_is_an_error() -> None:
    with pytest.raises(SpecError) as caught:
        parse_secret_store(store({"KMS": {"KMSAuth": {
            "oidcProviderARN": "acs:ram::1:oidc-provider/ack-rrsa-c1"}}}))
    assert caught.value.field == "spec.KMS.KMSAuth.ramRoleARN"


def test_access_key_refs_default_to_the_store_namespace() -> None:
    parsed = parse_secret_store(store({"KMS": {"KMSAuth": {
        "accessKey": {"name": "ak", "key": "id"},
        "accessKeySecret": {"name": "ak", "key": "secret", "namespace": "kube-system"},
        "remoteRamRoleARN": "acs:ram::2:role/x", "remoteRamRoleSessionName": "s",
        "serviceAccountRef": {"name": "app", "audiences": ["sts.aliyuncs.com"]},
    }}}))
    kms = kms_of(parsed)
    assert kms is not None and kms.auth is not None
    auth = kms.auth
    assert auth.access_key == SecretRef("ak", "team", "id")
    assert auth.access_key_secret == SecretRef("ak", "kube-system", "secret")
    assert auth.remote_ram_role_arn == "acs:ram::2:role/x"
    assert auth.service_account_ref is not None
    assert auth.service_account_ref.namespace == "team"
    assert auth.service_account_ref.audiences == ("sts.aliyuncs.com",)


def test_endpoint_ca_and_dedicated_kms_are_kept() -> None:
    parsed = parse_secret_store(store({"KMS": {
        "endpoint": "kst-1.cryptoservice.kms.aliyuncs.com",
        "caSecretRef": {"name": "ca", "key": "ca.pem"},
        "dedicatedKMSAuth": {"protocol": "https", "endpoint": "kst-1.example", "ca": "PEM",
                             "ignoreSSL": True,
                             "clientKeyContent": {"name": "ck", "key": "k"},
                             "password": {"name": "pw", "key": "p"}},
    }}))
    kms = kms_of(parsed)
    assert kms is not None and kms.dedicated is not None
    assert kms.endpoint == "kst-1.cryptoservice.kms.aliyuncs.com"
    assert kms.ca_secret_ref == SecretRef("ca", "team", "ca.pem")
    assert kms.dedicated.ignore_ssl is True
    assert kms.dedicated.password == SecretRef("pw", "team", "p")
    assert kms.auth is None


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "spec"),
        ({"KMS": {}, "OOS": {}}, "spec"),
        ({"KMS": {"KMSAuth": {"accessKey": {"name": "a", "key": "k"}}}},
         "spec.KMS.KMSAuth.accessKeySecret"),
        ({"KMS": {"KMSAuth": {"accessKeySecret": {"name": "a", "key": "k"}}}},
         "spec.KMS.KMSAuth.accessKey"),
        ({"KMS": {"KMSAuth": {"accessKey": {"name": "a"}, "accessKeySecret": {"name": "a",
                                                                               "key": "s"}}}},
         "spec.KMS.KMSAuth.accessKey.key"),
        ({"KMS": {"KMSAuth": {"oidcProviderARN": "acs:ram::1:oidc-provider/x"}}},
         "spec.KMS.KMSAuth.ramRoleARN"),
        ({"KMS": {"KMSAuth": {"serviceAccountRef": {"namespace": "x"}}}},
         "spec.KMS.KMSAuth.serviceAccountRef.name"),
        ({"KMS": {"ca": "PEM", "caSecretRef": {"name": "c", "key": "k"}}},
         "spec.KMS.caSecretRef"),
        ({"KMS": {"dedicatedKMSAuth": {"clientKeyContent": {"name": "c", "key": "k"},
                                       "password": {"name": "p", "key": "k"}}}},
         "spec.KMS.dedicatedKMSAuth.endpoint"),
        ({"KMS": {"dedicatedKMSAuth": {"endpoint": "e", "ignoreSSL": "yes",
                                       "clientKeyContent": {"name": "c", "key": "k"},
                                       "password": {"name": "p", "key": "k"}}}},
         "spec.KMS.dedicatedKMSAuth.ignoreSSL"),
    ],
)
def test_secret_store_errors_name_the_field(spec: dict[str, Any], field: str) -> None:
    error = store_error(store(spec))
    assert error.field == field
    assert str(error).startswith(f"SecretStore team/st: {field} ")


def test_oos_store_parses_its_auth() -> None:
    parsed = parse_store(store({"OOS": {"OOSAuth": {"ramRoleARN": "acs:ram::1:role/r",
                                                    "oidcProviderARN": "acs:ram::1:oidc"}}}))
    kms, oos = kms_of(parsed), oos_of(parsed)
    assert kms is None and oos is not None
    assert oos.auth is not None and oos.auth.ram_role_arn == "acs:ram::1:role/r"


def test_cluster_store_refs_need_a_namespace() -> None:
    error = store_error(store({"KMS": {"KMSAuth": {
        "accessKey": {"name": "a", "key": "id"},
        "accessKeySecret": {"name": "a", "key": "s", "namespace": "kube-system"},
    }}}, kind="ClusterSecretStore"))
    assert error.field == "spec.KMS.KMSAuth.accessKey.namespace"
    assert str(error).startswith("ClusterSecretStore st: ")


def test_parse_store_dispatches_on_kind() -> None:
    namespaced = parse_store(store({"KMS": {}}))
    cluster = parse_store(store({"KMS": {}}, kind="ClusterSecretStore"))
    assert type(namespaced) is SecretStore and namespaced.namespace == "team"
    assert isinstance(cluster, ClusterSecretStore) and cluster.namespace == ""
    assert cluster.ref == StoreRef(StoreKind.CLUSTER_SECRET_STORE, "", "st")


LABELS = {"team": "a", "env": "prod"}


@pytest.mark.parametrize(
    ("conditions", "namespace", "allowed"),
    [
        ([], "anything", True),
        ([{"namespaces": ["a", "b"]}], "b", True),
        ([{"namespaces": ["a", "b"]}], "c", False),
        ([{"namespaceSelector": {"matchLabels": {"team": "a"}}}], "x", True),
        ([{"namespaceSelector": {"matchLabels": {"team": "b"}}}], "x", False),
        ([{"namespaceSelector": {}}], "x", True),
        ([{}], "x", False),
        ([{"namespaceRegexes": ["^team-"]}], "team-1", True),
        ([{"namespaceRegexes": ["^team-"]}], "my-team-1", False),
        ([{"namespaceSelector": {"matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "stage"]}]}}], "x", True),
        ([{"namespaceSelector": {"matchExpressions": [
            {"key": "env", "operator": "NotIn", "values": ["prod"]}]}}], "x", False),
        ([{"namespaceSelector": {"matchExpressions": [
            {"key": "team", "operator": "Exists"}]}}], "x", True),
        ([{"namespaceSelector": {"matchExpressions": [
            {"key": "team", "operator": "DoesNotExist"}]}}], "x", False),
        ([{"namespaces": ["a"]}, {"namespaceSelector": {"matchLabels": {"env": "prod"}}}],
         "x", True),
    ],
)
def test_cluster_store_allows_namespace(
    conditions: list[dict[str, Any]], namespace: str, allowed: bool
) -> None:
    parsed = parse_cluster_secret_store(
        store({"KMS": {}, "conditions": conditions}, kind="ClusterSecretStore"))
    assert parsed.allows_namespace(namespace, LABELS) is allowed


@pytest.mark.parametrize(
    ("condition", "field"),
    [
        ({"namespaceRegexes": ["("]}, "spec.conditions[0].namespaceRegexes[0]"),
        ({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Has"}]}},
         "spec.conditions[0].namespaceSelector.matchExpressions[0].operator"),
        ({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
         "spec.conditions[0].namespaceSelector.matchExpressions[0].values"),
        ({"namespaces": "a"}, "spec.conditions[0].namespaces"),
    ],
)
def test_cluster_store_condition_errors(condition: dict[str, Any], field: str) -> None:
    error = store_error(store({"KMS": {}, "conditions": [condition]}, kind="ClusterSecretStore"))
    assert error.field == field


@pytest.mark.parametrize(("template", "field"), [
    ({"data": {"x": "{{ .k "}}, "spec.target.template.data.x"),
    ({"data": {"bad/key": "v"}}, "spec.target.template.data.bad/key"),
    ({"metadata": {"labels": {"a": "{{ if }}"}}}, "spec.target.template.metadata.labels.a"),
    ({"mergePolicy": "Sometimes"}, "spec.target.template.mergePolicy"),
    ({"engineVersion": "v1"}, "spec.target.template.engineVersion"),
    ({"templateFrom": [{"configMap": {"name": "c", "items": []}}]},
     "spec.target.template.templateFrom[0].configMap.items"),
    ({"templateFrom": [{"literal": "x", "secret": {"name": "s", "items": [{"key": "k"}]}}]},
     "spec.target.template.templateFrom[0]"),
    ({"templateFrom": [{"literal": "x", "target": "Status"}]},
     "spec.target.template.templateFrom[0].target"),
    ({"templateFrom": [{"configMap": {"name": "c", "items": [
        {"key": "k", "templateAs": "Both"}]}}]},
     "spec.target.template.templateFrom[0].configMap.items[0].templateAs"),
])
def test_template_mistakes_name_the_field(template: dict[str, Any], field: str) -> None:
    error = spec_error(external_secret({"data": [{"key": "k"}],
                                        "target": {"template": template}}))
    assert field in [e.field for e in error.errors], [e.field for e in error.errors]


def test_template_from_parses_its_sources() -> None:
    es = parse_external_secret(external_secret({"data": [{"key": "k"}], "target": {
        "template": {"mergePolicy": "Merge", "templateFrom": [
            {"configMap": {"name": "tpl", "items": [{"key": "config.yaml"},
                                                    {"key": "env", "templateAs":
                                                     "KeysAndValues"}]}},
            {"secret": {"name": "s", "items": [{"key": "k"}]}, "target": "Annotations"},
            {"literal": "{{ .k }}", "target": "Labels"}]}}}))
    sources = es.spec.target.template.template_from
    assert [(t.kind, t.name, t.target) for t in sources] == [
        ("configMap", "tpl", "Data"), ("secret", "s", "Annotations"), ("literal", "", "Labels")]
    assert sources[0].items == (("config.yaml", "Values"), ("env", "KeysAndValues"))
