"""Build the one shared Kubernetes ApiClient from settings (kubeconfig or in-cluster)."""

from __future__ import annotations

from typing import Any

from kubernetes import client, config


def api_client(kubeconfig: str = "", pool_size: int = 32) -> Any:
    """An ApiClient for the kubeconfig file, else the in-cluster ServiceAccount, else ~/.kube.

    The connection pool is sized before the client exists (the client copies it then), so
    that the workers and watches do not queue for connections.
    """
    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=cfg)
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    cfg.connection_pool_maxsize = pool_size
    return client.ApiClient(cfg)


def token_client(host: str, token: str, ca_file: str) -> Any:
    """An ApiClient that authenticates with a bearer token (tests, `--kubeconfig`-less runs)."""
    cfg = client.Configuration()
    cfg.host = host
    cfg.ssl_ca_cert = ca_file
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(cfg)
