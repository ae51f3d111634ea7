"""Names the controller writes on objects and reads back: one place, so every part agrees."""

MANAGER = "ack-secret-manager"  # field manager, managed-by label value, Event component
MANAGED_BY = "app.kubernetes.io/managed-by"
SOURCE = "alibabacloud.com/external-secret"  # on a Secret: the ExternalSecret that writes it
HASH = "alibabacloud.com/content-hash"  # on a Secret: hash of what we last wrote
KEYS = "alibabacloud.com/owned-keys"  # on a Secret: which entry wrote which keys
ADOPT = "alibabacloud.com/adopt"  # on an ExternalSecret: "true" lets it take over a Secret
FORCE_SYNC = "alibabacloud.com/force-sync"  # on an ExternalSecret: a new value syncs now
ACK_FINALIZER = "finalizer.ack.secrets-manager.alibabacloud.com"  # left by ack-secret-manager

# Ownership (docs/security.md): a Secret belongs to an ExternalSecret only by an
# ownerReference to its uid or by OWNER_UID, which only an ExternalSecret that created the
# Secret (Owner or Orphan) writes. Labels and the other annotations are never proof.
OWNER_UID = "alibabacloud.com/external-secret-uid"  # on a Secret: the creating ExternalSecret
# On a Secret that ExternalSecrets merge into (creationPolicy Merge): the label lets the
# controller watch it; each merging ExternalSecret keeps its own annotations (merge_annotation)
# so that several can merge into one Secret without touching each other's fields.
MERGE_TARGET = "alibabacloud.com/merge-target"
MERGE_DOMAIN = "merge.alibabacloud.com"


def merge_annotation(uid: str, what: str) -> str:
    """The per-ExternalSecret annotation `what` (external-secret, owned-keys, content-hash)."""
    return f"{uid}.{MERGE_DOMAIN}/{what}"


def field_manager(uid: str) -> str:
    """Each ExternalSecret writes its Secret with its own server-side apply field manager, so
    that one ExternalSecret's apply never prunes or steals another's fields."""
    return f"{MANAGER}/{uid}"
