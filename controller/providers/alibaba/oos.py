"""Reading OOS encryption parameters (`provider: oos`, ack-secret-manager's `SecretStore.spec.OOS`)
with `GetSecretParameter` and decryption, as any identity the KMS path has.

Why its own module: OOS is another product (own SDK `alibabacloud_oos20190601`, own endpoint
`oos.<region>.aliyuncs.com`, numbered parameter versions instead of version ids and stages),
but reads must behave exactly like KMS reads: the same identities (`IdentityPool`), one SDK
client per (endpoint, identity), a rate limit and concurrency cap per endpoint
(`pool.RateLimiter`), the same call policy (`pool.CallPolicy`) and the same error classes
(`errors.classify(product="OOS")`). The result is the `SecretValue` the fetcher already
consumes: `data` the decrypted value, `data_type` "text", `version_id` the parameter
version ("1", "2", ...), no stages. Clients and limiters unused for `idle` seconds are
dropped as in `kms` (`pool.SdkClients`; `forget_identity` drops one identity's now).
"""

from __future__ import annotations

import time
from typing import Any

from controller.providers import tenant
from controller.providers.alibaba.errors import FetchError, Kind, classify
from controller.providers.alibaba.identity import Identity, IdentityPool
from controller.providers.alibaba.kms import Endpoint, SecretValue
from controller.providers.alibaba.pool import DEFAULT_CALLS, CallPolicy, RateLimiter, SdkClients

PRODUCT = "OOS"
MAX_VERSION = 100  # documented range of ParameterVersion: 1-100


def endpoint_for(region: str, *, host: str = "", vpc: bool = False) -> Endpoint:
    """The OOS endpoint: `host` when given (a flag or the store), else the SDK's 'regional'
    rule: `oos.<region>.aliyuncs.com`, or `oos-vpc.<region>.aliyuncs.com` inside a VPC."""
    if host:
        return Endpoint(host=host)
    if not region:
        raise FetchError(Kind.CONFIG, "MissingRegion",
                         "MissingRegion: no OOS endpoint: set --region (or the store's "
                         "endpoint) so that oos.<region>.aliyuncs.com can be used")
    return Endpoint(host=f"oos{'-vpc' if vpc else ''}.{region}.aliyuncs.com")


def parameter_version(version: str | int) -> int | None:
    """`versionId` of a data entry as an OOS ParameterVersion (empty: the latest)."""
    text = str(version).strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= MAX_VERSION:
        raise FetchError(Kind.CONFIG, "InvalidParameterVersion",
                         f"InvalidParameterVersion: versionId {text[:20]!r} is not an OOS "
                         f"parameter version; use a number from 1 to {MAX_VERSION}, or leave "
                         "it empty for the latest")
    return int(text)


