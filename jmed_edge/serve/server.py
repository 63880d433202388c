"""Listening: bind the socket first (clear errors for a busy port), then run uvicorn on it.

``BackgroundServer`` runs the same server on a thread, for tests and load benchmarks.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
import time

from jmed_edge.errors import ConfigError


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for ``host:port``; port 0 picks a free one. No name is ever resolved."""
    address = "127.0.0.1" if host.lower() in ("localhost", "localhost.") else host.strip("[]")
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    except ValueError:
        raise ConfigError(
            f"--host {host!r} is not an IP address; give one (127.0.0.1, ::1, 0.0.0.0 or this machine's "
            "address) so that no name lookup is needed"
        ) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once after a stop
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {address} is already in use (another server?); choose another with --port, "
                f"e.g. --port {port + 1}"
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigError(
                f"port {port} needs administrator rights; use a port above 1023 with --port"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"{address} is not an address of this machine; check --host") from None
        raise ConfigError(f"cannot listen on {address}:{port}: {exc.strerror}") from None
    # Accepted connections inherit this: without it, the first event of every stream waited
    # ~40 ms for a delayed ACK (Nagle's algorithm), measured on loopback.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.set_inheritable(True)
    return sock


def make_server(app, *, graceful_seconds: int = 10):
    import uvicorn

    # log_config=None keeps jmed-edge's own logging; the access log is written by the app.
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=graceful_seconds, server_header=False)  # fmt: skip
    return uvicorn.Server(config)


class BackgroundServer:
    """Serve ``app`` on a daemon thread (loopback, a free port unless given) inside a ``with``."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = bind_socket(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = make_server(app, graceful_seconds=2)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(30)
        self.sock.close()
