"""Secrets with versions and stages, the way KMS Secrets Manager keeps them.

Each secret has ordered versions; a stage label (ACSCurrent, ACSPrevious or a
custom one) sits on at most one version. Putting a new version that takes
ACSCurrent moves the old current version to ACSPrevious, like PutSecretValue.
Not thread-safe on its own: ``CloudState`` guards it with its lock.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

CURRENT = "ACSCurrent"
PREVIOUS = "ACSPrevious"


@dataclass
class SecretVersion:
    version_id: str
    data: str  # as served: plain text, or base64 for binary
    data_type: str  # "text" | "binary"
    stages: set[str]
    created: float


@dataclass
class Secret:
    name: str
    created: float
    secret_type: str = "Generic"
    versions: dict[str, SecretVersion] = field(default_factory=dict)

    def by_stage(self, stage: str) -> SecretVersion | None:
        for version in self.versions.values():
            if stage in version.stages:
                return version
        return None


class SecretStore:
    def __init__(self) -> None:
        self._secrets: dict[str, Secret] = {}

    def put(
        self,
        name: str,
        data: str | bytes,
        *,
        version_id: str | None = None,
        stages: Iterable[str] = (CURRENT,),
        data_type: str | None = None,
    ) -> str:
        """Add a version; returns its id. Raises ValueError on a duplicate id."""
        now = time.time()
        secret = self._secrets.get(name)
        if secret is None:
            secret = self._secrets[name] = Secret(name=name, created=now)
        kind = data_type or ("binary" if isinstance(data, bytes) else "text")
        if kind not in ("text", "binary"):
            raise ValueError(f"data_type must be text or binary, not {kind!r}")
        served = _served_form(data, kind)
        vid = version_id or _next_version_id(secret)
        if vid in secret.versions:
            raise ValueError(f"secret {name!r} already has version {vid!r}")
        new_stages = set(stages)
        for stage in new_stages:
            holder = secret.by_stage(stage)
            if holder is None:
                continue
            holder.stages.discard(stage)
            if stage == CURRENT and PREVIOUS not in new_stages:
                old_previous = secret.by_stage(PREVIOUS)
                if old_previous is not None:
                    old_previous.stages.discard(PREVIOUS)
                holder.stages.add(PREVIOUS)
        secret.versions[vid] = SecretVersion(vid, served, kind, new_stages, now)
        return vid

    def delete(self, name: str) -> bool:
        return self._secrets.pop(name, None) is not None

    def names(self) -> list[str]:
        return sorted(self._secrets)

    def lookup(
        self, name: str, version_id: str | None, version_stage: str | None
    ) -> tuple[Secret, SecretVersion] | None:
        """Select by VersionId and/or VersionStage (default ACSCurrent)."""
        secret = self._secrets.get(name)
        if secret is None:
            return None
        if version_id:
            version = secret.versions.get(version_id)
            if version is None or (version_stage and version_stage not in version.stages):
                return None
            return secret, version
        version = secret.by_stage(version_stage or CURRENT)
        return None if version is None else (secret, version)


def _served_form(data: str | bytes, kind: str) -> str:
    if kind == "binary":
        raw = data if isinstance(data, bytes) else data.encode("utf-8")
        return base64.b64encode(raw).decode("ascii")
    return data.decode("utf-8") if isinstance(data, bytes) else data


def _next_version_id(secret: Secret) -> str:
    n = len(secret.versions) + 1
    while f"v{n}" in secret.versions:
        n += 1
    return f"v{n}"
