"""``smtp_sync._send.send_holding_gil``: sendall() semantics on real sockets,
whether the non-blocking first try sends everything, part, or nothing."""

from __future__ import annotations

import socket
import threading

import pytest

from smtp_sync._send import send_holding_gil


def _drain(sock: socket.socket, into: bytearray) -> None:
    while chunk := sock.recv(65536):
        into += chunk


def test_a_small_reply_is_sent_whole() -> None:
    server, client = socket.socketpair()
    with server, client:
        send_holding_gil(server, b"250 2.0.0 OK\r\n")
        assert client.recv(100) == b"250 2.0.0 OK\r\n"


def test_what_does_not_fit_at_once_is_sent_blocking_in_order() -> None:
    server, client = socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payload = bytes(range(256)) * 8192  # 2 MiB: far more than the buffers hold
    received = bytearray()
    with server, client:
        reader = threading.Thread(target=_drain, args=(client, received))
        reader.start()
        send_holding_gil(server, payload)
        server.shutdown(socket.SHUT_WR)
        reader.join(10)
    assert bytes(received) == payload


def test_a_closed_peer_raises_oserror() -> None:
    server, client = socket.socketpair()
    client.close()
    with server, pytest.raises(OSError):
        for _ in range(3):  # the first send may still be accepted
            send_holding_gil(server, b"250 2.0.0 OK\r\n")
