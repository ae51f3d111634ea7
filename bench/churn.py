"""`python -m bench.churn --objects 10000`: memory under churn (issue 10, point 4).

Why: every map of the controller that is keyed by an object, an identity or a host must have
an owner that prunes it, or a cluster where ExternalSecrets, SecretStores and ServiceAccounts
come and go grows the controller until it is killed. This benchmark makes that churn and
watches the controller's resident set size (RSS) from outside.

Set-up (the harness of bench/run.py: a fresh control plane, the fake cloud in its own
process, the controller as a child): the fake STS trusts the apiserver's ServiceAccount
issuer (RRSA), so each ExternalSecret reads KMS with its own identity. Then, `rounds` times:

1. create `objects` ServiceAccounts (annotated with a RAM role), as many SecretStores
   (`serviceAccountRef`: per-ServiceAccount RRSA, so one token, one STS identity and one KMS
   client each) and as many ExternalSecrets (one entry each), with names of this round;
2. wait until every ExternalSecret is Ready;
3. delete them all (ExternalSecrets, then stores and ServiceAccounts) and wait until every
   ExternalSecret and managed Secret is gone and the controller is idle;
4. wait `settle` seconds and sample the controller's RSS (and, with the `map-sizes` patch,
   the sizes of its maps).

A round passes when its RSS is within `tolerance` (10 %) of the first round's. The JSON goes
to bench/results/churn-<objects>-<time>.json; docs/performance.md records the runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench import probes
from bench.cli import _env
from bench.kube import Kube, Tracker, es_path, store_path
from bench.procs import REPO, ControllerProcess, FakeCloudProcess
from bench.run import CRDS, say, secret_name, secret_value
from tests.cluster import ControlPlane, ensure_binaries, free_port

RESULTS = Path(__file__).resolve().parent / "results"
ACCOUNT = "1234567890123456"
PROVIDER = f"acs:ram::{ACCOUNT}:oidc-provider/bench-churn"
ROLE = f"acs:ram::{ACCOUNT}:role/bench-churn"
ROLE_ANNOTATION = "ack.alibabacloud.com/role-arn"
ROUND_LABEL = "bench-churn-round"
DEFAULT_PATCHES = ("map-sizes",)  # the shipped controller, its map sizes recorded


@dataclass
class ChurnOptions:
    objects: int = 500
    rounds: int = 3
    namespaces: int = 10
    distinct: int = 100
    kms_latency: float = 0.02
    polling_interval: float = 60.0
    pulls: int = 100
    creators: int = 16
    settle: float = 45.0
    tolerance: float = 0.10
    ready_timeout: float = 1800.0
    patches: list[str] = field(default_factory=lambda: list(DEFAULT_PATCHES))
    controller_args: list[str] = field(default_factory=list)
    keep_workdir: bool = False
    heap_stats: bool = False  # after each round, what the heap holds (the heap-stats patch)
    trim_probe: bool = False  # ... and the RSS after malloc_trim(0), after the last round
    trim_every_round: bool = False  # ... after every round (changes the later rounds)
    controller_env: dict[str, str] = field(default_factory=dict)
    heap_who: list[str] = field(default_factory=list)  # ... and who holds these types
    heap_gc: bool = False  # ... and the heap after a full gc.collect() (changes later rounds)

    def controller_flags(self) -> list[str]:
        return ["--polling-interval", f"{self.polling_interval:g}s",
                "--max-concurrent-kms-secret-pulls", str(self.pulls), *self.controller_args]


def sa_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/serviceaccounts"


class Churn:
    def __init__(self, opts: ChurnOptions, workdir: Path) -> None:
        self.o, self.dir = opts, workdir
        self.ns = [f"churn-{i:02d}" for i in range(opts.namespaces)]
        self.cluster: ControlPlane | None = None
        self.cloud: FakeCloudProcess | None = None
        self.kube: Kube | None = None
        self.tracker: Tracker | None = None
        self.controller: ControllerProcess | None = None
        self.sizes_file = workdir / "map-sizes.json"
        self.heap_file = workdir / "heap-stats.json"
        self.result: dict[str, Any] = {"objects": opts.objects, "rounds": []}

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> dict[str, Any]:
        try:
            self._setup()
            for r in range(self.o.rounds):
                self.result["rounds"].append(self._round(r))
            self._verdict()
        except BaseException:
            if self.controller is not None:
                say("controller log (last lines):\n" + self.controller.log_tail())
            raise
        finally:
            self._teardown()
        return self.result

    def _teardown(self) -> None:
        steps: list[Any] = []
        if self.controller is not None:
            controller = self.controller
            steps.append(lambda: controller.stop(grace=15))
        steps += [getattr(part, name) for part, name in (
            (self.tracker, "stop"), (self.kube, "close"), (self.cloud, "stop"),
            (self.cluster, "stop")) if part is not None]
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                say(f"teardown: {exc!r}")

    def _setup(self) -> None:
        o = self.o
        say(f"churn {o.objects}: starting the control plane and the fake cloud")
        self.cluster = ControlPlane(crds=[CRDS])
        self.cluster.start()
        secrets = {secret_name(i): secret_value(i, "v1") for i in range(o.distinct)}
        self.cloud = FakeCloudProcess(self.dir, secrets, ("LTAI5tChurnUnused01", "unused"),
                                      o.kms_latency)
        subjects = [f"system:serviceaccount:{ns}:*" for ns in self.ns]
        self.cloud.secrets_file.write_text(json.dumps({
            "secrets": secrets,
            "oidcProviders": [{"arn": PROVIDER, "jwks": self.cluster.jwks(),
                               "issuer": self.cluster.issuer}],
            "roles": [{"arn": ROLE, "trust": [{"oidcProviderArn": PROVIDER,
                                                "subjects": subjects}]}]}))
        self.cloud.start()
        self.kube = Kube(self.cluster.kubeconfig, pool=o.creators + 8)
        self.result["kubernetes"] = self.kube.version()
        for ns in self.ns:
            self.kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        self.tracker = Tracker(self.kube)
        self.tracker.start()
        info = self.cloud.info
        args = ["--kubeconfig", str(self.cluster.kubeconfig),
                "--kms-endpoint", self.cloud.kms_url,
                "--sts-endpoint", str(info["sts_endpoint"]), *o.controller_flags()]
        env = {"SSL_CERT_FILE": str(info["ca_bundle_file"]),
               "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": PROVIDER,
               "BENCH_SIZES_OUT": str(self.sizes_file), "BENCH_HEAP_OUT": str(self.heap_file)}
        if o.heap_stats and "heap-stats" not in o.patches:
            o.patches.append("heap-stats")
        if o.heap_who:
            env["BENCH_HEAP_WHO"] = ",".join(o.heap_who)
        if o.heap_gc:
            env["BENCH_HEAP_GC"] = "1"
        env.update(o.controller_env)
        module = "controller"
        if o.patches:
            module = "bench.patched"
            env["BENCH_PATCHES"] = ",".join(o.patches)
        self.controller = ControllerProcess(self.dir, args, free_port(), free_port(),
                                            module=module, env=env)
        say(f"churn {o.objects}: python -m {module} {' '.join(o.controller_flags())}"
            + (f" (patches {','.join(o.patches)})" if o.patches else ""))
        self.controller.start()
        self.controller.wait_http(self.controller.readyz_url, 300)
        self.result["rss_mb_at_start"] = round(self._rss(), 1)

    # ------------------------------------------------------------------ one round
    def _round(self, r: int) -> dict[str, Any]:
        o = self.o
        assert self.kube is not None and self.tracker is not None
        tracker = self.tracker
        say(f"churn {o.objects}: round {r + 1}: creating {o.objects} ServiceAccounts, "
            "SecretStores and ExternalSecrets")
        start = time.monotonic()
        with ThreadPoolExecutor(o.creators) as pool:
            list(pool.map(lambda j: self._create(r, j), range(o.objects)))
        created = time.monotonic() - start
        n = o.objects
        tracker.wait(lambda: tracker.ready_count >= n, o.ready_timeout,
                     f"{n} ExternalSecrets Ready",
                     self._tick(f"round {r + 1} ready",
                                lambda: f"{tracker.ready_count}/{n} Ready"))
        ready = time.monotonic() - start
        rss_full = self._rss()
        say(f"churn {o.objects}: round {r + 1}: all Ready after {ready:.0f}s "
            f"(RSS {rss_full:.0f} MB); deleting")
        deleted_at = time.monotonic()
        self._delete_round(r)
        tracker.wait(lambda: not tracker.ready and not tracker.secret_data, o.ready_timeout,
                     "every ExternalSecret and Secret gone",
                     self._tick(f"round {r + 1} delete",
                                lambda: f"{len(tracker.ready)} ExternalSecrets, "
                                        f"{len(tracker.secret_data)} Secrets left"))
        gone = time.monotonic() - deleted_at
        self._wait_idle()
        time.sleep(o.settle)
        rss = self._rss()
        entry = {"round": r + 1, "create_seconds": round(created, 1),
                 "seconds_to_all_ready": round(ready, 1),
                 "seconds_to_all_gone": round(gone, 1),
                 "rss_mb_all_ready": round(rss_full, 1),
                 "rss_mb_settled": round(rss, 1),
                 "map_sizes": self._sizes()}
        say(f"churn {o.objects}: round {r + 1}: settled RSS {rss:.1f} MB")
        if o.heap_stats:
            if o.trim_every_round or (o.trim_probe and r == o.rounds - 1):
                self.heap_file.with_name(self.heap_file.name + ".trim").touch()
            entry["heap"] = self._heap()
            say(f"churn {o.objects}: round {r + 1}: heap "
                + json.dumps({k: v for k, v in entry["heap"].items()
                              if k not in ("top_types", "who", "after_gc")}))
        return entry

    def _create(self, r: int, j: int) -> None:
        assert self.kube is not None
        ns, name = self.ns[j % len(self.ns)], f"r{r}-{j:05d}"
        labels = {ROUND_LABEL: str(r)}
        self.kube.create(f"/api/v1/namespaces/{ns}/serviceaccounts", {
            "metadata": {"name": name, "labels": labels,
                         "annotations": {ROLE_ANNOTATION: ROLE}}})
        self.kube.create(store_path(ns), {
            "apiVersion": "alibabacloud.com/v1alpha1", "kind": "SecretStore",
            "metadata": {"name": name, "labels": labels},
            "spec": {"KMS": {"KMSAuth": {"serviceAccountRef": {"name": name}}}}})
        self.kube.create(es_path(ns), {
            "apiVersion": "alibabacloud.com/v1alpha1", "kind": "ExternalSecret",
            "metadata": {"name": name, "labels": labels},
            "spec": {"data": [{"key": secret_name(j % self.o.distinct), "name": "value",
                               "secretStoreRef": {"name": name}}]}})

    def _delete_round(self, r: int) -> None:
        """deletecollection per namespace: ExternalSecrets first (the controller lets them
        go), then once they are gone the stores and ServiceAccounts."""
        assert self.kube is not None and self.tracker is not None
        kube, tracker, query = self.kube, self.tracker, {"labelSelector": f"{ROUND_LABEL}={r}"}
        for ns in self.ns:
            kube.request("DELETE", es_path(ns), query=query, timeout=300.0)
        tracker.wait(lambda: not tracker.ready, self.o.ready_timeout,
                     "every ExternalSecret gone")
        for ns in self.ns:
            kube.request("DELETE", store_path(ns), query=query, timeout=300.0)
            kube.request("DELETE", sa_path(ns), query=query, timeout=300.0)

    # ------------------------------------------------------------------ helpers
    def _tick(self, what: str, count: Any) -> Any:
        last = [0.0]

        def tick() -> None:
            assert self.controller is not None
            self.controller.check_alive()
            if time.monotonic() - last[0] >= 15.0:
                last[0] = time.monotonic()
                say(f"churn {self.o.objects}: {what}: {count()}")
        return tick

    def _rss(self) -> float:
        assert self.controller is not None
        return probes.memory(self.controller.pid)["VmRSS"]

    def _sizes(self) -> dict[str, int]:
        try:
            loaded: dict[str, int] = json.loads(self.sizes_file.read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in sorted(loaded.items()) if v}

    def _heap(self, timeout: float = 120.0) -> dict[str, Any]:
        """SIGUSR2 to the heap-stats patch, and its answer."""
        assert self.controller is not None
        with contextlib.suppress(OSError):
            self.heap_file.unlink()
        os.kill(self.controller.pid, signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                stats: dict[str, Any] = json.loads(self.heap_file.read_text())
                return stats
            time.sleep(0.5)
        return {"error": f"no heap stats within {timeout:.0f}s"}

    def _wait_idle(self, quiet: float = 5.0, timeout: float = 600.0) -> None:
        assert self.controller is not None and self.tracker is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.controller.check_alive()
            first = probes.scrape(self.controller.metrics_url)
            time.sleep(quiet)
            second = probes.scrape(self.controller.metrics_url)
            if (second.total("ack_secret_manager_workqueue_depth") == 0
                    and second.writes() == first.writes()):
                return
        raise TimeoutError(f"the controller did not go idle within {timeout:.0f}s")

    def _verdict(self) -> None:
        rounds = self.result["rounds"]
        base = rounds[0]["rss_mb_settled"]
        for entry in rounds:
            entry["rss_vs_first_round"] = round(entry["rss_mb_settled"] / base, 3)
            entry["passed"] = entry["rss_mb_settled"] <= base * (1 + self.o.tolerance)
        self.result["passed"] = all(entry["passed"] for entry in rounds)
        assert self.controller is not None
        self.result["peak_rss_mb"] = round(probes.memory(self.controller.pid)["VmHWM"], 1)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse(argv: list[str] | None) -> ChurnOptions:
    p = argparse.ArgumentParser(prog="python -m bench.churn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--objects", type=int, default=500,
      help="ExternalSecrets (each with its SecretStore and ServiceAccount) per round")
    a("--rounds", type=int, default=3)
    a("--namespaces", type=int, default=10)
    a("--distinct", type=int, default=100, help="distinct KMS secrets read")
    a("--kms-latency", type=float, default=0.02)
    a("--polling-interval", type=float, default=60.0)
    a("--settle", type=float, default=45.0,
      help="seconds to wait after a round is gone and the controller idle, before the RSS "
           "sample (default 45: past the 20 s bound of the short-idle patch, if used)")
    a("--tolerance", type=float, default=0.10)
    a("--controller-patch", action="append", default=None, metavar="NAME",
      help="bench/patched.py patches (default: map-sizes, the shipped controller; "
           "'none' for the controller as it is)")
    a("--controller-arg", action="append", default=[], metavar="ARG")
    a("--controller-env", action="append", default=[], metavar="NAME=VALUE", type=_env,
      help="an environment variable for the controller (e.g. MALLOC_ARENA_MAX=2)")
    a("--keep-workdir", action="store_true")
    a("--heap-stats", action="store_true",
      help="after each round, what the controller's heap holds (glibc and pymalloc, objects "
           "by type), through the heap-stats patch")
    a("--heap-who", action="append", default=[], metavar="TYPE",
      help="with --heap-stats: the chain of referrers of one live object of this type name")
    a("--heap-gc", action="store_true",
      help="with --heap-stats: also the heap after a full gc.collect() (a diagnosis: the "
           "later rounds start from a collected heap)")
    a("--trim-every-round", action="store_true",
      help="with --heap-stats: malloc_trim(0) after every round (a diagnosis)")
    a("--trim-probe", action="store_true",
      help="with --heap-stats: after the last round, also call malloc_trim(0) and record the "
           "RSS after")
    a("--out", type=Path, default=None, help="the JSON (default bench/results/churn-...)")
    ns = p.parse_args(argv)
    patches = list(DEFAULT_PATCHES) if ns.controller_patch is None else \
        [x for x in ns.controller_patch if x != "none"]
    opts = ChurnOptions(objects=ns.objects, rounds=ns.rounds, namespaces=ns.namespaces,
                        distinct=ns.distinct, kms_latency=ns.kms_latency,
                        polling_interval=ns.polling_interval, settle=ns.settle,
                        tolerance=ns.tolerance, patches=patches,
                        controller_args=ns.controller_arg, keep_workdir=ns.keep_workdir,
                        heap_stats=(ns.heap_stats or ns.trim_probe or ns.heap_gc
                                    or ns.trim_every_round or bool(ns.heap_who)),
                        trim_probe=ns.trim_probe, trim_every_round=ns.trim_every_round,
                        heap_who=ns.heap_who, heap_gc=ns.heap_gc,
                        controller_env=dict(ns.controller_env))
    opts.out = ns.out  # type: ignore[attr-defined]
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    ensure_binaries()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out: Path = getattr(opts, "out", None) or RESULTS / f"churn-{opts.objects}-{stamp}.json"
    workdir = Path(tempfile.mkdtemp(prefix=f"asm-churn-{opts.objects}-"))
    started = time.monotonic()
    document: dict[str, Any] = {
        "command": "python -m bench.churn " + " ".join(sys.argv[1:] if argv is None else argv),
        "started": stamp, "machine": probes.machine(), "revision": probes.git_revision(),
        "controller_flags": opts.controller_flags(), "controller_patches": opts.patches,
        "controller_env": opts.controller_env}
    try:
        document["result"] = Churn(opts, workdir).run()
    except KeyboardInterrupt:
        say("interrupted; everything stopped")
        return 130
    finally:
        if opts.keep_workdir:
            say(f"logs kept in {workdir}")
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(workdir)
    document["bench_seconds"] = round(time.monotonic() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    result = document["result"]
    print(f"\nchurn, {opts.objects:,} ExternalSecrets + SecretStores + ServiceAccounts per "
          f"round, {opts.rounds} rounds")
    print(f"{'round':>5} {'ready s':>8} {'gone s':>7} {'RSS ready MB':>13} "
          f"{'RSS settled MB':>15} {'vs first':>9}")
    for e in result["rounds"]:
        print(f"{e['round']:>5} {e['seconds_to_all_ready']:>8} {e['seconds_to_all_gone']:>7} "
              f"{e['rss_mb_all_ready']:>13} {e['rss_mb_settled']:>15} "
              f"{e['rss_vs_first_round']:>9}{'' if e['passed'] else '  MISSED'}")
    print(f"target RSS within {opts.tolerance:.0%} of round 1: "
          f"{'met' if result['passed'] else 'MISSED'}")
    print(f"results: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
