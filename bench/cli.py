"""`python -m bench --sizes 1000,5000,10000`: run every size, print the table, write the JSON."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bench import probes, report
from bench.patched import PATCHES
from bench.procs import REPO
from bench.profiling import format_summary, py_spy_path
from bench.run import PHASES, Options, run_size, say
from tests.cluster import ensure_binaries

RESULTS = Path(__file__).resolve().parent / "results"


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--sizes wants numbers like 1000,5000: {exc}") from exc
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("--sizes wants positive numbers")
    return sizes


def _phases(text: str) -> tuple[str, ...]:
    chosen = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = set(chosen) - set(PHASES)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown phases {sorted(unknown)}; known: {PHASES}")
    return chosen


def _env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--controller-env wants KEY=VALUE, got {text!r}")
    return key, value


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    a = p.add_argument
    a("--sizes", type=_sizes, default=[1000, 5000, 10000],
      help="ExternalSecret counts, one fresh test bed each (default 1000,5000,10000)")
    a("--distinct", type=int, default=1000, help="distinct KMS secrets (default 1000)")
    a("--entries", type=int, default=2, help="entries per ExternalSecret (default 2)")
    a("--namespaces", type=int, default=10, help="namespaces, one SecretStore each")
    a("--kms-latency", type=float, default=0.02, help="seconds per fake KMS call (0.02)")
    a("--polling-interval", type=float, default=60.0, help="controller flag, seconds (60)")
    a("--max-concurrent-kms-secret-pulls", dest="pulls", type=int, default=100,
      help="controller flag (100: about 95 KMS calls/s)")
    a("--workers", type=int, default=8, help="controller flag (8, its default)")
    a("--latency-samples", type=int, default=100,
      help="objects created one at a time for create-to-Secret latency (100)")
    a("--changes", type=int, default=100, help="KMS values changed at once (100)")
    a("--creators", type=int, default=16, help="threads creating the ExternalSecrets")
    a("--cold-timeout", type=float, default=900.0, help="give up on cold start after (s)")
    a("--phases", type=_phases, default=PHASES,
      help="phases after the cold start (default latency,quiet,change; '' for none)")
    a("--controller-arg", action="append", default=[], metavar="ARG",
      help="extra controller flag (repeatable), e.g. --controller-arg=--log-level=warning")
    a("--controller-env", action="append", default=[], metavar="KEY=VALUE", type=_env,
      help="extra environment variable for the controller (repeatable)")
    a("--controller-patch", action="append", default=[], choices=sorted(PATCHES),
      help="run the controller with an experimental change applied in memory "
           "(bench/patched.py; repeatable)")
    a("--profile", action="store_true",
      help="sample the controller with py-spy during the cold start, quiet poll and change")
    a("--trace-memory", action="store_true",
      help="run the controller under tracemalloc and report where its memory is (slow: "
           "for finding memory, not for timings)")
    a("--keep-workdir", action="store_true", help="keep logs (controller, fake cloud)")
    a("--results-dir", type=Path, default=RESULTS, help="where the JSON goes")
    return p.parse_args(argv)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # Ctrl-C, kill and a closed terminal all end in the same clean-up. SIGINT explicitly:
    # a shell that starts us in the background would otherwise leave it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    args.results_dir.mkdir(parents=True, exist_ok=True)
    artifacts = None
    if args.profile and py_spy_path() is None:
        print("--profile needs py-spy: pip install -r bench/requirements.txt", file=sys.stderr)
        return 2
    if args.profile or args.trace_memory:
        artifacts = args.results_dir / f"{stamp}-profiles"
        artifacts.mkdir()
    opts = Options(sizes=args.sizes, distinct=args.distinct, entries=args.entries,
                   namespaces=args.namespaces, kms_latency=args.kms_latency,
                   polling_interval=args.polling_interval, pulls=args.pulls,
                   workers=args.workers, creators=args.creators,
                   latency_samples=args.latency_samples, changes=args.changes,
                   cold_timeout=args.cold_timeout, phases=args.phases,
                   profile=args.profile, trace_memory=args.trace_memory,
                   artifacts_dir=artifacts,
                   keep_workdir=args.keep_workdir, controller_args=args.controller_arg,
                   controller_env=dict(args.controller_env),
                   patches=args.controller_patch)
    ensure_binaries()  # fail early (or build once) rather than inside the first size
    document: dict[str, Any] = {
        "command": "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv),
        "started": stamp,
        "machine": probes.machine(),
        "revision": probes.git_revision(),
        "setup": {"distinct_kms_secrets": opts.distinct, "entries_per_externalsecret":
                  opts.entries, "namespaces": opts.namespaces,
                  "kms_latency_seconds": opts.kms_latency,
                  "controller_flags": opts.controller_flags(),
                  "controller_env": opts.controller_env,
                  "controller_patches": opts.patches},
        "results": [],
    }
    out = args.results_dir / f"{stamp}.json"
    started = time.monotonic()
    try:
        for size in opts.sizes:
            t = time.monotonic()
            result = run_size(opts, size)
            result["bench_seconds"] = round(time.monotonic() - t, 1)
            document["results"].append(result)
            out.write_text(json.dumps(document, indent=2) + "\n")
            say(f"size {size}: done in {result['bench_seconds']:.0f}s")
    except KeyboardInterrupt:
        say("interrupted; everything stopped")
        return 130
    finally:
        if document["results"]:
            document["targets"] = report.targets(document["results"])
            document["bench_seconds"] = round(time.monotonic() - started, 1)
            out.write_text(json.dumps(document, indent=2) + "\n")
    results = document["results"]
    print()
    print(f"ack-secret-manager benchmark, {document['machine']['cores']} cores "
          f"({document['machine']['cpu']}), Kubernetes {results[0].get('kubernetes', '?')}, "
          f"KMS latency {opts.kms_latency * 1000:g} ms, {opts.distinct} distinct KMS secrets, "
          f"controller {' '.join(opts.controller_flags())}"
          + "".join(f", patch {p}" for p in opts.patches)
          + "".join(f", {k}={v}" for k, v in opts.controller_env.items()))
    print()
    print(report.table(results))
    print()
    for name, by_size in document["targets"].items():
        verdict = ", ".join(f"{int(s):,}: {'met' if ok else 'MISSED'}" for s, ok in by_size.items())
        print(f"target {name}: {verdict}")
    for r in results:
        for phase, summary in (r.get("profile") or {}).items():
            print()
            print(format_summary(f"profile, size {r['size']:,}, {phase}", summary))
    print(f"\nresults: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0
