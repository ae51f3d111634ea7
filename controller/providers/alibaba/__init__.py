"""Everything that talks to Alibaba Cloud, behind the source seam (controller/providers):
`provider.Alibaba` is the Provider for KMS, KMS instances and OOS; `stores` turns a store into
an identity and an endpoint; identities (credential providers), the SDK clients (kms, oos,
kms_instance, dedicated, pool) and the classification of their errors (errors) are its parts.
Only this package imports the Alibaba SDKs; controller/app.py registers the provider, and the
kms-plugin uses the crypto client (kms_crypto)."""
