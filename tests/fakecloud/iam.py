"""Who is who in the fake cloud: AccessKeys, roles, trust, issued STS credentials, access rules.

Identities are plain strings chosen by the test (``"alice"``, a role ARN...).
An AccessKey maps to an identity; STS credentials (from AssumeRole,
AssumeRoleWithOIDC or the ECS metadata server) map to the identity of the
role they were issued for, so access rules can be written per role.

Access rules: an identity with no rules may read every secret. Once an
identity has rules, a secret is readable only if an ``allow`` pattern matches
it and no ``deny`` pattern does (patterns are fnmatch globs). If an identity
has only ``deny`` rules, everything not denied is readable.

Not thread-safe on its own: ``CloudState`` guards it with its lock.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

JwksSource = Mapping[str, Any] | Callable[[], Mapping[str, Any]]
DEFAULT_AUDIENCE = "sts.aliyuncs.com"


@dataclass(frozen=True)
class Trust:
    """Who may assume a role.

    ``principals``: identities (fnmatch globs) allowed to call AssumeRole.
    ``oidc_provider_arn`` + ``subjects``: OIDC token subjects (globs, e.g.
    ``system:serviceaccount:team-a:*``) allowed to call AssumeRoleWithOIDC with
    tokens from that provider.
    """

    principals: tuple[str, ...] = ()
    oidc_provider_arn: str | None = None
    subjects: tuple[str, ...] = ()


@dataclass
class Role:
    arn: str
    trusts: tuple[Trust, ...]
    lifetime_seconds: float

    @property
    def name(self) -> str:
        return self.arn.rsplit("/", 1)[-1]

    def trusts_principal(self, identity: str) -> bool:
        return any(_matches(identity, t.principals) for t in self.trusts)

    def trusts_subject(self, provider_arn: str, subject: str) -> bool:
        return any(
            t.oidc_provider_arn == provider_arn and _matches(subject, t.subjects)
            for t in self.trusts
        )


@dataclass
class OidcProvider:
    arn: str
    jwks_source: JwksSource
    audience: str = DEFAULT_AUDIENCE
    issuer: str | None = None

    def jwks(self) -> Mapping[str, Any]:
        source = self.jwks_source
        return source() if callable(source) else source


@dataclass
class KeyRecord:
    """An AccessKey: long-term (no token) or temporary (STS, with token and expiry)."""

    access_key_id: str
    secret: str
    identity: str
    security_token: str | None = None
    expires_at: float | None = None
    session_name: str | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


@dataclass
class EcsRole:
    name: str
    lifetime_seconds: float
    identity: str


@dataclass
class Rules:
    allow: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)


class Iam:
    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.keys: dict[str, KeyRecord] = {}
        self.roles: dict[str, Role] = {}
        self.providers: dict[str, OidcProvider] = {}
        self.rules: dict[str, Rules] = {}
        self.ecs_role: EcsRole | None = None

    def add_access_key(self, ak_id: str, ak_secret: str, identity: str) -> None:
        self.keys[ak_id] = KeyRecord(ak_id, ak_secret, identity)

    def add_role(self, arn: str, trusts: Iterable[Trust], lifetime_seconds: float) -> Role:
        role = Role(arn, tuple(trusts), lifetime_seconds)
        self.roles[arn] = role
        return role

    def role_arn(self, name: str) -> str:
        return f"acs:ram::{self.account_id}:role/{name}"

    def issue(self, identity: str, lifetime: float, session_name: str | None) -> KeyRecord:
        """Mint temporary credentials for ``identity``."""
        record = KeyRecord(
            access_key_id="STS.NT" + _random(22),
            secret=_random(44),
            identity=identity,
            security_token="CAIS" + _random(200),
            expires_at=time.time() + lifetime,
            session_name=session_name,
        )
        self.keys[record.access_key_id] = record
        return record

    def expire_all_tokens(self) -> int:
        now = time.time()
        count = 0
        for record in self.keys.values():
            if record.security_token is not None and not record.expired(now):
                record.expires_at = now
                count += 1
        return count

    def add_rule(self, identity: str, pattern: str, *, allow: bool) -> None:
        rules = self.rules.setdefault(identity, Rules())
        (rules.allow if allow else rules.deny).append(pattern)

    def clear_rules(self, identity: str) -> None:
        self.rules.pop(identity, None)

    def may_read(self, identity: str, secret_name: str) -> bool:
        rules = self.rules.get(identity)
        if rules is None:
            return True
        if _matches(secret_name, rules.deny):
            return False
        return not rules.allow or _matches(secret_name, rules.allow)


def _matches(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(value, p) for p in patterns)


def _random(n: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))
