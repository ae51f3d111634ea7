"""Shared pieces of the template interpreter: its error, its bounds and source positions.

Why this module exists: the lexer, parser, functions and executor all raise the same
error and read the same limits; keeping them here avoids import cycles between them.
"""

from __future__ import annotations

import bisect
import sys
import time
from dataclasses import dataclass

# One sync of one ExternalSecret may create at most this many bytes (every value built by
# its templates and parsers, counted as Python holds them) and take this many steps, the
# data templates, templateFrom items, metadata templates and fetched-value parsing together.
# 8 workers x 16 MiB = 128 MiB, under the chart's 256Mi limit with the process's ~80 MiB.
DEFAULT_SYNC_BYTES = 16 << 20
DEFAULT_SYNC_STEPS = 200_000
# SyncBudget._pace: a heavy sync pauses this long every so many steps or bytes.
PACE_STEPS = 2_000
PACE_BYTES = 256 << 10
PACE_SLEEP = 0.0002
BYTES_FLAG = "--sync-budget-bytes"
STEPS_FLAG = "--sync-budget-steps"
# What Python holds for a str object besides its characters (49 to 80 bytes), rounded up,
# and for one slot of a list (a pointer) or a dict (hash, key, value and spare room).
STR_OVERHEAD = 80
LIST_SLOT = 8
DICT_SLOT = 104


@dataclass(frozen=True)
class Limits:
    """Bounds on one execution; exceeding any of them is a TemplateError.

    ``max_steps`` counts evaluated nodes and function calls, plus one step per 256 bytes
    of text (or 16 list or map items) a function reads or writes; None (the default): only
    the sync's budget (SyncBudget) bounds the steps of all templates together.
    ``max_depth`` bounds nesting of control structures, parenthesised pipelines, ``template``
    calls and nested values (lists and maps).
    ``max_output_bytes`` bounds the output and every string value built on the way.
    """

    max_output_bytes: int = 1 << 20
    max_steps: int | None = None
    max_depth: int = 64
    max_range_iterations: int = 10_000


class TemplateError(Exception):
    """A template that cannot be parsed or executed.

    The message names the template (the caller's name, e.g. the Secret key it renders),
    the line and column (1-based) and what went wrong. It never contains a value from the
    data: only names written in the template (keys, functions, template names).
    """

    def __init__(self, name: str, line: int, column: int, message: str,
                 budget: BudgetExceeded | None = None) -> None:
        self.name = name
        self.line = line
        self.column = column
        self.message = message
        self.budget = budget  # set when the sync's budget stopped the template
        super().__init__(f"{name}:{line}:{column}: {message}")


class FuncError(Exception):
    """Raised inside a function or value helper; the executor adds name and position."""


class BudgetExceeded(FuncError):
    """The sync's budget would be exceeded by the work about to be done (it was not done)."""

    def __init__(self, resource: str, limit: int) -> None:
        self.resource = resource  # "bytes" or "steps"
        self.limit = limit
        self.flag = BYTES_FLAG if resource == "bytes" else STEPS_FLAG
        what = "memory" if resource == "bytes" else "evaluation"
        super().__init__(f"the sync's {what} budget ({limit} {resource}, {self.flag}) "
                         "would be exceeded")


class SyncBudget:
    """The bytes and steps one sync of one ExternalSecret may spend, in the manner of the
    Kubernetes CEL cost budget: every operation reserves the size it is about to build,
    estimated from its inputs, before building it, and the total only grows (what a sync
    created is counted even once freed, so the total bounds the sync's peak allocation).

    Not thread-safe: one sync runs in one worker.
    """

    def __init__(self, max_bytes: int = DEFAULT_SYNC_BYTES,
                 max_steps: int = DEFAULT_SYNC_STEPS) -> None:
        self.max_bytes = max_bytes
        self.max_steps = max_steps
        self.bytes = 0
        self.steps = 0
        self._pace_steps = PACE_STEPS
        self._pace_bytes = PACE_BYTES

    def reserve(self, size: int) -> None:
        """Account ``size`` bytes about to be allocated; BudgetExceeded (nothing counted)
        when they do not fit."""
        if self.bytes + size > self.max_bytes:
            raise BudgetExceeded("bytes", self.max_bytes)
        self.bytes += max(size, 0)
        if self.bytes >= self._pace_bytes:
            self._pace()

    def charge(self, steps: int) -> None:
        if self.steps + steps > self.max_steps:
            raise BudgetExceeded("steps", self.max_steps)
        self.steps += max(steps, 0)
        if self.steps >= self._pace_steps:
            self._pace()

    def _pace(self) -> None:
        """A heavy sync lets the other threads in: every PACE_STEPS steps or PACE_BYTES bytes
        it sleeps PACE_SLEEP seconds, releasing the interpreter lock. Without this, a thread
        back from I/O (another tenant's sync, a watch) waits up to the interpreter's switch
        interval (5 ms) for the lock at every step of its own work. A sync of ordinary size
        never gets here; one that spends its whole default budget pauses about 100 times."""
        self._pace_steps = self.steps + PACE_STEPS
        self._pace_bytes = self.bytes + PACE_BYTES
        time.sleep(PACE_SLEEP)

    @property
    def room(self) -> int:
        """Bytes still available."""
        return self.max_bytes - self.bytes


def text_cost(chars: int, wide: bool = True) -> int:
    """An upper bound of the bytes of a str of ``chars`` characters: one byte each when all
    are ASCII/Latin-1, else up to four (CPython's widest form), plus the object header."""
    return chars * (4 if wide else 1) + STR_OVERHEAD


def str_cost(text: str) -> int:
    """The bytes a str object holds (exact, O(1))."""
    return sys.getsizeof(text)


def narrow(*texts: str) -> bool:
    """Whether every text is ASCII (checked in O(1) by CPython)."""
    return all(t.isascii() for t in texts)


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

    def error(self, offset: int, message: str,
              budget: BudgetExceeded | None = None) -> TemplateError:
        line, column = self.position(offset)
        return TemplateError(self.name, line, column, message, budget)
