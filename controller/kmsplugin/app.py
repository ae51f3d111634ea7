"""Start-up and shutdown of `ack-secret-manager kms-plugin`.

Why the socket care: the kube-apiserver connects to a unix socket in a hostPath directory
shared with it. A missing or unwritable directory is a deployment mistake that must say so
plainly (and exit 2) rather than leave the apiserver waiting; a socket left by a previous
run is replaced, any other file at that path is refused. The socket is created owner-only
(umask 077, mode 0700): only root (the apiserver) may talk to the plugin.

The socket path is checked first (a deployment mistake is said at once, in one line), then
the first DescribeKey runs before serving (within the KMS time budget); when it fails, the
plugin serves anyway and Status reports why, so a KMS outage never becomes a crash loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
import threading
from concurrent import futures

import grpc

from controller.kmsplugin import settings as settings_mod
from controller.kmsplugin.keystate import KeyStateCache
from controller.kmsplugin.metrics import PluginMetrics
from controller.kmsplugin.service import KeyService, generic_handler
from controller.ops.health import HealthServer
from controller.ops.logs import setup_logging
from controller.ops.redact import register_secret
from controller.ops.server import EndpointServer, same_endpoint
from controller.ops.signals import watch_signals
from controller.providers.alibaba.identity import (
    ACCESS_KEY,
    ECS_RAM_ROLE,
    RAM_ROLE_ARN,
    Identity,
    IdentityPool,
)
from controller.providers.alibaba.kms import Endpoint, Kms
from controller.providers.alibaba.kms_crypto import KmsCrypto
from controller.providers.alibaba.pool import CallPolicy

log = logging.getLogger("controller.kmsplugin")

EXIT_CONFIG = 2


class SocketError(RuntimeError):
    """The socket path cannot be served; the text says why and what to do."""


def identity_of(cfg: settings_mod.PluginSettings) -> Identity:
    source = "kms-plugin flags"
    if cfg.access_key_id and cfg.role_arn:
        return Identity(RAM_ROLE_ARN, access_key_id=cfg.access_key_id,
                        access_key_secret=cfg.access_key_secret, role_arn=cfg.role_arn,
                        role_session_name=cfg.role_session_name,
                        sts_endpoint=cfg.sts_endpoint, source=source)
    if cfg.access_key_id:
        return Identity(ACCESS_KEY, access_key_id=cfg.access_key_id,
                        access_key_secret=cfg.access_key_secret, source=source)
    return Identity(ECS_RAM_ROLE, ecs_role_name=cfg.worker_role_name,
                    metadata_proxy=cfg.metadata_proxy, source=source)


def endpoint_of(cfg: settings_mod.PluginSettings) -> Endpoint:
    ca_pem = ""
    if cfg.kms_ca_file:
        try:
            with open(cfg.kms_ca_file) as fh:
                ca_pem = fh.read()
        except OSError as exc:
            raise settings_mod.SettingsError(
                f"--kms-ca-file {cfg.kms_ca_file}: cannot read it ({exc.strerror})") from None
    return Endpoint(cfg.endpoint_host, cfg.kms_protocol, ca_pem)


def prepare_socket(path: str) -> None:
    """Check the socket's directory and clear a stale socket; SocketError if impossible."""
    directory = os.path.dirname(path) or "/"
    if not os.path.isdir(directory):
        blocker = _non_directory_ancestor(directory)
        if blocker is not None:
            where = "" if blocker == directory else f" (on the way to {directory})"
            raise SocketError(f"socket directory {blocker}{where} is {_kind_of(blocker)}, not "
                              "a directory: remove it or fix --path-to-unix-socket")
        raise SocketError(f"socket directory {directory} does not exist: create it (hostPath "
                          "type DirectoryOrCreate) or fix --path-to-unix-socket")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SocketError(f"socket directory {directory} is not writable by this process: "
                          "run the plugin as its owner (root) or fix --path-to-unix-socket")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketError(f"{path} exists and is not a socket: remove it or fix "
                          "--path-to-unix-socket")
    os.unlink(path)  # left by an earlier run


