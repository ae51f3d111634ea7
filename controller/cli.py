"""The `ack-secret-manager` command: parse settings, then run the controller.

Subcommands: `kms-plugin` (the KMS v2 encryption-at-rest plugin) and `reencrypt` (rewrite
stored objects under the current key). Without one, the command is the controller. A bad
command line or flag value, in any of them, is one stderr line naming the flag, and exit 2,
before anything is contacted.

`entrypoint` (the installed command and `python -m controller`) exits the process as soon as
the command's own orderly stop has returned, without waiting for threads or exit handlers
that libraries left behind: Python joins every non-daemon thread at exit, and the Alibaba
credentials library runs its background refreshes on a ThreadPoolExecutor whose threads are
joined then, so a refresh in flight (an STS call with its own timeouts) could otherwise hold a
stopping Pod past its grace period. What the controller must clean up it does itself first.

`main` first limits glibc to two malloc arenas (controller/ops/memory.py), so that memory
freed after a burst of work is reused by every thread rather than kept per thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from controller import settings as settings_mod
from controller.goflags import one_line
from controller.ops.memory import limit_malloc_arenas


def main(argv: Sequence[str] | None = None) -> int:
    limit_malloc_arenas()  # before any thread: see controller/ops/memory.py
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:  # anything else is the controller, flags unchanged
        return _subcommand(args[0], args[1:])
    try:
        cfg = settings_mod.load(args)
    except settings_mod.FlagError as exc:
        print(one_line("ack-secret-manager", exc), file=sys.stderr, flush=True)
        return 2
    from controller.app import run  # imported late: --help and --version stay fast

    return run(cfg)


SUBCOMMANDS = ("kms-plugin", "reencrypt")


def entrypoint() -> NoReturn:
    """`main()`, then exit at once with its code (--help and --version exit through
    argparse as usual, and a flag error returns 2, before any thread exists)."""
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _subcommand(name: str, args: list[str]) -> int:
    if name == "kms-plugin":
        from controller.kmsplugin.app import main as plugin_main

        return plugin_main(args)
    from controller.reencrypt import main as reencrypt_main

    return reencrypt_main(args)


if __name__ == "__main__":
    entrypoint()
