"""The CRDs describe every field and carry exactly the parser's bounds.

hack/gen_crds.py writes the CRDs from the parser's constants (controller/api/, and the endpoint
rules of controller/providers/alibaba/stores.py). These tests read the committed YAML, as the
apiserver will, and check: every property has a description (`kubectl explain`); each bound
constant sits on the fields it governs (a table written here, independently of the
generator); no bound in a CRD comes from anywhere else; every string the parser bounds is
bounded in the schema too; the patterns accept what the parser accepts; and the committed
files are what the generator writes.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from controller import api
from controller.api import clusterexternalsecret as ces_api
from controller.clusterexternalsecret import logic as ces
from controller.providers.alibaba import stores
from tests import shaped

REPO = pathlib.Path(__file__).resolve().parents[2]
CRDS = REPO / "helm/ack-secret-manager/crds"
ES, SS, CSS, CES = ("externalsecrets.yaml", "secretstores.yaml", "clustersecretstores.yaml",
                    "clusterexternalsecrets.yaml")
BOUND_KEYWORDS = ("maxItems", "maxLength", "maxProperties", "pattern")


def _schema(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((CRDS / name).read_text())
    schema: dict[str, Any] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(path, schema) of every node: `a.b` for properties, `a[]` for items, `a{}` for map
    values."""
    found = [(path, node)]
    for key, child in (node.get("properties") or {}).items():
        found += _walk(child, f"{path}.{key}" if path else key)
    if isinstance(node.get("items"), dict):
        found += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def _node(name: str, path: str) -> dict[str, Any]:
    nodes = dict(_walk(_schema(name)))
    assert path in nodes, f"{name}: no field {path}"
    return nodes[path]


# ------------------------------------------------------------------ (a) descriptions


STANDARD = {
    "apiVersion": "APIVersion defines the versioned schema of this representation",
    "kind": "Kind is a string value representing the REST resource",
}


@pytest.mark.parametrize("name", [ES, SS, CSS, CES])
def test_every_field_has_a_description(name: str) -> None:
    schema = _schema(name)
    missing = []
    for path, node in _walk(schema):
        # A property (or the kind itself); list items and map values are described by their
        # field, which is what `kubectl explain` shows.
        if path.endswith(("[]", "{}")):
            continue
        if path == "metadata":
            # The apiserver refuses anything but the type here and describes it (ObjectMeta).
            assert node == {"type": "object"}
            continue
        description = str(node.get("description") or "").strip()
        if len(description) < 8:
            missing.append(path or "<root>")
    assert not missing, f"{name}: fields without a description: {missing}"
    for field, text in STANDARD.items():
        assert schema["properties"][field]["description"].startswith(text)


def test_descriptions_state_the_bounds_and_defaults_users_cannot_see() -> None:
    data = _node(ES, "spec.data")["description"]
    assert f"at most {api.MAX_DATA} items" in data
    assert "Default: Opaque" in _node(ES, "spec.type")["description"]
    assert "Owner (default)" in _node(ES, "spec.target.creationPolicy")["description"]
    assert f"at most {api.MAX_FIELD_LENGTH:,} characters" in _node(ES, "spec")["description"]
    endpoint = _node(SS, "spec.KMS.endpoint")["description"]
    assert f"at most {stores.MAX_ENDPOINT} characters" in endpoint
    failed = _node(CES, "status.failedNamespaces")["description"]
    assert f"the first {ces.MAX_FAILED_LISTED}" in failed


# ------------------------------------------------------------------ (b) bounds


def _es_paths(*relative: str) -> list[tuple[str, str]]:
    """An ExternalSecret spec field, in an ExternalSecret and in a ClusterExternalSecret's
    externalSecretSpec."""
    return [(name, f"{prefix}.{path}") for path in relative
            for name, prefix in ((ES, "spec"), (CES, "spec.externalSecretSpec"))]


_KEY_FIELDS = ("data[].name", "data[].jmesPath[].objectAlias",
               "dataProcess[].extract.name", "dataProcess[].extract.jmesPath[].objectAlias",
               "target.template.templateFrom[].configMap.items[].key",
               "target.template.templateFrom[].secret.items[].key")
