"""Who the controller is to Alibaba Cloud: one credential provider per identity, built
explicitly (never the library's implicit default chain) and cached, so STS is called about
once per credential lifetime per identity rather than once per KMS call.

An `Identity` is a value: two SecretStores that carry the same credentials are the same
identity (and share KMS reads). Secret material is excluded from repr and never logged.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ACCESS_KEY = "access_key"
RAM_ROLE_ARN = "ram_role_arn"
OIDC_ROLE_ARN = "oidc_role_arn"
ECS_RAM_ROLE = "ecs_ram_role"


@dataclass(frozen=True)
class Identity:
    kind: str
    access_key_id: str = ""
    access_key_secret: str = field(default="", repr=False)
    role_arn: str = ""
    role_session_name: str = "ack-secret-manager"
    session_seconds: int = 3600
    oidc_provider_arn: str = ""
    oidc_token_file: str = ""
    remote_role_arn: str = ""
    remote_role_session_name: str = ""
    sts_endpoint: str = ""
    ecs_role_name: str = ""
    metadata_proxy: str = ""
    # Where it came from, for messages ("SecretStore default/scdemo"); not part of equality.
    source: str = field(default="", compare=False)

    def describe(self) -> str:
        """A log-safe description: the kind and roles, no key material."""
        parts = [self.kind]
        if self.role_arn:
            parts.append(f"role={self.role_arn}")
        if self.remote_role_arn:
            parts.append(f"remote-role={self.remote_role_arn}")
        if self.source:
            parts.append(f"from {self.source}")
        return " ".join(parts)

    def fingerprint(self) -> str:
        """A short stable id (hash) for metrics and cache keys; reveals nothing."""
        raw = repr((self.kind, self.access_key_id, self.access_key_secret, self.role_arn,
                    self.oidc_provider_arn, self.oidc_token_file, self.remote_role_arn,
                    self.ecs_role_name))
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


def _http_options(identity: Identity) -> Any:
    from alibabacloud_credentials.http import HttpOptions

    return HttpOptions(proxy=identity.metadata_proxy or None, connect_timeout=5000,
                       read_timeout=10000)


def _base_provider(identity: Identity) -> Any:
    from alibabacloud_credentials import provider as p

    sts = identity.sts_endpoint or None
    if identity.kind == ACCESS_KEY:
        return p.StaticAKCredentialsProvider(
            access_key_id=identity.access_key_id, access_key_secret=identity.access_key_secret)
    if identity.kind == RAM_ROLE_ARN:
        return p.RamRoleArnCredentialsProvider(
            access_key_id=identity.access_key_id, access_key_secret=identity.access_key_secret,
            role_arn=identity.role_arn, role_session_name=identity.role_session_name,
            duration_seconds=identity.session_seconds, sts_endpoint=sts,
            http_options=_http_options(identity))
    if identity.kind == OIDC_ROLE_ARN:
        return p.OIDCRoleArnCredentialsProvider(
            role_arn=identity.role_arn, oidc_provider_arn=identity.oidc_provider_arn,
            oidc_token_file_path=identity.oidc_token_file,
            role_session_name=identity.role_session_name,
            duration_seconds=identity.session_seconds, sts_endpoint=sts,
            http_options=_http_options(identity))
    if identity.kind == ECS_RAM_ROLE:
        return p.EcsRamRoleCredentialsProvider(
            role_name=identity.ecs_role_name or None, disable_imds_v1=True,
            http_options=_http_options(identity))
    raise ValueError(f"unknown identity kind {identity.kind!r}")


def build_provider(identity: Identity) -> Any:
    """The credential provider for `identity`, with a cross-account role on top if set."""
    from alibabacloud_credentials import provider as p

    base = _base_provider(identity)
    if not identity.remote_role_arn:
        return base
    return p.RamRoleArnCredentialsProvider(
        credentials_provider=base, role_arn=identity.remote_role_arn,
        role_session_name=identity.remote_role_session_name or identity.role_session_name,
        duration_seconds=identity.session_seconds, sts_endpoint=identity.sts_endpoint or None,
        http_options=_http_options(identity))


class IdentityPool:
    """One credentials client per identity, built on first use; `invalidate` rebuilds it
    (after the service said the security token expired)."""

    def __init__(self, on_build: Callable[[Identity], None] | None = None) -> None:
        self._clients: dict[Identity, Any] = {}
        self._lock = threading.Lock()
        self.builds = 0
        self.on_build = on_build

    def credential(self, identity: Identity) -> Any:
        with self._lock:
            client = self._clients.get(identity)
            if client is None:
                from alibabacloud_credentials.client import Client

                client = Client(provider=build_provider(identity))
                self._clients[identity] = client
                self.builds += 1
                if self.on_build is not None:
                    self.on_build(identity)
            return client

    def invalidate(self, identity: Identity) -> None:
        with self._lock:
            self._clients.pop(identity, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)
