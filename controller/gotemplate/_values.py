"""Go's view of template values: truth, kinds, %v printing, JSON and YAML encodings.

Why this module exists: a template's output must match what the Go controllers write,
byte for byte where users can see it, so the rules of Go's fmt (``%v``, shortest float
formatting, ``%q``), encoding/json (sorted keys, HTML-safe escapes, float layout) and
the YAML encoder behind sprig/ESO's ``toYaml`` (natural key order, quoting) are
written down here once, as facts, with bounds on nesting and size.

Value model: ``str`` (Go string; bytes that are not UTF-8 as surrogate escapes),
``bool``, ``int`` (int64), ``float`` (float64), ``None`` (nil), ``list`` ([]interface{}),
``dict`` with ``str`` keys (map[string]interface{}) and ``StringMap`` (map[string]string,
the data given to a template: a missing key read with ``index`` is "", not nil).
"""

from __future__ import annotations

import decimal
import functools
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from ._base import (
    DICT_SLOT,
    LIST_SLOT,
    STR_OVERHEAD,
    FuncError,
    SyncBudget,
)

# Bytes Python holds per character of a document while parsing it, measured at the worst
# (tracemalloc over `[[],[],...]`, `[{},{},...]`, block lists, number lists): JSON about 24,
# YAML (libyaml's events, the node graph, then the objects) about 232.
JSON_PARSE_FACTOR = 32
YAML_PARSE_FACTOR = 256

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


class StringMap(dict[str, Any]):
    """A map[string]string: the data given to a template, and sprig's ``split`` result."""


def wrap_int(value: int) -> int:
    """Go int64 arithmetic wraps around."""
    return (value - INT64_MIN) % (1 << 64) + INT64_MIN


def kind(value: object) -> str:
    """Go's name for the kind of a value, for error messages (never the value)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, StringMap):
        return "map[string]string"
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, list):
        return "[]interface {}"
    return "unknown"


def truth(value: object) -> bool:
    """Go's template truth: false, 0, nil and empty strings, lists and maps are false."""
    if value is None:
        return False
    if isinstance(value, bool | int | float):
        return value != 0
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def go_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def from_bytes(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def clean_text(text: str, keep_bytes: bool = True) -> str:
    """Text with every surrogate that is not an escaped byte (or, with keep_bytes=False,
    every surrogate) replaced by U+FFFD, as Go does with invalid UTF-8 in decoded text."""
    if text.isascii():
        return text
    if keep_bytes:
        try:
            go_bytes(text)
            return text
        except UnicodeEncodeError:
            pass
    return "".join(
        "\ufffd" if 0xD800 <= ord(c) <= 0xDFFF and not (keep_bytes and 0xDC80 <= ord(c) <= 0xDCFF)
        else c
        for c in text
    )


def byte_len(text: str) -> int:
    return len(text) if text.isascii() else len(go_bytes(text))


# ---- floats ------------------------------------------------------------------------


def _shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits and the decimal exponent of the first digit."""
    _sign, digits, exponent = decimal.Decimal(repr(abs(value))).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    assert isinstance(exponent, int)
    point = len(digits) + exponent  # position of the decimal point after the first digit
    return text, point - 1


def format_float_g(value: float) -> str:
    """Go's strconv.FormatFloat(v, 'g', -1, 64): %v of a float64."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    digits, exp = _shortest_digits(value)
    sign = "-" if value < 0 else ""
    if exp < -4 or exp >= 6:  # Go decides with precision 6 for shortest
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    return sign + _fixed(digits, exp)


def _fixed(digits: str, exp: int) -> str:
    if exp < 0:
        return "0." + "0" * (-exp - 1) + digits
    whole = digits[: exp + 1].ljust(exp + 1, "0")
    frac = digits[exp + 1 :]
    return whole + ("." + frac if frac else "")


def format_float_json(value: float) -> str:
    """encoding/json's layout of a float64: 'f' form, 'e' form below 1e-6 or from 1e21."""
    if math.isnan(value) or math.isinf(value):
        raise FuncError("a NaN or infinite number has no JSON form")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    digits, exp = _shortest_digits(value)
    sign = "-" if value < 0 else ""
    if abs(value) < 1e-6 or abs(value) >= 1e21:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}".replace(
            "e-0", "e-"
        ).replace("e+0", "e+")
    return sign + _fixed(digits, exp)


