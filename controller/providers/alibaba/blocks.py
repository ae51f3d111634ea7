"""The Alibaba sources' API shape (issue 20: a source owns it): the ExternalSecret provider
names they serve ("kms", the default, and "oos"), the store blocks they own (ack-secret-
manager's field names: spec.KMS with KMSAuth, dedicatedKMSAuth, endpoint and its CA;
spec.OOS with OOSAuth), their frozen views and parsers (on controller/api/fields.py's
toolkit, naming fields as users wrote them, e.g. "spec.KMS.KMSAuth.accessKey"), the rule
`provider: oos` adds over an ExternalSecret's entries (shape.py joins them, with the blocks'
CRD schema, into the `SHAPE` controller/providers/installed.py installs). Pure: parses, reads
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller import api
from controller.api.fields import (
    MAX_PEM_LENGTH,
    Problems,
    as_mapping,
    read_flag,
    read_text,
)
from controller.api.secretstore import parse_secret_ref, parse_service_account_ref

KMS_PROVIDER = "kms"
OOS_PROVIDER = "oos"
KMS_BLOCK = "KMS"
OOS_BLOCK = "OOS"


@dataclass(frozen=True, slots=True)
class KMSAuth:
    access_key: api.SecretRef | None = None
    access_key_secret: api.SecretRef | None = None
    ram_role_arn: str = ""
    ram_role_session_name: str = ""
    oidc_provider_arn: str = ""
    oidc_token_file_path: str = ""
    role_session_expiration: str = ""
    remote_ram_role_arn: str = ""
    remote_ram_role_session_name: str = ""
    service_account_ref: api.ServiceAccountRef | None = None


OOSAuth = KMSAuth  # ack-secret-manager gives both the same fields


@dataclass(frozen=True, slots=True)
class DedicatedKMSAuth:
    """v0.5 dedicated KMS instance access (kept so old stores parse)."""

    protocol: str
    endpoint: str
    ca: str
    ignore_ssl: bool
    client_key_content: api.SecretRef | None
    password: api.SecretRef | None


@dataclass(frozen=True, slots=True)
class KMSProvider:
    auth: KMSAuth | None  # None: the controller's own identity
    dedicated: DedicatedKMSAuth | None
    endpoint: str = ""
    ca: str = ""  # inline PEM
    ca_secret_ref: api.SecretRef | None = None


@dataclass(frozen=True, slots=True)
class OOSProvider:
    auth: KMSAuth | None


def kms_of(store: api.SecretStore) -> KMSProvider | None:
    """The store's spec.KMS, as parsed; None when it has none."""
    block = store.blocks.get(KMS_BLOCK)
    return block if isinstance(block, KMSProvider) else None


def oos_of(store: api.SecretStore) -> OOSProvider | None:
    """The store's spec.OOS, as parsed; None when it has none."""
    block = store.blocks.get(OOS_BLOCK)
    return block if isinstance(block, OOSProvider) else None


# ---------------------------------------------------------------- parsing


def parse_kms(raw: object, field: str, namespace: str, p: Problems) -> KMSProvider:
    """spec.KMS (`field`) of a store in `namespace` ("": a ClusterSecretStore)."""
    m = as_mapping(raw, field, p)
    ca_ref = parse_secret_ref(m.get("caSecretRef"), f"{field}.caSecretRef", namespace, p)
    ca = read_text(m, "ca", field, p, MAX_PEM_LENGTH)
    if ca and ca_ref:
        p.add(f"{field}.caSecretRef", f"is set together with {field}.ca",
              "keep only one of ca (inline PEM) and caSecretRef")
    return KMSProvider(
        auth=_parse_auth(m.get("KMSAuth"), f"{field}.KMSAuth", namespace, p),
        dedicated=_parse_dedicated(m.get("dedicatedKMSAuth"), f"{field}.dedicatedKMSAuth",
                                   namespace, p),
        endpoint=read_text(m, "endpoint", field, p),
        ca=ca,
        ca_secret_ref=ca_ref,
    )


