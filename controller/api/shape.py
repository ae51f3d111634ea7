"""What the installed secret sources add to the API (issue 20: a source owns its API shape):
the ExternalSecret `spec.provider` names they serve, the store blocks they own (a field of a
SecretStore's spec, e.g. "KMS", with the parser from the raw block to the source's own frozen
type, and the block's CRD schema), and a rule a source may add over an ExternalSecret's
entries. The API's parsers take a `Shape` by argument; a source declares its `SourceShape` in
its own folder, and the composition root (controller/providers/installed.py) joins them. Pure
data: nothing here knows a source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.api.externalsecret import DataEntry
    from controller.api.fields import Problems

# (the raw block, its field e.g. "spec.KMS", the store's namespace ("" for a
# ClusterSecretStore), the problems to add to) -> the source's own frozen view of the block
BlockParser = Callable[[object, str, str, "Problems"], object]
# (the ExternalSecret's provider name, one of its entries, the problems to add to)
EntryRule = Callable[[str, "DataEntry", "Problems"], None]


@dataclass(frozen=True)
class StoreBlock:
    """A block of a store's spec that one source owns: `spec.<field>`."""

    field: str
    parse: BlockParser
    # its CRD schema (OpenAPI v3: controller/api/schema.py builds it)
    schema: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class SourceShape:
    """What one source adds to the API. `provider_doc` is its part of spec.provider's CRD
    description (e.g. "oos, OOS encryption parameters")."""

    names: tuple[str, ...]
    blocks: tuple[StoreBlock, ...] = ()
    check_entry: EntryRule | None = None
    provider_doc: str = ""


@dataclass(frozen=True)
class Shape:
    """The API the installed sources make, in installation order: the first name of the first
    source is the default `spec.provider`."""

    sources: tuple[SourceShape, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.lower() for s in self.sources for n in s.names)

    @property
    def default_provider(self) -> str:
        return self.names[0] if self.names else ""

    @property
    def blocks(self) -> tuple[StoreBlock, ...]:
        return tuple(b for s in self.sources for b in s.blocks)

    @property
    def provider_pattern(self) -> str:
        """spec.provider as the parser reads it: a name in any case, or empty (the default)."""
        return rf"^(?i:{'|'.join(self.names)})?$"

    def entry_rule(self, provider: str) -> EntryRule | None:
        for source in self.sources:
            if provider in (n.lower() for n in source.names):
                return source.check_entry
        return None


def one_of(words: tuple[str, ...] | list[str], last: str = "or") -> str:
    """"a", "a or b", "a, b or c"."""
    if len(words) < 2:
        return "".join(words)
    return f"{', '.join(words[:-1])} {last} {words[-1]}"
