"""Go's fmt.Sprintf for the verbs templates use, with bounded widths.

Why this module exists: ``printf`` is the template's formatting workhorse (ports, quoted
values, padded columns) and Go's verbs differ from Python's (``%v``, ``%q``, ``%x`` of a
string, shortest ``%g``). Where Go would write a ``%!verb(type=value)`` marker into the
output, this interpreter raises an error instead, which names the verb and the kind of
the argument but never its value.
"""

from __future__ import annotations

from ._base import LIST_SLOT, STR_OVERHEAD, FuncError, SyncBudget
from ._values import format_float_g, format_value, go_bytes, go_quote, kind, quote_cost

_FLAGS = "-+# 0"


def sprintf(fmt: str, args: list[object], depth: int, max_bytes: int,
            budget: SyncBudget | None = None) -> str:
    """Format; each piece's size is estimated from the verb, its width and precision and the
    argument, and reserved from ``budget`` (twice: the piece and its share of the join)
    before the piece is built."""
    sync = budget if budget is not None else SyncBudget()
    out: list[str] = []
    size = 0
    index = 0
    pos = 0
    while pos < len(fmt):
        percent = fmt.find("%", pos)
        if percent < 0:
            out.append(fmt[pos:])
            break
        out.append(fmt[pos:percent])
        spec, pos = _parse_spec(fmt, percent + 1, args, index)
        flags, width, precision, verb, index = spec
        if verb == "%":
            out.append("%")
            continue
        if index >= len(args):
            raise FuncError(f"the format needs more arguments than given (%{verb})")
        for bound in (width, precision):
            if bound is not None and bound > max_bytes:
                raise FuncError(f"width or precision above {max_bytes}")
        sync.reserve(2 * _piece_cost(args[index], width, precision, verb))
        piece = _format_one(args[index], flags, width, precision, verb, depth, max_bytes, sync)
        index += 1
        size += len(piece)
        if size > max_bytes:
            raise FuncError(f"result larger than {max_bytes} bytes")
        out.append(piece)
    if index < len(args):
        raise FuncError("more arguments than the format uses")
    # the literal runs between verbs (pieces were reserved twice: made, then joined)
    sync.reserve(2 * 4 * len(fmt) + LIST_SLOT * len(out))
    return "".join(out)


def _piece_cost(arg: object, width: int | None, precision: int | None, verb: str) -> int:
    """An upper bound of the bytes one verb builds, before it is built (a list or map printed
    by %v or %s reserves its own pieces as it prints)."""
    pad = 4 * (width or 0) + (precision or 0) + 400 + STR_OVERHEAD  # floats have <= 330 digits
    if isinstance(arg, str):
        if verb == "q":
            return pad + quote_cost(arg)
        if verb in "xX":
            return pad + 3 * 4 * len(arg)  # the UTF-8 bytes, then two digits a byte
        return pad + (1 if arg.isascii() else 4) * len(arg)  # %s, %v: its share of the join
    return pad


Spec = tuple[str, int | None, int | None, str, int]


def _parse_spec(fmt: str, pos: int, args: list[object], index: int) -> tuple[Spec, int]:
    flags = ""
    while pos < len(fmt) and fmt[pos] in _FLAGS:
        flags += fmt[pos]
        pos += 1
    width, pos, index = _number_or_star(fmt, pos, args, index)
    precision: int | None = None
    if pos < len(fmt) and fmt[pos] == ".":
        precision, pos, index = _number_or_star(fmt, pos + 1, args, index)
        if precision is None:
            precision = 0
    if pos >= len(fmt):
        raise FuncError("the format ends inside a verb")
    verb = fmt[pos]
    if verb == "[":
        raise FuncError("explicit argument indexes are not supported")
    return (flags, width, precision, verb, index), pos + 1


def _number_or_star(
    fmt: str, pos: int, args: list[object], index: int
) -> tuple[int | None, int, int]:
    if pos < len(fmt) and fmt[pos] == "*":
        if index >= len(args) or isinstance(args[index], bool) or not isinstance(
            args[index], int
        ):
            raise FuncError("* needs an int argument")
        value = args[index]
        assert isinstance(value, int)
        return abs(value), pos + 1, index + 1
    start = pos
    while pos < len(fmt) and fmt[pos].isdigit():
        pos += 1
    if pos == start:
        return None, pos, index
    if pos - start > 9:
        raise FuncError("width or precision too large")
    return int(fmt[start:pos]), pos, index


