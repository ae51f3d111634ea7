"""Health probes: Heartbeat, the /healthz and /readyz answers, and OpsServers wiring."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from controller.ops.health import Check, HealthServer, Heartbeat, OpsServers, run_checks
from controller.ops.metrics import Metrics


def get(port: int | None, path: str) -> tuple[int, str]:
    assert port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def passing(detail: str = "fine") -> Check:
    return lambda: (True, detail)


def failing(detail: str = "broken") -> Check:
    return lambda: (False, detail)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- Heartbeat -------------------------------------------------------------------------------


def test_heartbeat_age_counts_from_creation_then_from_each_beat() -> None:
    clock = FakeTime()
    beat = Heartbeat(clock)
    clock.now += 5
    assert beat.age() == 5.0
    beat.beat()
    clock.now += 2
    assert beat.age() == 2.0


def test_heartbeat_check_fails_when_the_loop_stops_beating() -> None:
    clock = FakeTime()
    beat = Heartbeat(clock)
    check = beat.check(30)
    clock.now += 30
    assert check() == (True, "last beat 30.0s ago (limit 30s)")
    clock.now += 1
    assert check() == (False, "last beat 31.0s ago (limit 30s)")
    beat.beat()
    assert check()[0] is True


# -- answers ---------------------------------------------------------------------------------


def test_all_passing_checks_answer_200_and_list_each_check() -> None:
    reply = run_checks("healthz", {"workers": passing(), "informers": passing()}, verbose=False)
    assert reply.status == 200
    assert reply.body.decode() == "[+]workers ok\n[+]informers ok\nhealthz check passed\n"


def test_a_failing_check_answers_500_naming_it_and_why() -> None:
    reply = run_checks("readyz", {"caches": failing("SecretStore not synced"),
                                  "other": passing()}, verbose=False)
    assert reply.status == 500
    assert reply.body.decode() == (
        "[-]caches failed: SecretStore not synced\n[+]other ok\nreadyz check failed\n"
    )


def test_verbose_adds_the_detail_of_passing_checks() -> None:
    reply = run_checks("healthz", {"workers": passing("last beat 1.0s ago")}, verbose=True)
    assert "[+]workers ok: last beat 1.0s ago\n" in reply.body.decode()


def test_a_check_that_raises_is_a_failed_check() -> None:
    def explode() -> tuple[bool, str]:
        raise RuntimeError("details stay in the process")

    reply = run_checks("healthz", {"boom": explode}, verbose=True)
    assert reply.status == 500
    assert "[-]boom failed: check raised RuntimeError" in reply.body.decode()
    assert "details stay" not in reply.body.decode()


def test_check_names_are_validated() -> None:
    with pytest.raises(ValueError, match="check name"):
        HealthServer("0", liveness={"Has Spaces": passing()})


# -- the server ------------------------------------------------------------------------------


@pytest.fixture
def health() -> Iterator[HealthServer]:
    srv = HealthServer("127.0.0.1:0", liveness={"workers": passing()})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_healthz_passes_with_ping_and_the_liveness_checks(health: HealthServer) -> None:
    assert get(health.port, "/healthz") == (
        200, "[+]ping ok\n[+]workers ok\nhealthz check passed\n"
    )
    assert get(health.port, "/healthz?verbose")[1].startswith("[+]ping ok: the server answers\n")


def test_readyz_fails_until_a_readiness_check_is_registered(health: HealthServer) -> None:
    status, body = get(health.port, "/readyz")
    assert status == 500
    assert "none registered yet" in body
    health.add_readiness("caches", passing())
    assert get(health.port, "/readyz") == (200, "[+]caches ok\nreadyz check passed\n")


def test_liveness_and_readiness_are_independent(health: HealthServer) -> None:
    health.add_readiness("caches", failing("not synced"))
    health.add_liveness("informers", failing("no contact for 400s"))
    status, body = get(health.port, "/healthz")
    assert status == 500
    assert "[-]informers failed: no contact for 400s" in body
    assert "caches" not in body
    status, body = get(health.port, "/readyz")
    assert status == 500
    assert "informers" not in body


def test_health_server_has_no_metrics_unless_asked(health: HealthServer) -> None:
    assert get(health.port, "/metrics")[0] == 404


# -- OpsServers ------------------------------------------------------------------------------


def test_different_addresses_give_two_servers() -> None:
    metrics = Metrics(process_metrics=False)
    with OpsServers(metrics, metrics_address="127.0.0.1:0", health_address="127.0.0.1:0",
                    readiness={"caches": passing()}) as ops:
        assert ops.metrics is not None
        assert ops.metrics_port != ops.health.port
        assert get(ops.metrics_port, "/metrics")[0] == 200
        assert get(ops.metrics_port, "/healthz")[0] == 404
        assert get(ops.health.port, "/readyz")[0] == 200
        assert get(ops.health.port, "/metrics")[0] == 404


def test_equal_addresses_share_one_server(unused_port: int) -> None:
    metrics = Metrics(process_metrics=False)
    metrics.set_leader(True)
    address = f"127.0.0.1:{unused_port}"
    with OpsServers(metrics, metrics_address=address, health_address=address) as ops:
        assert ops.metrics is None
        assert ops.metrics_port == ops.health.port == unused_port
        status, body = get(unused_port, "/metrics")
        assert status == 200
        assert "ack_secret_manager_leader 1.0" in body
        assert get(unused_port, "/healthz")[0] == 200


def test_a_disabled_endpoint_leaves_the_other_running() -> None:
    metrics = Metrics(process_metrics=False)
    with OpsServers(metrics, metrics_address="0", health_address="127.0.0.1:0") as ops:
        assert ops.metrics_port is None
        assert get(ops.health.port, "/healthz")[0] == 200


def test_a_failed_start_leaves_nothing_running(unused_port: int) -> None:
    metrics = Metrics(process_metrics=False)
    with socket.socket() as taken:  # someone else holds the metrics port
        taken.bind(("127.0.0.1", unused_port))
        taken.listen()
        ops = OpsServers(metrics, metrics_address=f"127.0.0.1:{unused_port}",
                         health_address="127.0.0.1:0")
        with pytest.raises(OSError):
            ops.start()
    assert ops.health.port is None
    assert not any(t.name == "health-http" for t in threading.enumerate())


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
