"""Run the controller: build the clients from settings, start the caches, sync, and stop
cleanly on SIGTERM (stop taking work, finish in-flight syncs)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from types import FrameType

from controller.alicloud.identity import IdentityPool
from controller.alicloud.kms import Kms
from controller.kube.client import api_client
from controller.kube.rest import Rest
from controller.manager import Manager
from controller.settings import Settings

log = logging.getLogger("ack-secret-manager")

CACHE_SYNC_TIMEOUT = 120.0


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The credentials library logs whole STS request URLs (tokens, signatures) on its own
    # handler; silence it.
    creds = logging.getLogger("credentials")
    for handler in list(creds.handlers):
        creds.removeHandler(handler)
    creds.setLevel(logging.CRITICAL)


def run(settings: Settings, stop: threading.Event | None = None) -> int:
    _setup_logging(settings)
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received signal %d; shutting down", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    api = api_client(settings.kubeconfig, pool_size=settings.workers + 16)
    rest = Rest(api)
    kms = Kms(IdentityPool(), region=settings.region,
              rate_per_endpoint=settings.max_concurrent_kms_secret_pulls)
    instance = os.environ.get("POD_NAME") or socket.gethostname()
    manager = Manager(settings, rest, kms, instance=instance)
    try:
        manager.start_caches()
        if not manager.wait_caches(CACHE_SYNC_TIMEOUT):
            log.error("caches did not sync within %ss; is the CRD installed and RBAC granted?",
                      CACHE_SYNC_TIMEOUT)
            return 1
        log.info("caches synced; syncing with %d workers", settings.workers)
        manager.start_workers()
        stop.wait()
    finally:
        manager.stop()
        kms.close()
        api.close()
    log.info("stopped")
    return 0
