"""sprig's string functions, with Go's rune-by-rune case mapping and byte-based indexes.

Why this module exists: templates mostly reshape text (trim, replace, quote, indent,
split); each function here follows sprig's argument order (the string last, for
pipelines) and bounds the size of what it builds before building it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._args import (
    DROP_SPACES,
    GO_SPACES,
    Context,
    check_size,
    int_arg,
    is_go_space,
    joined,
    str_arg,
    strslice,
    strval,
)
from ._base import FuncError
from ._values import (
    StringMap,
    byte_len,
    from_bytes,
    go_bytes,
    go_quote,
)

# ---- sprig: strings ----------------------------------------------------------------


def _rune_map(text: str, convert: Callable[[str], str]) -> str:
    """Go maps case rune by rune; Python's full mapping may expand a character."""
    whole = convert(text)
    if len(whole) == len(text):
        return whole
    out = []
    for char in text:
        mapped = convert(char)
        out.append(mapped if len(mapped) == 1 else char)
    return "".join(out)


def f_upper(ctx: Context, args: list[Any]) -> object:
    return _rune_map(str_arg(args, 0), str.upper)


def f_lower(ctx: Context, args: list[Any]) -> object:
    return _rune_map(str_arg(args, 0), str.lower)


def _is_separator(char: str) -> bool:
    if char.isascii():
        return not (char.isalnum() or char == "_")
    if char.isalpha() or char.isdigit():
        return False
    return is_go_space(char)


def f_title(ctx: Context, args: list[Any]) -> object:
    text = str_arg(args, 0)
    ctx.charge(len(text) // 32)  # a loop over every character
    out = []
    previous = " "
    for char in text:
        titled = char.title() if _is_separator(previous) else char
        out.append(titled if len(titled) == 1 else char)
        previous = char
    return "".join(out)


def f_trim(ctx: Context, args: list[Any]) -> object:
    return str_arg(args, 0).strip(GO_SPACES)


def f_trim_all(ctx: Context, args: list[Any]) -> object:
    return str_arg(args, 1).strip(str_arg(args, 0))


def f_trim_prefix(ctx: Context, args: list[Any]) -> object:
    return str_arg(args, 1).removeprefix(str_arg(args, 0))


def f_trim_suffix(ctx: Context, args: list[Any]) -> object:
    return str_arg(args, 1).removesuffix(str_arg(args, 0))


def f_nospace(ctx: Context, args: list[Any]) -> object:
    return str_arg(args, 0).translate(DROP_SPACES)


def f_replace(ctx: Context, args: list[Any]) -> object:
    old, new, text = str_arg(args, 0), str_arg(args, 1), str_arg(args, 2)
    count = text.count(old) if old else len(text) + 1
    check_size(ctx, byte_len(text) + count * (byte_len(new) - byte_len(old)))
    return text.replace(old, new)


def f_repeat(ctx: Context, args: list[Any]) -> object:
    count, text = int_arg(args, 0), str_arg(args, 1)
    if count < 0:
        raise FuncError("negative repeat count")
    check_size(ctx, count * byte_len(text))
    return text * count


def f_substr(ctx: Context, args: list[Any]) -> object:
    start, end, data = int_arg(args, 0), int_arg(args, 1), go_bytes(str_arg(args, 2))
    if start < 0:
        part = data[:end] if end >= 0 else data[: len(data) + end]
    elif end < 0 or end > len(data):
        part = data[start:]
    else:
        part = data[start:end]
    return from_bytes(part)


def f_trunc(ctx: Context, args: list[Any]) -> object:
    count, text = int_arg(args, 0), str_arg(args, 1)
    data = go_bytes(text)
    if count < 0 and len(data) + count > 0:
        return from_bytes(data[len(data) + count :])
    if count >= 0 and len(data) > count:
        return from_bytes(data[:count])
    return text


def f_contains(ctx: Context, args: list[Any]) -> object:
    return str_arg(args, 0) in str_arg(args, 1)


def f_has_prefix(ctx: Context, args: list[Any]) -> object:
    return str_arg(args, 1).startswith(str_arg(args, 0))


def f_has_suffix(ctx: Context, args: list[Any]) -> object:
    return str_arg(args, 1).endswith(str_arg(args, 0))


def f_quote(ctx: Context, args: list[Any]) -> object:
    return joined(ctx, " ", [go_quote(strval(ctx, a)) for a in args if a is not None])


def f_squote(ctx: Context, args: list[Any]) -> object:
    return joined(ctx, " ", ["'" + strval(ctx, a) + "'" for a in args if a is not None])


def f_cat(ctx: Context, args: list[Any]) -> object:
    return joined(ctx, " ", [strval(ctx, a) for a in args if a is not None])


def f_indent(ctx: Context, args: list[Any]) -> object:
    count, text = int_arg(args, 0), str_arg(args, 1)
    if count < 0:
        raise FuncError("negative indent")
    check_size(ctx, byte_len(text) + count * (text.count("\n") + 1))
    pad = " " * count
    return pad + text.replace("\n", "\n" + pad)


def f_nindent(ctx: Context, args: list[Any]) -> object:
    return "\n" + str(f_indent(ctx, args))


def f_to_string(ctx: Context, args: list[Any]) -> object:
    return strval(ctx, args[0])


def f_to_strings(ctx: Context, args: list[Any]) -> object:
    value = args[0]
    if isinstance(value, list):
        return [strval(ctx, v) for v in value]
    return [strval(ctx, value)]


def _go_split(text: str, sep: str, limit: int = -1) -> list[str]:
    if limit == 0:
        return []
    if sep == "":
        chars = list(text)
        if 0 < limit < len(chars):
            return [*chars[: limit - 1], "".join(chars[limit - 1 :])]
        return chars
    return text.split(sep, limit - 1 if limit > 0 else -1)


def f_split(ctx: Context, args: list[Any]) -> object:
    parts = _go_split(str_arg(args, 1), str_arg(args, 0))
    return StringMap({f"_{i}": part for i, part in enumerate(parts)})


def f_splitn(ctx: Context, args: list[Any]) -> object:
    parts = _go_split(str_arg(args, 2), str_arg(args, 0), int_arg(args, 1))
    return StringMap({f"_{i}": part for i, part in enumerate(parts)})


def f_split_list(ctx: Context, args: list[Any]) -> object:
    return _go_split(str_arg(args, 1), str_arg(args, 0))


def f_join(ctx: Context, args: list[Any]) -> object:
    return joined(ctx, str_arg(args, 0), strslice(ctx, args[1]))


def f_sort_alpha(ctx: Context, args: list[Any]) -> object:
    return sorted(strslice(ctx, args[0]), key=go_bytes)
