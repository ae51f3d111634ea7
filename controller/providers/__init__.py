"""The source seam (issue 20): what the engine knows of a secret source. `base` holds the
`Provider` protocol and the provider-neutral types (`RemoteRef`, `SecretValue`, `ClientKey`,
`FetchError` and its `Kind`s, `StoreProblem`) and whose read is made (`on_behalf_of`,
`tenant`); `registry` finds the provider serving an ExternalSecret's `provider` name. The
sources sit behind it: `alibaba/` (KMS, KMS instance, OOS) and `fake/` (in memory, the worked
example); only controller/app.py, the composition root, imports them."""

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
