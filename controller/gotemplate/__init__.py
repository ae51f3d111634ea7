"""A sandboxed interpreter of Go's text/template dialect with the common sprig functions.

Why this module exists: ack-secret-manager v0.6 and External Secrets Operator let users
build Secret data from fetched values with Go templates (``spec.target.template.data``,
``templateFrom``); no maintained Python library speaks that dialect, and templates come
from tenants while the data is secret, so the interpreter must be pure (no I/O, no clock,
no attribute access on Python objects), bounded (output size, evaluation steps, nesting,
range iterations) and careful with errors (they name the template, line and column and
never quote a value). docs/templates.md lists the dialect, the functions and the bounds.

Use::

    budget = SyncBudget()                       # one per sync of one ExternalSecret
    template = parse(text, "spec.target.template.data.config.yaml", budget)  # cached
    data = Data({"password": "..."}, budget=budget)  # built once per sync
    output = template.execute(data, limits=Limits(), budget=budget)    # -> str

or ``render(text, data, name=...)``. Every template parse and execution of one sync charges
the same SyncBudget: each operation reserves the bytes it is about to build (estimated from
its inputs) and the steps it takes before doing the work, and BudgetExceeded (a
TemplateError whose ``budget`` is set) stops the sync's templates. Parsed templates are
cached by name and content hash (bounded); a hit charges what the parse cost.

The data is a mapping of key names to str (or bytes); missing keys read with ``.key`` are
errors (ESO's ``missingkey=error``), with ``index`` they give "". Output bytes that are
not UTF-8 (from ``b64dec``) come back as surrogate escapes: ``encode_output`` turns the
output into the exact bytes.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from collections.abc import Mapping
from typing import Any, Literal

from ._base import (
    DEFAULT_SYNC_BYTES,
    DEFAULT_SYNC_STEPS,
    DICT_SLOT,
    STR_OVERHEAD,
    BudgetExceeded,
    Limits,
    Source,
    SyncBudget,
    TemplateError,
    text_cost,
)
from ._exec import data_root, execute
from ._funcs import FUNCTIONS, SPECIAL, UNSUPPORTED
from ._parser import Tree, parse_tree
from ._values import JSON_PARSE_FACTOR, clean_text, load_yaml_bounded, value_cost

__all__ = [
    "DEFAULT_SYNC_BYTES",
    "DEFAULT_SYNC_STEPS",
    "JSON_PARSE_FACTOR",
    "STR_OVERHEAD",
    "SUPPORTED_FUNCTIONS",
    "UNSUPPORTED_FUNCTIONS",
    "BudgetExceeded",
    "Data",
    "Limits",
    "MissingKey",
    "SyncBudget",
    "Template",
    "TemplateError",
    "encode_output",
    "load_yaml_bounded",
    "parse",
    "render",
    "value_cost",
]

MissingKey = Literal["error", "default"]
SUPPORTED_FUNCTIONS: frozenset[str] = frozenset(FUNCTIONS) | frozenset(SPECIAL)
UNSUPPORTED_FUNCTIONS: Mapping[str, str] = UNSUPPORTED  # name -> why

# The parse cache: at most this many templates, and at most this many bytes of their
# charged parse cost together (what the parse reserved, about twice what the tree keeps).
CACHE_ENTRIES = 512
CACHE_BYTES = 32 << 20


class Data:
    """The fetched values as templates see them: decoded once per sync, then shared by every
    template of the sync (each execution gets a shallow copy of the map, so a template that
    ``set``s a key on its dot changes nothing for the next one)."""

    def __init__(self, data: Mapping[str, str | bytes], *, missing_key: MissingKey = "error",
                 budget: SyncBudget | None = None) -> None:
        if missing_key not in ("error", "default"):
            raise ValueError("missing_key must be 'error' or 'default'")
        self.strict = missing_key == "error"
        self.root = data_root(data, self.strict, budget)

    def fresh(self, budget: SyncBudget) -> dict[str, Any]:
        budget.reserve(64 + DICT_SLOT * len(self.root))
        return type(self.root)(self.root)  # a StringMap stays one


class Template:
    """A parsed template; immutable, safe to cache and to execute concurrently."""

    def __init__(self, tree: Tree) -> None:
        self._tree = tree

    @property
    def name(self) -> str:
        return self._tree.source.name

    @property
    def defined_templates(self) -> frozenset[str]:
        return frozenset(self._tree.defines)

    def execute(
        self,
        data: Mapping[str, str | bytes] | Data,
        *,
        limits: Limits | None = None,
        missing_key: MissingKey = "error",
        budget: SyncBudget | None = None,
    ) -> str:
        """Render over ``data``; raises TemplateError (never another error for any data).

        ``missing_key="error"`` (External Secrets Operator's choice, the default): reading
        a missing key with ``.key`` is an error. ``"default"`` (Go's default, what
        ack-secret-manager v0.6 does): it gives nil, printed as ``<no value>``. With a
        prepared ``Data``, its own missing-key rule applies. ``budget``: the sync's (a
        fresh default one when None).
        """
        budget = budget if budget is not None else SyncBudget()
        if not isinstance(data, Data):
            try:
                data = Data(data, missing_key=missing_key, budget=budget)
            except BudgetExceeded as exceeded:
                raise TemplateError(self.name, 1, 1, str(exceeded), exceeded) from None
        try:
            root = data.fresh(budget)
        except BudgetExceeded as exceeded:
            raise TemplateError(self.name, 1, 1, str(exceeded), exceeded) from None
        return execute(self._tree, root, limits or Limits(), data.strict, budget)


class _Cached:
    __slots__ = ("bytes", "steps", "template")

    def __init__(self, template: Template, size: int, steps: int) -> None:
        self.template, self.bytes, self.steps = template, size, steps


_cache: collections.OrderedDict[tuple[str, bytes], _Cached] = collections.OrderedDict()
_cache_bytes = 0
_cache_lock = threading.Lock()


def parse(text: str, name: str, budget: SyncBudget | None = None) -> Template:
    """Parse a template; ``name`` (e.g. the Secret key's field path) is used in errors.

    Cached by name and content hash; the parse's cost (bytes reserved, steps) is charged to
    ``budget`` on every call, hit or miss, so whether a sync fits its budget never depends
    on what other syncs parsed before it.
    """
    budget = budget if budget is not None else SyncBudget()
    try:
        # the UTF-8 copy hashed, then (on a miss) the cleaned text and its line table
        budget.reserve(text_cost(len(text)))
        key = (name, hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
        with _cache_lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
        if hit is not None:
            budget.reserve(hit.bytes)
            budget.charge(hit.steps)
            return hit.template
        before_bytes, before_steps = budget.bytes, budget.steps
        budget.reserve(text_cost(len(text)) + 40 * text.count("\n"))
        source = Source(name, clean_text(text))
        template = Template(parse_tree(source, SUPPORTED_FUNCTIONS, UNSUPPORTED, budget))
    except BudgetExceeded as exceeded:
        raise TemplateError(name, 1, 1, str(exceeded), exceeded) from None
    _remember(key, _Cached(template, budget.bytes - before_bytes, budget.steps - before_steps))
    return template


def _remember(key: tuple[str, bytes], entry: _Cached) -> None:
    global _cache_bytes
    if entry.bytes > CACHE_BYTES // 4:
        return  # one template may not take most of the cache
    with _cache_lock:
        old = _cache.pop(key, None)
        if old is not None:
            _cache_bytes -= old.bytes
        _cache[key] = entry
        _cache_bytes += entry.bytes
        while len(_cache) > CACHE_ENTRIES or _cache_bytes > CACHE_BYTES:
            _, evicted = _cache.popitem(last=False)
            _cache_bytes -= evicted.bytes


def clear_cache() -> None:
    """Forget every parsed template (tests)."""
    global _cache_bytes
    with _cache_lock:
        _cache.clear()
        _cache_bytes = 0


def render(
    text: str,
    data: Mapping[str, str | bytes] | Data,
    *,
    name: str,
    limits: Limits | None = None,
    missing_key: MissingKey = "error",
    budget: SyncBudget | None = None,
) -> str:
    """Parse (cached) and execute in one call, both charged to ``budget``."""
    budget = budget if budget is not None else SyncBudget()
    return parse(text, name, budget).execute(data, limits=limits, missing_key=missing_key,
                                             budget=budget)


def encode_output(output: str) -> bytes:
    """The exact bytes of an output (bytes that were not UTF-8 are restored)."""
    return output.encode("utf-8", "surrogateescape")
