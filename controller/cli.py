"""The `ack-secret-manager` command: parse settings, then run the controller.

Subcommands: `kms-plugin` (the KMS v2 encryption-at-rest plugin) and `reencrypt` (rewrite
stored objects under the current key). Without one, the command is the controller.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from controller import settings as settings_mod


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SUBCOMMANDS:  # anything else is the controller, flags unchanged
        return _subcommand(args[0], args[1:])
    cfg = settings_mod.load(argv)
    from controller.app import run  # imported late: --help and --version stay fast

    return run(cfg)


SUBCOMMANDS = ("kms-plugin", "reencrypt")


def _subcommand(name: str, args: list[str]) -> int:
    if name == "kms-plugin":
        from controller.kmsplugin.app import main as plugin_main

        return plugin_main(args)
    from controller.reencrypt import main as reencrypt_main

    return reencrypt_main(args)


if __name__ == "__main__":
    sys.exit(main())
