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
    reserve_list,
    reserve_text,
    str_arg,
    strslice,
    strval,
)
from ._base import DICT_SLOT, LIST_SLOT, STR_OVERHEAD, FuncError
from ._values import (
    StringMap,
    byte_len,
    from_bytes,
    go_bytes,
    go_quote,
    quote_cost,
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


def _mapped(ctx: Context, text: str, convert: Callable[[str], str]) -> str:
    # the whole converted text, and when a character expands, a list of characters too
    ctx.reserve(2 * (4 * len(text) + STR_OVERHEAD) + (LIST_SLOT + 80) * len(text)
                if not text.isascii() else len(text) + STR_OVERHEAD)
    return _rune_map(text, convert)


def f_upper(ctx: Context, args: list[Any]) -> object:
    return _mapped(ctx, str_arg(args, 0), str.upper)


def f_lower(ctx: Context, args: list[Any]) -> object:
    return _mapped(ctx, str_arg(args, 0), str.lower)


def _is_separator(char: str) -> bool:
    if char.isascii():
        return not (char.isalnum() or char == "_")
    if char.isalpha() or char.isdigit():
        return False
    return is_go_space(char)


def f_title(ctx: Context, args: list[Any]) -> object:
    text = str_arg(args, 0)
    ctx.charge(len(text) // 32)  # a loop over every character
    # a list of one-character strings (cached when Latin-1, else new), then their join
    ctx.reserve(len(text) * (LIST_SLOT + (0 if text.isascii() else 80)) +
                4 * len(text) + STR_OVERHEAD)
    out = []
    previous = " "
    for char in text:
        titled = char.title() if _is_separator(previous) else char
        out.append(titled if len(titled) == 1 else char)
        previous = char
    return "".join(out)


def _part(ctx: Context, text: str) -> str:
    """Reserve a part of ``text`` (at most its size) before it is cut."""
    reserve_text(ctx, len(text), text)
    return text


def f_trim(ctx: Context, args: list[Any]) -> object:
    return _part(ctx, str_arg(args, 0)).strip(GO_SPACES)


def f_trim_all(ctx: Context, args: list[Any]) -> object:
    return _part(ctx, str_arg(args, 1)).strip(str_arg(args, 0))


def f_trim_prefix(ctx: Context, args: list[Any]) -> object:
    return _part(ctx, str_arg(args, 1)).removeprefix(str_arg(args, 0))


def f_trim_suffix(ctx: Context, args: list[Any]) -> object:
    return _part(ctx, str_arg(args, 1)).removesuffix(str_arg(args, 0))


def f_nospace(ctx: Context, args: list[Any]) -> object:
    text = str_arg(args, 0)
    # str.translate builds through a buffer that may grow to twice the result
    reserve_text(ctx, 2 * len(text), text)
    return text.translate(DROP_SPACES)


def f_replace(ctx: Context, args: list[Any]) -> object:
    old, new, text = str_arg(args, 0), str_arg(args, 1), str_arg(args, 2)
    count = text.count(old) if old else len(text) + 1
    ctx.charge(len(text) // 256)
    check_size(ctx, byte_len(text) + count * (byte_len(new) - byte_len(old)))
    reserve_text(ctx, len(text) + count * max(len(new) - len(old), 0), text, new)
    return text.replace(old, new)


def f_repeat(ctx: Context, args: list[Any]) -> object:
    count, text = int_arg(args, 0), str_arg(args, 1)
    if count < 0:
        raise FuncError("negative repeat count")
    check_size(ctx, count * byte_len(text))
    reserve_text(ctx, count * len(text), text)
    return text * count


def f_substr(ctx: Context, args: list[Any]) -> object:
    start, end, text = int_arg(args, 0), int_arg(args, 1), str_arg(args, 2)
    reserve_text(ctx, 3 * len(text), text)  # the bytes, the part, the part decoded
    data = go_bytes(text)
    if start < 0:
        part = data[:end] if end >= 0 else data[: len(data) + end]
    elif end < 0 or end > len(data):
        part = data[start:]
    else:
        part = data[start:end]
    return from_bytes(part)


def f_trunc(ctx: Context, args: list[Any]) -> object:
    count, text = int_arg(args, 0), str_arg(args, 1)
    reserve_text(ctx, 3 * len(text), text)  # the bytes, the part, the part decoded
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


def _quoted(ctx: Context, text: str) -> str:
    ctx.reserve(quote_cost(text))
    return go_quote(text)


def _squoted(ctx: Context, text: str) -> str:
    reserve_text(ctx, len(text) + 2, text)
    return "'" + text + "'"


def f_quote(ctx: Context, args: list[Any]) -> object:
    reserve_list(ctx, len(args))
    return joined(ctx, " ", [_quoted(ctx, strval(ctx, a)) for a in args if a is not None])


def f_squote(ctx: Context, args: list[Any]) -> object:
    reserve_list(ctx, len(args))
    return joined(ctx, " ", [_squoted(ctx, strval(ctx, a)) for a in args if a is not None])


def f_cat(ctx: Context, args: list[Any]) -> object:
    reserve_list(ctx, len(args))
    return joined(ctx, " ", [strval(ctx, a) for a in args if a is not None])


def f_indent(ctx: Context, args: list[Any]) -> object:
    count, text = int_arg(args, 0), str_arg(args, 1)
    if count < 0:
        raise FuncError("negative indent")
    lines = text.count("\n") + 1
    check_size(ctx, byte_len(text) + count * lines)
    reserve_text(ctx, count + len(text) + (count + 1) * lines, text)  # pad, result
    pad = " " * count
    return pad + text.replace("\n", "\n" + pad)


def f_nindent(ctx: Context, args: list[Any]) -> object:
    indented = str(f_indent(ctx, args))
    reserve_text(ctx, len(indented) + 1, indented)
    return "\n" + indented


def f_to_string(ctx: Context, args: list[Any]) -> object:
    return strval(ctx, args[0])


def f_to_strings(ctx: Context, args: list[Any]) -> object:
    value = args[0]
    if isinstance(value, list):
        reserve_list(ctx, len(value))
        return [strval(ctx, v) for v in value]
    reserve_list(ctx, 1)
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


def _reserve_split(ctx: Context, text: str, sep: str, limit: int, as_map: bool) -> None:
    """Count the parts before splitting (no copy is made to count them) and reserve the
    parts, the list and, for split's map, a key and a slot per part."""
    count = len(text) if sep == "" else text.count(sep) + 1
    if limit > 0:
        count = min(count, limit)
    elif limit == 0:
        count = 0
    ctx.charge(count // 16 + len(text) // 256)
    per_part = LIST_SLOT + STR_OVERHEAD + (DICT_SLOT + STR_OVERHEAD + 8 if as_map else 0)
    chars = 0
    if sep == "":  # a list of every character first (whatever the limit), then the parts
        chars = len(text) * (LIST_SLOT + (0 if text.isascii() else STR_OVERHEAD))
    ctx.reserve(count * per_part + chars + (1 if text.isascii() else 4) * len(text) + 64)


def f_split(ctx: Context, args: list[Any]) -> object:
    text, sep = str_arg(args, 1), str_arg(args, 0)
    _reserve_split(ctx, text, sep, -1, True)
    parts = _go_split(text, sep)
    return StringMap({f"_{i}": part for i, part in enumerate(parts)})


def f_splitn(ctx: Context, args: list[Any]) -> object:
    text, sep, limit = str_arg(args, 2), str_arg(args, 0), int_arg(args, 1)
    _reserve_split(ctx, text, sep, limit, True)
    parts = _go_split(text, sep, limit)
    return StringMap({f"_{i}": part for i, part in enumerate(parts)})


def f_split_list(ctx: Context, args: list[Any]) -> object:
    text, sep = str_arg(args, 1), str_arg(args, 0)
    _reserve_split(ctx, text, sep, -1, False)
    return _go_split(text, sep)


def f_join(ctx: Context, args: list[Any]) -> object:
    return joined(ctx, str_arg(args, 0), strslice(ctx, args[1]))


def f_sort_alpha(ctx: Context, args: list[Any]) -> object:
    items = strslice(ctx, args[0])
    # the sorted list, and a bytes copy of each item for the order
    reserve_list(ctx, 2 * len(items))
    ctx.reserve(sum(4 * len(i) + STR_OVERHEAD for i in items))
    return sorted(items, key=go_bytes)
