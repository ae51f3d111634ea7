"""Names the controller writes on objects and reads back: one place, so every part agrees."""

MANAGER = "ack-secret-manager"  # field manager, managed-by label value, Event component
MANAGED_BY = "app.kubernetes.io/managed-by"
SOURCE = "alibabacloud.com/external-secret"  # on a Secret: the ExternalSecret that writes it
HASH = "alibabacloud.com/content-hash"  # on a Secret: hash of what we last wrote
KEYS = "alibabacloud.com/owned-keys"  # on a Secret: which entry wrote which keys
ADOPT = "alibabacloud.com/adopt"  # on an ExternalSecret: "true" lets it take over a Secret
FORCE_SYNC = "alibabacloud.com/force-sync"  # on an ExternalSecret: a new value syncs now
ACK_FINALIZER = "finalizer.ack.secrets-manager.alibabacloud.com"  # left by ack-secret-manager
