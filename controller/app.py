"""Run the controller: logging first, then the clients, the caches, the probes and metrics,
the workers; stop cleanly on SIGTERM in every phase (start-up, cache sync, standby, running).

Stop is one deadline (`--shutdown-timeout`, default 25 s: inside the Pod's default 30 s grace
period): no new work, KMS retries cancelled, in-flight syncs finish, and only then is the Lease
released; it is renewed until the last worker has exited, so no successor overlaps them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterable

from controller import __version__, buildinfo
from controller.clusterexternalsecret.controller import ClusterExternalSecrets
from controller.externalsecret.controller import ExternalSecrets, Hooks, Key
from controller.externalsecret.reconciler import Outcome
from controller.kube.client import api_client, without_retries
from controller.kube.leader import LeaderElector
from controller.kube.rest import Rest
from controller.kube.tokens import ServiceAccountTokens
from controller.ops.health import OpsServers
from controller.ops.logs import setup_logging
from controller.ops.metrics import Metrics
from controller.ops.redact import (
    hold_secret,
    register_secret,
    release_secrets,
    scrub,
)
from controller.ops.signals import watch_signals
from controller.ops.stacks import dump_stacks
from controller.providers import installed
from controller.providers.base import Wiring
from controller.providers.registry import Providers
from controller.settings import Settings

log = logging.getLogger("ack-secret-manager")

CACHE_SYNC_TIMEOUT = 120.0
RELEASE_RESERVE = 3.0  # seconds of the stop deadline kept for releasing the Lease
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class MetricsHooks(Hooks):
    """The ExternalSecret controller's callbacks, recorded as Prometheus metrics (and values
    made redactable)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.ready: dict[Key, bool] = {}

    def sync(self, namespace: str, name: str, outcome: Outcome, seconds: float) -> None:
        if outcome.result == "gone":
            self.forget(namespace, name)
            return
        self.ready[(namespace, name)] = outcome.ready
        self.metrics.observe_sync(namespace, name, outcome.result, seconds, outcome.ready)
        if outcome.degraded:
            self.metrics.count_degraded()

    def forget(self, namespace: str, name: str) -> None:
        self.ready.pop((namespace, name), None)
        self.metrics.forget(namespace, name)

    def queue_wait(self, seconds: float) -> None:
        self.metrics.observe_queue_wait(seconds)

    def write(self, kind: str, verb: str) -> None:
        self.metrics.count_write(kind, verb)

    def secret_value(self, value: bytes) -> None:
        register_secret(value)

    def polled(self, keys: Iterable[Key], changed: bool) -> None:
        if changed:
            return  # the syncs it triggers report themselves
        for key in keys:
            if self.ready.get(key):
                self.metrics.observe_quiet_poll(*key)

    def retry(self) -> None:
        self.metrics.count_retry()

    def scrub(self, text: str) -> str:
        return scrub(text)

    def known(self, namespace: str, name: str, ready: bool) -> None:
        self.ready[(namespace, name)] = ready
        self.metrics.observe_known(namespace, name, ready)


def _hold_token(owner: Hashable, token: str) -> None:
    """A ServiceAccount token is redacted while its file is held: the current one and the
    one before (still valid while a read that took it is in flight)."""
    hold_secret(owner, token, keep=2)


def _register_environment_credentials(settings: Settings) -> None:
    creds = settings.credentials
    for value in (creds.access_key_secret, creds.access_key_id):
        if value:
            register_secret(value)