_NAME_FIELDS = ("target.name", "target.template.templateFrom[].configMap.name",
                "target.template.templateFrom[].secret.name")
_ENDPOINTS = [*_es_paths("data[].kmsEndpoint", "dataProcess[].extract.kmsEndpoint"),
              *[(name, path) for name in (SS, CSS)
                for path in ("spec.KMS.endpoint", "spec.KMS.dedicatedKMSAuth.endpoint")]]
_CES_SELECTORS = ("spec.conditions[].namespaceSelector", "spec.namespaceSelectors[]",
                  "spec.namespaceSelector")

# (constant's name, its value, keyword, the fields it governs): the parser's bound constants.
BOUNDS: list[tuple[str, object, str, list[tuple[str, str]]]] = [
    ("api.MAX_DATA", api.MAX_DATA, "maxItems", _es_paths("data")),
    ("api.MAX_DATA_PROCESS", api.MAX_DATA_PROCESS, "maxItems", _es_paths("dataProcess")),
    ("api.MAX_JMES_PATHS", api.MAX_JMES_PATHS, "maxItems",
     _es_paths("data[].jmesPath", "dataProcess[].extract.jmesPath")),
    ("api.MAX_REPLACE_RULES", api.MAX_REPLACE_RULES, "maxItems",
     _es_paths("dataProcess[].replaceRule")),
    ("api.MAX_TEMPLATE_FROM", api.MAX_TEMPLATE_FROM, "maxItems",
     _es_paths("target.template.templateFrom")),
    ("api.MAX_TEMPLATE_ITEMS", api.MAX_TEMPLATE_ITEMS, "maxItems",
     _es_paths("target.template.templateFrom[].configMap.items",
               "target.template.templateFrom[].secret.items")),
    ("api.MAX_TEMPLATE_ITEMS", api.MAX_TEMPLATE_ITEMS, "maxProperties",
     _es_paths("target.template.metadata.labels", "target.template.metadata.annotations",
               "target.template.data")),
    ("api.MAX_NAME_LENGTH", api.MAX_NAME_LENGTH, "maxLength",
     [*_es_paths(*_KEY_FIELDS, *_NAME_FIELDS), (CES, "spec.externalSecretName")]),
    ("api.KEY_NAME_PATTERN", api.KEY_NAME_PATTERN, "pattern", _es_paths(*_KEY_FIELDS)),
    ("api.DNS_SUBDOMAIN_PATTERN", api.DNS_SUBDOMAIN_PATTERN, "pattern",
     [*_es_paths(*_NAME_FIELDS), (CES, "spec.externalSecretName")]),
    ("api.MAX_PEM_LENGTH", api.MAX_PEM_LENGTH, "maxLength",
     [(name, path) for name in (SS, CSS)
      for path in ("spec.KMS.ca", "spec.KMS.dedicatedKMSAuth.ca")]),
    ("stores.MAX_ENDPOINT", stores.MAX_ENDPOINT, "maxLength", _ENDPOINTS),
    ("stores.ENDPOINT_PATTERN", stores.ENDPOINT_PATTERN, "pattern", _ENDPOINTS),
    ("ces_api.MAX_CONDITIONS", ces_api.MAX_CONDITIONS, "maxItems",
     [(CES, "spec.conditions"), (CES, "spec.namespaceSelectors"),
      *[(CES, f"{s}.matchExpressions") for s in _CES_SELECTORS]]),
    ("ces_api.MAX_NAMESPACES", ces_api.MAX_NAMESPACES, "maxItems",
     [(CES, "spec.conditions[].namespaces"), (CES, "spec.conditions[].namespaceRegexes"),
      *[(CES, f"{s}.matchExpressions[].values") for s in _CES_SELECTORS]]),
    ("ces_api.MAX_METADATA_ITEMS", ces_api.MAX_METADATA_ITEMS, "maxProperties",
     [(CES, "spec.externalSecretMetadata.labels"), (CES, "spec.externalSecretMetadata.annotations"),
      *[(CES, f"{s}.matchLabels") for s in _CES_SELECTORS]]),
]

