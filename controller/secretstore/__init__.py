"""SecretStores and ClusterSecretStores: from an entry's store reference to the client its read
uses (stores.py), the private CAs a namespace may name (cas.py), and the stores' own status
checks (storestatus.py)."""