def _non_directory_ancestor(directory: str) -> str | None:
    """The first existing path on the way to `directory` that is not a directory, if any."""
    current = directory
    while True:
        try:
            mode = os.stat(current).st_mode
        except FileNotFoundError:
            parent = os.path.dirname(current)
            if parent == current:
                return None
            current = parent
            continue
        except NotADirectoryError:  # an ancestor further up is the file; keep climbing
            current = os.path.dirname(current)
            continue
        return None if stat.S_ISDIR(mode) else current


def _kind_of(path: str) -> str:
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def serve_socket(server: grpc.Server, path: str) -> None:
    prepare_socket(path)
    old = os.umask(0o077)
    try:
        port = server.add_insecure_port(f"unix://{path}")
    except RuntimeError as exc:
        raise SocketError(f"cannot listen on unix socket {path}: {exc}") from None
    finally:
        os.umask(old)
    if port == 0:
        raise SocketError(f"cannot listen on unix socket {path}")


class Plugin:
    """Everything the command runs, started and stopped together."""

    def __init__(self, cfg: settings_mod.PluginSettings) -> None:
        self.cfg = cfg
        self.metrics = PluginMetrics()
        self.kms = Kms(IdentityPool(), region=cfg.region, policy=CallPolicy(
            connect_timeout_ms=1000, read_timeout_ms=int(cfg.kms_timeout * 1000)))
        self.crypto = KmsCrypto(self.kms, identity_of(cfg), endpoint_of(cfg),
                                budget=cfg.kms_timeout, on_call=self.metrics.observe_kms)
        self.keys = KeyStateCache(cfg.key_id, self.crypto.describe_key,
                                  interval=cfg.key_refresh_interval,
                                  on_change=self.metrics.set_key_id,
                                  on_refresh=self.metrics.count_refresh)
        self.service = KeyService(kms_key_id=cfg.key_id, cluster=cfg.cluster_name,
                                  context=cfg.encryption_context, crypto=self.crypto,
                                  keys=self.keys, metrics=self.metrics)
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=8,
                                                           thread_name_prefix="grpc"))
        self.grpc.add_generic_rpc_handlers((generic_handler(self.service),))
        self.ops = self._ops_servers()

    def _ops_servers(self) -> list[EndpointServer]:
        cfg = self.cfg
        health = HealthServer(cfg.health_probe_bind_address,
                              readiness={"kms-key": self._key_check})
        servers: list[EndpointServer] = [health]
        if same_endpoint(cfg.metrics_bind_address, cfg.health_probe_bind_address):
            health.add_route("/metrics", self.metrics.route())
        else:
            servers.append(EndpointServer(cfg.metrics_bind_address,
                                          {"/metrics": self.metrics.route()}, name="metrics"))
        return servers

    def _key_check(self) -> tuple[bool, str]:
        health = self.keys.health()
        return health.ok, health.healthz

    def start(self) -> None:
        prepare_socket(self.cfg.socket_path)  # a bad path fails at once, before KMS is asked
        self.keys.refresh()
        serve_socket(self.grpc, self.cfg.socket_path)
        for server in self.ops:
            server.start()
        self.grpc.start()
        self.keys.start()
        log.info("serving KMS v2 on unix://%s (%s)", self.cfg.socket_path,
                 settings_mod.describe(self.cfg))

    def stop(self) -> None:
        self.grpc.stop(grace=2).wait(5)
        self.keys.stop()
        for server in self.ops:
            server.stop()
        self.kms.close()
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if stat.S_ISSOCK(os.lstat(self.cfg.socket_path).st_mode):
                os.unlink(self.cfg.socket_path)


def main(argv: list[str]) -> int:
    try:
        cfg = settings_mod.load(argv)
    except settings_mod.SettingsError as err:
        print(f"ack-secret-manager kms-plugin: {err}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    setup_logging(cfg.log_format, cfg.log_level)
    if cfg.access_key_secret:
        register_secret(cfg.access_key_secret)
    stopping = threading.Event()

    watch_signals(stopping, log)  # no lock is taken in a signal handler
    plugin: Plugin | None = None
    try:
        plugin = Plugin(cfg)
        plugin.start()
    except (SocketError, settings_mod.SettingsError, OSError) as err:
        log.error("cannot start: %s", err)
        if plugin is not None:
            plugin.stop()
        return EXIT_CONFIG
    try:
        stopping.wait()
    finally:
        plugin.stop()
    return 0
