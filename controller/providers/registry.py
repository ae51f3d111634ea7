"""Which provider serves an ExternalSecret's `provider` name: the one place the engine finds
a source, and the API they make together (`shape`: the provider names and store blocks the
engine parses ExternalSecrets and stores with). The composition root (controller/app.py,
from controller/providers/installed.py) registers each provider once, with the `SourceShape`
it declares; the engine asks by name and never imports a provider.

Names compare case-insensitively, as the API reads `spec.provider` ("KMS" is "kms").
"""

from __future__ import annotations

from collections.abc import Iterator

from controller import api
from controller.providers.base import Provider


class Providers:
    """The registered providers, by the ExternalSecret `provider` names they serve."""

    def __init__(self) -> None:
        self._by_name: dict[str, Provider] = {}
        self._shapes: list[api.SourceShape] = []

    def register(self, provider: Provider, *names: str,
                 shape: api.SourceShape | None = None) -> None:
        """Serve `names` (default: the names `shape` declares) with `provider`, adding its
        `shape` (the store blocks it owns; none: the names only) to the API. A name or a
        store block already taken is a wiring mistake: raises ValueError rather than
        silently replacing the first."""
        names = names or (shape.names if shape is not None else ())
        declared = api.SourceShape(tuple(names)) if shape is None else \
            api.SourceShape(tuple(names), shape.blocks, shape.check_entry, shape.provider_doc)
        taken = {b.field for b in self.shape.blocks}
        if any(b.field in taken for b in declared.blocks):
            raise ValueError(f"a store block of {names!r} is already registered")
        for name in names:
            key = name.lower()
            if key in self._by_name and self._by_name[key] is not provider:
                raise ValueError(f"provider name {name!r} is already registered")
            self._by_name[key] = provider
        self._shapes.append(declared)

    @property
    def shape(self) -> api.Shape:
        """The API the registered providers make, in registration order."""
        return api.Shape(tuple(self._shapes))

    def get(self, name: str) -> Provider | None:
        """The provider serving `name`; None when none does."""
        return self._by_name.get(name.lower())

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_name))

    def __iter__(self) -> Iterator[Provider]:
        """Each registered provider once (one may serve several names)."""
        seen: list[Provider] = []
        for provider in self._by_name.values():
            if not any(provider is s for s in seen):
                seen.append(provider)
        return iter(seen)

    def cancel(self) -> None:
        for provider in self:
            provider.cancel()

    def close(self) -> None:
        for provider in self:
            provider.close()
