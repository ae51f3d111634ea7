"""Command lines in the forms Go's `flag` package accepts, parsed by argparse.

Why: ack-secret-manager was a Go program, and its Deployments (rendered by its chart, or
written by hand) pass flags the Go way: `--x=value`, `--x value`, `-x=value`, `-x value`, a
boolean as `--x` or `--x=false` (any spelling strconv.ParseBool takes), an empty value as
`--kms-endpoint=`. argparse alone refuses `--disable-polling=false` and takes `--v=4` as an
abbreviation of `--version`. `GoFlagParser` rewrites each known flag into one `--name=value`
token before argparse sees it, never expands abbreviations, and reports a bad command line as
one line (`FlagError`) instead of a usage block.

Where Go and argparse differ on purpose: a stray positional argument is refused (Go would
stop parsing there and silently ignore every flag after it); `-h`/`--help` and `--version`
behave as in any Python command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

# strconv.ParseBool's whole vocabulary.
GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
BOOL_METAVAR = "BOOL"


class FlagError(ValueError):
    """A command line that cannot run; the text names the flag and the fix (one line)."""


def parse_go_bool(text: str) -> bool:
    """A boolean the way Go's flag package reads one (strconv.ParseBool)."""
    if text in GO_TRUE:
        return True
    if text in GO_FALSE:
        return False
    raise argparse.ArgumentTypeError(
        f"{text[:40]!r} is not a boolean; use true or false (or 1, 0, t, f)")


def parse_go_int(text: str) -> int:
    """An integer the way Go's flag.IntVar reads one (strconv.ParseInt with base 0: "10",
    "0x1f", "0o17", "017" (octal), "0b101", "1_000")."""
    body = text[1:] if text[:1] in "+-" else text
    sign = -1 if text[:1] == "-" else 1
    try:
        if len(body) > 1 and body[0] == "0" and body[1].isdigit():
            return sign * int(body[1:], 8)  # Go: a leading 0 means octal
        return sign * int(body, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None


class GoFlagParser(argparse.ArgumentParser):
    """argparse with Go's flag syntax, no abbreviations, and one-line errors (FlagError)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def add_bool(self, *names: str, default: bool, help: str | None = None,
                 dest: str | None = None) -> None:
        """A Go boolean flag: `--x` (true), `--x=<ParseBool spelling>`; never `--x false`."""
        kwargs: dict[str, Any] = {"type": parse_go_bool, "default": default,
                                  "metavar": BOOL_METAVAR, "help": help}
        if dest is not None:
            kwargs["dest"] = dest
        self.add_argument(*names, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        raw = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self.go_style(raw), namespace)

    def go_style(self, args: list[str]) -> list[str]:
        """Each known flag as one `--name=value` token (a bare boolean as `--name=true`)."""
        out: list[str] = []
        i = 0
        while i < len(args):
            token = args[i]
            i += 1
            if token == "--":
                out.extend(args[i - 1:])
                break
            action, name, value = self._known(token)
            if action is None:
                out.append(token)
            elif action.metavar == BOOL_METAVAR:
                out.append(f"{name}={'true' if value is None else value}")
            elif action.nargs == 0:  # --help, --version: no value
                out.append(token if value is None else f"{name}={value}")
            elif value is not None:
                out.append(f"{name}={value}")
            elif i < len(args):  # Go: the next argument is the value, whatever it looks like
                out.append(f"{name}={args[i]}")
                i += 1
            else:
                out.append(name)  # argparse: "expected one argument"
        return out

    def _known(self, token: str) -> tuple[argparse.Action | None, str, str | None]:
        """(action, its --long name, the =value or None) for `-x`, `--x`, `-x=v`, `--x=v`."""
        if not token.startswith("-") or token.startswith("---") or token in ("-", "--"):
            return None, "", None
        body = token[2:] if token.startswith("--") else token[1:]
        name, eq, value = body.partition("=")
        long = "--" + name
        action = self._option_string_actions.get(long)
        if action is None or len(name) < 2:
            return None, "", None
        return action, long, value if eq else None

    def error(self, message: str) -> NoReturn:
        raise FlagError(f"{message} (see {self.prog} --help)")


def one_line(prog: str, exc: BaseException) -> str:
    """The stderr line for a refused command line."""
    return f"{prog}: {' '.join(str(exc).split())}"
