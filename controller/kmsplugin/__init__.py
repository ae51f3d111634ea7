"""The Kubernetes KMS v2 provider plugin (`ack-secret-manager kms-plugin`).

Why: the kube-apiserver envelope-encrypts Secrets in etcd through a gRPC plugin on a unix
socket; this one wraps its DEK seeds with an Alibaba Cloud KMS key, so that a key rotation
really re-wraps data (the key_id changes with the key's primary version) and every
ciphertext is bound to its cluster (KMS EncryptionContext).

- `settings`: flags and environment -> `PluginSettings`.
- `keyids`: the key_id scheme and the annotations every ciphertext carries.
- `keystate`: the cached DescribeKey that Status answers from (zero KMS calls per Status).
- `service`: Status / Encrypt / Decrypt, and the gRPC handlers.
- `metrics`: Prometheus metrics of the plugin.
- `app`: wiring, the socket, /metrics + /healthz + /readyz, signals.
- `proto/`: api.proto and the code `make proto` generates from it.

Uses `controller.providers.alibaba` and `controller.ops`, never a controller's room or
`controller.kube`.
"""