# ---- %v ----------------------------------------------------------------------------


def format_value(value: object, depth: int, nil: str = "<nil>", max_bytes: int = 1 << 20,
                 budget: SyncBudget | None = None) -> str:
    """fmt's %v of a value; ``nil`` is how a top-level nil prints. Bounded in size: each
    piece is reserved from ``budget`` (the piece, its list slot and its share of the final
    join) before it is made."""
    if value is None:
        return nil
    if isinstance(value, str):
        return value
    parts: list[str] = []
    _format_into(value, depth, parts, _Room(max_bytes, budget))
    return "".join(parts)


class _Room:
    """What a printed value may still take: the size bound, and the sync's budget."""

    def __init__(self, max_bytes: int, budget: SyncBudget | None) -> None:
        self.left = max_bytes
        self.budget = budget

    def take(self, text: str) -> None:
        self.left -= len(text)
        if self.left < 0:
            raise FuncError("printed value too large")
        if self.budget is not None:  # a step per piece: printing a big value is a long loop
            width = 1 if text.isascii() else 4
            self.budget.charge(1)
            self.budget.reserve(2 * len(text) * width + LIST_SLOT + STR_OVERHEAD)


def _format_into(value: object, depth: int, parts: list[str], room: _Room) -> None:
    if isinstance(value, list | dict):
        if depth <= 0:
            raise FuncError("value nested too deeply to print")
        opener, closer = ("[", "]") if isinstance(value, list) else ("map[", "]")
        _emit(opener, parts, room)
        if isinstance(value, dict) and room.budget is not None:  # the sorted keys
            room.budget.reserve(len(value) * (LIST_SLOT + STR_OVERHEAD) +
                                sum(4 * len(k) for k in value))
        keys = range(len(value)) if isinstance(value, list) else sorted(value, key=go_bytes)
        for position, key in enumerate(keys):
            if position:
                _emit(" ", parts, room)
            if isinstance(value, dict):
                _emit(f"{key}:", parts, room)
            _format_into(value[key], depth - 1, parts, room)
        _emit(closer, parts, room)
        return
    _emit(_scalar_text(value), parts, room)


def _scalar_text(value: object) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float_g(value)
    raise FuncError(f"cannot print a value of kind {kind(value)}")


def _emit(text: str, parts: list[str], room: _Room) -> None:
    room.take(text)
    parts.append(text)


_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                  "\v": "\\v", "\\": "\\\\", '"': '\\"'}
_QUOTE_SPECIAL = re.compile(r'[^\x20-\x7e]|["\\]')


def quote_cost(text: str) -> int:
    """An upper bound of the bytes go_quote builds: the text and two quotes when nothing
    needs an escape, else up to ten characters (\\U0010ffff) of four bytes per character,
    the pieces and their join."""
    if text.isascii() and _QUOTE_SPECIAL.search(text) is None:
        return len(text) + 2 + STR_OVERHEAD
    return 2 * 10 * 4 * len(text) + STR_OVERHEAD


def go_quote(text: str, ascii_only: bool = False) -> str:
    """strconv.Quote: a double-quoted Go string literal (runs that need no escape are copied
    whole, not character by character)."""
    return '"' + _QUOTE_SPECIAL.sub(lambda m: _quote_char(m.group(0), ascii_only), text) + '"'


def _quote_char(char: str, ascii_only: bool) -> str:
    code = ord(char)
    if char in _QUOTE_ESCAPES:
        return _QUOTE_ESCAPES[char]
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if (code < 0x80 or not ascii_only) and _printable(char):
        return char
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _printable(char: str) -> bool:
    return unicodedata.category(char)[0] in "LMNPS"


# ---- JSON (encoding/json) ----------------------------------------------------------

_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
                 "\f": "\\f"}
_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


_JSON_SPECIAL = re.compile('["\\\\\\x00-\\x1f\\u2028\\u2029\\ud800-\\udfff]')
_JSON_SPECIAL_HTML = re.compile('["\\\\\\x00-\\x1f<>&\\u2028\\u2029\\ud800-\\udfff]')


