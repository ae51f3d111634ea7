"""Build the shared Kubernetes ApiClient from settings (kubeconfig or in-cluster), and the
Lease's own client beside it.

`without_retries` exists for leader election: urllib3 retries a GET or PUT that timed out up
to three times, each with the full timeout again, so one renew could outlast the renew
deadline (and hold the elector's one-call-at-a-time lock meanwhile) while the apiserver or the
path to it stalled for a few seconds. The Lease's calls are made once, on connections of their
own (as controller-runtime gives leader election a client of its own), and the elector tries
again at its next retry period.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from typing import Any

from kubernetes import client, config
from kubernetes.config import kube_config


def api_client(kubeconfig: str = "", pool_size: int = 32) -> Any:
    """An ApiClient for the kubeconfig file, else the in-cluster ServiceAccount, else ~/.kube.

    The connection pool is sized before the client exists (the client copies it then), so
    that the workers and watches do not queue for connections.
    """
    cfg = client.Configuration()
    if kubeconfig:
        _load_kube_config(cfg, kubeconfig)
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            _load_kube_config(cfg, None)
    cfg.connection_pool_maxsize = pool_size
    return client.ApiClient(cfg)


def without_retries(api: Any, pool_size: int = 2) -> Any:
    """A second ApiClient with `api`'s configuration (server, credentials, TLS) whose
    requests urllib3 never retries, with a small pool of its own (see the module docstring)."""
    cfg = copy.deepcopy(api.configuration)
    cfg.retries = False
    cfg.connection_pool_maxsize = pool_size
    return client.ApiClient(cfg)


def _load_kube_config(cfg: Any, path: str | None) -> None:
    """Load a kubeconfig without leaving its credentials on disk.

    The Kubernetes client writes inline client-key-data, client-certificate-data and
    certificate-authority-data to temporary files (TLS wants paths) and removes them only in
    an atexit hook, so they stayed in $TMPDIR after a SIGKILL, an OOM kill or os._exit, in a
    directory other tenants' files share. Here they are written to a private directory that
    is removed before this function returns, whatever happens; their content lives on in
    memory-only files (memfd, close-on-exec), gone with the process however it ends.
    """
    scratch = tempfile.mkdtemp(prefix="asm-kubeconfig-")
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, client_configuration=cfg, temp_file_path=scratch)
        for attr in ("cert_file", "key_file", "ssl_ca_cert"):
            value = getattr(cfg, attr, None)
            if value and os.path.dirname(os.path.abspath(value)) == scratch:
                setattr(cfg, attr, _in_memory(value, attr))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        _forget_temp_files(scratch)


def _in_memory(path: str, name: str) -> str:
    """The content of `path` in a memory-only file; returns a path that opens it."""
    with open(path, "rb") as fh:
        content = fh.read()
    fd = os.memfd_create(f"kubeconfig-{name}", os.MFD_CLOEXEC)
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view):]
    return f"/proc/self/fd/{fd}"


def _forget_temp_files(scratch: str) -> None:
    """The client caches the files it wrote by content; forget the ones just removed, so a
    later load writes them again instead of naming a removed file."""
    cache = getattr(kube_config, "_temp_files", None)
    if isinstance(cache, dict):
        for key in [k for k, v in cache.items() if str(v).startswith(scratch + os.sep)]:
            del cache[key]


def token_client(host: str, token: str, ca_file: str) -> Any:
    """An ApiClient that authenticates with a bearer token (tests, `--kubeconfig`-less runs)."""
    cfg = client.Configuration()
    cfg.host = host
    cfg.ssl_ca_cert = ca_file
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(cfg)
