"""Which provider serves an ExternalSecret's `provider` name: the one place the engine finds
a source. The composition root (controller/app.py) registers each provider once, under the
names it serves; the engine asks by name and never imports a provider.

Names compare case-insensitively, as the API reads `spec.provider` ("KMS" is "kms").
"""

from __future__ import annotations

from collections.abc import Iterator

from controller.providers.base import Provider


class Providers:
    """The registered providers, by the ExternalSecret `provider` names they serve."""

    def __init__(self) -> None:
        self._by_name: dict[str, Provider] = {}

    def register(self, provider: Provider, *names: str) -> None:
        """Serve `names` with `provider`. A name already taken is a wiring mistake: raises
        ValueError rather than silently replacing the first."""
        for name in names:
            key = name.lower()
            if key in self._by_name and self._by_name[key] is not provider:
                raise ValueError(f"provider name {name!r} is already registered")
            self._by_name[key] = provider

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
