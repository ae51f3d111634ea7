"""The real apiserver admits what the controller's parser accepts and refuses, in words, what
it refuses: the CRDs carry the parser's bounds (hack/gen_crds.py imports them)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from controller import api
from controller.providers.alibaba import stores
from tests import shaped
from tests.integration.conftest import K8s


def _es(name: str, **spec: Any) -> dict[str, Any]:
    entry = {"key": "db", **spec.pop("entry", {})}
    return {"kind": "ExternalSecret", "metadata": {"name": name},
            "spec": {"data": [entry], **spec}}


_LONG_HOST = ".".join(c * 58 for c in "abcd") + ".aliyuncs.com"  # 248 characters


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"refreshInterval": "1d"}, "spec.refreshInterval", "must be a Go duration such as 30s"),
        ({"refreshInterval": "-5m"}, "spec.refreshInterval", "must be a Go duration such as"),
        ({"rotationInterval": "10"}, "spec.rotationInterval", "must be a Go duration such as"),
        ({"provider": "koos"}, "spec.provider", "must be kms or oos"),
        ({"target": {"name": "a..b"}}, "spec.target.name", "should match"),
    ],
    ids=["day", "negative", "no-unit", "provider", "name"],
)
def test_the_apiserver_refuses_what_the_parser_refuses_saying_what_to_write(
        k8s: K8s, namespace: str, spec: dict[str, Any], field: str, words: str) -> None:
    body = _es("bad", **spec)
    with pytest.raises(api.SpecError):
        shaped.parse_external_secret({**body, "metadata": {"name": "bad", "namespace": "n"}})
    with pytest.raises(ApiException) as err:
        k8s.create(namespace, "externalsecrets", body)
    assert err.value.status == 422
    text = str(err.value.body)
    assert field in text and words in text, text
    if "Go duration" in words:
        assert "^" not in text  # the message, not the regular expression


@pytest.mark.parametrize(
    "spec",
    [
        {"refreshInterval": "+5m"}, {"refreshInterval": "500ms"}, {"refreshInterval": ".5s"},
        {"refreshInterval": "1h30m"}, {"refreshInterval": ""}, {"provider": "KMS"},
        {"entry": {"kmsEndpoint": f"https://{_LONG_HOST}:8443/"}},
    ],
    ids=["plus", "ms", "fraction", "compound", "empty", "upper-case", "long-endpoint"],
)
def test_the_apiserver_admits_what_the_parser_accepts(
        k8s: K8s, namespace: str, spec: dict[str, Any]) -> None:
    if "entry" in spec:  # longer than the CRD's old 255, within the parser's bound
        assert 255 < len(spec["entry"]["kmsEndpoint"]) <= stores.MAX_ENDPOINT
        assert stores.parse_endpoint(spec["entry"]["kmsEndpoint"], "https").port == 8443
    created = k8s.create(namespace, "externalsecrets", _es("good", **spec))
    shaped.parse_external_secret(created)