# Patterns checked by a CEL rule, so that a refusal says what to write instead of quoting a
# regular expression: (constant's name, pattern, words of the message, fields).
RULES: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    ("api.INTERVAL_PATTERN", api.INTERVAL_PATTERN, "must be a Go duration such as 30s",
     [*_es_paths("refreshInterval", "rotationInterval"), (CES, "spec.rotationInterval"),
      (CES, "spec.refreshTime")]),
    ("shaped.SHAPE.provider_pattern", shaped.SHAPE.provider_pattern, "must be kms or oos",
     _es_paths("provider")),
]

# Strings the parser reads without a length bound (a ClusterSecretStore's conditions,
# serviceAccountRef.audiences): the schema leaves them unbounded too.
UNBOUNDED = {
    (CSS, "spec.conditions[].namespaces[]"), (CSS, "spec.conditions[].namespaceRegexes[]"),
    (CSS, "spec.conditions[].namespaceSelector.matchLabels{}"),
    (CSS, "spec.conditions[].namespaceSelector.matchExpressions[].values[]"),
    *[(name, f"spec.{provider}.{auth}.serviceAccountRef.audiences[]") for name in (SS, CSS)
      for provider, auth in (("KMS", "KMSAuth"), ("OOS", "OOSAuth"))],
}


@pytest.mark.parametrize(("constant", "value", "keyword", "fields"), BOUNDS,
                         ids=[f"{b[0]}-{b[2]}" for b in BOUNDS])
def test_each_parser_bound_is_on_the_fields_it_governs(
        constant: str, value: object, keyword: str, fields: list[tuple[str, str]]) -> None:
    wrong = [(name, path, _node(name, path).get(keyword)) for name, path in fields
             if _node(name, path).get(keyword) != value]
    assert not wrong, f"{constant} ({value!r}) is not the {keyword} of {wrong}"


@pytest.mark.parametrize(("constant", "pattern", "message", "fields"), RULES,
                         ids=[r[0] for r in RULES])
def test_patterns_are_checked_by_rules_that_say_what_to_write(
        constant: str, pattern: str, message: str, fields: list[tuple[str, str]]) -> None:
    for name, path in fields:
        node = _node(name, path)
        assert "pattern" not in node
        (rule,) = node["x-kubernetes-validations"]
        assert rule["rule"] == f"self.matches(r'{pattern}')", (constant, name, path)
        assert message in rule["message"]


def test_no_bound_comes_from_anywhere_but_the_parser_constants() -> None:
    """Every maxItems, maxProperties, pattern, pattern rule and maxLength in a spec is one of
    the tables' (or the common string bound, api.MAX_FIELD_LENGTH), and every spec string the
    parser bounds carries a maxLength."""
    declared = {(name, path, keyword) for _, _, keyword, fields in BOUNDS
                for name, path in fields}
    declared |= {(name, path, "rule") for _, _, _, fields in RULES for name, path in fields}
    stray, unbounded = [], []
    for name in (ES, SS, CSS, CES):
        for path, node in _walk(_schema(name)):
            if not path.startswith("spec"):
                continue
            for keyword in BOUND_KEYWORDS:
                if keyword not in node or (name, path, keyword) in declared:
                    continue
                if keyword == "maxLength" and node[keyword] == api.MAX_FIELD_LENGTH:
                    continue
                stray.append((name, path, keyword, node[keyword]))
            patterns = [r for r in node.get("x-kubernetes-validations", [])
                        if "matches(" in r["rule"]]
            if patterns and (name, path, "rule") not in declared:
                stray.append((name, path, "rule", patterns))
            if node.get("type") == "string" and "maxLength" not in node and \
                    (name, path) not in UNBOUNDED:
                unbounded.append((name, path))
    assert not stray, f"bounds not taken from a parser constant: {stray}"
    assert not unbounded, f"strings the parser bounds but the CRD does not: {unbounded}"


