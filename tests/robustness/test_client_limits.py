"""Per-client limits, on every backend over real sockets: connections per
client address (after PROXY), the whole-command deadline, and the price of
guessing passwords (a delay per failure, a budget per address across
connections)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from tests.server.raw_smtp import RawClient, b64

NO_EXCEPTIONS: tuple[str, ...] = ()  # limit loopback clients too (the test's own)


def _proxied(address: tuple[str, int], client_ip: str, port: int) -> RawClient:
    header = f"PROXY TCP4 {client_ip} 192.0.2.10 {port} 25\r\n".encode()
    return RawClient(address, first=header, timeout=10)


# -- connections per client ------------------------------------------------------


def test_one_address_cannot_lock_the_others_out(start_server: Any) -> None:
    """60 connections from one (proxied) address: 50 greeted, the rest 421
    4.7.0; a connection from another address is still greeted."""
    running = start_server(use_proxy=True, client_limit_exceptions=NO_EXCEPTIONS,
                           max_connections_per_client=50, auth_optional=True)
    clients: list[RawClient] = []
    try:
        greetings = []
        for port in range(60):
            client = _proxied(running.address, "203.0.113.7", 40000 + port)
            clients.append(client)
            assert client.greeting is not None
            greetings.append(client.greeting[0][:9])
        assert greetings.count("220 local") + greetings.count("421 4.7.0") == 60, greetings
        assert sum(g.startswith("220 ") for g in greetings) == 50
        refused = next(c for c in clients if c.greeting and c.greeting[0].startswith("421"))
        assert refused.greeting is not None
        assert refused.greeting[0].endswith("Too many connections from your address")
        assert refused.expect_closed() == b""
        with _proxied(running.address, "198.51.100.20", 50000) as other:
            assert other.greeting is not None and other.greeting[0].startswith("220 ")
            assert other.one("NOOP").startswith("250 ")
    finally:
        for client in clients:
            client.close()


def test_a_freed_slot_admits_the_client_again(start_server: Any) -> None:
    running = start_server(client_limit_exceptions=NO_EXCEPTIONS,
                           max_connections_per_client=2, auth_optional=True)
    first, second = RawClient(running.address), RawClient(running.address)
    try:
        with RawClient(running.address) as third:
            assert third.greeting is not None and third.greeting[0].startswith("421 4.7.0 ")
        first.cmd("QUIT")
        first.close()
        deadline = time.monotonic() + 10  # until the server has seen the QUIT through
        while True:
            with RawClient(running.address) as again:
                assert again.greeting is not None
                if again.greeting[0].startswith("220 "):
                    break
            assert time.monotonic() < deadline, "the slot was never freed"
    finally:
        first.close()
        second.close()


def test_loopback_is_exempt_by_default(start_server: Any) -> None:
    running = start_server(max_connections_per_client=2, auth_optional=True)
    clients = [RawClient(running.address) for _ in range(5)]
    try:
        assert all(c.greeting and c.greeting[0].startswith("220 ") for c in clients)
    finally:
        for client in clients:
            client.close()


# -- the whole-command deadline ---------------------------------------------------


def _trickle(address: tuple[str, int], prefix: bytes, drip: bytes) -> tuple[float, bytes]:
    """Send ``prefix``, then ``drip`` one byte every 0.3 s until the server
    ends the connection; returns (seconds it took, what the server said
    after the prefix)."""
    with socket.create_connection(address, timeout=30) as sock:
        sock.settimeout(0.3)
        got = b""
        sock.sendall(prefix)
        started = time.monotonic()
        for byte in drip:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue  # the pacing of the drip, not a wait for readiness
            except OSError:
                break
            got += chunk
            if not chunk or b"421 " in got:
                break
        return time.monotonic() - started, got


def test_a_command_sent_a_byte_at_a_time_times_out(start_server: Any) -> None:
    """socket_timeout (30 s) is never reached, command_timeout (1.5 s) is."""
    running = start_server(command_timeout=1.5, socket_timeout=30, auth_optional=True)
    results: dict[str, tuple[float, bytes]] = {}
    body = b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
    cases = {
        "line": (b"", b"EHLO " + b"x" * 400),
        "body": (body, b"Subject: slow\r\n" + b"y" * 400),
    }
    threads = [threading.Thread(target=lambda k=key, c=case: results.__setitem__(
        k, _trickle(running.address, *c))) for key, case in cases.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for key, (took, said) in results.items():
        assert b"421 4.4.2 " in said and b"Timeout" in said, (key, said[-200:])
        assert took < 6, f"{key}: closed after {took:.1f} s"


def test_a_slow_handler_does_not_count_against_the_client(start_server: Any) -> None:
    gate = threading.Event()

    def on_mail_from(address: Any, session: Any) -> None:
        gate.wait(3)  # longer than command_timeout

    running = start_server(command_timeout=1.0, socket_timeout=30, auth_optional=True,
                           on_mail_from=on_mail_from)
    with RawClient(running.address, timeout=10) as client:
        client.ehlo()
        assert client.one("MAIL FROM:<a@example.org>").startswith("250 ")
        assert client.one("NOOP").startswith("250 ")


# -- password guessing -------------------------------------------------------------


def _refuse_everyone(auth: Any, session: Any) -> None:
    return None


def _auth(client: RawClient, password: str) -> tuple[str, float]:
    started = time.monotonic()
    reply = client.one("AUTH PLAIN " + b64(f"\0alice\0{password}"))
    return reply, time.monotonic() - started


def test_failed_auth_replies_are_delayed_and_counted_per_address(start_server: Any) -> None:
    running = start_server(
        client_limit_exceptions=NO_EXCEPTIONS, auth_failure_delay=0.4,
        max_auth_failures_per_client=3, auth_failure_window=60, allow_insecure_auth=True,
        on_auth=_refuse_everyone)
    with RawClient(running.address, timeout=10) as first, \
            RawClient(running.address, timeout=10) as bystander:
        first.ehlo()
        bystander.ehlo()
        reply, took = _auth(first, "guess1")
        assert reply.startswith("535 5.7.8 ") and took >= 0.4
        # The delay holds that session only.
        def guess() -> None:
            replies.append(_auth(first, "guess2"))

        replies: list[tuple[str, float]] = []
        guesser = threading.Thread(target=guess)
        guesser.start()
        started = time.monotonic()
        assert bystander.one("NOOP").startswith("250 ")
        assert time.monotonic() - started < 0.4
        guesser.join(10)
        assert replies[0][0].startswith("535 ") and replies[0][1] >= 0.8  # doubled
    # A new connection from the same address: its third failure in the window
    # was the last one; the next AUTH is refused outright, whatever it says.
    with RawClient(running.address, timeout=10) as second:
        second.ehlo()
        assert _auth(second, "guess3")[0].startswith("535 ")
        reply, took = _auth(second, "guess4")
        assert reply.startswith("421 4.7.0 ") and "Too many failed authentications" in reply
        assert took < 0.4
        assert second.expect_closed() == b""
