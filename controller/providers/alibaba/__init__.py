"""Everything that talks to Alibaba Cloud: identities (credential providers), the KMS client
pool and the classification of its errors. Only this package imports the Alibaba SDKs."""
