"""The Alibaba sources' API shape as they declare it (`SHAPE`, installed by
controller/providers/installed.py): the ExternalSecret provider names "kms" (the default) and
"oos", the store blocks spec.KMS and spec.OOS with their parsers (blocks.py) and their CRD
schema (here: every description and bound the CRDs say of them), and the rule provider oos
adds over an ExternalSecret's entries. Pure data: the bounds are the parsers' and stores.py's
constants, never written twice.
"""

from __future__ import annotations

from typing import Any

from controller import api
from controller.api.schema import MAX_TEXT, arr, obj, s, secret_ref, text
from controller.providers.alibaba.blocks import (
    KMS_BLOCK,
    KMS_PROVIDER,
    OOS_BLOCK,
    OOS_PROVIDER,
    check_entry,
    parse_kms,
    parse_oos,
)
from controller.providers.alibaba.stores import (
    DEFAULT_OIDC_TOKEN_FILE,
    ENDPOINT_PATTERN,
    MAX_ENDPOINT,
    MAX_SESSION_SECONDS,
    MIN_SESSION_SECONDS,
)

ENDPOINT = {"maxLength": MAX_ENDPOINT, "pattern": ENDPOINT_PATTERN}


def auth(block: str) -> dict[str, Any]:
    return obj(
        f"The identity that reads {block} (the first that applies: serviceAccountRef, "
        "oidcProviderARN + ramRoleARN, accessKey + accessKeySecret + ramRoleARN, accessKey + "
        "accessKeySecret; see docs/authentication.md). Not set: the controller's own identity.",
        {
            "accessKey": secret_ref("The Secret key holding the AccessKey id (with "
                                    "accessKeySecret)."),
            "accessKeySecret": secret_ref("The Secret key holding the AccessKey secret (with "
                                          "accessKey)."),
            "ramRoleARN": text("The RAM role to assume: with the AccessKey (AssumeRole) or with "
                               "oidcProviderARN (RRSA); alone, RRSA with the controller's OIDC "
                               "provider."),
            "ramRoleSessionName": text("The session name of the assumed role. Default: "
                                       "ack-secret-manager."),
            "oidcProviderARN": text("The cluster's RRSA OIDC provider (with ramRoleARN, or "
                                    "serviceAccountRef)."),
            "oidcTokenFilePath": text("The OIDC token file for RRSA. Default: the "
                                      "controller's, " + DEFAULT_OIDC_TOKEN_FILE + "."),
            "roleSessionExpiration": text(
                "The assumed role's session lifetime: seconds (\"3600\") or a Go duration "
                f"(\"1h\"), kept within {MIN_SESSION_SECONDS}-"
                f"{MAX_SESSION_SECONDS} seconds. Default: 3600."),
            "remoteRamRoleARN": text("A cross-account role assumed on top of the identity "
                                     "above (or the controller's); the reads are made as it."),
            "remoteRamRoleSessionName": text("The session name of remoteRamRoleARN."),
            "serviceAccountRef": obj(
                "Per-ServiceAccount RRSA: read as the RAM role named by this ServiceAccount's "
                "annotation ack.alibabacloud.com/role-arn, with a token minted for it.",
                {"name": text("Name of the ServiceAccount.", minLength=1),
                 "namespace": text("Namespace of the ServiceAccount. Default: the "
                                   "SecretStore's; another needs the controller's "
                                   "--enable-cross-namespace-auth-ref (or "
                                   "--enable-cross-namespace-secret-store). A "
                                   "ClusterSecretStore must set it."),
                 "audiences": arr("Audiences of the minted token. Default: sts.aliyuncs.com.",
                                  s("One audience."))},
                ["name"],
            ),
        },
    )


KMS_SCHEMA = obj(
    f"Read KMS Secrets Manager secrets (ExternalSecrets with provider kms). Every string "
    f"is at most {MAX_TEXT:,} characters unless its field says otherwise.",
    {
        "KMSAuth": auth("KMS secrets"),
        "dedicatedKMSAuth": obj(
            "ack-secret-manager v0.5's KMS instance access with an application access "
            "point's client key: reads with that client key only, over https.",
            {"protocol": text("https (default; the only one allowed)."),
             "ca": text("The KMS instance's CA (PEM).", maxLength=api.MAX_PEM_LENGTH),
             "ignoreSSL": {"type": "boolean",
                           "description": "Turn off TLS verification of the instance. "
                           "Refused (InsecureTLSRefused) unless the controller runs with "
                           "--allow-insecure-kms-instance-tls. Default: false."},
             "endpoint": text("Required: the KMS instance's endpoint, "
                              "<instanceId>.cryptoservice.kms.aliyuncs.com (https).",
                              **ENDPOINT),
             "clientKeyContent": secret_ref("Required: the Secret key holding the client "
                                            "key file's content."),
             "password": secret_ref("Required: the Secret key holding the client key's "
                                    "password.")},
        ),
        "endpoint": text("The KMS endpoint of this store's reads, [https://]host[:port]: the "
                         "shared gateway or a KMS instance "
                         "<instanceId>.cryptoservice.kms.aliyuncs.com. Default: the "
                         "controller's --kms-endpoint or region. Hosts under aliyuncs.com "
                         "only, unless the controller's --allowed-endpoints names it.",
                         **ENDPOINT),
        "ca": text("The CA (PEM) of a KMS instance endpoint, inline (or caSecretRef, not "
                   "both).", maxLength=api.MAX_PEM_LENGTH),
        "caSecretRef": secret_ref("The Secret key holding the CA (PEM) of a KMS instance "
                                  "endpoint (or ca, not both)."),
    },
)
OOS_SCHEMA = obj(
f"Read OOS encryption parameters (ExternalSecrets with provider oos); the endpoint is "
    f"the controller's --oos-endpoint. Every string is at most {MAX_TEXT:,} characters.",
{"OOSAuth": auth("OOS parameters")})


SHAPE = api.SourceShape(
    names=(KMS_PROVIDER, OOS_PROVIDER),
    blocks=(api.StoreBlock(KMS_BLOCK, parse_kms, KMS_SCHEMA),
            api.StoreBlock(OOS_BLOCK, parse_oos, OOS_SCHEMA)),
    check_entry=check_entry,
    provider_doc="kms (default), KMS Secrets Manager secrets; oos, OOS encryption parameters "
                 "(stores need spec.OOS)",
)
