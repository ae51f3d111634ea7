"""A sandboxed interpreter of Go's text/template dialect with the common sprig functions.

Why this module exists: ack-secret-manager v0.6 and External Secrets Operator let users
build Secret data from fetched values with Go templates (``spec.target.template.data``,
``templateFrom``); no maintained Python library speaks that dialect, and templates come
from tenants while the data is secret, so the interpreter must be pure (no I/O, no clock,
no attribute access on Python objects), bounded (output size, evaluation steps, nesting,
range iterations) and careful with errors (they name the template, line and column and
never quote a value). docs/templates.md lists the dialect, the functions and the bounds.

Use::

    template = parse(text, "spec.target.template.data.config.yaml")   # cacheable
    output = template.execute({"password": "..."}, limits=Limits())    # -> str

or ``render(text, data, name=...)``. The data is a mapping of key names to str (or
bytes); missing keys read with ``.key`` are errors (ESO's ``missingkey=error``), with
``index`` they give "". Output bytes that are not UTF-8 (from ``b64dec``) come back as
surrogate escapes: ``encode_output`` turns the output into the exact bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from ._base import Limits, Source, TemplateError
from ._exec import data_root, execute
from ._funcs import FUNCTIONS, SPECIAL, UNSUPPORTED
from ._parser import Tree, parse_tree
from ._values import clean_text

__all__ = [
    "SUPPORTED_FUNCTIONS",
    "UNSUPPORTED_FUNCTIONS",
    "Limits",
    "MissingKey",
    "Template",
    "TemplateError",
    "encode_output",
    "parse",
    "render",
]

MissingKey = Literal["error", "default"]
SUPPORTED_FUNCTIONS: frozenset[str] = frozenset(FUNCTIONS) | frozenset(SPECIAL)
UNSUPPORTED_FUNCTIONS: Mapping[str, str] = UNSUPPORTED  # name -> why


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
        data: Mapping[str, str | bytes],
        *,
        limits: Limits | None = None,
        missing_key: MissingKey = "error",
    ) -> str:
        """Render over ``data``; raises TemplateError (never another error for any data).

        ``missing_key="error"`` (External Secrets Operator's choice, the default): reading
        a missing key with ``.key`` is an error. ``"default"`` (Go's default, what
        ack-secret-manager v0.6 does): it gives nil, printed as ``<no value>``.
        """
        if missing_key not in ("error", "default"):
            raise ValueError("missing_key must be 'error' or 'default'")
        strict = missing_key == "error"
        return execute(self._tree, data_root(data, strict), limits or Limits(), strict)


def parse(text: str, name: str) -> Template:
    """Parse a template; ``name`` (e.g. the Secret key's field path) is used in errors."""
    source = Source(name, clean_text(text))
    return Template(parse_tree(source, SUPPORTED_FUNCTIONS, UNSUPPORTED))


def render(
    text: str,
    data: Mapping[str, str | bytes],
    *,
    name: str,
    limits: Limits | None = None,
    missing_key: MissingKey = "error",
) -> str:
    """Parse and execute in one call."""
    return parse(text, name).execute(data, limits=limits, missing_key=missing_key)


def encode_output(output: str) -> bytes:
    """The exact bytes of an output (bytes that were not UTF-8 are restored)."""
    return output.encode("utf-8", "surrogateescape")
