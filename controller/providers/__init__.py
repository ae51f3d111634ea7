"""The source seam (issue 20): what the engine knows of a secret source. Today the
provider-neutral error vocabulary (`FetchError`, `Kind`, `RETRYABLE`, in `base`); the Alibaba
readers live in controller/alicloud and raise these."""

from controller.providers.base import RETRYABLE, FetchError, Kind

__all__ = ["RETRYABLE", "FetchError", "Kind"]
