"""HTTP plumbing: one threaded server per fake endpoint, optional TLS, clean shutdown.

Each connection gets its own daemon thread (ThreadingHTTPServer), so added
latency never serialises requests. TCP_NODELAY is on (without it every call
costs ~45 ms of Nagle delay). The TLS handshake runs in the connection's thread,
not the accept loop. ``stop()`` closes the listening socket and every open
keep-alive connection, so no handler thread outlives the fake.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from .wire import Request, Response, json_response


class Service(Protocol):
    def handle(self, req: Request) -> Response: ...


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 120
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the request log
        return

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        target = self.path
        if target.startswith(("http://", "https://")):
            path, query = target, ""  # proxy form: the service parses the absolute URL
        else:
            parts = urlsplit(target)
            path, query = parts.path or "/", parts.query
        req = Request(self.command, path, query, self.headers, body)
        try:
            resp = self.server.service.handle(req)
        except Exception as exc:  # a bug in the fake: say so loudly instead of hanging up
            traceback.print_exc(file=sys.stderr)
            resp = json_response(
                {"Code": "FakeCloudBug", "Message": f"{type(exc).__name__}: {exc}"}, status=500
            )
        if resp.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(resp.status)
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, service: Service, tls: ssl.SSLContext | None) -> None:
        self.service = service
        self.tls = tls
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        self._track(request, add=True)
        try:
            if self.tls is not None:
                raw = request
                raw.settimeout(10)
                try:
                    request = self.tls.wrap_socket(raw, server_side=True)
                    self._track(request, add=True)
                except (OSError, ssl.SSLError):
                    self.shutdown_request(raw)
                    return
                finally:
                    self._track(raw, add=False)
                request.settimeout(None)
            super().process_request_thread(request, client_address)
        finally:
            self._track(request, add=False)

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self.connections_lock:
            if add:
                self.open_connections.add(sock)
            else:
                self.open_connections.discard(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # clients hanging up mid-request are normal in fault tests

    def close_all_connections(self) -> None:
        with self.connections_lock:
            sockets = list(self.open_connections)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class ServiceServer:
    """One service on one free 127.0.0.1 port, served by a background thread."""

    def __init__(self, service: Service, *, name: str, tls: ssl.SSLContext | None = None) -> None:
        self._server = _Server(service, tls)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"fakecloud-{name}",
            daemon=True,
        )

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        with self._server.connections_lock:
            return len(self._server.open_connections)

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, grace: float = 2.0) -> int:
        """Stop serving, hang up on every client; returns connections still open
        after ``grace`` seconds (0 when every handler thread has finished)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        deadline = time.monotonic() + grace
        while True:
            self._server.close_all_connections()
            left = self.open_connections
            if left == 0 or time.monotonic() >= deadline:
                return left
            time.sleep(0.01)
