"""Leader election over real HTTP (urllib3 and the Kubernetes client, a local Lease server):
an apiserver that stalls for less than the renew deadline does not cost the leadership.

Why over the wire: urllib3 retries a GET or PUT that timed out, three times, each with the
full timeout; a fake Rest cannot show that. The Lease's client (`without_retries`) makes each
call once, so the elector's next attempt, after the stall, renews in time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from controller.kube.client import token_client, without_retries
from controller.kube.leader import FAILURES as LEASE_FAILURES
from controller.kube.leader import LeaderElector
from controller.kube.rest import Rest
from tests.waiting import wait_for

PATH = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/lease"


class LeaseServer:
    """One Lease over HTTP on 127.0.0.1. `stall(seconds)`: requests that arrive in the next
    `seconds` are never answered (until `close`); later ones are served again."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.renews = 0
        self.requests = 0
        self.lock = threading.Lock()
        self.stalled_until = 0.0
        self.closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                if server.held():
                    return
                with server.lock:
                    if server.lease is None:
                        self.answer(404, {"kind": "Status", "code": 404})
                    else:
                        self.answer(200, server.lease)

            def do_POST(self) -> None:
                self.store(201)

            def do_PUT(self) -> None:
                self.store(200)

            def store(self, code: int) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if server.held():
                    return
                with server.lock:
                    current = (server.lease or {}).get("metadata", {}).get("resourceVersion")
                    if code == 200 and body["metadata"].get("resourceVersion") != current:
                        self.answer(409, {"kind": "Status", "code": 409})
                        return
                    server.rv += 1
                    server.renews += 1
                    body["metadata"]["resourceVersion"] = str(server.rv)
                    server.lease = body
                    self.answer(code, body)

            def answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def held(self) -> bool:
        """Hold this request unanswered if it arrived during a stall."""
        with self.lock:
            self.requests += 1
        if time.monotonic() < self.stalled_until:
            self.closing.wait(30)
            return True
        return False

    def stall(self, seconds: float) -> None:
        self.stalled_until = time.monotonic() + seconds

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[LeaseServer]:
    s = LeaseServer()
    try:
        yield s
    finally:
        s.close()


def _elector(api: Any) -> LeaderElector:
    return LeaderElector(Rest(api), namespace="ns", name="lease", identity="a",
                         lease_duration=6.0, renew_deadline=4.0, retry_period=0.5)


def test_the_leases_client_makes_a_stalled_call_once(server: LeaseServer) -> None:
    """urllib3 sends a timed-out GET three more times, each with the full timeout (4x the
    time the elector allowed it); the Lease's client sends it once."""
    server.stall(60)
    for api, sent in ((token_client(server.url, "token", ""), 4),
                      (without_retries(token_client(server.url, "token", "")), 1)):
        before = server.requests
        started = time.monotonic()
        with pytest.raises(LEASE_FAILURES):
            Rest(api).request("GET", PATH, timeout=0.3)
        took = time.monotonic() - started
        api.close()
        assert server.requests - before == sent, (sent, took)


def test_a_stall_shorter_than_the_renew_deadline_keeps_the_leadership(
        server: LeaseServer) -> None:
    """Lead over the Lease's client, let the server stall 2 s (half the renew deadline), and
    the elector still leads once renews go through again."""
    api = without_retries(token_client(server.url, "token", ""))
    elector = LeaderElector(Rest(api), namespace="ns", name="lease", identity="a",
                            lease_duration=6.0, renew_deadline=4.0, retry_period=0.5)
    stop = threading.Event()
    assert elector.acquire(stop)
    result: list[bool] = []
    holder = threading.Thread(target=lambda: result.append(elector.hold(stop)), daemon=True)
    holder.start()
    try:
        wait_for(lambda: server.renews >= 3, timeout=10, what="renews before the stall")
        server.stall(2.0)
        after = server.renews
        wait_for(lambda: server.renews >= after + 2 or bool(result), timeout=15,
                 what="renews after the stall, or the loss")
        assert not result and elector.leading
    finally:
        stop.set()
        holder.join(10)
        api.close()
