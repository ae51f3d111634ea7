"""How the Alibaba readers call their services (`pool.CallPolicy`): built once from the
operator's flags and handed to the KMS, OOS and KMS-instance readers, and the retry policy of
one read that all three share."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from controller import settings
from controller.providers import FetchError, Kind
from controller.providers.alibaba.dedicated import DedicatedReader
from controller.providers.alibaba.kms import Kms
from controller.providers.alibaba.oos import Oos
from controller.providers.alibaba.pool import CallPolicy
from controller.providers.alibaba.provider import from_settings


def test_the_operators_rates_reach_every_reader() -> None:
    calls: list[tuple[str, str, str]] = []
    cfg = settings.load(["--max-concurrent-kms-secret-pulls=7",
                         "--max-concurrent-oos-secret-pulls=3"], {})
    provider = from_settings(cfg, on_call=lambda a, host, code, s: calls.append((a, host, code)),
                             on_identity=lambda kind: None, tokens=lambda in_use: None)  # type: ignore[arg-type,return-value]
    try:
        kms, oos, dedicated = (provider.readers[n] for n in ("kms", "oos", "dkms"))
        assert isinstance(kms, Kms) and isinstance(oos, Oos)
        assert isinstance(dedicated, DedicatedReader)
        assert kms.clients.limiter("kms.cn-hangzhou.aliyuncs.com").rate == 7
        assert dedicated.instance.clients.limiter("kst-1.cryptoservice.kms.aliyuncs.com").rate == 7
        assert oos.clients.limiter("oos.cn-hangzhou.aliyuncs.com").rate == 3
        kms.policy.observe("kms.example", "Success", time.monotonic())
        oos.policy.observe("oos.example", "Throttling", time.monotonic())
        assert calls == [("GetSecretValue", "kms.example", "Success"),
                         ("GetSecretParameter", "oos.example", "Throttling")]
    finally:
        provider.close()


def _read(policy: CallPolicy, errors: list[FetchError], *, token_refresh: bool = False,
          cancelled: threading.Event | None = None) -> int:
    """Calls a read made before it gave up (raising the last error) or got its value."""
    made = 0

    def call() -> str:
        nonlocal made
        made += 1
        if errors:
            raise errors.pop(0)
        return "value"

    with contextlib.suppress(FetchError):
        policy.retrying(cancelled or threading.Event(), token_refresh=token_refresh)(call)
    return made


def test_a_read_makes_at_most_max_attempts_calls() -> None:
    throttled = [FetchError(Kind.THROTTLED, "Throttling", "x", retry_after=0.001)
                 for _ in range(10)]
    assert _read(CallPolicy(max_attempts=3), throttled) == 3


def test_a_final_error_is_not_retried() -> None:
    denied = [FetchError(Kind.DENIED, "Forbidden", "x") for _ in range(3)]
    assert _read(CallPolicy(), denied) == 1


def test_an_expired_token_is_retried_once_and_only_when_asked() -> None:
    def expired() -> list[FetchError]:
        return [FetchError(Kind.DENIED, "InvalidSecurityToken.Expired", "x", token_expired=True)
                for _ in range(3)]

    assert _read(CallPolicy(), expired(), token_refresh=True) == 2
    assert _read(CallPolicy(), expired()) == 1


def test_a_cancelled_read_stops_at_once() -> None:
    cancelled = threading.Event()
    cancelled.set()
    throttled = [FetchError(Kind.THROTTLED, "Throttling", "x", retry_after=30.0)
                 for _ in range(5)]
    start = time.monotonic()
    assert _read(CallPolicy(max_retry_seconds=30.0), throttled, cancelled=cancelled) == 1
    assert time.monotonic() - start < 5.0


@pytest.mark.parametrize("retry_after", [0.5, 60.0])
def test_the_services_retry_after_is_waited_up_to_the_read_budget(retry_after: float) -> None:
    waits: list[float] = []

    class Recording(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(float(timeout or 0.0))
            return False

    throttled = [FetchError(Kind.THROTTLED, "Throttling", "x", retry_after=retry_after)]
    assert _read(CallPolicy(max_retry_seconds=20.0), throttled, cancelled=Recording()) == 2
    assert waits == [min(retry_after, 20.0)]
