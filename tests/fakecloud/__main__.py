"""Run the fake cloud as its own process, for demos and benchmarks.

    python -m tests.fakecloud --secrets secrets.yaml --latency 0.02 --access-key AK:SK:alice

Prints one JSON line (endpoints, CA paths, admin_url) on stdout, then serves
until SIGTERM or SIGINT and cleans up its temp dir. The admin API always runs.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType

from . import seed
from .cloud import FakeCloud


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fakecloud", description=__doc__)
    parser.add_argument("--secrets", help="secrets file (YAML), format in the package doc")
    parser.add_argument(
        "--latency", type=float, default=None, help="seconds added to each KMS call"
    )
    parser.add_argument(
        "--access-key",
        action="append",
        default=[],
        metavar="ID:SECRET[:IDENTITY]",
        help="an AccessKey (identity defaults to the id); repeatable",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with FakeCloud(admin=True) as cloud:
        if args.secrets:
            seed.load_file(cloud, args.secrets)
        for spec in args.access_key:
            parts = spec.split(":")
            if len(parts) not in (2, 3) or not all(parts):
                print(f"--access-key wants ID:SECRET[:IDENTITY], got {spec!r}", file=sys.stderr)
                return 2
            cloud.add_access_key(parts[0], parts[1], parts[2] if len(parts) == 3 else parts[0])
        if args.latency is not None:
            cloud.latency = args.latency
        print(json.dumps(cloud.endpoints()), flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
