"""sprig's encodings, defaults, lists, maps and numbers, and ack-secret-manager's additions.

Why this module exists: these functions turn secret values into structured data and back
(JSON, YAML, base64, PEM), and build or query lists and maps; every decoder's error is
replaced by one that does not quote the input, and every result is bounded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zlib
from typing import Any

import yaml

from ._args import (
    GO_SPACES,
    Context,
    check_size,
    deep_equal,
    list_arg,
    map_arg,
    reserve_list,
    str_arg,
    strval,
    to_float64,
    to_int64,
)
from ._base import DICT_SLOT, LIST_SLOT, STR_OVERHEAD, FuncError
from ._values import (
    INT64_MAX,
    INT64_MIN,
    JSON_PARSE_FACTOR,
    StringMap,
    byte_len,
    from_bytes,
    go_bytes,
    import_value,
    kind,
    load_yaml,
    to_json,
    to_yaml,
    truth,
    wrap_int,
)

# ---- sprig: encodings --------------------------------------------------------------


def _reserve_codec(ctx: Context, text: str, factor: float) -> None:
    """The UTF-8 bytes of ``text`` (up to four a character), the coded bytes (``factor``
    times as many) and their text."""
    size = len(text) * (1 if text.isascii() else 4)
    ctx.charge(size // 256)
    check_size(ctx, int(size * factor))
    ctx.reserve(size + int(size * factor) * 2 + 2 * STR_OVERHEAD)


def f_b64enc(ctx: Context, args: list[Any]) -> object:
    text = str_arg(args, 0)
    _reserve_codec(ctx, text, 4 / 3 + 0.01)
    return base64.b64encode(go_bytes(text)).decode("ascii")


def f_b64dec(ctx: Context, args: list[Any]) -> object:
    text = str_arg(args, 0)
    _reserve_codec(ctx, text, 1)
    try:
        return from_bytes(base64.b64decode(go_bytes(text), validate=True))
    except (binascii.Error, ValueError):
        raise FuncError("the value is not valid base64") from None


def f_b32enc(ctx: Context, args: list[Any]) -> object:
    text = str_arg(args, 0)
    _reserve_codec(ctx, text, 8 / 5 + 0.01)
    return base64.b32encode(go_bytes(text)).decode("ascii")


def f_b32dec(ctx: Context, args: list[Any]) -> object:
    text = str_arg(args, 0)
    _reserve_codec(ctx, text, 1)
    try:
        return from_bytes(base64.b32decode(go_bytes(text)))
    except (binascii.Error, ValueError):
        raise FuncError("the value is not valid base32") from None


def f_to_json(ctx: Context, args: list[Any]) -> object:
    return to_json(args[0], ctx.max_depth, ctx.budget())


def f_to_pretty_json(ctx: Context, args: list[Any]) -> object:
    return to_json(args[0], ctx.max_depth, ctx.budget(), indent="  ")


def f_to_raw_json(ctx: Context, args: list[Any]) -> object:
    return to_json(args[0], ctx.max_depth, ctx.budget(), escape_html=False)


def _reject_constant(name: str) -> object:
    raise ValueError(name)


def _reserve_json(ctx: Context, text: str) -> None:
    """A JSON parse's objects, at the measured worst per character, before parsing."""
    ctx.charge(len(text) // 64)
    ctx.reserve(JSON_PARSE_FACTOR * len(text) * (1 if text.isascii() else 4))


def f_from_json(ctx: Context, args: list[Any]) -> object:
    text = str_arg(args, 0)
    _reserve_json(ctx, text)
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise FuncError("the value is not valid JSON") from None
    return import_value(document, ctx.max_depth, ctx.budget(), numbers_as_float=True)


def f_from_yaml(ctx: Context, args: list[Any]) -> object:
    text = str_arg(args, 0)
    ctx.charge(byte_len(text) // 16)  # YAML parsing is costly: pay before starting
    try:
        document = load_yaml(text, ctx.sync)  # its bytes, aliases expanded, reserved first
    except (yaml.YAMLError, RecursionError, ValueError):
        raise FuncError("the value is not valid YAML") from None
    return import_value(document, ctx.max_depth, ctx.budget(), numbers_as_float=True)


def f_to_yaml(ctx: Context, args: list[Any]) -> object:
    return to_yaml(args[0], ctx.max_depth, ctx.budget())


def _hashed(ctx: Context, text: str) -> bytes:
    _reserve_codec(ctx, text, 0)  # the UTF-8 copy hashed
    return go_bytes(text)


def f_sha1sum(ctx: Context, args: list[Any]) -> object:
    return hashlib.sha1(_hashed(ctx, str_arg(args, 0)), usedforsecurity=False).hexdigest()


def f_sha256sum(ctx: Context, args: list[Any]) -> object:
    return hashlib.sha256(_hashed(ctx, str_arg(args, 0))).hexdigest()


def f_adler32sum(ctx: Context, args: list[Any]) -> object:
    return str(zlib.adler32(_hashed(ctx, str_arg(args, 0))))


def f_filter_pem(ctx: Context, args: list[Any]) -> object:
    """ESO's filterPEM: the PEM blocks of one type, in order, each re-encoded."""
    wanted, text = str_arg(args, 0), str_arg(args, 1)
    count = text.count("\n") + 1
    ctx.charge(count // 8)
    # the lines (a slot and a str each), their bodies, decoded blocks, the re-encoded output
    ctx.reserve(count * (2 * LIST_SLOT + 2 * STR_OVERHEAD) + 6 * 4 * len(text))
    out: list[str] = []
    for block_type, body in _pem_blocks(text):
        if block_type == wanted:
            encoded = base64.b64encode(body).decode("ascii")
            lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
            out.append(f"-----BEGIN {block_type}-----\n" + "".join(
                line + "\n" for line in lines) + f"-----END {block_type}-----\n")
    return "".join(out)


def _pem_blocks(text: str) -> list[tuple[str, bytes]]:
    blocks: list[tuple[str, bytes]] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if not (line.startswith("-----BEGIN ") and line.endswith("-----")):
            continue
        block_type = line[len("-----BEGIN ") : -len("-----")]
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != f"-----END {block_type}-----":
            if ":" not in lines[index]:
                body.append(lines[index].strip())
            index += 1
        if index >= len(lines):
            break
        index += 1
        try:
            blocks.append((block_type, base64.b64decode("".join(body), validate=True)))
        except (binascii.Error, ValueError):
            continue
    return blocks


# ---- ack-secret-manager v0.6 additions ---------------------------------------------


def _json_or_none(ctx: Context, text: str) -> tuple[bool, Any]:
    _reserve_json(ctx, text)
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return False, None
    return True, import_value(document, ctx.max_depth, ctx.budget(), numbers_as_float=True)


def f_json_path(ctx: Context, args: list[Any]) -> object:
    """ack's jsonPath: a dot-separated path into a JSON document, "" when not found."""
    ok, current = _json_or_none(ctx, str_arg(args, 0))
    path = str_arg(args, 1)
    if not ok:
        return ""
    if path == "":
        return current
    reserve_list(ctx, path.count(".") + 1)
    ctx.reserve((path.count(".") + 1) * STR_OVERHEAD + len(path))
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isascii() and part.lstrip("+-").isdigit() and (
            0 <= int(part) < len(current)
        ):
            current = current[int(part)]
        else:
            return ""
    return current


def _deep_merge(ctx: Context, base: dict[str, Any], override: dict[str, Any],
                depth: int) -> dict[str, Any]:
    if depth <= 0:
        raise FuncError("documents nested too deeply to merge")
    ctx.reserve(64 + (len(base) + len(override)) * DICT_SLOT)
    merged = dict(base)
    for key, value in override.items():
        if isinstance(base.get(key), dict) and isinstance(value, dict):
            merged[key] = _deep_merge(ctx, base[key], value, depth - 1)
        else:
            merged[key] = value
    return merged


def f_merge_json(ctx: Context, args: list[Any]) -> object:
    """ack's mergeJson: deep-merge two JSON objects; the base unchanged if either is not one."""
    base_text = str_arg(args, 0)
    ok_base, base = _json_or_none(ctx, base_text)
    ok_over, override = _json_or_none(ctx, str_arg(args, 1))
    if not ok_base or not ok_over:
        return base_text
    base = {} if base is None else base
    override = {} if override is None else override
    if not isinstance(base, dict) or not isinstance(override, dict):
        return base_text
    return to_json(_deep_merge(ctx, base, override, ctx.max_depth), ctx.max_depth,
                   ctx.budget())


def f_parse_key_value(ctx: Context, args: list[Any]) -> object:
    """ack's parseKeyValue: key=value lines (blank lines and # comments skipped) as a map."""
    result = StringMap()
    text = str_arg(args, 0)
    count = text.count("\n") + 1
    ctx.charge(count // 16)
    # the lines, then per line: its stripped text, key and value, and a map entry
    ctx.reserve(count * (LIST_SLOT + 4 * STR_OVERHEAD + DICT_SLOT) + 3 * 4 * len(text))
    lines = text.split("\n")
    for raw in lines:
        line = raw.strip(GO_SPACES)
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        result[key.strip(GO_SPACES)] = value.strip(GO_SPACES)
    return result


def f_to_lines(ctx: Context, args: list[Any]) -> object:
    """ack's toLines: the lines of the trimmed text ([] for "")."""
    text = str_arg(args, 0)
    if text == "":
        return []
    count = text.count("\n") + 1
    reserve_list(ctx, count)
    ctx.reserve(count * STR_OVERHEAD + 2 * 4 * len(text))  # the lines; the stripped text
    return text.strip(GO_SPACES).split("\n")


# ---- sprig: defaults and flow ------------------------------------------------------


def f_default(ctx: Context, args: list[Any]) -> object:
    if len(args) < 2 or not truth(args[1]):
        return args[0]
    return args[1]


def f_empty(ctx: Context, args: list[Any]) -> object:
    return not truth(args[0])


def f_coalesce(ctx: Context, args: list[Any]) -> object:
    for arg in args:
        if truth(arg):
            return arg
    return None


def f_ternary(ctx: Context, args: list[Any]) -> object:
    condition = args[2]
    if not isinstance(condition, bool):
        raise FuncError(f"argument 3 must be a bool, got {kind(condition)}")
    return args[0] if condition else args[1]


def f_all(ctx: Context, args: list[Any]) -> object:
    return all(truth(a) for a in args)


def f_any(ctx: Context, args: list[Any]) -> object:
    return any(truth(a) for a in args)


# ---- sprig: lists ------------------------------------------------------------------


def f_list(ctx: Context, args: list[Any]) -> object:
    reserve_list(ctx, len(args))
    return list(args)


def f_first(ctx: Context, args: list[Any]) -> object:
    items = list_arg(args, 0)
    return items[0] if items else None


def f_last(ctx: Context, args: list[Any]) -> object:
    items = list_arg(args, 0)
    return items[-1] if items else None


def _copied(ctx: Context, items: list[Any], extra: int = 0) -> list[Any]:
    """``items`` as the argument of a function that builds a new list of up to their
    number (plus ``extra``) slots, reserved before it is built."""
    reserve_list(ctx, len(items) + extra)
    return items


def f_rest(ctx: Context, args: list[Any]) -> object:
    return _copied(ctx, list_arg(args, 0))[1:]


def f_initial(ctx: Context, args: list[Any]) -> object:
    return _copied(ctx, list_arg(args, 0))[:-1]


def f_append(ctx: Context, args: list[Any]) -> object:
    return [*_copied(ctx, list_arg(args, 0), 1), args[1]]


def f_prepend(ctx: Context, args: list[Any]) -> object:
    return [args[1], *_copied(ctx, list_arg(args, 0), 1)]


def f_concat(ctx: Context, args: list[Any]) -> object:
    lists = [list_arg(args, index) for index in range(len(args))]
    # the sum of the lengths before anything is copied: `concat $l $l` doubles a list
    reserve_list(ctx, sum(len(items) for items in lists))
    out: list[Any] = []
    for items in lists:
        out.extend(items)
    return out


def f_reverse(ctx: Context, args: list[Any]) -> object:
    return _copied(ctx, list_arg(args, 0))[::-1]


def f_has(ctx: Context, args: list[Any]) -> object:
    needle, haystack = args
    if haystack is None:
        return False
    if not isinstance(haystack, list):
        raise FuncError(f"argument 2 must be a list, got {kind(haystack)}")
    return any(deep_equal(ctx, needle, item) for item in haystack)


def f_uniq(ctx: Context, args: list[Any]) -> object:
    out: list[Any] = []
    for item in _copied(ctx, list_arg(args, 0)):
        if not any(deep_equal(ctx, item, seen) for seen in out):
            out.append(item)
    return out


def f_without(ctx: Context, args: list[Any]) -> object:
    drop = args[1:]
    items = _copied(ctx, list_arg(args, 0))
    return [i for i in items if not any(deep_equal(ctx, i, d) for d in drop)]


def f_compact(ctx: Context, args: list[Any]) -> object:
    return [i for i in _copied(ctx, list_arg(args, 0)) if truth(i)]


# ---- sprig: dicts ------------------------------------------------------------------


def _reserve_map(ctx: Context, entries: int) -> None:
    ctx.charge(entries // 16)
    ctx.reserve(64 + entries * DICT_SLOT)


def f_dict(ctx: Context, args: list[Any]) -> object:
    _reserve_map(ctx, (len(args) + 1) // 2)
    out: dict[str, Any] = {}
    for index in range(0, len(args), 2):
        out[strval(ctx, args[index])] = args[index + 1] if index + 1 < len(args) else ""
    return out


def f_get(ctx: Context, args: list[Any]) -> object:
    mapping, key = map_arg(args, 0), str_arg(args, 1)
    return mapping.get(key, "")


def f_set(ctx: Context, args: list[Any]) -> object:
    mapping = map_arg(args, 0)
    _reserve_map(ctx, 1)
    mapping[str_arg(args, 1)] = args[2]
    return mapping


def f_unset(ctx: Context, args: list[Any]) -> object:
    mapping = map_arg(args, 0)
    mapping.pop(str_arg(args, 1), None)
    return mapping


def f_has_key(ctx: Context, args: list[Any]) -> object:
    return str_arg(args, 1) in map_arg(args, 0)


def _reserve_sorted_keys(ctx: Context, mapping: dict[str, Any]) -> None:
    """The sorted keys' list, and the bytes copy of each key the order is taken from."""
    reserve_list(ctx, 2 * len(mapping))
    ctx.reserve(sum(4 * len(k) + STR_OVERHEAD for k in mapping))


def f_keys(ctx: Context, args: list[Any]) -> object:
    maps = [map_arg(args, index) for index in range(len(args))]
    reserve_list(ctx, sum(len(m) for m in maps))
    out: list[Any] = []
    for mapping in maps:
        _reserve_sorted_keys(ctx, mapping)
        out.extend(sorted(mapping, key=go_bytes))
    return out


def f_values(ctx: Context, args: list[Any]) -> object:
    mapping = map_arg(args, 0)
    _reserve_sorted_keys(ctx, mapping)
    return [mapping[k] for k in sorted(mapping, key=go_bytes)]


def f_pick(ctx: Context, args: list[Any]) -> object:
    mapping = map_arg(args, 0)
    _reserve_map(ctx, len(args))
    names = [str_arg(args, i) for i in range(1, len(args))]
    return {k: mapping[k] for k in names if k in mapping}


def f_omit(ctx: Context, args: list[Any]) -> object:
    mapping = map_arg(args, 0)
    _reserve_map(ctx, len(mapping) + len(args))
    names = {str_arg(args, i) for i in range(1, len(args))}
    return {k: v for k, v in mapping.items() if k not in names}


def f_dig(ctx: Context, args: list[Any]) -> object:
    if len(args) < 3:
        raise FuncError("dig needs at least one key, a default and a map")
    keys = [str_arg(args, i) for i in range(len(args) - 2)]
    default, current = args[-2], map_arg(args, len(args) - 1)
    for position, key in enumerate(keys):
        if key not in current:
            return default
        value = current[key]
        if position == len(keys) - 1:
            return value
        if not isinstance(value, dict):
            return default
        current = value
    return default


# ---- sprig: numbers ----------------------------------------------------------------


def f_add(ctx: Context, args: list[Any]) -> object:
    return wrap_int(sum(to_int64(a) for a in args))


def f_add1(ctx: Context, args: list[Any]) -> object:
    return wrap_int(to_int64(args[0]) + 1)


def f_sub(ctx: Context, args: list[Any]) -> object:
    return wrap_int(to_int64(args[0]) - to_int64(args[1]))


def f_mul(ctx: Context, args: list[Any]) -> object:
    product = 1
    for arg in args:
        product = wrap_int(product * to_int64(arg))
    return product


def _truncated_division(a: int, b: int) -> tuple[int, int]:
    if b == 0:
        raise FuncError("integer divide by zero")
    quotient = abs(a) // abs(b)
    if (a < 0) != (b < 0):
        quotient = -quotient
    return wrap_int(quotient), a - b * quotient


def f_div(ctx: Context, args: list[Any]) -> object:
    return _truncated_division(to_int64(args[0]), to_int64(args[1]))[0]


def f_mod(ctx: Context, args: list[Any]) -> object:
    return _truncated_division(to_int64(args[0]), to_int64(args[1]))[1]


def f_max(ctx: Context, args: list[Any]) -> object:
    return max(to_int64(a) for a in args)


def f_min(ctx: Context, args: list[Any]) -> object:
    return min(to_int64(a) for a in args)


def f_int(ctx: Context, args: list[Any]) -> object:
    return to_int64(args[0])


def f_float64(ctx: Context, args: list[Any]) -> object:
    return to_float64(args[0])


def f_atoi(ctx: Context, args: list[Any]) -> object:
    text = str_arg(args, 0)
    body = text[1:] if text[:1] in "+-" else text
    if not body.isascii() or not body.isdigit():
        return 0
    number = int(text)
    return number if INT64_MIN <= number <= INT64_MAX else 0
