"""Leader election on a coordination.k8s.io Lease, as client-go does it: one active replica,
the others standing by with warm caches.

A candidate takes the Lease when it is free or its holder stopped renewing for
`lease_duration`; the leader renews every `retry_period` and gives up if it could not renew
for `renew_deadline`. On shutdown the leader releases the Lease (empty holder), so a standby
takes over at its next retry instead of waiting for the Lease to expire.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.kube.rest import LEASES, ApiError, Rest

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _fmt(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class LeaderElector:
    def __init__(
        self,
        rest: Rest,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.rest = rest
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock
        self._leading = threading.Event()
        self.transitions_seen = 0

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    # ------------------------------------------------------------------ loop
    def acquire(self, stop: threading.Event) -> bool:
        """Block until this replica holds the Lease (True) or `stop` is set (False)."""
        log.info("waiting to lead: Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not stop.is_set():
            if self._try():
                self._leading.set()
                log.info("became leader (Lease %s/%s)", self.namespace, self.name)
                return True
            stop.wait(self.retry_period)
        return False

    def hold(self, stop: threading.Event) -> bool:
        """Renew until `stop` (True: released cleanly) or until renewal fails for longer than
        `renew_deadline` (False: leadership lost; the caller must stop working)."""
        last_renew = time.monotonic()
        while not stop.wait(self.retry_period):
            if self._try():
                last_renew = time.monotonic()
            elif time.monotonic() - last_renew > self.renew_deadline:
                self._leading.clear()
                log.error("lost leadership of Lease %s/%s", self.namespace, self.name)
                return False
        return True

    def release(self) -> None:
        """Give the Lease up (empty holder) so a standby takes over at once."""
        if not self._leading.is_set():
            return
        self._leading.clear()
        try:
            lease = self.rest.get(self._path())
            spec = lease.get("spec", {})
            if spec.get("holderIdentity") != self.identity:
                return
            spec.update({"holderIdentity": "", "leaseDurationSeconds": 1,
                         "renewTime": _fmt(self.clock())})
            self.rest.request("PUT", self._path(), body=lease)
            log.info("released Lease %s/%s", self.namespace, self.name)
        except (ApiError, OSError) as exc:
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, exc)

    # --------------------------------------------------------------- one try
    def _path(self, name: str = "") -> str:
        return LEASES.path(self.namespace, name or self.name)

    def _try(self) -> bool:
        now = self.clock()
        try:
            lease = self.rest.get(self._path())
        except ApiError as exc:
            if exc.status != 404:
                log.warning("reading Lease failed: %s", exc)
                return False
            return self._create(now)
        except OSError as exc:
            log.warning("reading Lease failed: %s", exc)
            return False
        spec = lease.setdefault("spec", {})
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity and not self._expired(spec, now):
            return False
        if holder != self.identity:
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            spec["acquireTime"] = _fmt(now)
            self.transitions_seen = spec["leaseTransitions"]
        spec.update({"holderIdentity": self.identity, "renewTime": _fmt(now),
                     "leaseDurationSeconds": max(1, int(self.lease_duration))})
        try:
            self.rest.request("PUT", self._path(), body=lease)  # resourceVersion: optimistic
        except (ApiError, OSError) as exc:
            log.debug("updating Lease failed: %s", exc)
            return False
        return True

    def _expired(self, spec: dict[str, Any], now: datetime) -> bool:
        renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        return renewed is None or renewed + timedelta(seconds=duration) < now

    def _create(self, now: datetime) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"holderIdentity": self.identity,
                     "leaseDurationSeconds": max(1, int(self.lease_duration)),
                     "acquireTime": _fmt(now), "renewTime": _fmt(now), "leaseTransitions": 0},
        }
        try:
            self.rest.create(LEASES.path(self.namespace), body)
        except (ApiError, OSError) as exc:
            log.debug("creating Lease failed: %s", exc)
            return False
        return True