class Oos:
    """`get_secret_parameter` (and the fetcher's `get_secret_value` shape) for OOS."""

    def __init__(
        self,
        identities: IdentityPool,
        *,
        region: str,
        policy: CallPolicy = DEFAULT_CALLS,
    ) -> None:
        self.identities = identities
        self.region = region
        self.policy = policy
        self.clients = SdkClients(identities, policy.rate_per_endpoint, idle=policy.idle,
                                  clock=policy.clock)
        self.calls = 0

    def cancel(self) -> None:
        """Stop retrying (shutdown): waiting calls end at once with a transient error."""
        self.clients.cancel()

    def close(self) -> None:
        self.clients.close()

    def release(self, identity: Identity, endpoint: Endpoint) -> bool:
        """No read uses `endpoint` as `identity` any more: drop that client now."""
        return self.clients.drop_key((endpoint, identity))

    def forget_identity(self, identity: Identity) -> int:
        """Drop `identity`'s clients and credentials now; returns the clients dropped."""
        return self.clients.forget_identity(identity)

    def sizes(self) -> dict[str, int]:
        return self.clients.sizes()

    # ------------------------------------------------------------------ public
    def get_secret_parameter(self, identity: Identity, endpoint: Endpoint, name: str,
                             version: str | int = "") -> SecretValue:
        """Read one encryption parameter, decrypted (`version` empty: the latest); raises
        FetchError, already retried where that helps."""
        number = parameter_version(version)
        policy = self.policy.retrying(self.clients.cancelled, token_refresh=True)
        result: SecretValue = policy(self._call, identity, endpoint, name, number)
        return result

    def get_secret_value(self, identity: Identity, endpoint: Endpoint, name: str,
                         version_id: str = "", version_stage: str = "") -> SecretValue:
        """The fetcher's reader shape: `version_id` is the parameter version; OOS has no
        version stages, so a `versionStage` is refused (naming the field and the fix)."""
        if version_stage:
            raise FetchError(Kind.CONFIG, "VersionStageUnsupported",
                             "VersionStageUnsupported: OOS parameters have numbered versions, "
                             "not stages; remove versionStage from the data entry and use "
                             "versionId (1-100)")
        return self.get_secret_parameter(identity, endpoint, name, version_id)

    # ----------------------------------------------------------------- private
    def _call(self, identity: Identity, endpoint: Endpoint, name: str,
              number: int | None) -> SecretValue:
        from alibabacloud_oos20190601 import models

        self.clients.check_cancelled()
        limiter = self._limiter(endpoint.host)
        credential = None
        start = time.monotonic()
        code = "Success"
        try:
            with limiter.turn(tenant() or identity.fingerprint()):
                client, credential = self._client(identity, endpoint)
                credential.get_credential()  # a due STS refresh happens now, not after the start
                request = models.GetSecretParameterRequest(
                    name=name, parameter_version=number, with_decryption=True,
                    region_id=self.region or None)
                limiter.acquire(self.clients.cancelled)
                self.clients.check_cancelled()
                start = time.monotonic()
                self.calls += 1
                resp = client.get_secret_parameter(request)
        except Exception as exc:  # noqa: BLE001 - classified, re-raised as FetchError
            error = classify(exc, who=identity.describe(), endpoint=endpoint.host,
                             product=PRODUCT, ca_pem=endpoint.ca_pem)
            code = error.code
            if error.token_expired and credential is not None:
                self.clients.forget_credential(identity, credential)
            raise error from None
        finally:
            self.policy.observe(endpoint.host, code, start)
        return _value(name, resp.body)

    def _limiter(self, host: str) -> RateLimiter:
        return self.clients.limiter(host)

    def _client(self, identity: Identity, endpoint: Endpoint) -> tuple[Any, Any]:
        return self.clients.entry(identity, endpoint, lambda: self._build(identity, endpoint))

    def _build(self, identity: Identity, endpoint: Endpoint) -> tuple[Any, Any]:
        from alibabacloud_oos20190601.client import Client
        from alibabacloud_tea_openapi.models import Config

        if endpoint.ca_pem:
            raise FetchError(Kind.CONFIG, "CANotSupported",
                             "CANotSupported: OOS endpoints use public certificates; remove "
                             "the CA from the OOS store")
        try:
            credential = self.identities.credential(identity)
        except ValueError as exc:  # the credentials library refused the configuration
            raise classify(exc, who=identity.describe(), product=PRODUCT) from None
        config = Config(credential=credential, endpoint=endpoint.host, protocol=endpoint.protocol,
                        region_id=self.region or None,
                        connect_timeout=self.policy.connect_timeout_ms,
                        read_timeout=self.policy.read_timeout_ms)
        return Client(config), credential


def _value(name: str, body: Any) -> SecretValue:
    parameter = body.parameter if body is not None else None
    if parameter is None:
        raise FetchError(Kind.TRANSIENT, "EmptyResponse",
                         f"EmptyResponse: OOS answered without the parameter {name}; will retry")
    version = parameter.parameter_version
    return SecretValue(name=name, data=str(parameter.value or "").encode(), data_type="text",
                       version_id="" if version is None else str(version))
