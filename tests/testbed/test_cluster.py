"""The local control plane is the real thing: pinned version, validation, RBAC, TokenRequest,
the issuer's JWKS, and garbage collection by kube-controller-manager."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster import ControlPlane, ensure_tools
from tests.cluster.tools import REPO
from tests.waiting import wait_for

K8S_VERSION = "v1.37.2"


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return dict(json.loads(base64.urlsafe_b64decode(payload)))


def test_kubectl_shows_pinned_server_version(cluster: ControlPlane) -> None:
    kubectl = ensure_tools().kubectl
    out = subprocess.run(
        [str(kubectl), "--kubeconfig", str(cluster.kubeconfig), "version", "-o", "json"],
        check=True, capture_output=True, text=True,
    ).stdout
    assert json.loads(out)["serverVersion"]["gitVersion"] == K8S_VERSION


def test_invalid_object_is_refused_with_422(kube: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_secret(
            namespace, {"metadata": {"name": "Bad_Name"}, "data": {"k": "dg=="}}
        )
    assert err.value.status == 422


def test_crds_validate_with_the_real_apiserver(cluster: ControlPlane, kube: Any) -> None:
    kubectl = ensure_tools().kubectl
    subprocess.run(
        [str(kubectl), "--kubeconfig", str(cluster.kubeconfig), "apply", "--server-side",
         "-f", str(REPO / "helm/ack-secret-manager/crds")],
        check=True, capture_output=True, text=True,
    )
    ext = client.ApiextensionsV1Api(kube)

    def established() -> bool:
        crd = ext.read_custom_resource_definition("externalsecrets.alibabacloud.com")
        return any(c.type == "Established" and c.status == "True"
                   for c in (crd.status.conditions or []))

    wait_for(established, what="ExternalSecret CRD established")


def test_rbac_denies_a_service_account_without_binding(
    cluster: ControlPlane, namespace: str, mint_token: Callable[..., str]
) -> None:
    token = mint_token(namespace, "nobody", audiences=[cluster.issuer])
    cfg = client.Configuration()
    cfg.host = cluster.url
    cfg.ssl_ca_cert = str(cluster.ca_file)
    cfg.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(cfg) as api, pytest.raises(ApiException) as err:
        client.CoreV1Api(api).list_namespaced_secret(namespace)
    assert err.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in str(err.value.body)


def test_token_request_mints_tokens_verifiable_by_the_issuer_jwks(
    cluster: ControlPlane, namespace: str, mint_token: Callable[..., str]
) -> None:
    import jwt

    token = mint_token(namespace, "app", audiences=["sts.aliyuncs.com"])
    claims = _claims(token)
    assert claims["aud"] == ["sts.aliyuncs.com"]
    assert claims["sub"] == f"system:serviceaccount:{namespace}:app"
    assert claims["iss"] == cluster.issuer
    keys = jwt.PyJWKSet.from_dict(cluster.jwks())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    verified = jwt.decode(token, key.key, algorithms=["RS256"], audience="sts.aliyuncs.com")
    assert verified["sub"] == claims["sub"]


def test_garbage_collector_removes_owned_secrets(kube: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_secret(namespace, {
        "metadata": {"name": "owned", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": owner.metadata.uid}]},
        "data": {"k": "dg=="},
    })
    core.delete_namespaced_config_map("owner", namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_secret("owned", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, what="owned Secret garbage-collected")
