"""Split a Go text/template into tokens: text, action delimiters and the words inside.

Why this module exists: Go's lexical rules (trim markers, comments, raw strings, Go
number and string literals) are fiddly and independent of the grammar, so they are kept
and tested apart from the parser. Literals are decoded here, so the parser only sees
values. Strings are Python ``str``; bytes that are not UTF-8 (from ``\\x`` escapes) are
carried as surrogate escapes, as everywhere in the interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ._base import Source, SyncBudget, text_cost

LEFT = "{{"
RIGHT = "}}"
_SPACE = " \t\r\n"


class Kind(Enum):
    TEXT = "text"
    LEFT = "{{"
    RIGHT = "}}"
    SPACE = "space"
    IDENT = "identifier"
    FIELD = "field"
    DOT = "."
    VAR = "variable"
    STRING = "string"
    CHAR = "character constant"
    NUMBER = "number"
    LPAREN = "("
    RPAREN = ")"
    PIPE = "|"
    COMMA = ","
    DECLARE = ":="
    ASSIGN = "="
    EOF = "end of template"


@dataclass(frozen=True)
class Token:
    kind: Kind
    offset: int
    value: object = None  # text, name, decoded literal


# Bytes one token costs while parsing, the parser's nodes for it included: tokenizing and
# parsing templates dense with actions peaked at 330 to 383 bytes a token (tracemalloc).
TOKEN_COST = 512


def tokenize(source: Source, budget: SyncBudget | None = None) -> list[Token]:
    """All tokens of a template, ending with EOF; raises TemplateError on bad syntax and
    BudgetExceeded when the next token would not fit the sync's budget."""
    return _Lexer(source, budget or SyncBudget()).run()


