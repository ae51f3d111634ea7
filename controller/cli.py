"""The `ack-secret-manager` command: parse settings, then run the controller."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from controller import settings as settings_mod


def main(argv: Sequence[str] | None = None) -> int:
    cfg = settings_mod.load(argv)
    from controller.app import run  # imported late: --help and --version stay fast

    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
