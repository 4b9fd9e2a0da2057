"""Helpers for the network proxy tests: the server process, real TCP peers on free loopback ports, socket reads.

Kept out of conftest.py so test modules import them by a unique name (`tests.netproxy.support`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kit import free_port as free_port  # the harness's; re-exported, the netproxy tests import it from here

from lab.toxiproxy import ToxiproxyClient, ToxiproxyError, select_server

REPO = Path(__file__).resolve().parents[2]


EXTERNAL_URL = os.environ.get("TOXIPROXY_URL", "").strip().rstrip("/")


embedded_only = pytest.mark.skipif(bool(EXTERNAL_URL), reason="a difference of our embedded server (see docs)")


_LIBC = ctypes.CDLL(None, use_errno=True)


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM if pytest dies (even by SIGKILL), so no server outlives a killed test run."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_embedded(port: int, *extra: str) -> subprocess.Popen[bytes]:
    choice = select_server(port=port, prefer="embedded")
    assert choice.argv is not None
    proc = subprocess.Popen(
        [*choice.argv, "--seed", "7", *extra], cwd=REPO, stderr=subprocess.PIPE, preexec_fn=_die_with_parent
    )
    try:
        ToxiproxyClient(choice.url, timeout=2).wait_ready(15)
    except ToxiproxyError:
        proc.kill()
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> str:
    """Stop a server we started and return its log (stderr)."""
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode(errors="replace")


class EchoServer:
    """A threaded TCP server on a free loopback port: echoes by default, or runs `handler(conn)` per connection.

    It keeps every accepted server-side socket in `conns` so tests can watch the upstream side of a proxy.
    """

    def __init__(self, handler: Callable[[socket.socket], None] | None = None) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.handler = handler or echo
        self.conns: list[socket.socket] = []
        self.accepted = threading.Event()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns.append(conn)
            self.accepted.set()
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except OSError:
            pass

    def wait_conn(self, index: int = 0, timeout: float = 5.0) -> socket.socket:
        deadline = time.monotonic() + timeout
        while len(self.conns) <= index:
            if time.monotonic() > deadline:
                raise TimeoutError("the proxy never connected upstream")
            time.sleep(0.002)
        return self.conns[index]

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        for conn in self.conns:
            try:
                conn.close()
            except OSError:
                pass


def echo(conn: socket.socket) -> None:
    while True:
        data = conn.recv(65536)
        if not data:
            conn.close()
            return
        conn.sendall(data)


def hold(conn: socket.socket) -> None:
    """Accept and keep the connection; the test drives this side itself."""
    return None


def connect(listen: str, timeout: float = 5.0) -> socket.socket:
    host, port = listen.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += data
    return bytes(buf)


def recv_until_eof(sock: socket.socket) -> bytes:
    buf = bytearray()
    while True:
        data = sock.recv(65536)
        if not data:
            return bytes(buf)
        buf += data