def json_string(text: str, escape_html: bool) -> str:
    """A JSON string literal as encoding/json writes it (runs that need no escape are
    copied whole, so the only pieces built are the escapes)."""
    pattern = _JSON_SPECIAL_HTML if escape_html else _JSON_SPECIAL
    return '"' + pattern.sub(lambda m: _json_char(m.group(0)), text) + '"'


def _json_char(char: str) -> str:
    code = ord(char)
    if char in _JSON_ESCAPES:
        return _JSON_ESCAPES[char]
    if char in _HTML_ESCAPES:
        return _HTML_ESCAPES[char]
    if 0xD800 <= code <= 0xDFFF:  # invalid UTF-8 becomes U+FFFD, as in Go
        return "\ufffd"
    return f"\\u{code:04x}"


def json_string_cost(text: str) -> int:
    """An upper bound of the bytes json_string builds (an escape is at most six characters)."""
    if text.isascii() and _JSON_SPECIAL_HTML.search(text) is None:
        return len(text) + 2 + STR_OVERHEAD
    return 2 * 6 * 4 * len(text) + STR_OVERHEAD


class Budget:
    """Counts work (steps) and size while encoding, raising FuncError past the bounds;
    ``reserve`` takes each piece's bytes from the sync's budget (the piece, its slot and
    its share of the final join) before the piece is built."""

    def __init__(self, charge: Callable[[int], None], max_bytes: int,
                 reserve: Callable[[int], None] | None = None) -> None:
        self.charge = charge
        self.max_bytes = max_bytes
        self.size = 0
        self.reserve = reserve or _no_reserve

    def add(self, text: str) -> str:
        self.size += len(text)
        if self.size > self.max_bytes:
            raise FuncError(f"result larger than {self.max_bytes} bytes")
        self.reserve(2 * len(text) * (1 if text.isascii() else 4) + LIST_SLOT + STR_OVERHEAD)
        self.charge(1 + len(text) // 256)
        return text

    def string(self, text: str, escape_html: bool) -> str:
        """json_string, refused or reserved before it is built."""
        if self.size + len(text) + 2 > self.max_bytes:
            raise FuncError(f"result larger than {self.max_bytes} bytes")
        self.reserve(json_string_cost(text) - len(text))  # escapes; add() counts the rest
        return self.add(json_string(text, escape_html))


def _no_reserve(_size: int) -> None:
    return None


def to_json(value: object, depth: int, budget: Budget, escape_html: bool = True,
            indent: str | None = None) -> str:
    """json.Marshal (or MarshalIndent with two spaces)."""
    parts: list[str] = []
    _json_into(value, depth, budget, escape_html, indent, 0, parts)
    return "".join(parts)


def _json_into(value: object, depth: int, budget: Budget, escape_html: bool,
               indent: str | None, level: int, parts: list[str]) -> None:
    if value is None:
        parts.append(budget.add("null"))
    elif isinstance(value, bool):
        parts.append(budget.add("true" if value else "false"))
    elif isinstance(value, int):
        parts.append(budget.add(str(value)))
    elif isinstance(value, float):
        parts.append(budget.add(format_float_json(value)))
    elif isinstance(value, str):
        parts.append(budget.string(value, escape_html))
    elif isinstance(value, list | dict):
        if depth <= 0:
            raise FuncError("value nested too deeply to encode")
        _json_container(value, depth, budget, escape_html, indent, level, parts)
    else:
        raise FuncError(f"cannot encode a value of kind {kind(value)}")


def _json_container(value: list[Any] | dict[str, Any], depth: int, budget: Budget,
                    escape_html: bool, indent: str | None, level: int,
                    parts: list[str]) -> None:
    opener, closer = ("[", "]") if isinstance(value, list) else ("{", "}")
    if not value:
        parts.append(budget.add(opener + closer))
        return
    parts.append(budget.add(opener))
    inner = "" if indent is None else "\n" + indent * (level + 1)
    if isinstance(value, dict):
        budget.reserve(64 + LIST_SLOT * len(value))  # the sorted keys
    items = value if isinstance(value, list) else sorted(value)
    for position, item in enumerate(items):
        parts.append(budget.add(("," if position else "") + inner))
        if isinstance(value, dict):
            assert isinstance(item, str)
            parts.append(budget.string(item, escape_html))
            parts.append(budget.add(":" if indent is None else ": "))
            item = value[item]
        _json_into(item, depth - 1, budget, escape_html, indent, level + 1, parts)
    parts.append(budget.add(("" if indent is None else "\n" + indent * level) + closer))


def import_value(value: object, depth: int, budget: Budget, numbers_as_float: bool) -> Any:
    """A decoded JSON/YAML document (or caller data) as template values, bounded.

    Shared or recursive structures (YAML aliases) are copied, so their size is counted;
    integers become float64 when the Go side would hold them as JSON numbers. Each copy's
    bytes are reserved before it is made.
    """
    budget.charge(1)
    if isinstance(value, str):
        if not value.isascii():  # clean_text may copy it
            budget.reserve(4 * len(value) + STR_OVERHEAD)
        return clean_text(value, keep_bytes=False)
    if isinstance(value, list | tuple | Mapping | set | frozenset):
        budget.reserve(64 + len(value) * (DICT_SLOT if isinstance(value, Mapping) else LIST_SLOT))
    else:
        budget.reserve(32)  # a number
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if numbers_as_float:
            return float(value)
        return wrap_int(value)
    if isinstance(value, float):
        return value
    if isinstance(value, bytes):
        return from_bytes(value)
    if depth <= 0:
        raise FuncError("document nested too deeply")
    if isinstance(value, list | tuple):
        return [import_value(v, depth - 1, budget, numbers_as_float) for v in value]
    if isinstance(value, set | frozenset):
        return {yaml_key_text(k): None for k in value}
    if isinstance(value, Mapping):
        return {
            yaml_key_text(k): import_value(v, depth - 1, budget, numbers_as_float)
            for k, v in value.items()
        }
    return str(value)


def yaml_key_text(key: object) -> str:
    """A map key as sigs.k8s.io/yaml turns it into a JSON object key."""
    if isinstance(key, str):
        return clean_text(key, keep_bytes=False)
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, float):
        return format_float_g(key)
    return str(key)


