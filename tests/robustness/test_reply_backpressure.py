"""A client that pipelines commands and never reads its replies must not
grow the server's memory: once the replies it leaves unread fill the
socket and the server's write buffer, the server stops reading from it
(asyncio/uvloop: ``pause_reading`` at the transport's high-water mark;
trio and threads: the send blocks). The idle timeout still ends it."""

from __future__ import annotations

import smtplib
import socket
import time

import pytest

from .support import BACKENDS, ServerProcess

SEND_LIMIT = 20 * 1024 * 1024   # what the client tries to push
RSS_BOUND = 8 * 1024 * 1024     # what the server may grow by meanwhile
STALL = 3.0                     # seconds without progress: the server stopped reading


def _flood(port: int) -> int:
    """Pipeline NOOPs without ever reading; returns the bytes the server took."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    block = b"EHLO flood.example\r\n" + b"NOOP\r\n" * (65536 // 6)
    sent = 0
    last_progress = time.monotonic()
    view = memoryview(block)
    offset = 0
    while sent < SEND_LIMIT and time.monotonic() - last_progress < STALL:
        try:
            n = sock.send(view[offset:])
        except BlockingIOError:
            time.sleep(0.01)  # polling a socket we flood, not waiting for readiness
            continue
        sent += n
        offset = (offset + n) % len(block)
        last_progress = time.monotonic()
    _flood.sock = sock  # type: ignore[attr-defined]  # kept open by the test
    return sent


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_client_that_never_reads_cannot_grow_the_server(backend: str) -> None:
    with ServerProcess(backend, options={"socket_timeout": 3}) as server:
        before = server.rss()
        started = time.monotonic()
        sent = _flood(server.port)
        sock: socket.socket = _flood.sock  # type: ignore[attr-defined]
        grown = server.rss() - before
        assert grown < RSS_BOUND, (
            f"{backend}: RSS grew {grown / 2**20:.1f} MiB while the client pushed "
            f"{sent / 2**20:.1f} MiB of commands and read nothing")
        # Others are still served meanwhile.
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            assert client.noop()[0] == 250
        # And the idle timeout (3 s) still ends the flooder: its socket
        # reaches EOF or a reset once the server gives up on it.
        sock.setblocking(True)
        sock.settimeout(30)
        ended = False
        try:
            while sock.recv(1 << 20):
                pass
            ended = True
        except ConnectionResetError:
            ended = True
        finally:
            sock.close()
        assert ended and time.monotonic() - started < 45
