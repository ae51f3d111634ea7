"""Running it in production: metrics and probes, leader election with failover, graceful
shutdown, restarts without rewrites or bursts, and an apiserver restart under the controller."""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tests.cluster import ControlPlane, free_port
from tests.fakecloud import FakeCloud
from tests.integration.conftest import AK_SECRET, K8s
from tests.waiting import wait_for


def _es(name: str, key: str) -> dict[str, Any]:
    return {"kind": "ExternalSecret", "metadata": {"name": name},
            "spec": {"data": [{"key": key, "secretStoreRef": {"name": "store"}}]}}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:
        return 0, ""  # not listening yet


def _documented_probe_output() -> dict[str, str]:
    """The probe answers docs/metrics.md prints (`$ curl -s localhost:8081/PATH` and the lines
    after it, up to the next prompt or the end of the block)."""
    from tests.cluster.tools import REPO

    doc = (REPO / "docs" / "metrics.md").read_text()
    block = doc.split("## Health probes", 1)[1].split("```", 2)[1]
    shown: dict[str, str] = {}
    for part in re.split(r"^\$ curl -s '?localhost:8081", block, flags=re.M)[1:]:
        path, _, body = part.partition("\n")
        shown[path.strip().strip("'")] = body
    assert set(shown) == {"/healthz", "/readyz?verbose"}, shown
    return shown


