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


# --- --wait-for-key-rotation -------------------------------------------------------------------

OLD, NEW = "alibaba-kms-" + "a" * 40, "alibaba-kms-" + "b" * 40


class FakeCluster:
    """The apiserver's /metrics (writes per key_id hash) and the plugin's, as a rotation
    progresses: the plugin refreshes on the `refresh_at`-th read of its metrics, and the
    apiserver switches its writes to the plugin's key_id `switch_after` probe writes later."""

    def __init__(self, refresh_at: int = 3, switch_after: int = 2) -> None:
        self.plugin_reads = 0
        self.refresh_at, self.switch_after = refresh_at, switch_after
        self.refreshes, self.plugin_key = 7, OLD
        self.writes: dict[str, int] = {OLD: 5}
        self.probe: dict[str, str] | None = None
        self.probe_writes_after_refresh = 0
        self.deleted = False

    # the plugin's /metrics
    def fetch(self, url: str) -> str:
        assert url == "http://127.0.0.1:8095/metrics"
        self.plugin_reads += 1
        if self.plugin_reads == self.refresh_at:
            self.refreshes, self.plugin_key = self.refreshes + 1, NEW
        return ("# TYPE ack_secret_manager_kmsplugin_key_refreshes_total counter\n"
                f'ack_secret_manager_kmsplugin_key_refreshes_total{{result="ok"}} '
                f"{self.refreshes}.0\n"
                'ack_secret_manager_kmsplugin_key_refreshes_total{result="error"} 2.0\n'
                "# TYPE ack_secret_manager_kmsplugin_key_id_info gauge\n"
                f'ack_secret_manager_kmsplugin_key_id_info{{key_id="{self.plugin_key}"}} 1.0\n')

    # the apiserver (Rest)
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        assert (method, path, kwargs) == ("GET", "/metrics", {"stream": True})
        lines = ["# TYPE apiserver_envelope_encryption_key_id_hash_total counter"]
        for key_id, count in self.writes.items():
            for kind, value in (("to_storage", count), ("from_storage", 100)):
                lines.append(f'apiserver_envelope_encryption_key_id_hash_total{{'
                             f'apiserver_id_hash="sha256:x",key_id_hash='
                             f'"{reencrypt.key_id_hash(key_id)}",provider_name="alibaba-kms",'
                             f'transformation_type="{kind}"}} {value}')
        return io.BytesIO(("\n".join(lines) + "\n").encode())

    def merge_patch(self, path: str, body: dict[str, Any]) -> Any:
        if self.probe is None:
            raise ApiError(404, "NotFound")
        return self._write(path.rsplit("/", 1)[0], body)

    def create(self, path: str, body: dict[str, Any]) -> Any:
        assert body["metadata"]["name"] == reencrypt.PROBE_NAME
        return self._write(path, body)

    def _write(self, path: str, body: dict[str, Any]) -> Any:
        assert path == "/api/v1/namespaces/default/secrets"
        self.probe = body["data"]
        used = OLD
        if self.plugin_key == NEW:
            self.probe_writes_after_refresh += 1
            if self.probe_writes_after_refresh > self.switch_after:
                used = NEW
        self.writes[used] = self.writes.get(used, 0) + 1
        return {}

    def delete(self, path: str) -> Any:
        assert path.endswith("/default/secrets/" + reencrypt.PROBE_NAME)
        self.deleted = True
        return {}


def waiter(cluster: FakeCluster, **options: Any) -> tuple[reencrypt.RotationWait, list[float]]:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    wait = reencrypt.RotationWait(cluster, reencrypt.WaitOptions(**options),  # type: ignore[arg-type]
                                  fetch=cluster.fetch, clock=lambda: now[0], sleep=sleep)
    return wait, slept


def test_wait_for_key_rotation_waits_for_a_refresh_then_for_writes_with_it() -> None:
    cluster = FakeCluster(refresh_at=3, switch_after=2)
    wait, slept = waiter(cluster)
    assert wait.run() == NEW
    # Not the old key_id the plugin still reported at first, nor the old writes.
    assert cluster.writes[NEW] == 1 and cluster.probe_writes_after_refresh == 3
    assert cluster.deleted and len(slept) == 1 + 2  # refresh polls, then probe rounds


def test_wait_for_a_given_key_id_skips_the_plugin() -> None:
    cluster = FakeCluster(switch_after=0)
    cluster.plugin_key = NEW
    wait, _ = waiter(cluster, key_id=NEW)
    assert wait.run() == NEW and cluster.plugin_reads == 0


def test_wait_gives_up_saying_what_it_waited_for() -> None:
    cluster = FakeCluster(refresh_at=10**6)  # the plugin never refreshes
    wait, slept = waiter(cluster, timeout=30)
    with pytest.raises(reencrypt.WaitError, match="no key refresh of the kms-plugin"):
        wait.run()
    assert sum(slept) <= 30
    cluster = FakeCluster(refresh_at=2, switch_after=10**6)  # the apiserver never switches
    wait, _ = waiter(cluster, timeout=30)
    with pytest.raises(reencrypt.WaitError, match="still writes with another key_id"):
        wait.run()
    assert cluster.deleted  # the probe does not stay behind


def test_wait_flags() -> None:
    options = reencrypt.parse(["--wait-for-key-rotation", "--wait-timeout", "90s"])
    assert options.wait == reencrypt.WaitOptions(timeout=90.0)
    assert reencrypt.parse([]).wait is None
    assert reencrypt.parse(["--wait-for-key-id", NEW]).wait == reencrypt.WaitOptions(key_id=NEW)
    with pytest.raises(ValueError):
        reencrypt.parse(["--wait-for-key-rotation", "--wait-timeout", "soon"])
    assert reencrypt.key_id_hash("x") == (
        "sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881")


def test_progress_off_a_terminal_is_a_line_every_few_seconds_or_objects() -> None:
    """A CI job saw 17 s of silence over 3,000 Secrets: off a terminal, progress is a plain
    line every 5 s or every 1,000 objects, whichever comes first."""
    now = [0.0]
    stream = io.StringIO()
    progress = reencrypt.Progress(stream, every_seconds=5.0, every_objects=1000,
                                  clock=lambda: now[0])
    summary = reencrypt.Summary()
    for i in range(3000):
        summary.counts["rewritten"] += 1
        now[0] = i * 0.002  # 500 objects a second: 1,000 objects come before 5 s
        progress.show(summary, 3000)
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["1000/3000", "2000/3000", "3000/3000"]
    assert "rewritten=1000" in lines[0] and "rate=" in lines[0]
    slow = io.StringIO()
    now[0] = 100.0
    progress = reencrypt.Progress(slow, clock=lambda: now[0])
    summary = reencrypt.Summary()
    for i in range(1, 13):
        summary.counts["rewritten"] += 1
        now[0] = 100.0 + i  # one object a second: a line every 5 s
        progress.show(summary, None)
    progress.show(summary, None, force=True)  # the end says where it got
    assert [line.split()[1] for line in slow.getvalue().splitlines()] == ["5", "10", "12"]
    assert "\r" not in slow.getvalue()
