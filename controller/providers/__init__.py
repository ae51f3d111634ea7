"""The source seam (issue 20): what the engine knows of a secret source. Today the
provider-neutral error vocabulary (`FetchError`, `Kind`, `RETRYABLE`) and whose read is made
(`on_behalf_of`, `tenant`), in `base`; the Alibaba readers live in controller/alicloud."""

from controller.providers.base import RETRYABLE, FetchError, Kind, on_behalf_of, tenant

__all__ = ["RETRYABLE", "FetchError", "Kind", "on_behalf_of", "tenant"]