def run(settings: Settings, stop: threading.Event | None = None) -> int:
    setup_logging(settings.log_format, settings.log_level)
    _register_environment_credentials(settings)
    stop = stop or threading.Event()

    if threading.current_thread() is threading.main_thread():
        # SIGQUIT writes every thread's stack to stderr (the Pod's log) and carries on
        # (ops/stacks.py: why not faulthandler).
        watch_signals(stop, log, on_quit=dump_stacks)

    metrics = Metrics(version=__version__, commit=buildinfo.commit(),
                      known_endpoints=installed.named_endpoints(settings))
    hooks = MetricsHooks(metrics)

    def on_source_call(action: str, endpoint: str, code: str, seconds: float) -> None:
        metrics.observe_kms(action, endpoint, "OK" if code == "Success" else code, seconds)

    try:
        api = api_client(settings.kubeconfig, pool_size=settings.workers + 16)
    except Exception as exc:  # noqa: BLE001 - one line that names the problem and the fix
        log.error("cannot reach Kubernetes: no usable configuration (%s: %s); run in a Pod "
                  "with a ServiceAccount, or pass --kubeconfig (or KUBECONFIG) naming a "
                  "readable kubeconfig file", type(exc).__name__, str(exc)[:200])
        return 2
    rest = Rest(api)

    def service_account_tokens(in_use: Callable[[str], bool]) -> ServiceAccountTokens:
        """RRSA identities' ServiceAccount tokens, minted through the API server."""
        return ServiceAccountTokens(rest, on_token=None, in_use=in_use, hold=_hold_token,
                                    release=release_secrets)

    # The secret sources, by ExternalSecret provider name (the list: providers/installed.py).
    providers = installed.build(Wiring(settings, on_call=on_source_call,
                                       on_identity=metrics.count_credential_refresh,
                                       tokens=service_account_tokens))
    instance = os.environ.get("POD_NAME") or socket.gethostname()
    external_secrets = ExternalSecrets(settings, rest, providers, instance=instance,
                                       hooks=hooks, on_credential=register_secret)
    # --process-cluster-external-secret=false: ClusterExternalSecrets are left alone.
    cluster_secrets = (ClusterExternalSecrets(settings, rest)
                       if settings.process_cluster_external_secret else None)
    if cluster_secrets is None:
        log.info("ClusterExternalSecrets are not processed (--process-cluster-external-secret"
                 "=false)")
    metrics.track_queue_depth(external_secrets.queue.depth)
    metrics.track_caches(external_secrets.cache_footprints)
    servers = OpsServers(metrics, metrics_address=settings.metrics_bind_address,
                         health_address=settings.health_probe_bind_address,
                         liveness={"threads": external_secrets.threads_alive},
                         readiness={"caches": external_secrets.caches_synced})
    # The Lease has a client of its own, whose calls urllib3 never retries (kube/client.py).
    lease_api = without_retries(api) if settings.leader_elect else None
    elector = _elector(settings, Rest(lease_api), instance) if lease_api is not None else None
    lost = threading.Event()
    release = threading.Event()  # set once the workers are gone: the Lease may go then
    holder: threading.Thread | None = None
    try:
        servers.start()
    except OSError as exc:
        log.error("cannot listen for metrics or health probes (%s); choose free addresses with "
                  "--metrics-bind-address and --health-probe-bind-address (0 disables)", exc)
        return 2
    try:
        external_secrets.start_caches()
        if not external_secrets.wait_caches(CACHE_SYNC_TIMEOUT, stop):
            if stop.is_set():
                return 0  # stopped while the caches synced
            log.error("caches did not sync within %ss; are the CRDs installed and the RBAC "
                      "granted?", CACHE_SYNC_TIMEOUT)
            return 1
        metrics.set_leader(False)
        if elector is not None and not elector.acquire(stop):
            return 0  # stopped while standing by
        metrics.set_leader(True)
        external_secrets.start_workers()
        # Logged once the workers exist (tests and operators take it as "syncing now").
        log.info("caches synced; syncing with %d workers", settings.workers)
        if cluster_secrets is not None:
            cluster_secrets.start()  # ClusterExternalSecrets, only while leading
        if elector is not None:
            holder = threading.Thread(target=_hold, args=(elector, release, lost, stop),
                                      name="lease", daemon=True)
            holder.start()
        stop.wait()
    finally:
        _shut_down(settings, external_secrets, providers, elector, release, holder,
                   cluster_secrets)
        metrics.set_leader(False)
        servers.stop()
        providers.close()
        api.close()
        if lease_api is not None:
            lease_api.close()
    log.info("stopped")
    return 1 if lost.is_set() else 0


def _shut_down(settings: Settings, external_secrets: ExternalSecrets, providers: Providers,
               elector: LeaderElector | None, release: threading.Event,
               holder: threading.Thread | None,
               cluster_secrets: ClusterExternalSecrets | None = None) -> None:
    """Within `settings.shutdown_timeout`: the workers first (the Lease is still renewed
    meanwhile, so no successor overlaps them), then the Lease is released."""
    started = time.monotonic()
    if cluster_secrets is not None:
        cluster_secrets.request_stop()  # winds down beside the ExternalSecret workers
    # Keep a little of the deadline for the Lease release and the caches.
    external_secrets.stop(timeout=max(0.5, settings.shutdown_timeout - RELEASE_RESERVE),
                          cancel=providers.cancel)
    if cluster_secrets is not None:
        cluster_secrets.join(settings.shutdown_timeout - RELEASE_RESERVE
                             - (time.monotonic() - started))
    release.set()
    if holder is not None:
        holder.join(max(0.1, settings.shutdown_timeout - (time.monotonic() - started)))
    if elector is not None:
        elector.release()
    log.info("shut down in %.1fs", time.monotonic() - started)


def _elector(settings: Settings, rest: Rest, instance: str) -> LeaderElector:
    namespace = settings.leader_election_namespace or _own_namespace() or "default"
    return LeaderElector(
        rest, namespace=namespace, name=settings.leader_election_id,
        identity=f"{instance}_{uuid.uuid4().hex[:8]}",
        lease_duration=settings.lease_duration, renew_deadline=settings.renew_deadline,
        retry_period=settings.retry_period)


def _own_namespace() -> str:
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _hold(elector: LeaderElector, release: threading.Event, lost: threading.Event,
          stop: threading.Event) -> None:
    """Renew the Lease until `release` (set after the workers stopped)."""
    if not elector.hold(release):
        lost.set()  # another replica may lead now: stop working at once
        stop.set()
