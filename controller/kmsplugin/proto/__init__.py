"""The KMS v2 gRPC API (api.proto) and its generated code (`make proto`; do not edit)."""
