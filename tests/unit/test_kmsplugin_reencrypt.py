"""`reencrypt`'s pieces without an apiserver: flags, resource names, pacing, paging, the
progress line and the summary (the end-to-end proof is tests/integration/
test_encryption_at_rest.py)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from controller import reencrypt
from controller.kube import rewrite
from controller.kube.rest import ApiError


def test_resource_names() -> None:
    assert rewrite.resource_for("secrets").path("ns", "a") == "/api/v1/namespaces/ns/secrets/a"
    lease = rewrite.resource_for("leases.coordination.k8s.io/v1")
    assert lease.path("ns") == "/apis/coordination.k8s.io/v1/namespaces/ns/leases"
    for bad in ("", "leases.coordination.k8s.io", "a/v1"):
        with pytest.raises(ValueError, match="<plural>"):
            rewrite.resource_for(bad)


def test_flags() -> None:
    options = reencrypt.parse(["-n", "prod", "--resources", "secrets,configmaps", "--qps", "50"])
    assert (options.namespace, options.resources, options.qps) == (
        "prod", ("secrets", "configmaps"), 50.0)
    with pytest.raises(ValueError, match="--qps"):
        reencrypt.parse(["--qps", "0"])


def test_pacer_spaces_starts_evenly() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)

    pacer = reencrypt.Pacer(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        pacer.wait()
    assert slept == pytest.approx([0.1, 0.2, 0.3, 0.4])


class FakeRest:
    """Two pages; PUT answers per name: a new resourceVersion, the same one, or an error."""

    def __init__(self, expire_once: bool = False) -> None:
        self.expire_once = expire_once
        self.puts: list[str] = []

    def get(self, path: str, **query: Any) -> Any:
        if query.get("continue") == "page2":
            if self.expire_once:
                self.expire_once = False
                raise ApiError(410, "Expired")
            return {"kind": "SecretList", "metadata": {},
                    "items": [self._item("c", "1"), self._item("d", "1")]}
        return {"kind": "SecretList", "metadata": {"continue": "page2", "remainingItemCount": 2},
                "items": [self._item("a", "1"), self._item("b", "1")]}

    @staticmethod
    def _item(name: str, rv: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        name = path.rsplit("/", 1)[1]
        self.puts.append(name)
        assert kwargs["body"]["kind"] == "Secret" and kwargs["body"]["apiVersion"] == "v1"
        if name == "b":
            return {"metadata": {"resourceVersion": "1"}}  # not stale: the apiserver skipped it
        if name == "c":
            raise ApiError(409, "Conflict")
        if name == "d":
            raise ApiError(500, "InternalError")
        return {"metadata": {"resourceVersion": "2"}}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_run_counts_each_outcome_and_shows_progress_on_a_terminal() -> None:
    rest = FakeRest()
    stream = Tty()
    summary = reencrypt.run(rest, reencrypt.Options(qps=1000), stream=stream)  # type: ignore[arg-type]
    assert summary.line() == "rewritten=1 unchanged=1 skipped=1 failed=1"
    assert summary.failures == ["secrets ns/d"]
    assert "/4 " in stream.getvalue() and stream.getvalue().endswith("\n")


def test_expired_continue_token_lists_again() -> None:
    rest = FakeRest(expire_once=True)
    summary = reencrypt.run(rest, reencrypt.Options(qps=1000), stream=io.StringIO())  # type: ignore[arg-type]
    assert sorted(rest.puts) == ["a", "a", "b", "b", "c", "d"]
    assert summary.done == 6
