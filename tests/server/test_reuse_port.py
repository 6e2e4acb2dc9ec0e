"""``listen(..., reuse_port=True)``: ``SO_REUSEPORT``, so that several
servers (the workers of ``run_workers()``, each a process) accept on one
port. Two servers of one backend in this process stand in for two workers;
real sockets, and the kernel decides which one a client gets."""

from __future__ import annotations

import errno
import smtplib
import socket
import threading
from typing import Any

import pytest

from smtp_server import check_reuse_port, set_reuse_port

from .harness import RunningServer, run_server

needs_reuse_port = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"),
                                      reason="the platform has no SO_REUSEPORT")

TIMEOUT = 10.0
CONNECTIONS = 200  # bound on the clients needed to meet both servers


class Greeted:
    """Which server each client met (``on_connect`` of each records its own
    name), waited for with a condition."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._cond = threading.Condition()

    def handler(self, name: str) -> Any:
        def on_connect(session: Any) -> None:
            with self._cond:
                self.names.append(name)
                self._cond.notify_all()
        return on_connect

    def wait_for(self, count: int) -> list[str]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.names) >= count, TIMEOUT), self.names
            return list(self.names)


def listen(running: RunningServer, port: int, **kwargs: Any) -> int:
    _host, bound = running.call(running.server.listen, port, "127.0.0.1", **kwargs)
    return int(bound)


@needs_reuse_port
def test_two_servers_share_a_port(backend: str) -> None:
    greeted = Greeted()
    with run_server(backend, auth_optional=True, on_connect=greeted.handler("one")) as one, \
            run_server(backend, auth_optional=True, on_connect=greeted.handler("two")) as two:
        port = listen(one, 0, reuse_port=True)
        assert listen(two, port, reuse_port=True) == port
        assert ("127.0.0.1", port) in one.server.addresses
        assert ("127.0.0.1", port) in two.server.addresses
        # The kernel spreads clients over both listeners (by a hash of the
        # client's port): a bounded number of clients meets both.
        for count in range(1, CONNECTIONS + 1):
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                assert client.noop()[0] == 250
            if set(greeted.wait_for(count)) == {"one", "two"}:
                break
        else:
            pytest.fail(f"{CONNECTIONS} clients all met the same server")
        # One worker gone: the other still accepts on the port.
        one.call(one.server.close)
        before = len(greeted.wait_for(count))
        for _ in range(5):
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                assert client.noop()[0] == 250
        assert greeted.wait_for(before + 5)[before:] == ["two"] * 5


@pytest.mark.parametrize("first", [False, True], ids=["plain-first", "reuse-first"])
def test_without_reuse_port_the_second_bind_fails(backend: str, first: bool) -> None:
    with run_server(backend, auth_optional=True) as one, \
            run_server(backend, auth_optional=True) as two:
        if first and not hasattr(socket, "SO_REUSEPORT"):
            pytest.skip("the platform has no SO_REUSEPORT")
        port = listen(one, 0, reuse_port=first)
        with pytest.raises(OSError) as raised:
            listen(two, port)
        assert raised.value.errno == errno.EADDRINUSE
        assert two.server.addresses == [two.address]  # only its own first listener
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            assert client.noop()[0] == 250


def test_a_platform_without_so_reuseport(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with run_server(backend, auth_optional=True) as running:
        monkeypatch.delattr(socket, "SO_REUSEPORT", raising=False)
        with pytest.raises(OSError, match="SO_REUSEPORT") as raised:
            listen(running, 0, reuse_port=True)
        assert raised.value.errno == errno.ENOPROTOOPT
        assert running.server.addresses == [running.address]
        with pytest.raises(OSError, match="SO_REUSEPORT"):
            check_reuse_port()
        with socket.socket() as sock, pytest.raises(OSError, match="SO_REUSEPORT"):
            set_reuse_port(sock)
