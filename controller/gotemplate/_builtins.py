"""Go text/template's own functions: comparisons, index, slice, len, print and escapers.

Why this module exists: these follow Go's documented rules (eq on several arguments,
no comparison across kinds, print's spacing), which differ from Python's, so they are
kept together and apart from sprig's.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from ._args import Context, int_arg, joined, reserve_list, reserve_text, str_arg, strval
from ._base import STR_OVERHEAD, FuncError
from ._printf import sprintf
from ._values import (
    StringMap,
    byte_len,
    from_bytes,
    go_bytes,
    kind,
    truth,
)

# ---- Go builtins -------------------------------------------------------------------


def f_not(ctx: Context, args: list[Any]) -> object:
    return not truth(args[0])


def f_len(ctx: Context, args: list[Any]) -> object:
    value = args[0]
    if isinstance(value, str):
        return byte_len(value)
    if isinstance(value, list | dict):
        return len(value)
    raise FuncError(f"len of type {kind(value)}")


def f_index(ctx: Context, args: list[Any]) -> object:
    item = args[0]
    for position, key in enumerate(args[1:], start=2):
        item = _index_one(item, key, position)
    return item


def _index_one(item: object, key: object, position: int) -> object:
    if item is None:
        raise FuncError("index of untyped nil")
    if isinstance(item, dict):
        if not isinstance(key, str):
            raise FuncError(f"index {position - 1}: a map key must be a string, got {kind(key)}")
        if key in item:
            return item[key]
        return "" if isinstance(item, StringMap) else None
    if isinstance(item, list | str):
        if isinstance(key, bool) or not isinstance(key, int):
            raise FuncError(f"index {position - 1}: cannot index with {kind(key)}")
        if isinstance(item, str) and item.isascii():  # a byte is a character: no copy
            if not 0 <= key < len(item):
                raise FuncError(f"index {position - 1} out of range")
            return ord(item[key])
        sequence: list[Any] | bytes = item if isinstance(item, list) else go_bytes(item)
        if not 0 <= key < len(sequence):
            raise FuncError(f"index {position - 1} out of range")
        return sequence[key]
    raise FuncError(f"can't index item of type {kind(item)}")


def f_slice(ctx: Context, args: list[Any]) -> object:
    item = args[0]
    if not isinstance(item, list | str):
        raise FuncError(f"can't slice item of type {kind(item)}")
    if isinstance(item, list):
        reserve_list(ctx, len(item))
    else:
        reserve_text(ctx, 3 * len(item), item)  # the bytes, the part, the part decoded
    sequence: list[Any] | bytes = item if isinstance(item, list) else go_bytes(item)
    bounds = [int_arg(args, i) for i in range(1, len(args))]
    if len(bounds) == 3 and isinstance(item, str):
        raise FuncError("cannot 3-index slice a string")
    start = bounds[0] if bounds else 0
    end = bounds[1] if len(bounds) > 1 else len(sequence)
    cap = bounds[2] if len(bounds) > 2 else len(sequence)
    if not 0 <= start <= end <= cap <= len(sequence):
        raise FuncError("slice index out of range")
    part = sequence[start:end]
    return list(part) if isinstance(part, list) else from_bytes(part)


def f_print(ctx: Context, args: list[Any]) -> object:
    reserve_list(ctx, 2 * len(args))
    out: list[str] = []
    for position, arg in enumerate(args):
        if position and not isinstance(arg, str) and not isinstance(args[position - 1], str):
            out.append(" ")
        out.append(strval(ctx, arg))
    return joined(ctx, "", out)


def f_println(ctx: Context, args: list[Any]) -> object:
    reserve_list(ctx, len(args))
    line = joined(ctx, " ", [strval(ctx, arg) for arg in args])
    reserve_text(ctx, len(line) + 1, line)
    return line + "\n"


def f_printf(ctx: Context, args: list[Any]) -> object:
    reserve_list(ctx, len(args))
    return sprintf(str_arg(args, 0), list(args[1:]), ctx.max_depth, ctx.max_bytes, ctx.sync)


def _text_of_args(ctx: Context, args: list[Any]) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return str(args[0])
    return str(f_print(ctx, args))


_HTML_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;", "\0": "\ufffd"}
)


def f_html(ctx: Context, args: list[Any]) -> object:
    text = _text_of_args(ctx, args)
    reserve_text(ctx, 2 * 5 * len(text), text)  # "&#34;" for '"'; translate's buffer
    return text.translate(_HTML_ESCAPES)


def f_urlquery(ctx: Context, args: list[Any]) -> object:
    text = _text_of_args(ctx, args)
    # the UTF-8 bytes (up to four a character), a list slot and %XX per byte, and the join
    ctx.reserve(48 * len(text) + 256)
    return urllib.parse.quote_plus(go_bytes(text), safe="")


_BASIC = ("bool", "int", "float64", "string")


def _comparable_kinds(a: object, b: object, ordered: bool) -> tuple[str, str]:
    ka, kb = kind(a), kind(b)
    if ordered and (ka not in _BASIC[1:] or kb not in _BASIC[1:]):
        raise FuncError("invalid type for comparison")
    if ka in _BASIC and kb in _BASIC and ka != kb:
        raise FuncError(f"incompatible types for comparison: {ka} and {kb}")
    return ka, kb


def f_eq(ctx: Context, args: list[Any]) -> object:
    if len(args) < 2:
        raise FuncError("missing argument for comparison")
    first = args[0]
    for other in args[1:]:
        ka, kb = _comparable_kinds(first, other, ordered=False)
        if ka == "nil" or kb == "nil":
            if ka == kb:
                return True
            continue
        if ka not in _BASIC or kb not in _BASIC:
            raise FuncError(f"non-comparable types {ka} and {kb}")
        if first == other:
            return True
    return False


def f_ne(ctx: Context, args: list[Any]) -> object:
    return not f_eq(ctx, args)


def f_lt(ctx: Context, args: list[Any]) -> object:
    a, b = args
    _comparable_kinds(a, b, ordered=True)
    if isinstance(a, str):
        ctx.reserve(4 * (len(a) + len(b)) + 2 * STR_OVERHEAD)  # both as bytes, compared
        ctx.charge((len(a) + len(b)) // 256)
        return go_bytes(a) < go_bytes(b)
    return bool(a < b)


def f_le(ctx: Context, args: list[Any]) -> object:
    return bool(f_lt(ctx, args)) or bool(f_eq(ctx, args))


def f_gt(ctx: Context, args: list[Any]) -> object:
    return not f_le(ctx, args)


def f_ge(ctx: Context, args: list[Any]) -> object:
    return not f_lt(ctx, args)