def parse_oos(raw: object, field: str, namespace: str, p: Problems) -> OOSProvider:
    """spec.OOS (`field`)."""
    m = as_mapping(raw, field, p)
    return OOSProvider(_parse_auth(m.get("OOSAuth"), f"{field}.OOSAuth", namespace, p))


def _parse_auth(raw: object, field: str, namespace: str, p: Problems) -> KMSAuth | None:
    if raw is None:
        return None
    m = as_mapping(raw, field, p)
    ak = parse_secret_ref(m.get("accessKey"), f"{field}.accessKey", namespace, p)
    sk = parse_secret_ref(m.get("accessKeySecret"), f"{field}.accessKeySecret", namespace, p)
    if (ak is None) != (sk is None):
        missing = "accessKeySecret" if sk is None else "accessKey"
        p.add(f"{field}.{missing}", "is required when the other half of the AccessKey "
              "pair is set", "set both accessKey and accessKeySecret, or neither")
    auth = KMSAuth(
        access_key=ak,
        access_key_secret=sk,
        ram_role_arn=read_text(m, "ramRoleARN", field, p),
        ram_role_session_name=read_text(m, "ramRoleSessionName", field, p),
        oidc_provider_arn=read_text(m, "oidcProviderARN", field, p),
        oidc_token_file_path=read_text(m, "oidcTokenFilePath", field, p),
        role_session_expiration=read_text(m, "roleSessionExpiration", field, p),
        remote_ram_role_arn=read_text(m, "remoteRamRoleARN", field, p),
        remote_ram_role_session_name=read_text(m, "remoteRamRoleSessionName", field, p),
        service_account_ref=parse_service_account_ref(m.get("serviceAccountRef"),
                                                      f"{field}.serviceAccountRef", namespace, p),
    )
    # With serviceAccountRef the role comes from the ServiceAccount's annotation.
    if auth.oidc_provider_arn and not auth.ram_role_arn and auth.service_account_ref is None:
        p.add(f"{field}.ramRoleARN", "is required with oidcProviderARN (RRSA)",
              "set ramRoleARN to the role the ServiceAccount token may assume")
    return auth


def _parse_dedicated(raw: object, field: str, namespace: str,
                     p: Problems) -> DedicatedKMSAuth | None:
    if raw is None:
        return None
    m = as_mapping(raw, field, p)
    auth = DedicatedKMSAuth(
        protocol=read_text(m, "protocol", field, p) or "https",
        endpoint=read_text(m, "endpoint", field, p),
        ca=read_text(m, "ca", field, p, MAX_PEM_LENGTH),
        ignore_ssl=read_flag(m, "ignoreSSL", field, p),
        client_key_content=parse_secret_ref(m.get("clientKeyContent"),
                                            f"{field}.clientKeyContent", namespace, p),
        password=parse_secret_ref(m.get("password"), f"{field}.password", namespace, p),
    )
    for part, value in (("endpoint", auth.endpoint), ("clientKeyContent",
                        auth.client_key_content), ("password", auth.password)):
        if not value:
            p.add(f"{field}.{part}", "is required", f"set {part} for the dedicated KMS instance")
    return auth


def check_entry(provider: str, entry: api.DataEntry, p: Problems) -> None:
    """`provider: oos` reads OOS encryption parameters (``key`` is the parameter name,
    ``versionId`` its version): they have no version stages, and a KMS endpoint is no use."""
    if provider != OOS_PROVIDER:
        return
    if entry.version_stage:
        p.add(f"{entry.spec_field}.versionStage", "is set, but OOS parameters have no "
              "version stages", "remove it, or give versionId (a parameter version)")
    if entry.kms_endpoint:
        p.add(f"{entry.spec_field}.kmsEndpoint", "is a KMS endpoint, but provider is "
              "oos", "remove it (the controller's --oos-endpoint is used)")

