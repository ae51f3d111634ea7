"""The source seam (issue 20): what the engine knows of a secret source. `base` holds the
`Provider` protocol and the provider-neutral types (`RemoteRef`, `SecretValue`, `ClientKey`,
`FetchError` and its `Kind`s, `StoreProblem`) and whose read is made (`on_behalf_of`,
`tenant`); `registry` finds the provider serving an ExternalSecret's `provider` name and holds
the API the registered sources make (`Providers.shape`). The sources sit behind it, each
declaring its API shape in its own folder: `alibaba/` (KMS, KMS instance, OOS) and `fake/`
(in memory, the worked example). `installed` is the one list of the sources the controller
runs (controller/app.py, the composition root, builds them from it); the engine and the API
never import a source."""

from controller.providers.base import (
    RETRYABLE,
    ClientKey,
    FetchError,
    Kind,
    Provider,
    RemoteRef,
    SecretValue,
    StoreProblem,
    StoreRules,
    on_behalf_of,
    tenant,
)
from controller.providers.registry import Providers

__all__ = ["RETRYABLE", "ClientKey", "FetchError", "Kind", "Provider", "Providers", "RemoteRef",
           "SecretValue", "StoreProblem", "StoreRules", "on_behalf_of", "tenant"]