def test_metrics_and_probes(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("db", "MARKER-metrics-value")
    k8s.access_key_store(namespace)
    metrics_port, health_port = free_port(), free_port()
    start_controller("--kms-endpoint", cloud.kms_endpoint,
                     "--metrics-bind-address", f"127.0.0.1:{metrics_port}",
                     "--health-probe-bind-address", f"127.0.0.1:{health_port}")
    wait_for(lambda: _get(f"http://127.0.0.1:{health_port}/readyz")[0] == 200,
             what="/readyz 200")
    assert _get(f"http://127.0.0.1:{health_port}/healthz")[0] == 200
    # docs/metrics.md shows what the probes print: the same text, check by check.
    for path, shown in _documented_probe_output().items():
        assert _get(f"http://127.0.0.1:{health_port}{path}") == (200, shown), path
    k8s.create(namespace, "externalsecrets", _es("app", "db"))
    wait_for(lambda: k8s.secret_data(namespace, "app"), what="synced")

    def scrape() -> str:
        return _get(f"http://127.0.0.1:{metrics_port}/metrics")[1]

    ready = f'ack_secret_manager_externalsecret_ready{{name="app",namespace="{namespace}"}} 1.0'
    text = wait_for(lambda: (t := scrape()) and ready in t and t, what="Ready metric")
    assert re.search(r'ack_secret_manager_sync_total\{result="synced"\} [1-9]', text)
    assert re.search(r'ack_secret_manager_kms_requests_total\{[^}]*code="OK"[^}]*\} 1\.0', text)
    assert "ack_secret_manager_workqueue_depth" in text
    assert "ack_secret_manager_leader 1.0" in text
    assert "MARKER-metrics-value" not in text and AK_SECRET not in text


def _lease(k8s: K8s, ns: str, name: str) -> Any:
    from kubernetes import client

    api = client.CoordinationV1Api(k8s.core.api_client)
    try:
        return api.read_namespaced_lease(name, ns)
    except client.exceptions.ApiException:
        return None


def test_leader_election_one_active_replica_and_failover(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    cloud.put_secret("db", "pw")
    k8s.access_key_store(namespace)
    args = ("--kms-endpoint", cloud.kms_endpoint, "--leader-elect",
            "--leader-election-namespace", namespace, "--leader-election-id", "asm",
            "--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "500ms")
    first = start_controller(*args)
    wait_for(lambda: "became leader" in first.log, what="first replica leads")
    second = start_controller(*args)
    wait_for(lambda: "waiting to lead" in second.log, what="second replica stands by")
    k8s.create(namespace, "externalsecrets", _es("one", "db"))
    wait_for(lambda: k8s.secret_data(namespace, "one"), what="synced by the leader")
    # The sync's log line follows its writes: await it rather than race it.
    wait_for(lambda: "sync ExternalSecret" in first.log, what="the leader's sync logged")
    assert "sync ExternalSecret" not in second.log
    # Graceful stop: the leader finishes, releases the Lease, and the standby takes over
    # at its next retry, well before the Lease would have expired.
    stopped = time.monotonic()
    assert first.stop(signal.SIGTERM) == 0
    wait_for(lambda: "became leader" in second.log, timeout=4, what="standby takes over")
    assert time.monotonic() - stopped < 4.0
    k8s.create(namespace, "externalsecrets", _es("two", "db"))
    wait_for(lambda: k8s.secret_data(namespace, "two"), what="synced by the new leader")
    # A crash (no release): a new standby takes over once the Lease expires.
    third = start_controller(*args)
    wait_for(lambda: "waiting to lead" in third.log, what="third replica stands by")
    crashed = time.monotonic()
    second.stop(signal.SIGKILL)
    wait_for(lambda: "became leader" in third.log, timeout=10, what="takeover after a crash")
    assert time.monotonic() - crashed < 4.0 + 2.0  # lease duration + a retry or two
    k8s.create(namespace, "externalsecrets", _es("three", "db"))
    wait_for(lambda: k8s.secret_data(namespace, "three"), what="synced after the crash")
    # Every Secret was created exactly once, whoever led at the time.
    for name in ("one", "two", "three"):
        # (the Event is posted after the Secret's write: await the first)
        created = wait_for(lambda name=name: [e for e in k8s.events(namespace, name)
                                              if e.reason == "Created"], what=f"{name}: Created")
        assert len(created) == 1, name


def test_graceful_shutdown_releases_the_lease(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    k8s.access_key_store(namespace)
    proc = start_controller("--kms-endpoint", cloud.kms_endpoint, "--leader-elect",
                            "--leader-election-namespace", namespace,
                            "--leader-election-id", "asm", "--retry-period", "500ms")
    wait_for(lambda: "became leader" in proc.log, what="leads")
    started = time.monotonic()
    assert proc.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    assert "stopped" in proc.log
    assert not _lease(k8s, namespace, "asm").spec.holder_identity


def _sync_times(log: str, namespace: str) -> list[datetime]:
    stamps = re.findall(rf"^(\S+) INFO  sync ExternalSecret {namespace}/", log, re.M)
    return [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps]


def test_restart_rewrites_nothing_and_spreads_the_rechecks(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    count = 12
    for i in range(count):
        cloud.put_secret(f"s{i}", f"v{i}")
    k8s.access_key_store(namespace)
    args = ("--kms-endpoint", cloud.kms_endpoint, "--polling-interval", "8s")
    first = start_controller(*args)
    for i in range(count):
        k8s.create(namespace, "externalsecrets", _es(f"app-{i}", f"s{i}"))
    for i in range(count):
        wait_for(lambda i=i: (k8s.ready(namespace, f"app-{i}") or {}).get("status") == "True",
                 what=f"app-{i} Ready")
    versions = {i: k8s.secret(namespace, f"app-{i}").metadata.resource_version
                for i in range(count)}
    first.stop()
    second = start_controller(*args)
    wait_for(lambda: len(_sync_times(second.log, namespace)) >= count, timeout=20,
             what="every object re-checked after the restart")
    times = _sync_times(second.log, namespace)
    assert (max(times) - min(times)).total_seconds() > 2.0  # spread, not a burst
    assert "result=synced" not in second.log  # nothing rewritten
    for i in range(count):
        assert k8s.secret(namespace, f"app-{i}").metadata.resource_version == versions[i]


def test_apiserver_restart_is_survived(
    cluster: ControlPlane, k8s: K8s, cloud: FakeCloud, namespace: str,
    start_controller: Callable[..., Any],
) -> None:
    cloud.put_secret("db", "pw")
    k8s.access_key_store(namespace)
    proc = start_controller("--kms-endpoint", cloud.kms_endpoint)
    k8s.create(namespace, "externalsecrets", _es("before", "db"))
    wait_for(lambda: k8s.secret_data(namespace, "before"), what="synced before the restart")
    cluster.restart_apiserver()
    k8s.create(namespace, "externalsecrets", _es("after", "db"))
    wait_for(lambda: k8s.secret_data(namespace, "after") == {"db": "pw"}, timeout=60,
             what="synced after the restart")
    k8s.core.patch_namespaced_secret("before", namespace, {"stringData": {"db": "tampered"}})
    wait_for(lambda: k8s.secret_data(namespace, "before") == {"db": "pw"}, timeout=30,
             what="edit repaired after the restart")
    assert proc.proc.poll() is None


def test_an_apiserver_outage_is_said_in_a_few_lines(
    cluster: ControlPlane, k8s: K8s, cloud: FakeCloud, namespace: str,
    start_controller: Callable[..., Any],
) -> None:
    """While the API server is down, the log says so once per loop (each informer's watch),
    not once per attempt: 40 s used to give 135 lines. (With --leader-elect the replica stops
    once its Lease cannot be renewed, as client-go's do.) The outage is a fixed time on
    purpose: what is measured is how much is said during it."""
    k8s.access_key_store(namespace)
    cloud.put_secret("db", "pw")
    # Its own namespace only: other tests' objects (being deleted) would add their own lines.
    proc = start_controller("--kms-endpoint", cloud.kms_endpoint,
                            "--watch-namespaces", namespace, "--polling-interval", "10s")
    for name in ("app-1", "app-2", "app-3"):
        k8s.create(namespace, "externalsecrets", _es(name, "db"))
    wait_for(lambda: all(k8s.secret_data(namespace, f"app-{i}") == {"db": "pw"}
                         for i in (1, 2, 3)), timeout=60, what="synced before the outage")
    before = len(proc.log.splitlines())
    cluster.stop_apiserver()
    try:
        # The KMS value changes during the outage: the next poll syncs all three objects,
        # whose writes cannot get through (once a traceback and InternalError each).
        cloud.put_secret("db", "pw-2")
        time.sleep(20)
        during = proc.log.splitlines()[before:]
    finally:
        cluster.start_apiserver()
    said = "\n".join(during)
    assert any("the API server cannot be reached: the connection was refused" in line
               for line in during), said
    assert any("syncs wait: the API server cannot be reached" in line for line in during), said
    assert "Traceback" not in said and "InternalError" not in said, said
    # One line per informer (10), the urllib3 retry line; folded repeats say how many they
    # stand for.
    import collections
    kinds = collections.Counter(re.sub(r"^\S+ (\w+)\s+", r"\1 ", line)[:90] for line in during
                                if line[:4].isdigit())
    assert len(during) <= 30, (len(during), kinds.most_common(8))
    assert proc.proc.poll() is None
    wait_for(lambda: all(k8s.secret_data(namespace, f"app-{i}") == {"db": "pw-2"}
                         for i in (1, 2, 3)), timeout=90, what="the change synced after it")


def test_json_logs_have_one_line_per_sync_decision(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any]
) -> None:
    import json

    cloud.put_secret("db", "pw")
    k8s.access_key_store(namespace)
    proc = start_controller("--kms-endpoint", cloud.kms_endpoint, "--log-format", "json")
    k8s.create(namespace, "externalsecrets", _es("app", "db"))
    wait_for(lambda: k8s.secret_data(namespace, "app"), what="synced")

    def sync_lines() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in proc.log.splitlines() if line.startswith("{")]
        return [r for r in lines if r["message"] == f"sync ExternalSecret {namespace}/app"]

    [record] = wait_for(sync_lines, what="a sync log line")
    assert record["result"] == "synced" and record["reason"] == "Synced"
    assert isinstance(record["duration_ms"], int) and record["level"] == "info"