class _Lexer:
    def __init__(self, source: Source, budget: SyncBudget) -> None:
        self.budget = budget
        self.src = source
        self.text = source.text
        self.pos = 0
        self.tokens: list[Token] = []
        self.trim_next_text = False

    def run(self) -> list[Token]:
        while self.pos < len(self.text):
            self._text()
            if self.pos < len(self.text):
                self._action()
        self.tokens.append(Token(Kind.EOF, len(self.text)))
        return self.tokens

    def _text(self) -> None:
        start = self.pos
        end = self.text.find(LEFT, start)
        if end < 0:
            end = len(self.text)
        self._reserve(TOKEN_COST + text_cost(end - start, not self.text.isascii()))
        chunk = self.text[start:end]
        if self.trim_next_text:
            chunk = chunk.lstrip(_SPACE)
            self.trim_next_text = False
        if end < len(self.text) and self._left_trim(end):
            chunk = chunk.rstrip(_SPACE)
        if chunk:
            self.tokens.append(Token(Kind.TEXT, start, chunk))
        self.pos = end

    def _left_trim(self, at: int) -> bool:
        """Whether the delimiter at ``at`` is "{{- " (a dash, then a space character)."""
        after = at + len(LEFT)
        return self.text[after : after + 1] == "-" and after + 1 < len(self.text) and (
            self.text[after + 1] in _SPACE
        )

    def _action(self) -> None:
        start = self.pos
        self.pos += len(LEFT)
        if self._left_trim(start):
            self.pos += 2
        if self.text.startswith("/*", self.pos):
            self._comment(start)
            return
        self._reserve(TOKEN_COST)
        self.tokens.append(Token(Kind.LEFT, start))
        while not self._inside():
            pass

    def _comment(self, start: int) -> None:
        end = self.text.find("*/", self.pos + 2)
        if end < 0:
            raise self.src.error(start, "unclosed comment")
        self.pos = end + 2
        if self.text.startswith(RIGHT, self.pos):
            self.pos += len(RIGHT)
        elif self.text[self.pos : self.pos + 1] in _SPACE and self.text.startswith(
            "-" + RIGHT, self.pos + 1
        ) and self.pos < len(self.text):
            self.pos += 2 + len(RIGHT)
            self.trim_next_text = True
        else:
            raise self.src.error(start, "comment ends before closing delimiter")

    def _emit(self, kind: Kind, offset: int, value: object = None) -> None:
        # a literal's value is at most its text, already made: what is refused is the rest
        if isinstance(value, str):  # decoded character by character: steps for its length
            self.budget.charge(len(value) // 16)
        self._reserve(TOKEN_COST + (4 * len(value) if isinstance(value, str) else 0))
        self.tokens.append(Token(kind, offset, value))

    def _reserve(self, size: int) -> None:
        self.budget.charge(1)
        self.budget.reserve(size)

    def _inside(self) -> bool:
        """Lex one token inside an action; True once the closing delimiter is read."""
        text, pos = self.text, self.pos
        if pos >= len(text):
            raise self.src.error(pos, "unclosed action")
        char = text[pos]
        if char in _SPACE:
            end = pos
            while end < len(text) and text[end] in _SPACE:
                end += 1
            if text.startswith("-" + RIGHT, end):
                self._emit(Kind.RIGHT, end)
                self.pos = end + 1 + len(RIGHT)
                self.trim_next_text = True
                return True
            self._emit(Kind.SPACE, pos)
            self.pos = end
            return False
        if text.startswith(RIGHT, pos):
            self._emit(Kind.RIGHT, pos)
            self.pos = pos + len(RIGHT)
            return True
        simple = {"(": Kind.LPAREN, ")": Kind.RPAREN, "|": Kind.PIPE, ",": Kind.COMMA}
        if char in simple:
            self._emit(simple[char], pos)
            self.pos = pos + 1
        elif text.startswith(":=", pos):
            self._emit(Kind.DECLARE, pos)
            self.pos = pos + 2
        elif char == "=":
            self._emit(Kind.ASSIGN, pos)
            self.pos = pos + 1
        elif char == '"':
            self._quoted(pos)
        elif char == "`":
            self._raw(pos)
        elif char == "'":
            self._char(pos)
        elif char == "$":
            end = self._word_end(pos + 1)
            self._emit(Kind.VAR, pos, text[pos:end])
            self.pos = end
        elif char == "." and not text[pos + 1 : pos + 2].isdigit():
            end = self._word_end(pos + 1)
            if end == pos + 1:
                self._emit(Kind.DOT, pos)
            else:
                self._emit(Kind.FIELD, pos, text[pos + 1 : end])
            self.pos = end
        elif char.isdigit() or char in "+-.":
            self._number(pos)
        elif _is_word_char(char):
            end = self._word_end(pos)
            self._emit(Kind.IDENT, pos, text[pos:end])
            self.pos = end
        else:
            raise self.src.error(pos, f"unexpected character {char!r} in action")
        return False

    def _word_end(self, pos: int) -> int:
        while pos < len(self.text) and _is_word_char(self.text[pos]):
            pos += 1
        return pos

    def _quoted(self, start: int) -> None:
        pos = start + 1
        text = self.text
        while True:
            if pos >= len(text) or text[pos] == "\n":
                raise self.src.error(start, "unterminated quoted string")
            if text[pos] == "\\":
                pos += 2
                continue
            if text[pos] == '"':
                break
            pos += 1
        body = text[start + 1 : pos]
        self._emit(Kind.STRING, start, unquote(body, '"', self.src, start))
        self.pos = pos + 1

    def _raw(self, start: int) -> None:
        end = self.text.find("`", start + 1)
        if end < 0:
            raise self.src.error(start, "unterminated raw quoted string")
        self._emit(Kind.STRING, start, self.text[start + 1 : end].replace("\r", ""))
        self.pos = end + 1

    def _char(self, start: int) -> None:
        pos = start + 1
        text = self.text
        while True:
            if pos >= len(text) or text[pos] == "\n":
                raise self.src.error(start, "unterminated character constant")
            if text[pos] == "\\":
                pos += 2
                continue
            if text[pos] == "'":
                break
            pos += 1
        value = unquote(text[start + 1 : pos], "'", self.src, start)
        if len(value) != 1:
            raise self.src.error(start, "malformed character constant")
        self._emit(Kind.CHAR, start, ord(value))
        self.pos = pos + 1

    def _number(self, start: int) -> None:
        text = self.text
        pos = start
        if text[pos] in "+-":
            pos += 1
        while pos < len(text) and (text[pos].isalnum() or text[pos] in "._"):
            # exponent signs belong to the number: 1e-3, 0x1p+2
            if text[pos] in "eEpP" and text[pos + 1 : pos + 2] in ("+", "-"):
                is_hex = text[start:pos].lstrip("+-").lower().startswith("0x")
                if (text[pos] in "pP") == is_hex:
                    pos += 2
                    continue
            pos += 1
        literal = text[start:pos]
        self._emit(Kind.NUMBER, start, parse_number(literal, self.src, start))
        self.pos = pos


def _is_word_char(char: str) -> bool:
    return char == "_" or char.isalnum()


def parse_number(literal: str, src: Source, offset: int) -> int | float:
    """A Go number literal as an int (int64 range) or a float; raises on bad syntax."""
    body = literal.lstrip("+-")
    negative = literal.startswith("-")
    if len(literal) - len(body) > 1 or not body:
        raise src.error(offset, f"bad number syntax: {literal!r}")
    if body.endswith("i") and not body.lower().startswith("0x"):
        raise src.error(offset, "complex numbers are not supported")
    lower = body.lower()
    try:
        if lower.startswith("0x") and ("p" in lower or "." in lower):
            value: int | float = float.fromhex(body.replace("_", ""))
        elif lower.startswith(("0x", "0o", "0b")):
            value = int(body, 0)
        elif any(c in lower for c in ".e"):
            value = float(body)
        elif body.isdigit() or "_" in body:
            digits = body.replace("_", "")
            if not digits.isdigit() or body.startswith("_") or body.endswith("_"):
                raise ValueError(body)
            value = int(digits, 8) if len(digits) > 1 and digits[0] == "0" else int(digits)
        else:
            raise ValueError(body)
    except ValueError:
        raise src.error(offset, f"bad number syntax: {literal!r}") from None
    if negative:
        value = -value
    if isinstance(value, int) and not -(1 << 63) <= value < (1 << 63):
        raise src.error(offset, f"number out of range: {literal!r}")
    return value


_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
}