def _format_one(
    arg: object, flags: str, width: int | None, precision: int | None, verb: str, depth: int,
    max_bytes: int, sync: SyncBudget,
) -> str:
    numeric = False
    if verb == "v":
        if "#" in flags:
            raise FuncError("%#v is not supported")
        text = format_value(arg, depth, max_bytes=max_bytes, budget=sync)
        if precision is not None and isinstance(arg, str):
            text = text[:precision]
        numeric = isinstance(arg, int | float) and not isinstance(arg, bool)
    elif verb == "s":
        text = _string_verb(arg, precision, depth, max_bytes, sync)
    elif verb == "q":
        text = _quote_verb(arg, flags)
    elif verb == "t":
        if not isinstance(arg, bool):
            raise FuncError(f"%t needs a bool, got {kind(arg)}")
        text = "true" if arg else "false"
    elif verb in "dboOxXcU":
        text, numeric = _integer_verb(arg, flags, precision, verb)
    elif verb in "eEfFgG":
        text = _float_verb(arg, flags, precision, verb)
        numeric = True
    else:
        raise FuncError(f"verb %{verb} is not supported")
    return _pad(text, flags, width, numeric)


def _string_verb(arg: object, precision: int | None, depth: int, max_bytes: int,
                 sync: SyncBudget) -> str:
    if isinstance(arg, str):
        return arg if precision is None else arg[:precision]
    if isinstance(arg, list | dict):
        return format_value(arg, depth, max_bytes=max_bytes, budget=sync)
    raise FuncError(f"%s needs a string, got {kind(arg)}")


def _quote_verb(arg: object, flags: str) -> str:
    if isinstance(arg, str):
        if "#" in flags and "`" not in arg and all(
            c == "\t" or (c.isprintable() and c != "\ufeff") for c in arg
        ):
            return "`" + arg + "`"
        return go_quote(arg, ascii_only="+" in flags)
    if isinstance(arg, int) and not isinstance(arg, bool):
        quoted = go_quote(chr(arg) if 0 <= arg <= 0x10FFFF and not 0xD800 <= arg <= 0xDFFF
                          else "\ufffd", ascii_only="+" in flags)
        return "'" + quoted[1:-1].replace('\\"', '"').replace("'", "\\'") + "'"
    raise FuncError(f"%q needs a string or an int, got {kind(arg)}")


def _integer_verb(arg: object, flags: str, precision: int | None, verb: str) -> tuple[str, bool]:
    if verb in "xX" and isinstance(arg, str):
        text = go_bytes(arg).hex()
        return (text.upper() if verb == "X" else text), False
    if isinstance(arg, bool) or not isinstance(arg, int):
        raise FuncError(f"%{verb} needs an int, got {kind(arg)}")
    if verb == "c":
        return (chr(arg) if 0 <= arg <= 0x10FFFF else "\ufffd"), False
    if verb == "U":
        return f"U+{arg:04X}", False
    base = {"d": "d", "b": "b", "o": "o", "O": "o", "x": "x", "X": "X"}[verb]
    digits = format(abs(arg), base)
    if precision is not None:
        digits = digits.zfill(precision) if precision or arg else ""
    prefix = ""
    if verb == "O" or ("#" in flags and verb == "o" and not digits.startswith("0")):
        prefix = "0o" if verb == "O" else "0"
    elif "#" in flags and verb in "xXb":
        prefix = {"x": "0x", "X": "0X", "b": "0b"}[verb]
    return _sign(arg < 0, flags) + prefix + digits, True


def _float_verb(arg: object, flags: str, precision: int | None, verb: str) -> str:
    if isinstance(arg, bool) or not isinstance(arg, float | int):
        raise FuncError(f"%{verb} needs a float, got {kind(arg)}")
    if isinstance(arg, int):
        raise FuncError(f"%{verb} needs a float, got int")
    value = float(arg)
    if verb in "gG" and precision is None:
        text = format_float_g(abs(value)) if value == value else "NaN"
        text = text.upper() if verb == "G" else text
    else:
        spec = f"{'#' if '#' in flags else ''}.{6 if precision is None else precision}{verb}"
        text = format(abs(value), spec)
        text = {"inf": "Inf", "INF": "Inf", "nan": "NaN", "NAN": "NaN"}.get(text, text)
    negative = value < 0 or (value == 0 and str(value).startswith("-"))
    return _sign(negative, flags) + text


def _sign(negative: bool, flags: str) -> str:
    if negative:
        return "-"
    if "+" in flags:
        return "+"
    if " " in flags:
        return " "
    return ""


def _pad(text: str, flags: str, width: int | None, numeric: bool) -> str:
    if width is None or len(text) >= width:
        return text
    fill = width - len(text)
    if "-" in flags:
        return text + " " * fill
    if "0" in flags and numeric and text[-1:].isdigit():
        sign = text[0] if text[:1] in "+- " else ""
        return sign + "0" * fill + text[len(sign) :]
    return " " * fill + text
