"""The small HTTP server that /metrics, /healthz and /readyz run on.

Both endpoints need the same thing: bind exactly the address the user gave in flag form
(":8080" all interfaces, "127.0.0.1:9090" one, "0" disabled), answer a handful of GET paths
from a daemon thread, report the port actually bound (tests bind port 0), and stop cleanly.
The standard library's `ThreadingHTTPServer` does the HTTP; this module owns the address
parsing, the routing table and the thread's lifecycle, so `metrics` and `health` only say
which paths answer what.

Bounded: at most `MAX_CONNECTIONS` connections are served at once (one thread each; a
connection past that is closed at once, never queued behind a stuck one), every read and write
times out after `_REQUEST_TIMEOUT_SECONDS`, and a connection still open
`_CONNECTION_DEADLINE_SECONDS` after it was accepted (a client trickling bytes) is shut down by
the serving loop. So no client, however slow or numerous, grows the thread count or starves
the probes for long.

An empty host means every interface, IPv6 and IPv4 alike as in Go's `net.Listen`: a
dual-stack "::" socket, or plain IPv4 when the kernel has no IPv6.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["EndpointServer", "Reply", "Route", "parse_address", "same_endpoint"]

_log = logging.getLogger(__name__)

DISABLED = "0"
_POLL_SECONDS = 0.1  # how long stop() may wait for the serving loop to notice
_REQUEST_TIMEOUT_SECONDS = 10.0  # a stuck client must not hold a thread for ever
_CONNECTION_DEADLINE_SECONDS = 15.0  # nor a client that sends a byte every few seconds
MAX_CONNECTIONS = 8  # served at once: scrapes and probes are few, short and small
_WILDCARDS = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class Reply:
    """What a route answers: a status, a body and its content type."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


# A route gets the raw query string ("verbose" for /healthz?verbose) and answers a Reply.
Route = Callable[[str], Reply]


def parse_address(address: str) -> tuple[str, int] | None:
    """Flag form to (host, port); None when disabled ("0" or empty).

    ":8080" -> ("", 8080) (every interface); "127.0.0.1:0" -> ("127.0.0.1", 0);
    "[::1]:9090" -> ("::1", 9090). A bare port other than 0 is refused, as Go refuses it.
    """
    text = address.strip()
    if text in ("", DISABLED):
        return None
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"bind address {address!r}: expected host:port or :port, or 0 to disable")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bind address {address!r}: port must be a number from 0 to 65535")
    return host, int(port_text)


