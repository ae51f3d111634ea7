"""Verifying an OIDC token (a Kubernetes ServiceAccount token) for AssumeRoleWithOIDC.

RS256 signature against the provider's JWKS (selected by ``kid``), ``exp``,
the audience (``sts.aliyuncs.com`` unless the provider says otherwise) and the
issuer when one is configured. Error codes are the ones STS documents for
AssumeRoleWithOIDC (help.aliyun.com "api-sts-2015-04-01-errorcodes" and the ACK
RRSA troubleshooting table), all HTTP 401.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jwt

from .iam import OidcProvider
from .wire import ApiError


def _fail(code: str, message: str) -> ApiError:
    return ApiError(401, code, message)


def verify_oidc_token(token: str, provider: OidcProvider) -> dict[str, Any]:
    """Return the token's claims or raise the ApiError STS would answer with."""
    if not token:
        raise _fail("AuthenticationFail.OIDCToken.Invalid", "The OIDCToken can not empty.")
    if token.count(".") != 2:
        raise _fail(
            "AuthenticationFail.OIDCToken.Invalid",
            "The number of Jwt field should be divided into 3 parts with '.' .",
        )
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise _fail(
            "AuthenticationFail.OIDCToken.Invalid",
            "Cannot decode base64 encoded response(format invalided).",
        ) from exc
    alg = header.get("alg")
    if alg != "RS256":
        raise _fail(
            "AuthenticationFail.OIDCToken.Invalid",
            f"The algorithm {alg} that be specified in Jwt header is unknown.",
        )
    for key in _signing_keys(provider, header.get("kid")):
        try:
            return _decode(token, key, provider)
        except jwt.InvalidSignatureError:
            continue
    raise _fail(
        "AuthenticationFail.OIDCToken.InvalidSignature",
        "OIDC token validate failed: invalid signature.",
    )


def _decode(token: str, key: Any, provider: OidcProvider) -> dict[str, Any]:
    """Decode with one key; InvalidSignatureError propagates so the caller can try the next."""
    try:
        return jwt.decode(
            token,
            key=key,
            algorithms=["RS256"],
            audience=provider.audience,
            issuer=provider.issuer,
            options={"require": ["exp", "sub", "aud"], "verify_iss": provider.issuer is not None},
        )
    except jwt.InvalidSignatureError:
        raise
    except jwt.ExpiredSignatureError as exc:
        raise _fail(
            "AuthenticationFail.OIDCToken.Expired", "This JsonWebToken is expired."
        ) from exc
    except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as exc:
        if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim != "aud":
            raise _fail(
                "AuthenticationFail.OIDCToken.Invalid",
                f"The Jwt content is invalid that cannot be recognized: missing {exc.claim}.",
            ) from exc
        raise _fail("AuthenticationFail.OIDCToken.AudienceNotMatch", "Invalid audience.") from exc
    except jwt.InvalidIssuerError as exc:
        raise _fail(
            "AuthenticationFail.OIDCToken.IssuerNotMatch",
            "The issuer in the OIDC Token doesn't match the OIDC Provider registered.",
        ) from exc
    except jwt.PyJWTError as exc:
        raise _fail(
            "AuthenticationFail.OIDCToken.Invalid",
            f"The Jwt content is invalid that cannot be recognized: {exc}.",
        ) from exc


def _signing_keys(provider: OidcProvider, kid: str | None) -> list[Any]:
    try:
        jwks: Mapping[str, Any] = provider.jwks()
        key_set = jwt.PyJWKSet.from_json(json.dumps(dict(jwks)))
    except Exception as exc:
        raise _fail(
            "AuthenticationFail.OIDCToken.IssuerConfigurationBroken",
            f"Get public keys from OIDC Provider failed, the provider is {provider.arn}.",
        ) from exc
    return [k for k in key_set.keys if kid is None or k.key_id == kid]
