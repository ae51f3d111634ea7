"""A local OIDC issuer for tests: an RSA key, its JWKS, and ServiceAccount-like tokens.

Stands in for a kube-apiserver's ServiceAccount token issuer when no control
plane runs: ``cloud.set_oidc_jwks(arn, issuer.jwks, issuer=issuer.issuer)`` and
write ``issuer.token("system:serviceaccount:ns:sa")`` to the file the
credentials library reads (``oidc_token_file_path``).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

DEFAULT_ISSUER = "https://oidc.fakecloud.local/cluster"


def service_account_subject(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


class OidcIssuer:
    def __init__(self, issuer: str = DEFAULT_ISSUER, *, kid: str | None = None) -> None:
        self.issuer = issuer
        self.kid = kid or uuid.uuid4().hex[:16]
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @property
    def jwks(self) -> dict[str, Any]:
        jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(
            self._key.public_key(), as_dict=True
        )
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def token(
        self,
        subject: str,
        *,
        audience: str | list[str] = "sts.aliyuncs.com",
        expires_in: float = 3600,
        issuer: str | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": int(now + expires_in),
        }
        payload.update(claims)
        return jwt.encode(payload, self._key, algorithm="RS256", headers={"kid": self.kid})

    def write_token(self, path: str | Path, subject: str, **options: Any) -> Path:
        target = Path(path)
        target.write_text(self.token(subject, **options))
        return target
