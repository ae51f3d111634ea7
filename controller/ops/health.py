"""/healthz and /readyz: what the kubelet asks before restarting or routing to this pod.

Liveness says "this process still makes progress": each check is a small callable, such as
"the worker loop ticked within 60 s" (a `Heartbeat`) or "the informers heard from the API
server within 5 min". When one fails for long enough the kubelet restarts the container,
which is the cure for a wedged thread. Readiness says "this replica can do its job": the
caches have synced. A standby replica without the leader Lease is ready too (it is healthy
and waiting), so leadership must not be a readiness check.

Answers follow kube-apiserver's: one line per check ("[+]informers ok",
"[-]worker failed: ..."), then "healthz check passed" or "... failed", status 200 or 500.
`?verbose` adds the detail of passing checks; failing checks always say why.

When --metrics-bind-address equals --health-probe-bind-address, `OpsServers` serves
/metrics on the health server instead of failing to bind the same port twice.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from urllib.parse import parse_qs

from controller.ops.metrics import Metrics, MetricsServer, metrics_route
from controller.ops.server import EndpointServer, Reply, same_endpoint

__all__ = ["Check", "HealthServer", "Heartbeat", "OpsServers", "run_checks"]

_log = logging.getLogger(__name__)

# A check answers (ok, detail); detail is one short line for humans (no secrets, no values).
Check = Callable[[], tuple[bool, str]]

_CHECK_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def _ping() -> tuple[bool, str]:
    return True, "the server answers"


class Heartbeat:
    """When a loop last went round: `beat()` each turn, `check(max_age)` for liveness.

    Creating the heartbeat counts as the first beat, so a loop that has just started is
    not reported dead before its first turn. Thread-safe; `clock` is monotonic seconds.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last = clock()

    def beat(self) -> None:
        now = self._clock()
        with self._lock:
            self._last = now

    def age(self) -> float:
        """Seconds since the last beat."""
        with self._lock:
            last = self._last
        return max(0.0, self._clock() - last)

    def check(self, max_age: float) -> Check:
        """A check that fails once the last beat is more than `max_age` seconds old."""

        def heartbeat_check() -> tuple[bool, str]:
            age = self.age()
            return age <= max_age, f"last beat {age:.1f}s ago (limit {max_age:g}s)"

        return heartbeat_check


def _run_one(check: Check) -> tuple[bool, str]:
    try:
        ok, detail = check()
    except Exception as exc:  # noqa: BLE001 - a broken check is a failed check, not a 500
        return False, f"check raised {type(exc).__name__}"
    return bool(ok), " ".join(str(detail).split())  # one line per check


def run_checks(kind: str, checks: Mapping[str, Check], *, verbose: bool) -> Reply:
    """Run `checks` in order and answer like kube-apiserver's /healthz (`kind` "healthz")."""
    lines, failed = [], []
    for name, check in checks.items():
        ok, detail = _run_one(check)
        if ok:
            lines.append(f"[+]{name} ok" + (f": {detail}" if verbose and detail else ""))
        else:
            failed.append(name)
            lines.append(f"[-]{name} failed" + (f": {detail}" if detail else ""))
    if failed:
        _log.info("%s check failed: %s", kind, ", ".join(failed))
    lines.append(f"{kind} check {'failed' if failed else 'passed'}")
    return Reply(500 if failed else 200, ("\n".join(lines) + "\n").encode())


class _CheckSet:
    """Named checks that probe threads read while the engine may still add some."""

    def __init__(self, kind: str, checks: Mapping[str, Check] | None) -> None:
        self.kind = kind
        self._checks: dict[str, Check] = {}
        for name, check in (checks or {}).items():
            self.add(name, check)

    def add(self, name: str, check: Check) -> None:
        if not _CHECK_NAME.fullmatch(name):
            raise ValueError(
                f"{self.kind} check name {name!r}: use lowercase letters, digits, -, _ or ."
            )
        self._checks = {**self._checks, name: check}  # replaced whole: readers never see a half

    def snapshot(self) -> dict[str, Check]:
        return self._checks

    def route(self, *, require_some: bool) -> Callable[[str], Reply]:
        def serve(query: str) -> Reply:
            checks = self.snapshot()
            if require_some and not checks:
                return Reply(500, f"[-]checks failed: none registered yet\n"
                                  f"{self.kind} check failed\n".encode())
            return run_checks(self.kind, checks, verbose=_verbose(query))

        return serve


def _verbose(query: str) -> bool:
    return "verbose" in parse_qs(query, keep_blank_values=True)


class HealthServer(EndpointServer):
    """/healthz (liveness) and /readyz (readiness) on `address`; "0" disables.

    /healthz always includes a "ping" check, so it passes while nothing else is registered.
    /readyz fails until at least one readiness check is registered: a pod must not be
    routed to before the engine has said what "ready" means. Checks may be added after
    start (names: lowercase letters, digits, "-", "_", "."). With `metrics`, also serves
    /metrics (used when both flags name the same address).
    """

    def __init__(
        self,
        address: str,
        *,
        liveness: Mapping[str, Check] | None = None,
        readiness: Mapping[str, Check] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._liveness = _CheckSet("healthz", {"ping": _ping, **(liveness or {})})
        self._readiness = _CheckSet("readyz", readiness)
        super().__init__(
            address,
            {
                "/healthz": self._liveness.route(require_some=False),
                "/readyz": self._readiness.route(require_some=True),
            },
            name="health",
        )
        if metrics is not None:
            self.add_route("/metrics", metrics_route(metrics))

    def add_liveness(self, name: str, check: Check) -> None:
        self._liveness.add(name, check)

    def add_readiness(self, name: str, check: Check) -> None:
        self._readiness.add(name, check)


class OpsServers:
    """The metrics and health servers as the flags ask, started and stopped together.

    Equal addresses (same host and a non-zero port) give one server carrying /metrics,
    /healthz and /readyz; either address "0" disables that endpoint alone.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        metrics_address: str,
        health_address: str,
        liveness: Mapping[str, Check] | None = None,
        readiness: Mapping[str, Check] | None = None,
    ) -> None:
        shared = same_endpoint(metrics_address, health_address)
        self.health = HealthServer(
            health_address,
            liveness=liveness,
            readiness=readiness,
            metrics=metrics if shared else None,
        )
        self.metrics: MetricsServer | None = (
            None if shared else MetricsServer(metrics, metrics_address)
        )

    @property
    def metrics_port(self) -> int | None:
        return self.health.port if self.metrics is None else self.metrics.port

    def start(self) -> None:
        """Bind both (OSError if a port is taken; nothing is left running then)."""
        self.health.start()
        if self.metrics is not None:
            try:
                self.metrics.start()
            except BaseException:
                self.health.stop()
                raise

    def stop(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        self.health.stop()

    def __enter__(self) -> OpsServers:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
