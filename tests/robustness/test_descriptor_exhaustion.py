"""Running out of file descriptors must not end the server, spin its CPU
or flood its log: the accept loop backs off (one warning), open sessions
go on, and new clients are served once descriptors are free again."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from .support import BACKENDS, ServerProcess

NOFILE = 64        # the server's RLIMIT_NOFILE
FIRST = 30         # sessions opened (and greeted) before the limit is hit
FLOOD = 70         # connections pushed past it
WINDOW = 2.0       # seconds of exhaustion over which CPU is measured
CPU_BOUND = 0.25   # share of one core the server may use meanwhile


def _greeting(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    return sock.recv(512)


def _greeted_within(address: tuple[str, int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.create_connection(address) as late:
            try:
                if _greeting(late).startswith(b"220 "):
                    return True
            except OSError:
                pass
    return False


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_server_outlives_descriptor_exhaustion(backend: str) -> None:
    address = None
    with ServerProcess(backend, options={"socket_timeout": 60}, nofile=NOFILE) as server:
        address = ("127.0.0.1", server.port)
        first = [socket.create_connection(address) for _ in range(FIRST)]
        flood: list[socket.socket] = []
        try:
            for sock in first:
                assert _greeting(sock).startswith(b"220 ")
            flood = [socket.create_connection(address) for _ in range(FLOOD)]
            # Some of the flood was accepted, the rest waits in the backlog:
            # the process is out of descriptors now. Measure it meanwhile.
            cpu = _cpu_seconds(server.proc.pid)
            time.sleep(WINDOW)  # a measurement window, not a wait for readiness
            used = (_cpu_seconds(server.proc.pid) - cpu) / WINDOW
            assert server.proc.poll() is None, f"{backend} died:\n{server.stderr}"
            assert used < CPU_BOUND, f"{backend} used {used:.0%} of a core while out of fds"
            # An open session is still served.
            first[0].sendall(b"NOOP\r\n")
            assert first[0].recv(512).startswith(b"250 ")
            for sock in flood:
                sock.close()
            flood = []
            # Descriptors are free again (once the server has seen those
            # clients go): a new client is greeted. uvloop closes a client it
            # has no descriptor for, as a real client would find, retry.
            assert _greeted_within(address, 10.0), f"{backend}: no greeting after the flood"
        finally:
            for sock in first + flood:
                sock.close()
        warnings = [line for line in server.stderr.splitlines() if line.strip()]
        assert len(warnings) <= 4, f"{backend} logged {len(warnings)} lines:\n" + "\n".join(
            warnings[:20])
        if backend != "uvloop":  # libuv handles EMFILE itself, silently
            assert any("EMFILE" in line for line in warnings), warnings
