"""The installed secret sources: the one list a new source adds a line to (issue 20).

Each entry is a source's API shape (the `provider` names it serves, the store blocks it owns
with their parsers and CRD schema: its own folder declares them), how to build it from what
the composition root lends (`Wiring`), and the endpoint hosts the operator's settings name for
it (the metrics label those by name, every other host as "other"). controller/app.py builds and
registers each and takes the hosts from `named_endpoints()`; the CRD generator
(hack/gen_crds.py) takes the provider names and the store blocks' schema from `shape()`. The
fake (controller/providers/fake) is not installed: a test installs it the same way
(tests/unit/test_installed.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controller import api
from controller.providers.alibaba import provider as alibaba
from controller.providers.alibaba import shape as alibaba_shape
from controller.providers.alibaba import stores as alibaba_stores
from controller.providers.base import Provider, Wiring
from controller.providers.registry import Providers
from controller.settings import Settings


def _no_endpoints(_settings: Settings) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class Installed:
    """One source: its API shape, how to build it, and the endpoint hosts (host[:port]) the
    operator's settings name for it."""

    shape: api.SourceShape
    build: Callable[[Wiring], Provider]
    endpoints: Callable[[Settings], tuple[str, ...]] = _no_endpoints


INSTALLED: tuple[Installed, ...] = (
    Installed(alibaba_shape.SHAPE, alibaba.build, alibaba_stores.operator_endpoints),
)


def shape(installed: tuple[Installed, ...] = INSTALLED) -> api.Shape:
    """The API the sources make: what the parsers and the CRDs accept."""
    return api.Shape(tuple(i.shape for i in installed))


def build(wiring: Wiring, installed: tuple[Installed, ...] = INSTALLED) -> Providers:
    """Each source built and registered under its shape."""
    providers = Providers()
    for source in installed:
        providers.register(source.build(wiring), shape=source.shape)
    return providers


def named_endpoints(settings: Settings,
                    installed: tuple[Installed, ...] = INSTALLED) -> tuple[str, ...]:
    """The endpoint hosts the operator named for any source, each once."""
    return tuple(dict.fromkeys(host for source in installed
                               for host in source.endpoints(settings)))
