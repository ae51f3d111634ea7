"""Everything that talks to Alibaba Cloud, behind the source seam (controller/providers):
`provider.Alibaba` is the Provider for KMS, KMS instances and OOS; `stores` turns a store into
an identity and an endpoint; identities (credential providers), the SDK clients (kms, oos,
kms_instance, dedicated, pool) and the classification of their errors (errors) are its parts.
Its API shape is its own too: the store blocks spec.KMS and spec.OOS, parsed into its frozen
types (blocks), and the provider names and the blocks' CRD schema (shape). Only this package
imports the Alibaba SDKs; controller/providers/installed.py installs the provider (its shape
and `provider.build`), and the kms-plugin uses the crypto client (kms_crypto)."""