def test_the_status_is_not_bounded() -> None:
    """The controller writes the status; a bound there would fail its writes, not a user's."""
    for name in (ES, SS, CSS, CES):
        for path, node in _walk(_schema(name)):
            if path.startswith("status"):
                assert not set(BOUND_KEYWORDS) & set(node), (name, path)


# ------------------------------------------------------------------ the patterns are the parser's

_ASCII = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=24)
_DURATION_ISH = st.text(alphabet="0123456789.+-nsuµmh", max_size=14)


def _interval_accepted(text: str) -> bool:
    spec = {"data": [{"key": "k"}], "refreshInterval": text}
    try:
        shaped.parse_external_secret({"metadata": {"name": "a", "namespace": "n"}, "spec": spec})
    except api.SpecError:
        return False
    return True


@given(st.one_of(_DURATION_ISH, _ASCII))
def test_the_interval_pattern_accepts_what_the_parser_accepts(text: str) -> None:
    matches = re.search(api.INTERVAL_PATTERN, text) is not None
    if matches:
        assert _interval_accepted(text), text
    elif _interval_accepted(text):
        # The only intervals the parser takes and the CRD refuses: a negative zero ("-0s").
        assert text.startswith("-") and api.parse_duration(text) == 0, text


@pytest.mark.parametrize("text", ["0", "30s", "1h30m", "500ms", "1.5h", ".5s", "+5m", "10us",
                                  ""])
def test_the_interval_pattern_takes_go_durations(text: str) -> None:
    assert re.search(api.INTERVAL_PATTERN, text) and _interval_accepted(text)


@pytest.mark.parametrize("text", ["1d", "10", "-5m", "5 m", "1h1", "1e3s", " "])
def test_the_interval_pattern_refuses_what_go_refuses(text: str) -> None:
    assert not re.search(api.INTERVAL_PATTERN, text)


@given(st.one_of(_ASCII, st.text(alphabet="-._aZ09/", max_size=8)))
def test_the_key_pattern_is_necessary_for_a_secret_key(key: str) -> None:
    # key_name_problem also refuses ".", ".." and a leading "..", which the pattern cannot say.
    if api.key_name_problem(key) is None:
        assert re.search(api.KEY_NAME_PATTERN, key)
        assert len(key) <= api.MAX_NAME_LENGTH
    elif re.search(api.KEY_NAME_PATTERN, key) and len(key) <= api.MAX_NAME_LENGTH:
        assert key in (".", "..") or key.startswith("..")


def _target_name_accepted(name: str) -> bool:
    spec = {"data": [{"key": "k"}], "target": {"name": name}}
    try:
        shaped.parse_external_secret({"metadata": {"name": "a", "namespace": "n"}, "spec": spec})
    except api.SpecError:
        return False
    return True


@given(st.one_of(_ASCII, st.text(alphabet="-.az09A", min_size=1, max_size=10)))
def test_the_name_pattern_accepts_what_the_parser_accepts(name: str) -> None:
    if not name:
        return  # an empty target.name means the default
    assert (re.search(api.DNS_SUBDOMAIN_PATTERN, name) is not None) == \
        _target_name_accepted(name), name


def _provider_accepted(provider: str) -> bool:
    spec = {"data": [{"key": "k"}], "provider": provider}
    try:
        shaped.parse_external_secret({"metadata": {"name": "a", "namespace": "n"}, "spec": spec})
    except api.SpecError:
        return False
    return True


@given(st.one_of(st.sampled_from(["kms", "KMS", "Oos", "", "kms ", "k", "oss"]), _ASCII))
def test_the_provider_pattern_accepts_what_the_parser_accepts(provider: str) -> None:
    assert (re.search(shaped.SHAPE.provider_pattern, provider) is not None) == \
        _provider_accepted(provider), provider


# ------------------------------------------------------------------ (c) generated


def test_the_committed_crds_are_what_the_generator_writes() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "hack/gen_crds.py"), "--check"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
