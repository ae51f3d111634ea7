"""The test bed's two halves agree: a token minted by the real kube-apiserver's TokenRequest
API is verified by the fake STS against that apiserver's JWKS, through the real credentials
library, and the STS credentials it returns read KMS; a token for the wrong audience is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_credentials.models import Config as CredentialConfig
from alibabacloud_kms20160120.client import Client as KmsClient
from alibabacloud_kms20160120.models import GetSecretValueRequest
from alibabacloud_tea_openapi.models import Config

from tests.cluster import ControlPlane
from tests.fakecloud import DEFAULT_ACCOUNT_ID, FakeCloud, Trust

PROVIDER = f"acs:ram::{DEFAULT_ACCOUNT_ID}:oidc-provider/ack-rrsa-local"
ROLE = f"acs:ram::{DEFAULT_ACCOUNT_ID}:role/app-reader"


@pytest.fixture
def cloud(cluster: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloud]:
    with FakeCloud() as fake:
        for name, value in fake.trust_env().items():
            monkeypatch.setenv(name, value)
        fake.set_oidc_jwks(PROVIDER, cluster.jwks, issuer=cluster.issuer)
        fake.put_secret("db-password", "s3cret")
        yield fake


def _credential(cloud: FakeCloud, token_file: Path) -> CredentialClient:
    return CredentialClient(CredentialConfig(
        type="oidc_role_arn", role_arn=ROLE, oidc_provider_arn=PROVIDER,
        oidc_token_file_path=str(token_file), role_session_name="test",
        sts_endpoint=cloud.sts_endpoint))


def test_service_account_token_assumes_role_and_reads_kms(
    cloud: FakeCloud, namespace: str, mint_token: Callable[..., str], tmp_path: Path
) -> None:
    cloud.add_role(ROLE, trust=Trust(oidc_provider_arn=PROVIDER,
                                     subjects=(f"system:serviceaccount:{namespace}:app",)))
    token = tmp_path / "token"
    token.write_text(mint_token(namespace, "app", audiences=["sts.aliyuncs.com"]))
    kms = KmsClient(Config(credential=_credential(cloud, token),
                           endpoint=cloud.kms_endpoint, protocol="http"))
    body = kms.get_secret_value(GetSecretValueRequest(secret_name="db-password")).body
    assert body.secret_data == "s3cret"
    assert cloud.calls("AssumeRoleWithOIDC", identity=ROLE) == 1
    assert cloud.calls("GetSecretValue", identity=ROLE) == 1


def test_token_for_another_audience_is_refused(
    cloud: FakeCloud, namespace: str, mint_token: Callable[..., str], tmp_path: Path
) -> None:
    cloud.add_role(ROLE, trust=Trust(oidc_provider_arn=PROVIDER,
                                     subjects=(f"system:serviceaccount:{namespace}:app",)))
    token = tmp_path / "token"
    token.write_text(mint_token(namespace, "app", audiences=["https://kubernetes.default.svc"]))
    with pytest.raises(Exception, match=r"AuthenticationFail\.OIDCToken\.AudienceNotMatch"):
        _credential(cloud, token).get_credential()
    assert cloud.calls("GetSecretValue") == 0


def test_service_account_outside_the_trust_policy_is_refused(
    cloud: FakeCloud, namespace: str, mint_token: Callable[..., str], tmp_path: Path
) -> None:
    cloud.add_role(ROLE, trust=Trust(oidc_provider_arn=PROVIDER,
                                     subjects=(f"system:serviceaccount:{namespace}:app",)))
    token = tmp_path / "token"
    token.write_text(mint_token(namespace, "intruder"))
    with pytest.raises(Exception, match=r"AuthenticationFail\.NoPermission"):
        _credential(cloud, token).get_credential()
