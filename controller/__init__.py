"""ack-secret-manager: keeps Kubernetes Secrets in step with Alibaba Cloud KMS secrets."""

__version__ = "0.1.0"
