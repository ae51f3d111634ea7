"""The key_id the plugin gives the kube-apiserver, and the annotations on every ciphertext.

Why hashed from (KMS key id, key version id): the apiserver re-wraps data only when the
key_id changes, so it must change with every rotation (a new primary version) and never come
back for another version; it is public (the apiserver logs and stores it), so it reveals
only a digest. Decrypt recomputes it from the ciphertext's annotations: a key_id this
plugin never issued does not match and is refused before KMS is asked.
"""

from __future__ import annotations

import hashlib

PREFIX = "alibaba-kms-"
KEY_ANNOTATION = "key-id.kms.alibabacloud.com"
VERSION_ANNOTATION = "key-version.kms.alibabacloud.com"
CLUSTER_ANNOTATION = "cluster.kms.alibabacloud.com"
ALIAS_PREFIX = "alias/"


def is_alias(key_ref: str) -> bool:
    """`alias/<name>` or an alias ARN (`acs:kms:<region>:<account>:alias/<name>`)."""
    return key_ref.startswith(ALIAS_PREFIX) or (
        key_ref.startswith("acs:kms:") and ":alias/" in key_ref)


def key_id_for(kms_key_id: str, version_id: str) -> str:
    """"alibaba-kms-" + 40 hex digits of SHA-256 over the key and its version; `kms_key_id`
    is always the real KeyId KMS answered with, never an alias (one key version, one id)."""
    digest = hashlib.sha256(f"{kms_key_id}\x00{version_id}".encode()).hexdigest()
    return PREFIX + digest[:40]


def annotations_for(kms_key_id: str, version_id: str, cluster: str) -> dict[str, bytes]:
    """What Decrypt needs besides the blob (names are FQDNs, as the apiserver requires)."""
    return {KEY_ANNOTATION: kms_key_id.encode(), VERSION_ANNOTATION: version_id.encode(),
            CLUSTER_ANNOTATION: cluster.encode()}
