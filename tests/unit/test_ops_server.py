"""The HTTP server under /metrics and the probes: addresses, routing, lifecycle."""

from __future__ import annotations

import http.client
import socket
import threading

import pytest

from controller.ops.server import EndpointServer, Reply, parse_address, same_endpoint
from tests.waiting import wait_for


def request(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("0", None),
        ("", None),
        (":8080", ("", 8080)),
        ("127.0.0.1:9090", ("127.0.0.1", 9090)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("localhost:8081", ("localhost", 8081)),
        ("[::1]:8080", ("::1", 8080)),
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),
    ],
)
def test_parse_address(address: str, expected: tuple[str, int] | None) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["8080", "host:", "host:http", ":65536", ":-1"])
def test_parse_address_refuses_malformed_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="bind address"):
        parse_address(address)


@pytest.mark.parametrize(
    ("first", "second", "shared"),
    [
        (":8080", ":8080", True),
        (":8080", "0.0.0.0:8080", True),
        ("127.0.0.1:8080", "127.0.0.1:8080", True),
        (":8080", ":8081", False),
        ("127.0.0.1:8080", "127.0.0.2:8080", False),
        ("127.0.0.1:0", "127.0.0.1:0", False),  # each gets its own free port
        ("0", "0", False),
        (":8080", "0", False),
    ],
)
def test_same_endpoint(first: str, second: str, shared: bool) -> None:
    assert same_endpoint(first, second) is shared


def test_routes_answer_and_unknown_paths_are_404() -> None:
    with EndpointServer("127.0.0.1:0", {"/x": lambda q: Reply(201, f"q={q}".encode())}) as srv:
        assert srv.port
        assert request(srv.port, "/x?verbose") == (201, b"q=verbose")
        assert request(srv.port, "/y")[0] == 404


def test_head_sends_no_body() -> None:
    with EndpointServer("127.0.0.1:0", {"/x": lambda q: Reply(200, b"body")}) as srv:
        assert srv.port
        assert request(srv.port, "/x", method="HEAD") == (200, b"")


def test_a_failing_route_answers_500_and_the_server_keeps_serving() -> None:
    def broken(query: str) -> Reply:
        raise RuntimeError("bug")

    with EndpointServer("127.0.0.1:0", {"/broken": broken, "/ok": lambda q: Reply(200, b"")}) \
            as srv:
        assert srv.port
        assert request(srv.port, "/broken")[0] == 500
        assert request(srv.port, "/ok")[0] == 200


def test_routes_can_be_added_while_serving() -> None:
    with EndpointServer("127.0.0.1:0") as srv:
        assert srv.port
        assert request(srv.port, "/late")[0] == 404
        srv.add_route("/late", lambda q: Reply(200, b"here"))
        assert request(srv.port, "/late") == (200, b"here")


def test_a_taken_port_fails_at_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        srv = EndpointServer(f"127.0.0.1:{taken.getsockname()[1]}")
        with pytest.raises(OSError):
            srv.start()
        assert srv.port is None


def test_stop_ends_the_serving_thread_and_frees_the_port() -> None:
    srv = EndpointServer("127.0.0.1:0", name="probe-test")
    srv.start()
    port = srv.port
    assert port
    assert any(t.name == "probe-test-http" for t in threading.enumerate())
    srv.stop()
    assert not any(t.name == "probe-test-http" for t in threading.enumerate())
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))  # free again


def test_start_twice_keeps_one_server() -> None:
    with EndpointServer("127.0.0.1:0", name="twice") as srv:
        port = srv.port
        srv.start()
        assert srv.port == port
        assert sum(t.name == "twice-http" for t in threading.enumerate()) == 1


def _handler_threads(since: set[int | None]) -> int:
    """Connection threads started after the snapshot `since` and still alive (other threads
    of the process, started or ended by other tests' leftovers, do not count)."""
    return sum(1 for t in threading.enumerate()
               if t.ident not in since and "process_request_thread" in t.name)


def test_connections_past_the_bound_are_closed_and_threads_stay_bounded() -> None:
    """A client opening many connections and sending nothing gets no thread per connection:
    at most `max_connections` are served, the rest are closed at once, the probes answer
    again as soon as the slow ones are cut at their deadline."""
    server = EndpointServer("127.0.0.1:0", {"/healthz": lambda _q: Reply(200, b"ok\n")},
                            max_connections=3, deadline=1.0)
    server.start()
    port = server.port
    assert port is not None
    before = {t.ident for t in threading.enumerate()}
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    try:
        wait_for(lambda: server.open_connections() == 3, 5, "3 connections served")
        extra = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
        for conn in extra:  # closed at once, without an answer
            assert conn.recv(1) == b""
            conn.close()
        assert _handler_threads(before) <= 3
        # The stuck ones are cut at their deadline, and the probe answers again.
        wait_for(lambda: server.open_connections() == 0, 10, "stuck connections cut")
        for conn in idle:
            assert conn.recv(1) == b""
        assert request(port, "/healthz") == (200, b"ok\n")
        wait_for(lambda: _handler_threads(before) == 0, 5, "handler threads ended")
    finally:
        for conn in idle:
            conn.close()
        server.stop()


def test_a_client_trickling_bytes_is_cut_at_the_deadline() -> None:
    server = EndpointServer("127.0.0.1:0", {"/metrics": lambda _q: Reply(200, b"m\n")},
                            max_connections=2, deadline=0.5)
    server.start()
    port = server.port
    assert port is not None
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        conn.sendall(b"GET /metrics HTTP/1.1\r\n")  # and then nothing more
        wait_for(lambda: server.open_connections() == 0, 10, "trickling client cut")
        assert conn.recv(1) == b""
        assert request(port, "/metrics") == (200, b"m\n")
    finally:
        conn.close()
        server.stop()


def test_a_client_that_hangs_up_is_a_debug_line_not_a_traceback_on_stderr(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """A scrape cancelled under load: the server's write fails. socketserver would print
    'Exception occurred during processing of request' and a traceback to stderr."""
    import logging
    import struct

    hung_up = threading.Event()

    def big(query: str) -> Reply:
        assert hung_up.wait(5)
        return Reply(200, b"x" * (16 << 20))

    caplog.set_level(logging.DEBUG, logger="controller.ops.server")
    with EndpointServer("127.0.0.1:0", {"/metrics": big}) as srv:
        assert srv.port
        client = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        # Close with a reset (linger 0): the server's write of the body then fails.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        hung_up.set()
        wait_for(lambda: any("ended" in r.getMessage() for r in caplog.records),
                 timeout=10, what="the server noticing the hang-up")
        assert request(srv.port, "/metrics")[0] == 200  # still serving
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