def same_endpoint(first: str, second: str) -> bool:
    """Whether two enabled bind addresses would claim the same socket (port 0 never does)."""
    a, b = parse_address(first), parse_address(second)
    if a is None or b is None or a[1] == 0:
        return False
    host_a, host_b = ("" if h in _WILDCARDS else h for h in (a[0], b[0]))
    return (host_a, a[1]) == (host_b, b[1])


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung scrape must not block stop()
    block_on_close = False
    routes: Mapping[str, Route]

    def server_activate(self) -> None:
        self.bound(MAX_CONNECTIONS, _CONNECTION_DEADLINE_SECONDS)
        self._open: dict[socket.socket, float] = {}  # connection -> when it must be done
        self._open_lock = threading.Lock()
        super().server_activate()

    def bound(self, max_connections: int, deadline: float) -> None:
        self._slots = threading.BoundedSemaphore(max(1, max_connections))
        self.deadline = deadline

    def process_request(self, request: socket.socket,  # type: ignore[override]
                        client_address: object) -> None:
        if not self._slots.acquire(blocking=False):  # full: no thread, no queue
            self.shutdown_request(request)
            return
        with self._open_lock:
            self._open[request] = time.monotonic() + self.deadline
        try:
            super().process_request(request, client_address)
        except BaseException:  # the thread did not start: give the slot back
            self._done(request)
            raise

    def process_request_thread(self, request: socket.socket,  # type: ignore[override]
                               client_address: object) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)

    def _done(self, request: socket.socket) -> None:
        with self._open_lock:
            if self._open.pop(request, None) is None:
                return
        self._slots.release()

    def service_actions(self) -> None:
        """Each turn of the serving loop: shut down connections past their deadline (their
        thread then fails its read or write and ends)."""
        now = time.monotonic()
        with self._open_lock:
            late = [conn for conn, deadline in self._open.items() if deadline < now]
        for conn in late:
            with contextlib.suppress(OSError):  # already closed by its thread
                conn.shutdown(socket.SHUT_RDWR)

    def open_connections(self) -> int:
        with self._open_lock:
            return len(self._open)

    def handle_error(self, request: object, client_address: object) -> None:
        """socketserver prints a traceback to stderr for any error of a connection's thread,
        past the log's redaction and format. A client that hung up or timed out (a scrape
        cancelled under load, a probe's deadline, our own cut) is a debug line; anything
        else goes through the log with its traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            _log.debug("connection from %s ended: %s", client_address, type(exc).__name__)
            return
        _log.error("serving a request from %s failed", client_address, exc_info=True)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, a DNS round trip we never need.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _Server6(_Server):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        if self.server_address[0] == "::":
            # Wildcard: accept IPv4 too (mapped addresses), like Go's ":8080".
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = _REQUEST_TIMEOUT_SECONDS

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        path, _, query = self.path.partition("?")
        reply = _route(self.server.routes, path, query)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if send_body:
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args: object) -> None:
        # Probes hit these paths every few seconds: access logs are debug noise.
        _log.debug("%s " + format, self.address_string(), *args)


def _route(routes: Mapping[str, Route], path: str, query: str) -> Reply:
    route = routes.get(path)
    if route is None:
        return Reply(404, b"404 page not found\n")
    try:
        return route(query)
    except Exception:  # noqa: BLE001 - answer 500, keep serving
        _log.exception("serving %s failed", path)
        return Reply(500, b"internal error\n")


def _bind(host: str, port: int, max_connections: int = MAX_CONNECTIONS,
          deadline: float = _CONNECTION_DEADLINE_SECONDS) -> _Server:
    server = _bind_any(host, port)
    server.bound(max_connections, deadline)  # before serve_forever: no request yet
    return server


def _bind_any(host: str, port: int) -> _Server:
    if host in ("", "::"):
        try:
            return _Server6(("::", port), _Handler)
        except OSError as exc:
            if host == "::" or exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
        return _Server(("", port), _Handler)  # no IPv6 in this kernel: IPv4 only
    server_class = _Server6 if ":" in host else _Server
    return server_class((host, port), _Handler)


class EndpointServer:
    """Serves `routes` (path -> Route) on `address` from a daemon thread once started.

    `address` "0" (or empty) disables the server: `start()` and `stop()` do nothing and
    `port` stays None. `start()` binds at once, so a port in use fails at startup with
    OSError rather than later in a thread. Routes may be added before or after start.
    """

    def __init__(
        self, address: str, routes: Mapping[str, Route] | None = None, *, name: str = "ops",
        max_connections: int = MAX_CONNECTIONS,
        deadline: float = _CONNECTION_DEADLINE_SECONDS,
    ) -> None:
        self._endpoint = parse_address(address)
        self._bounds = (max_connections, deadline)
        self.address = address
        self.name = name
        self._routes: dict[str, Route] = dict(routes or {})
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self._endpoint is not None

    def open_connections(self) -> int:
        """Connections being served now (at most max_connections)."""
        with self._lock:
            return 0 if self._server is None else self._server.open_connections()

    @property
    def port(self) -> int | None:
        """The port actually bound (the real one when asked for 0); None until started."""
        with self._lock:
            return None if self._server is None else self._server.server_port

    def add_route(self, path: str, route: Route) -> None:
        # The handler threads read the dict while we may write it: replace, don't mutate.
        with self._lock:
            self._routes = {**self._routes, path: route}
            if self._server is not None:
                self._server.routes = self._routes

    def start(self) -> None:
        with self._lock:
            if self._endpoint is None or self._server is not None:
                return
            server = _bind(*self._endpoint, *self._bounds)
            server.routes = self._routes
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": _POLL_SECONDS},
                name=f"{self.name}-http",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
        _log.info("serving %s on %s", ", ".join(sorted(self._routes)), self.address)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and close the socket; safe to call twice or before start."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join(timeout)

    def __enter__(self) -> EndpointServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
