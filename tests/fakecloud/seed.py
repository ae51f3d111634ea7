"""Loading a secrets file (YAML, or the same document as JSON over the admin API).

The format is documented in the package docstring (``tests/fakecloud/__init__.py``).
Unknown keys are errors, so a typo in a demo file fails loudly.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .iam import DEFAULT_AUDIENCE, Trust
from .state import CloudState

TOP_LEVEL = {
    "secrets", "secretParameters", "accessKeys", "rules", "roles", "oidcProviders", "ecsRole",
    "latency",
}


def load_file(state: CloudState, path: str | Path) -> None:
    document = yaml.safe_load(Path(path).read_text()) or {}
    apply(state, document, base_dir=Path(path).parent)


def apply(state: CloudState, document: Mapping[str, Any], *, base_dir: Path | None = None) -> None:
    unknown = set(document) - TOP_LEVEL
    if unknown:
        raise ValueError(f"unknown keys in secrets file: {', '.join(sorted(unknown))}")
    for name, spec in (document.get("secrets") or {}).items():
        _put_secret(state, str(name), spec)
    for name, spec in (document.get("secretParameters") or {}).items():
        _put_parameter(state, str(name), spec)
    for key in document.get("accessKeys") or []:
        state.add_access_key(str(key["id"]), str(key["secret"]), str(key["identity"]))
    for rule in document.get("rules") or []:
        for pattern in rule.get("allow", []):
            state.allow(str(rule["identity"]), str(pattern))
        for pattern in rule.get("deny", []):
            state.deny(str(rule["identity"]), str(pattern))
    for provider in document.get("oidcProviders") or []:
        state.set_oidc_jwks(
            str(provider["arn"]),
            _jwks(provider, base_dir),
            audience=str(provider.get("audience", DEFAULT_AUDIENCE)),
            issuer=provider.get("issuer"),
        )
    for role in document.get("roles") or []:
        trusts = [
            Trust(
                principals=tuple(t.get("principals", ())),
                oidc_provider_arn=t.get("oidcProviderArn"),
                subjects=tuple(t.get("subjects", ())),
            )
            for t in role.get("trust", [])
        ]
        state.add_role(
            str(role["arn"]),
            trust=trusts,
            lifetime_seconds=float(role.get("lifetimeSeconds", 3600)),
        )
    ecs = document.get("ecsRole")
    if ecs:
        state.set_ecs_role(
            str(ecs["name"]),
            lifetime_seconds=float(ecs.get("lifetimeSeconds", 3600)),
            identity=ecs.get("identity"),
        )
    if "latency" in document:
        state.latency = float(document["latency"])


def _put_secret(state: CloudState, name: str, spec: Any) -> None:
    if not isinstance(spec, Mapping):
        state.put_secret(name, str(spec))
        return
    versions = spec.get("versions", [spec])
    for version in versions:
        data, data_type = _version_data(name, version)
        state.put_secret(
            name,
            data,
            version_id=version.get("id"),
            stages=version.get("stages", ["ACSCurrent"]),
            data_type=data_type,
        )


def _put_parameter(state: CloudState, name: str, spec: Any) -> None:
    """``name: value`` or ``name: {versions: [v1, v2, ...], keyId?: ...}`` (1, 2, ... in order)."""
    if not isinstance(spec, Mapping):
        state.oos.put(name, str(spec))
        return
    for value in spec.get("versions") or []:
        state.oos.put(name, str(value), key_id=str(spec.get("keyId", "")))


def _version_data(name: str, version: Mapping[str, Any]) -> tuple[str | bytes, str]:
    kinds = [k for k in ("data", "json", "binary") if k in version]
    if len(kinds) != 1:
        raise ValueError(f"secret {name!r}: each version needs exactly one of data, json, binary")
    kind = kinds[0]
    if kind == "binary":
        return base64.b64decode(str(version["binary"])), "binary"
    if kind == "json":
        return json.dumps(version["json"]), "text"
    return str(version["data"]), "text"


def _jwks(provider: Mapping[str, Any], base_dir: Path | None) -> dict[str, Any]:
    if "jwks" in provider:
        return dict(provider["jwks"])
    path = Path(str(provider["jwksFile"]))
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded
