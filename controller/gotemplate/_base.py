"""Shared pieces of the template interpreter: its error, its bounds and source positions.

Why this module exists: the lexer, parser, functions and executor all raise the same
error and read the same limits; keeping them here avoids import cycles between them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Bounds on one execution; exceeding any of them is a TemplateError.

    ``max_steps`` counts evaluated nodes and function calls, plus one step per 256 bytes
    of text (or 16 list or map items) a function reads or writes. ``max_depth`` bounds
    nesting of control structures, parenthesised pipelines, ``template`` calls and nested
    values (lists and maps).
    ``max_output_bytes`` bounds the output and every string value built on the way.
    """

    max_output_bytes: int = 1 << 20
    max_steps: int = 100_000
    max_depth: int = 64
    max_range_iterations: int = 10_000


class TemplateError(Exception):
    """A template that cannot be parsed or executed.

    The message names the template (the caller's name, e.g. the Secret key it renders),
    the line and column (1-based) and what went wrong. It never contains a value from the
    data: only names written in the template (keys, functions, template names).
    """

    def __init__(self, name: str, line: int, column: int, message: str) -> None:
        self.name = name
        self.line = line
        self.column = column
        self.message = message
        super().__init__(f"{name}:{line}:{column}: {message}")


class FuncError(Exception):
    """Raised inside a function or value helper; the executor adds name and position."""


class Source:
    """A template's text with a table to turn offsets into (line, column)."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self._starts = [0]
        for index, char in enumerate(text):
            if char == "\n":
                self._starts.append(index + 1)

    def position(self, offset: int) -> tuple[int, int]:
        """The 1-based line and column of a character offset."""
        line = bisect.bisect_right(self._starts, offset) - 1
        return line + 1, offset - self._starts[line] + 1

    def error(self, offset: int, message: str) -> TemplateError:
        line, column = self.position(offset)
        return TemplateError(self.name, line, column, message)
