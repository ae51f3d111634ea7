"""One benchmark size, end to end, on a fresh test bed.

Set-up: a fresh control plane (CRDs installed), the fake cloud in its own process with
`distinct` KMS secrets and a fixed latency per call, `namespaces` namespaces each with one
AccessKey SecretStore (all the same AccessKey, so they are one identity and share KMS reads),
and `size` ExternalSecrets with `entries` entries each, created before the controller starts.
Entry e of ExternalSecret j reads KMS secret (entries*j + e) mod distinct: every distinct secret
is used, each by about entries*size/distinct ExternalSecrets.

Then the phases, in order, each measured from outside the controller:

1. cold start: start the controller; time until every ExternalSecret is Ready (watched);
   KMS calls (the fake's counter), Kubernetes writes (the controller's metrics), CPU seconds.
2. create-to-Secret latency: on the warm system, create ExternalSecrets one at a time; for
   each, the time from the create call returning to the Secret's ADDED event on a watch.
3. quiet poll: once idle, reset the counters and wait one polling interval: KMS calls (target:
   the number of distinct secrets), how long until every distinct secret had been read,
   duplicate reads, Kubernetes writes (target: 0), controller CPU seconds.
4. change propagation: put new values for `changes` KMS secrets at once; time until every
   Secret that uses them shows the new value (watched).
5. peak RSS of the controller (VmHWM) at the end.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import probes
from bench.kube import Kube, Tracker, es_path, secret_path, store_path
from bench.procs import REPO, ControllerProcess, FakeCloudProcess
from bench.profiling import Recorder
from tests.cluster import ControlPlane, free_port
from tests.fakecloud import FakeCloudAdmin

CRDS = REPO / "helm/ack-secret-manager/crds"
AK_ID, AK_SECRET = "LTAI5tBenchKeyId0001", "BenchKeySecretValue00000000001"
STORE, AK_SECRET_NAME = "kms", "kms-ak"
PHASES = ("latency", "quiet", "change")  # after the cold start, which always runs


@dataclass
class Options:
    sizes: list[int]
    distinct: int = 1000
    entries: int = 2
    namespaces: int = 10
    kms_latency: float = 0.02
    polling_interval: float = 60.0
    pulls: int = 100
    workers: int = 8
    creators: int = 16
    latency_samples: int = 100
    changes: int = 100
    cold_timeout: float = 900.0
    phases: tuple[str, ...] = PHASES
    profile: bool = False  # py-spy the controller during the cold start, quiet poll, change
    trace_memory: bool = False  # run the controller under tracemalloc (slow!)
    artifacts_dir: Path | None = None  # profiles and memory traces go here
    keep_workdir: bool = False
    controller_args: list[str] = field(default_factory=list)
    controller_env: dict[str, str] = field(default_factory=dict)
    patches: list[str] = field(default_factory=list)  # bench/patched.py experiments

    def controller_flags(self) -> list[str]:
        return ["--polling-interval", f"{self.polling_interval:g}s",
                "--max-concurrent-kms-secret-pulls", str(self.pulls),
                "--workers", str(self.workers), *self.controller_args]


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.4999)))
    return ordered[rank - 1]


def secret_name(i: int) -> str:
    return f"bench-{i:05d}"


def secret_value(i: int, version: str) -> str:
    return f"{version}-{i:05d}-" + "x" * 48


class SizeRun:
    def __init__(self, opts: Options, size: int, workdir: Path) -> None:
        self.o, self.size, self.dir = opts, size, workdir
        self.ns = [f"bench-{i:02d}" for i in range(opts.namespaces)]
        self.cluster: ControlPlane | None = None
        self.cloud: FakeCloudProcess | None = None
        self.admin: FakeCloudAdmin | None = None
        self.kube: Kube | None = None
        self.tracker: Tracker | None = None
        self.controller: ControllerProcess | None = None
        self.recorder: Recorder | None = None
        # (namespace, name) -> the KMS secrets (by index) its entries read, in order
        self.objects: dict[tuple[str, str], list[int]] = {}
        self.result: dict[str, Any] = {"size": size}

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> dict[str, Any]:
        try:
            self._setup()
            self._cold_start()
            if "latency" in self.o.phases:
                self._create_latency()
            if "quiet" in self.o.phases:
                self._quiet_poll()
            if "change" in self.o.phases:
                self._change_propagation()
            self._memory()
        except BaseException:
            if self.controller is not None:
                say("controller log (last lines):\n" + self.controller.log_tail())
            raise
        finally:
            self._teardown()
        return self.result

    def _teardown(self) -> None:
        for step in (lambda: self.recorder and self.recorder.stop(),
                     # It drains in-flight syncs; after a Ctrl-C the apiserver may be gone.
                     lambda: self.controller and self.controller.stop(grace=15),
                     lambda: self.tracker and self.tracker.stop(),
                     lambda: self.kube and self.kube.close(),
                     lambda: self.cloud and self.cloud.stop(),
                     lambda: self.cluster and self.cluster.stop()):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                say(f"teardown: {exc!r}")

    # ---------------------------------------------------------------------- set-up
    def _setup(self) -> None:
        o = self.o
        say(f"size {self.size}: starting the control plane and the fake cloud")
        self.cluster = ControlPlane(crds=[CRDS])
        self.cluster.start()
        secrets = {secret_name(i): secret_value(i, "v1") for i in range(o.distinct)}
        self.cloud = FakeCloudProcess(self.dir, secrets, (AK_ID, AK_SECRET), o.kms_latency)
        self.cloud.start()
        self.admin = FakeCloudAdmin(self.cloud.admin_url, timeout=60)
        self.kube = Kube(self.cluster.kubeconfig, pool=o.creators + 8)
        self.result["kubernetes"] = self.kube.version()
        for ns in self.ns:
            self.kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
            self.kube.create(secret_path(ns), {
                "metadata": {"name": AK_SECRET_NAME},
                "stringData": {"id": AK_ID, "secret": AK_SECRET}})
            self.kube.create(store_path(ns), {
                "apiVersion": "alibabacloud.com/v1alpha1", "kind": "SecretStore",
                "metadata": {"name": STORE},
                "spec": {"KMS": {"KMSAuth": {
                    "accessKey": {"name": AK_SECRET_NAME, "key": "id"},
                    "accessKeySecret": {"name": AK_SECRET_NAME, "key": "secret"}}}}})
        say(f"size {self.size}: creating {self.size} ExternalSecrets "
            f"({o.creators} threads, {o.namespaces} namespaces)")
        start = time.monotonic()
        with ThreadPoolExecutor(o.creators) as pool:
            list(pool.map(self._create_object, range(self.size)))
        took = time.monotonic() - start
        self.result["create_all"] = {"seconds": round(took, 1),
                                     "per_second": round(self.size / took, 1)}
        say(f"size {self.size}: created in {took:.1f}s ({self.size / took:.0f}/s)")

    def _object(self, j: int, prefix: str = "es") -> tuple[str, str, list[int]]:
        o = self.o
        indexes = [(o.entries * j + e) % o.distinct for e in range(o.entries)]
        return self.ns[j % len(self.ns)], f"{prefix}-{j:05d}", indexes

    def _create_object(self, j: int, prefix: str = "es") -> tuple[str, str]:
        assert self.kube is not None
        ns, name, indexes = self._object(j, prefix)
        body = {"apiVersion": "alibabacloud.com/v1alpha1", "kind": "ExternalSecret",
                "metadata": {"name": name},
                "spec": {"data": [{"key": secret_name(i), "name": f"k{e}",
                                   "secretStoreRef": {"name": STORE}}
                                  for e, i in enumerate(indexes)]}}
        self.kube.create(es_path(ns), body)
        self.objects[(ns, name)] = indexes
        return ns, name

    # ------------------------------------------------------------------ helpers
    def _progress(self, what: str, count: Callable[[], str]) -> Callable[[], None]:
        def tick() -> None:
            assert self.controller is not None
            self.controller.check_alive()
            now = time.monotonic()
            if now - getattr(tick, "last", 0.0) >= 10.0:
                tick.last = now  # type: ignore[attr-defined]
                say(f"size {self.size}: {what}: {count()}")
        return tick

    def _scrape(self) -> probes.Scrape:
        assert self.controller is not None
        return probes.scrape(self.controller.metrics_url)

    def _cpu(self) -> float:
        assert self.controller is not None
        return probes.cpu_seconds(self.controller.pid)

    def _cpu_meter(self) -> probes.CpuMeter:
        assert self.cluster is not None and self.cloud is not None
        assert self.controller is not None and self.cloud.proc is not None
        pids = {"controller": self.controller.pid, "fake cloud": self.cloud.proc.pid}
        pids.update({name: proc.pid for name, proc in self.cluster.procs.items()})
        return probes.CpuMeter(pids).start()

    def _kms_calls(self) -> int:
        assert self.admin is not None
        return self.admin.calls("GetSecretValue")

    def _wait_idle(self, quiet: float = 5.0, timeout: float = 600.0) -> float:
        """Wait until no ExternalSecret or Secret changed for `quiet` seconds, the work queue
        is empty and the write counter stands still; returns the seconds waited."""
        assert self.tracker is not None
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            assert self.controller is not None
            self.controller.check_alive()
            since = time.monotonic() - self.tracker.last_event
            if since < quiet:
                time.sleep(min(1.0, quiet - since + 0.05))
                continue
            first = self._scrape()
            time.sleep(2.0)
            second = self._scrape()
            if (second.total("ack_secret_manager_workqueue_depth") == 0
                    and second.writes() == first.writes()
                    and time.monotonic() - self.tracker.last_event >= quiet):
                return time.monotonic() - start
        raise TimeoutError(f"the controller did not go idle within {timeout:.0f}s")

    def _start_profile(self, phase: str) -> None:
        if self.o.profile and self.o.artifacts_dir and self.controller is not None:
            out = self.o.artifacts_dir / f"{self.size}-{phase}.txt"
            self.recorder = Recorder(self.controller.pid, out).start()

    def _stop_profile(self, phase: str) -> None:
        if self.recorder is not None:
            summary = self.recorder.stop()
            self.recorder = None
            self.result.setdefault("profile", {})[phase] = summary

    # ------------------------------------------------------------------ phases
    def _cold_start(self) -> None:
        o = self.o
        assert self.cluster is not None and self.cloud is not None and self.kube is not None
        assert self.admin is not None
        self.tracker = Tracker(self.kube)
        self.tracker.start()
        self.admin.reset_counters()
        args = ["--kubeconfig", str(self.cluster.kubeconfig),
                "--kms-endpoint", self.cloud.kms_url, *o.controller_flags()]
        module, env = "controller", dict(o.controller_env)
        if o.patches:
            module = "bench.patched"
            env["BENCH_PATCHES"] = ",".join(o.patches)
        if o.trace_memory and o.artifacts_dir is not None:
            module = "bench.memtrace"
            env["BENCH_TRACEMALLOC_OUT"] = str(o.artifacts_dir / f"{self.size}-memory.txt")
        self.controller = ControllerProcess(self.dir, args, free_port(), free_port(),
                                            module=module, env=env)
        say(f"size {self.size}: cold start: python -m controller {' '.join(o.controller_flags())}")
        self.controller.start()
        meter = self._cpu_meter()
        metrics_up = self.controller.wait_http(self.controller.metrics_url, 120)
        self._start_profile("cold_start")
        caches = self.controller.wait_http(self.controller.readyz_url, 300)
        tracker, n = self.tracker, self.size
        tracker.wait(lambda: tracker.ready_count >= n, o.cold_timeout,
                     f"{n} ExternalSecrets Ready",
                     self._progress("cold start", lambda: f"{tracker.ready_count}/{n} Ready"))
        times = sorted(t - self.controller.started_at for t in tracker.ready_at.values())
        ready = times[-1]
        cpu = self._cpu()
        cpu_by_process = meter.read()
        self._stop_profile("cold_start")
        scrape = self._scrape()
        secrets = sum(1 for k in self.objects if k in tracker.secret_seen)
        log = self.admin.request_log()
        self.result["cold_start"] = {
            "seconds_to_all_ready": round(ready, 1),
            "seconds_to_metrics_up": round(metrics_up, 1),
            "seconds_to_caches_synced": round(caches, 1),
            "seconds_to_ready_percent": {str(p): round(times[max(0, -(-p * n // 100) - 1)], 1)
                                         for p in (10, 25, 50, 75, 90)},
            "kms_calls": self._kms_calls(),
            "kms_distinct_secrets_read": len({e["secret"] for e in log
                                              if e.get("action") == "GetSecretValue"}),
            "kms_peak_calls_per_second": self.admin.counters(
                "GetSecretValue")["peak_rate"],
            "kubernetes_writes": int(scrape.writes()),
            "writes_by_kind": scrape.writes_by_kind(),
            "sync_results": scrape.by("ack_secret_manager_sync_total", "result"),
            "secrets_seen": secrets,
            "controller_cpu_seconds": round(cpu, 1),
            "cpu_seconds_by_process": cpu_by_process,
        }
        say(f"size {self.size}: all {n} Ready {ready:.1f}s after the controller started")
        idle = self._wait_idle()
        after = self._scrape()
        self.result["cold_start"]["kubernetes_writes_until_idle"] = int(after.writes())
        self.result["cold_start"]["kms_calls_until_idle"] = self._kms_calls()
        self.result["cold_start"]["seconds_ready_to_idle"] = round(idle, 1)
        self.result["cold_start"]["rss_mb_when_idle"] = round(
            probes.memory(self.controller.pid)["VmRSS"], 1)
        self._trace_memory("idle after the cold start")

    def _create_latency(self) -> None:
        assert self.tracker is not None and self.kube is not None
        tracker, samples = self.tracker, self.o.latency_samples
        if samples <= 0:
            return
        say(f"size {self.size}: create-to-Secret latency, {samples} objects one at a time")
        to_secret: list[float] = []
        to_ready: list[float] = []
        writes_before = self._scrape().writes()
        kms_before = self._kms_calls()
        for i in range(samples):
            j = self.size + i
            ns, name = self._object(j, "lat")[:2]
            self._create_object(j, "lat")
            created = time.monotonic()
            key = (ns, name)
            tracker.wait(lambda key=key: key in tracker.secret_seen and key in tracker.ready_at,
                         60, f"Secret {ns}/{name}")
            to_secret.append(tracker.secret_seen[key] - created)
            to_ready.append(tracker.ready_at[key] - created)
        self.result["create_latency"] = {
            "objects": samples,
            "secret_p50_ms": round(1000 * statistics.median(to_secret), 1),
            "secret_p99_ms": round(1000 * percentile(to_secret, 99), 1),
            "secret_max_ms": round(1000 * max(to_secret), 1),
            "ready_p50_ms": round(1000 * statistics.median(to_ready), 1),
            "ready_p99_ms": round(1000 * percentile(to_ready, 99), 1),
            "kms_calls": self._kms_calls() - kms_before,
            "kubernetes_writes": int(self._scrape().writes() - writes_before),
        }

    def _quiet_poll(self) -> None:
        assert self.admin is not None and self.controller is not None
        interval = self.o.polling_interval
        self._wait_idle()
        say(f"size {self.size}: quiet poll: one polling interval ({interval:g}s)")
        before = self._scrape()
        self.admin.reset_counters()
        wall0 = time.time()
        cpu0 = self._cpu()
        meter = self._cpu_meter()
        self._start_profile("quiet_poll")
        end = time.monotonic() + interval
        while time.monotonic() < end:
            self.controller.check_alive()
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        cpu = self._cpu() - cpu0
        cpu_by_process = meter.read()
        counted = self._kms_calls()
        # Exactly one interval by the fake's clock: the counter also holds the calls made while
        # this loop was reading it, which are the next cycle's.
        log = [e for e in self.admin.request_log() if e.get("action") == "GetSecretValue"
               and wall0 <= float(e["time"]) < wall0 + interval]
        self._stop_profile("quiet_poll")
        after = self._scrape()
        reads: dict[str, list[float]] = {}
        for entry in log:
            reads.setdefault(str(entry["secret"]), []).append(float(entry["time"]))
        first = {name: min(times) for name, times in reads.items()}
        # A secret read twice in the window is either polled too often (a gap well under an
        # interval) or read at both ends of the window, one interval apart: its slot sits at
        # the window's edge and one of the two polls ran a little late.
        gaps = [b - a for times in reads.values() if len(times) > 1
                for a, b in zip(sorted(times), sorted(times)[1:], strict=False)]
        self.result["quiet_poll"] = {
            "interval_seconds": interval,
            "kms_calls": len(log),
            "kms_calls_counted_until_read": counted,
            "distinct_secrets": len({i for v in self.objects.values() for i in v}),
            "distinct_secrets_read": len(first),
            "secrets_read_twice": len(gaps),
            "reads_less_than_half_an_interval_apart": sum(1 for g in gaps if g < interval / 2),
            "shortest_gap_between_two_reads_of_one_secret":
                round(min(gaps), 1) if gaps else None,
            "seconds_until_every_secret_read":
                round(max(first.values()) - wall0, 1) if first else None,
            "kubernetes_writes": int(after.writes() - before.writes()),
            "writes_by_kind": probes.delta(after.writes_by_kind(), before.writes_by_kind()),
            "sync_results": probes.delta(after.by("ack_secret_manager_sync_total", "result"),
                                         before.by("ack_secret_manager_sync_total", "result")),
            "controller_cpu_seconds": round(cpu, 2),
            "controller_cpu_percent_of_one_core": round(100.0 * cpu / interval, 1),
            "cpu_seconds_by_process": cpu_by_process,
        }

    def _change_propagation(self) -> None:
        o = self.o
        assert self.admin is not None and self.tracker is not None
        count = min(o.changes, o.distinct)
        if count <= 0:
            return
        self._wait_idle()
        changed = [k * o.distinct // count for k in range(count)]
        stamp = f"v2{int(time.time()) % 100000}"
        expected: dict[tuple[str, str], dict[str, str]] = {}
        for key, indexes in self.objects.items():
            want = {f"k{e}": base64.b64encode(secret_value(i, stamp).encode()).decode()
                    for e, i in enumerate(indexes) if i in set(changed)}
            if want:
                expected[key] = want
        say(f"size {self.size}: change propagation: {count} KMS secrets, "
            f"{len(expected)} Secrets to follow")
        before = self._scrape()
        self.admin.reset_counters()
        meter = self._cpu_meter()
        pending = set(expected)
        followed: dict[tuple[str, str], float] = {}
        tracker = self.tracker

        def all_followed() -> bool:  # called with the tracker's lock held
            for key in tracker.take_changed() & pending:
                data = tracker.secret_data.get(key, {})
                if all(data.get(k) == v for k, v in expected[key].items()):
                    followed[key] = tracker.secret_changed[key]
                    pending.discard(key)
            return not pending

        with tracker.cond:
            tracker.take_changed()
        admin = self.admin
        self._start_profile("change")
        start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: admin.put_secret(secret_name(i), secret_value(i, stamp)),
                          changed))
        put_seconds = time.monotonic() - start
        tracker.wait(all_followed, 2 * o.polling_interval + 120,
                     f"{len(expected)} Secrets to follow",
                     self._progress("change propagation",
                                    lambda: f"{len(expected) - len(pending)}/{len(expected)}"))
        delays = [t - start for t in followed.values()]
        cpu_by_process = meter.read()
        self._stop_profile("change")
        after = self._scrape()
        self.result["change_propagation"] = {
            "kms_secrets_changed": count,
            "secrets_to_follow": len(expected),
            "put_seconds": round(put_seconds, 2),
            "seconds_until_all_followed": round(max(delays), 1),
            "p50_seconds": round(statistics.median(delays), 1),
            "kms_calls": self._kms_calls(),
            "kubernetes_writes": int(after.writes() - before.writes()),
            "writes_by_kind": probes.delta(after.writes_by_kind(), before.writes_by_kind()),
            "cpu_seconds_by_process": cpu_by_process,
        }

    def _trace_memory(self, when: str) -> None:
        """Ask bench.memtrace for a tracemalloc report (appended to its file)."""
        if not self.o.trace_memory or self.controller is None:
            return
        out = Path(self.controller.env["BENCH_TRACEMALLOC_OUT"])
        with out.open("a") as fh:
            fh.write(f"\n#### size {self.size}, {when}\n")
        before = out.stat().st_size
        assert self.controller.proc is not None
        self.controller.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and out.stat().st_size == before:
            self.controller.check_alive()
            time.sleep(0.5)
        time.sleep(2.0)  # the report is written in one go; let it finish
        self.result.setdefault("memory_trace", str(out))

    def _memory(self) -> None:
        assert self.controller is not None
        self._trace_memory("at the end")
        mem = probes.memory(self.controller.pid)
        scrape = self._scrape()
        self.result["memory"] = {
            "peak_rss_mb": round(mem["VmHWM"], 1),
            "rss_mb_at_end": round(mem["VmRSS"], 1),
            "objects_at_end": self.size + self.o.latency_samples,
        }
        self.result["controller_cpu_seconds_total"] = round(
            scrape.total("process_cpu_seconds_total"), 1)


def run_size(opts: Options, size: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"asm-bench-{size}-"))
    try:
        return SizeRun(opts, size, workdir).run()
    finally:
        if opts.keep_workdir:
            say(f"size {size}: logs kept in {workdir}")
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(workdir)