def unquote(body: str, quote: str, src: Source, offset: int) -> str:
    """Decode the inside of a Go interpreted string or character literal."""
    out = bytearray()
    pos = 0
    while pos < len(body):
        char = body[pos]
        if char != "\\":
            out += char.encode("utf-8", "surrogateescape")
            pos += 1
            continue
        code = body[pos + 1 : pos + 2]
        if code in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[code].encode()
            pos += 2
        elif code == quote:
            out += quote.encode()
            pos += 2
        elif code in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[code]
            digits = body[pos + 2 : pos + 2 + width]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise src.error(offset, "invalid escape in string literal")
            number = int(digits, 16)
            if code == "x":
                out.append(number)
            elif number > 0x10FFFF or 0xD800 <= number <= 0xDFFF:
                raise src.error(offset, "invalid Unicode escape in string literal")
            else:
                out += chr(number).encode()
            pos += 2 + width
        elif code in "01234567" and code:
            digits = body[pos + 1 : pos + 4]
            if len(digits) != 3 or not all(c in "01234567" for c in digits) or int(
                digits, 8
            ) > 255:
                raise src.error(offset, "invalid octal escape in string literal")
            out.append(int(digits, 8))
            pos += 4
        else:
            raise src.error(offset, "invalid escape in string literal")
    return out.decode("utf-8", "surrogateescape")
