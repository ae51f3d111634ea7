"""A real local Kubernetes control plane for tests, demos and benchmarks.

etcd + kube-apiserver (RBAC, TokenRequest, ServiceAccount issuer with a JWKS endpoint) +
kube-controller-manager (garbage collector, namespace and serviceaccount controllers), all on
127.0.0.1 free ports, built from Go modules once and cached outside the clone.
"""

from tests.cluster.controlplane import ControlPlane, free_port
from tests.cluster.tools import ensure_binaries, ensure_tools

__all__ = ["ControlPlane", "ensure_binaries", "ensure_tools", "free_port"]
