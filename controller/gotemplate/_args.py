"""What every template function shares: the context it runs in and argument conversions.

Why this module exists: Go converts a function's arguments to its parameter types and
sprig converts numbers and strings leniently; these rules are written once here, with
errors that name the argument's position and kind but never its value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from ._base import LIST_SLOT, STR_OVERHEAD, FuncError, SyncBudget
from ._values import (
    INT64_MAX,
    INT64_MIN,
    Budget,
    byte_len,
    format_value,
    kind,
    wrap_int,
)


class Context(Protocol):
    max_bytes: int
    max_depth: int
    sync: SyncBudget

    def charge(self, steps: int) -> None: ...

    def reserve(self, size: int) -> None: ...

    def budget(self) -> Budget: ...


Func = Callable[[Context, list[Any]], object]


# ---- argument helpers --------------------------------------------------------------


def str_arg(args: list[Any], index: int, what: str = "") -> str:
    value = args[index]
    if not isinstance(value, str):
        raise FuncError(f"argument {index + 1}{what} must be a string, got {kind(value)}")
    return value


def int_arg(args: list[Any], index: int) -> int:
    value = args[index]
    if isinstance(value, bool) or not isinstance(value, int):
        raise FuncError(f"argument {index + 1} must be an int, got {kind(value)}")
    return value


def list_arg(args: list[Any], index: int) -> list[Any]:
    value = args[index]
    if not isinstance(value, list):
        raise FuncError(f"argument {index + 1} must be a list, got {kind(value)}")
    return value


def map_arg(args: list[Any], index: int) -> dict[str, Any]:
    value = args[index]
    if not isinstance(value, dict):
        raise FuncError(f"argument {index + 1} must be a map, got {kind(value)}")
    return value


def strval(ctx: Context, value: object) -> str:
    """sprig's string conversion: strings as they are, anything else as %v."""
    if isinstance(value, str):
        return value
    return format_value(value, ctx.max_depth, max_bytes=ctx.max_bytes, budget=ctx.sync)


def joined(ctx: Context, separator: str, parts: list[str]) -> str:
    """parts joined, refusing before building a result over the size bound, and the
    result's bytes reserved from the sync's budget before it is built."""
    chars = sum(len(p) for p in parts) + len(separator) * max(len(parts) - 1, 0)
    reserve_text(ctx, chars, separator, *parts)
    total = sum(byte_len(p) for p in parts) + byte_len(separator) * max(len(parts) - 1, 0)
    check_size(ctx, total)
    return separator.join(parts)


def reserve_text(ctx: Context, chars: int, *inputs: str) -> None:
    """Reserve a str of ``chars`` characters made from ``inputs`` (one byte a character when
    they are all ASCII, else four: CPython's widest form), before it is built. Refuses a
    result over the size bound first (a character is at least one byte)."""
    check_size(ctx, chars)
    ctx.reserve(chars * (1 if all(i.isascii() for i in inputs) else 4) + STR_OVERHEAD)


def reserve_list(ctx: Context, items: int) -> None:
    """Reserve a new list of ``items`` slots (its elements already exist), before it is built."""
    ctx.charge(items // 16)
    ctx.reserve(64 + LIST_SLOT * items)


def strslice(ctx: Context, value: object) -> list[str]:
    if isinstance(value, list):
        reserve_list(ctx, len(value))
        return [strval(ctx, v) for v in value if v is not None]
    if value is None:
        return []
    return [strval(ctx, value)]


def to_int64(value: object) -> int:
    """spf13/cast ToInt64 as sprig uses it: lenient, 0 when a string is not a number."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return INT64_MIN
        return wrap_int(int(value))
    if isinstance(value, str):
        text = value
        if "." in text and text.rstrip("0").endswith("."):
            text = text.rstrip("0")[:-1]
        try:
            number = int(text.replace("_", "") if not text.startswith("_") else "x", 0)
        except ValueError:
            number = _octal_or_zero(text)
        return number if INT64_MIN <= number <= INT64_MAX else 0
    return 0


def _octal_or_zero(text: str) -> int:
    body = text.lstrip("+-")
    if len(body) > 1 and body.startswith("0") and body.isdigit() and all(c < "8" for c in body):
        return -int(body, 8) if text.startswith("-") else int(body, 8)
    return 0


def to_float64(value: object) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return 0.0
        if value != value.strip() or "_" in value:
            return 0.0
        spelled_out = value.strip("+-").lower() in ("inf", "infinity", "nan")
        return number if not math.isinf(number) or spelled_out else 0.0  # overflow: Go errs
    return 0.0


def deep_equal(ctx: Context, a: object, b: object) -> bool:
    """reflect.DeepEqual on template values: kinds must match. Each node costs a step."""
    ctx.charge(1)
    if kind(a) != kind(b):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(
            deep_equal(ctx, x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(deep_equal(ctx, a[k], b[k]) for k in a)
    return a == b


def check_size(ctx: Context, size: int) -> None:
    if size > ctx.max_bytes:
        raise FuncError(f"result larger than {ctx.max_bytes} bytes")


# unicode.IsSpace: ASCII and Latin-1 spaces plus the Unicode White_Space characters
GO_SPACES = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
DROP_SPACES = {ord(c): None for c in GO_SPACES}


def is_go_space(char: str) -> bool:
    return char in GO_SPACES