# ---- YAML --------------------------------------------------------------------------


_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built in


class _GoYAMLLoader(_SafeLoader):  # type: ignore[misc]
    """YAML as the Go libraries read it into interface{}: timestamps stay strings."""


_GoYAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str, budget: SyncBudget | None = None) -> object:
    return load_yaml_bounded(text, _GoYAMLLoader, budget or SyncBudget())


def load_yaml_bounded(text: str, loader: Any, budget: SyncBudget) -> object:
    """A YAML document read with ``loader`` (a SafeLoader class), the parse's bytes and the
    document's expanded size reserved before the objects are built.

    An alias counts at the full size of what it names (a 370-byte billion-laughs document
    costs its 10^9 expanded nodes and is refused), as does a merge key (``<<: *a``); a
    recursive document (an alias inside its own anchor) is refused as invalid YAML.
    """
    budget.reserve(YAML_PARSE_FACTOR * len(text))
    budget.charge(len(text) // 16)
    instance = loader(text)
    try:
        node = instance.get_single_node()
        if node is None:
            return None
        budget.reserve(aliased_cost(node))
        return instance.construct_document(node)
    finally:
        instance.dispose()


def aliased_cost(root: yaml.Node) -> int:
    """The bytes that aliases add to a YAML node graph when expanded: each use of a node
    after the first counts the node's whole expanded size (the first is in the parse
    factor). Iterative: a node graph may be deeper than Python's recursion limit."""
    sizes: dict[int, int] = {}  # id -> expanded size of a finished node
    extra = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    active: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            sizes[key] = _node_own_cost(node) + sum(sizes[id(c)] for c in _children(node))
            continue
        if key in active:
            raise yaml.YAMLError("recursive alias")
        if key in sizes:  # an alias of a finished node: its full size once more
            extra += sizes[key]
            if extra > 1 << 40:
                break  # far past any budget; stop adding
            continue
        active.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    return extra


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _node_own_cost(node: yaml.Node) -> int:
    if isinstance(node, yaml.ScalarNode):
        return 4 * len(node.value) + STR_OVERHEAD + DICT_SLOT
    return 64 + len(node.value) * DICT_SLOT


def value_cost(value: object, limit: int) -> int:
    """An upper bound of the bytes an encoding or copy of a parsed value builds, with shared
    parts (YAML aliases, jmesPath's multiselects) counted at every use; stops past
    ``limit``. A recursive value costs more than any limit."""
    total = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > 512:
            return limit + 1
        if isinstance(item, str):
            total += 6 * 4 * len(item) + STR_OVERHEAD  # escaped, as JSON at the worst
        elif isinstance(item, dict):
            total += 64 + len(item) * DICT_SLOT
            for key, element in item.items():
                stack.append((key, depth + 1))
                stack.append((element, depth + 1))
        elif isinstance(item, list | tuple):
            total += 64 + len(item) * LIST_SLOT
            stack.extend((element, depth + 1) for element in item)
        else:
            total += 64  # a number, a bool, null, a date
        if total > limit:
            return total
    return total


def _natural_less(a: str, b: str) -> bool:
    """go-yaml's key order: letters after other characters, digit runs by number."""
    for i, (ca, cb) in enumerate(zip(a, b, strict=False)):
        if ca == cb:
            continue
        la, lb = ca.isalpha(), cb.isalpha()
        if la and lb:
            return ca < cb
        if la or lb:
            return lb
        # Runs that diverge after a common non-zero prefix compare as whole numbers.
        start = 1 if (ca == "0" or cb == "0") and _nonzero_digits_before(a, i) else 0
        na, ea = _digit_run(a, i, start)
        nb, eb = _digit_run(b, i, start)
        if na != nb:
            return na < nb
        if ea != eb:
            return ea < eb
        return ca < cb
    return len(a) < len(b)


def _digit_run(text: str, start: int, number: int) -> tuple[int, int]:
    end = start
    while end < len(text) and text[end].isdigit():
        number = number * 10 + int(text[end])
        end += 1
    return number, end


def _nonzero_digits_before(text: str, index: int) -> bool:
    while index > 0 and text[index - 1].isdigit():
        index -= 1
        if text[index] != "0":
            return True
    return False


def _natural_cmp(a: str, b: str) -> int:
    return -1 if _natural_less(a, b) else (1 if _natural_less(b, a) else 0)


natural_key = functools.cmp_to_key(_natural_cmp)


class _GoYAMLDumper(yaml.SafeDumper):
    """Block YAML close to go-yaml v2's: natural key order, quoting of ambiguous text."""

    def ignore_aliases(self, data: Any) -> bool:
        return True  # Go writes shared values out in full (their size is checked first)


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style: str | None = None
    lines = text.split("\n")
    if len(lines) > 1 and all(line.isprintable() and line == line.rstrip() for line in lines):
        style = "|"
    elif _resolves_to_non_string(dumper, text):
        style = '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


def _resolves_to_non_string(dumper: yaml.SafeDumper, text: str) -> bool:
    tag = dumper.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    return bool(tag != "tag:yaml.org,2002:str")


def _represent_float(dumper: yaml.SafeDumper, value: float) -> yaml.Node:
    if value.is_integer() and abs(value) < 1e21:
        return dumper.represent_int(int(value))
    return dumper.represent_scalar("tag:yaml.org,2002:float", format_float_g(value))


def _represent_dict(dumper: yaml.SafeDumper, value: dict[str, Any]) -> yaml.Node:
    items = [(k, value[k]) for k in sorted(value, key=natural_key)]
    return dumper.represent_mapping("tag:yaml.org,2002:map", items, flow_style=False)


_GoYAMLDumper.add_representer(str, _represent_str)
_GoYAMLDumper.add_representer(float, _represent_float)
_GoYAMLDumper.add_representer(dict, _represent_dict)
_GoYAMLDumper.add_representer(StringMap, _represent_dict)


# Bytes PyYAML's dumper holds per byte of the value's compact JSON at the worst (events,
# nodes, the emitter's state): about 130, measured with tracemalloc on lists of empty maps
# and of nested one-item lists.
YAML_DUMP_FACTOR = 160


def to_yaml(value: object, depth: int, budget: Budget) -> str:
    """toYaml: the YAML document without its final newline."""
    # A bounded JSON pass checks nesting and size before PyYAML (recursive) sees it.
    size = len(to_json(value, depth, budget))
    budget.reserve(YAML_DUMP_FACTOR * size)
    text = yaml.dump(value, Dumper=_GoYAMLDumper, default_flow_style=False,
                     allow_unicode=True, width=1 << 30, sort_keys=False)
    if text.endswith("\n...\n"):
        text = text[: -len("...\n")]
    return budget.add(text.removesuffix("\n"))
