"""Server-level options end to end: limits, timers, reverse DNS, proxies,
names and logging."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import struct
import threading
import time
from typing import Any

import anyio
import pytest

from smtp_anyio import MessageAbortedError

from .raw_smtp import RawClient, Recorder

NAME = "mx.test"
GREETING = f"220 {NAME} ESMTP"
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def serve(start_server: Any, **options: Any) -> Any:
    options.setdefault("name", NAME)
    options.setdefault("auth_optional", True)
    return start_server(**options)


def where_from(session: Any) -> tuple[Any, ...]:
    return (session.remote_address, session.remote_port, session.local_address,
            session.local_port, session.client_hostname)


# -- max_clients ------------------------------------------------------------------------


def test_max_clients(start_server) -> None:
    connected = Recorder()
    running = serve(start_server, max_clients=2, on_connect=connected.add)
    first = RawClient(running.address)
    second = RawClient(running.address)
    try:
        with RawClient(running.address, read_greeting=False) as third:
            assert third.reply() == [
                f"421 4.3.2 {NAME} Too many connected clients, try again in a moment"]
            assert third.expect_closed() == b""
        assert len(connected.items) == 2  # the third never reached on_connect
        for client in (first, second):
            assert client.greeting == [GREETING]
            assert client.one("NOOP") == "250 2.0.0 OK"
        assert first.one("QUIT") == "221 2.0.0 Bye"
        assert first.expect_closed() == b""
        # The freed slot is taken by the next client, once the server has
        # noticed; each attempt is refused at once until then.
        deadline = time.monotonic() + 5
        while True:
            with RawClient(running.address, read_greeting=False) as fourth:
                line = fourth.line()
                if line.startswith("220 "):
                    assert fourth.one("NOOP") == "250 2.0.0 OK"
                    break
                assert line.startswith("421 ")
            assert time.monotonic() < deadline, "the slot was never freed"
        assert second.one("NOOP") == "250 2.0.0 OK"
    finally:
        first.close()
        second.close()


# -- socket_timeout -----------------------------------------------------------------------


def test_socket_timeout(start_server) -> None:
    running = serve(start_server, socket_timeout=0.5)
    with RawClient(running.address) as client:
        start = time.monotonic()  # before the last command the server sees
        client.ehlo()
        assert client.line() == f"421 4.4.2 {NAME} Timeout - closing connection"
        assert time.monotonic() - start >= 0.45
        assert client.expect_closed() == b""


def test_socket_timeout_counts_from_the_last_command(start_server) -> None:
    running = serve(start_server, socket_timeout=0.5)
    with RawClient(running.address) as client:
        # Nothing may arrive for 0.3 s (the read itself is the wait) ...
        client.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.line()
        client.sock.settimeout(5)
        # ... then a command restarts the clock.
        start = time.monotonic()
        assert client.one("NOOP") == "250 2.0.0 OK"
        assert client.line() == f"421 4.4.2 {NAME} Timeout - closing connection"
        assert time.monotonic() - start >= 0.45


def test_socket_timeout_inside_data_aborts_the_message(start_server) -> None:
    outcome = Recorder()

    def on_data(stream: Any, session: Any) -> None:
        try:
            stream.read()
        except MessageAbortedError as exc:
            outcome.add(("aborted", exc.reason))
            raise
        outcome.add(("delivered", session.envelope.mail_from.address))

    running = serve(start_server, socket_timeout=0.5, on_data=on_data)
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope()
        assert client.one("DATA").startswith("354 ")
        client.send(b"Subject: half a message\r\n\r\nand then nothing")
        assert client.line() == f"421 4.4.2 {NAME} Timeout - closing connection"
        assert client.expect_closed() == b""
    [(what, _reason)] = outcome.wait_for(1)
    assert what == "aborted"


def test_socket_timeout_spares_a_client_held_back_by_a_slow_handler(start_server) -> None:
    """The client is not idle while the server has stopped reading from it."""
    slow = threading.Event()

    def on_data(stream: Any, session: Any) -> str:
        first = stream.read(1000)
        slow.wait(1.0)  # slow storage: twice the socket timeout
        return f"Stored {len(first) + len(stream.read())} octets"

    running = serve(start_server, socket_timeout=0.5, on_data=on_data)
    body = (b"x" * 998 + b"\r\n") * 2000  # far over the stream's high-water mark
    try:
        with RawClient(running.address) as client:
            client.ehlo()
            client.envelope()
            assert client.one("DATA").startswith("354 ")
            with contextlib.suppress(OSError):
                client.send(body + b".\r\n")
            assert client.reply() == [f"250 2.0.0 Stored {len(body)} octets"]
    finally:
        slow.set()


# -- early talkers --------------------------------------------------------------------------


def test_reject_early_talkers(start_server) -> None:
    running = serve(start_server, reject_early_talkers=True)
    with RawClient(running.address, read_greeting=False,
                   first=b"EHLO early.example\r\n") as client:
        assert client.reply() == [f"421 4.7.0 {NAME} You talk too soon"]
        assert client.expect_closed() == b""
    with RawClient(running.address) as client:  # a polite client is served
        assert client.greeting == [GREETING]
        assert client.one("NOOP") == "250 2.0.0 OK"


def test_early_talkers_served_by_default(start_server) -> None:
    running = serve(start_server)
    with RawClient(running.address, read_greeting=False,
                   first=b"EHLO early.example\r\nNOOP\r\n") as client:
        assert client.reply() == [GREETING]
        assert client.reply()[0] == f"250-{NAME} Nice to meet you, [127.0.0.1]"
        assert client.reply() == ["250 2.0.0 OK"]


# -- reverse DNS -------------------------------------------------------------------------------


def test_resolver_names_the_client(start_server) -> None:
    asked = Recorder()
    seen = Recorder()

    def resolver(address: str) -> str:
        asked.add(address)
        return "client.resolved.example"

    running = serve(start_server, disable_reverse_lookup=False, resolver=resolver,
                    on_connect=lambda session: seen.add(session.client_hostname))
    with RawClient(running.address) as client:
        lines = client.cmd("EHLO client.example")
    assert lines[0] == f"250-{NAME} Nice to meet you, client.resolved.example"
    assert asked.items == ["127.0.0.1"]
    assert seen.items == ["client.resolved.example"]


@pytest.mark.parametrize("answer", [None, "", "raise"])
def test_resolver_without_an_answer(start_server, answer: str | None) -> None:
    seen = Recorder()

    def resolver(address: str) -> str | None:
        if answer == "raise":
            raise RuntimeError("resolver broke")
        return answer

    running = serve(start_server, disable_reverse_lookup=False, resolver=resolver,
                    on_connect=lambda session: seen.add(session.client_hostname))
    with RawClient(running.address) as client:
        assert client.cmd("EHLO x")[0] == f"250-{NAME} Nice to meet you, [127.0.0.1]"
    assert seen.items == ["[127.0.0.1]"]


def test_resolver_not_called_when_lookup_disabled(start_server) -> None:
    asked = Recorder()
    running = serve(start_server, disable_reverse_lookup=True,
                    resolver=lambda address: asked.add(address) or "nope.example")
    with RawClient(running.address) as client:
        assert client.cmd("EHLO x")[0] == f"250-{NAME} Nice to meet you, [127.0.0.1]"
    assert asked.items == []


def test_slow_resolver_falls_back_to_the_address(start_server) -> None:
    release = threading.Event()
    seen = Recorder()

    def resolver(address: str) -> str:
        release.wait(1.5)  # a blocking lookup far slower than the timeout
        return "too.late.example"

    running = serve(start_server, disable_reverse_lookup=False, resolver=resolver,
                    reverse_lookup_timeout=0.2,
                    on_connect=lambda session: seen.add(session.client_hostname))
    try:
        start = time.monotonic()
        with RawClient(running.address, timeout=1.0) as client:
            assert client.greeting == [GREETING]
            assert time.monotonic() - start < 1.0
        assert seen.items == ["[127.0.0.1]"]
    finally:
        release.set()


def test_async_resolver(start_async_server) -> None:
    seen = Recorder()

    async def resolver(address: str) -> str:
        await anyio.sleep(0)
        return f"async-{address.replace('.', '-')}.example"

    running = serve(start_async_server, disable_reverse_lookup=False, resolver=resolver,
                    on_connect=lambda session: seen.add(session.client_hostname))
    with RawClient(running.address) as client:
        assert client.cmd("EHLO x")[0] == (
            f"250-{NAME} Nice to meet you, async-127-0-0-1.example")
    assert seen.items == ["async-127-0-0-1.example"]


def test_hanging_async_resolver_falls_back(start_async_server) -> None:
    seen = Recorder()

    async def resolver(address: str) -> str:
        await anyio.sleep(30)
        return "never.example"

    running = serve(start_async_server, disable_reverse_lookup=False, resolver=resolver,
                    reverse_lookup_timeout=0.2,
                    on_connect=lambda session: seen.add(session.client_hostname))
    start = time.monotonic()
    with RawClient(running.address) as client:
        assert client.greeting == [GREETING]
        assert client.cmd("EHLO x")[0] == f"250-{NAME} Nice to meet you, [127.0.0.1]"
    assert 0.15 <= time.monotonic() - start < 5
    assert seen.items == ["[127.0.0.1]"]


# -- PROXY protocol ------------------------------------------------------------------------------


def proxy_v2(source: str, dest: str, sport: int, dport: int, *, local: bool = False) -> bytes:
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(dest)
    family = 0x11 if src.version == 4 else 0x21
    addresses = src.packed + dst.packed + struct.pack("!HH", sport, dport)
    tlv = b"\x04" + struct.pack("!H", 3) + b"abc"  # a NOOP TLV, to be skipped
    body = addresses + tlv
    command = 0x20 if local else 0x21
    return PROXY_V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(body)) + body


PROXY_HEADERS = {
    "v1-tcp4": (b"PROXY TCP4 203.0.113.7 192.0.2.10 40000 2525\r\n",
                ("203.0.113.7", 40000, "192.0.2.10", 2525, "[203.0.113.7]")),
    "v1-tcp6": (b"PROXY TCP6 2001:db8::7 2001:db8::1 40001 25\r\n",
                ("2001:db8::7", 40001, "2001:db8::1", 25, "[2001:db8::7]")),
    "v2-tcp4": (proxy_v2("198.51.100.20", "192.0.2.10", 50000, 587),
                ("198.51.100.20", 50000, "192.0.2.10", 587, "[198.51.100.20]")),
    "v2-tcp6": (proxy_v2("2001:db8::20", "2001:db8::1", 50001, 465),
                ("2001:db8::20", 50001, "2001:db8::1", 465, "[2001:db8::20]")),
}


@pytest.mark.parametrize("kind", list(PROXY_HEADERS))
def test_proxy_header_sets_the_remote_address(start_server, kind: str) -> None:
    header, expected = PROXY_HEADERS[kind]
    seen = Recorder()
    running = serve(start_server, use_proxy=True,
                    on_connect=lambda session: seen.add(where_from(session)),
                    on_mail_from=lambda address, session: seen.add(where_from(session)))
    with RawClient(running.address, read_greeting=False, first=header) as client:
        assert client.reply() == [GREETING]
        assert client.cmd("EHLO x")[0] == f"250-{NAME} Nice to meet you, {expected[4]}"
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"
    assert seen.items == [expected, expected]


def test_proxy_header_with_commands_in_the_same_write(start_server) -> None:
    seen = Recorder()
    header, expected = PROXY_HEADERS["v2-tcp4"]
    running = serve(start_server, use_proxy=True,
                    on_mail_from=lambda address, session: seen.add(where_from(session)))
    with RawClient(running.address, read_greeting=False,
                   first=header + b"EHLO x\r\nMAIL FROM:<a@example.com>\r\n") as client:
        assert client.reply() == [GREETING]
        assert client.reply()[0].startswith("250-")
        assert client.reply() == ["250 2.1.0 Accepted"]
    assert seen.items == [expected]


@pytest.mark.parametrize("header", [
    proxy_v2("198.51.100.20", "192.0.2.10", 50000, 587, local=True),
    b"PROXY UNKNOWN\r\n",
    b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
], ids=["v2-local", "v1-unknown", "v1-unknown-with-addresses"])
def test_proxy_without_addresses_keeps_the_real_ones(start_server, header: bytes) -> None:
    seen = Recorder()
    running = serve(start_server, use_proxy=True,
                    on_connect=lambda session: seen.add(where_from(session)))
    with RawClient(running.address, read_greeting=False, first=header) as client:
        assert client.reply() == [GREETING]
        port = client.local_port
    assert seen.items == [("127.0.0.1", port, "127.0.0.1", running.port, "[127.0.0.1]")]


def test_proxy_resolves_the_proxied_address(start_server) -> None:
    asked = Recorder()

    def resolver(address: str) -> str:
        asked.add(address)
        return "origin.example"

    running = serve(start_server, use_proxy=True, disable_reverse_lookup=False,
                    resolver=resolver)
    with RawClient(running.address, read_greeting=False,
                   first=PROXY_HEADERS["v1-tcp4"][0]) as client:
        assert client.reply() == [GREETING]
        assert client.cmd("EHLO x")[0] == f"250-{NAME} Nice to meet you, origin.example"
    assert asked.items == ["203.0.113.7"]


def test_proxy_from_a_trusted_peer(start_server) -> None:
    seen = Recorder()
    running = serve(start_server, use_proxy=["10.0.0.0/8", "127.0.0.1"],
                    on_connect=lambda session: seen.add(session.remote_address))
    with RawClient(running.address, read_greeting=False,
                   first=PROXY_HEADERS["v1-tcp4"][0]) as client:
        assert client.reply() == [GREETING]
    assert seen.items == ["203.0.113.7"]


def test_untrusted_peer_is_served_without_proxy(start_server) -> None:
    seen = Recorder()
    running = serve(start_server, use_proxy=["10.0.0.0/8"], max_invalid_commands=None,
                    on_connect=lambda session: seen.add(session.remote_address),
                    on_mail_from=lambda address, session: seen.add(session.remote_address))
    with RawClient(running.address) as client:  # greeted without sending a header
        assert client.greeting == [GREETING]
        # A header from an untrusted peer is just a bad command: no spoofing.
        assert client.one(PROXY_HEADERS["v1-tcp4"][0].rstrip(b"\r\n")) == (
            "500 5.5.2 Error: command not recognized")
        client.ehlo()
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"
    assert seen.items == ["127.0.0.1", "127.0.0.1"]


BAD_PROXY_HEADERS = [
    b"EHLO client.example\r\n",
    b"PROXY TCP4 not-an-address 192.0.2.10 1 2\r\n",
    PROXY_V2_SIGNATURE + b"\x21\x99\x00\x00",
]


@pytest.mark.parametrize("garbage", BAD_PROXY_HEADERS)
def test_missing_or_bad_proxy_header_closes(start_server, garbage: bytes) -> None:
    running = serve(start_server, use_proxy=True)
    with RawClient(running.address, read_greeting=False, first=garbage) as client:
        assert client.expect_closed() == b""  # no reply at all, no greeting


@pytest.mark.parametrize("garbage", BAD_PROXY_HEADERS)
def test_bad_proxy_header_never_reaches_on_connect(start_server, garbage: bytes) -> None:
    gate = threading.Event()
    gated = threading.Event()
    connected = Recorder()
    closed = Recorder()

    def on_connect(session: Any) -> None:
        connected.add(session.remote_address)
        if session.remote_address == "203.0.113.7":
            # Hold the server (the whole loop on the anyio backends) while
            # the next client connects and sends its bad header.
            gated.set()
            gate.wait(5)

    running = serve(start_server, use_proxy=True, on_connect=on_connect,
                    on_close=closed.add)
    with RawClient(running.address, read_greeting=False,
                   first=PROXY_HEADERS["v1-tcp4"][0]) as good:
        assert gated.wait(5)
        with RawClient(running.address, read_greeting=False, first=garbage) as client:
            gate.set()
            assert client.expect_closed() == b""
        assert good.reply() == [GREETING]
        closed.wait_for(1)
    closed.wait_for(2)
    # Whoever sent that is no client the application should hear about, let
    # alone as 127.0.0.1, the address of the trusted proxy.
    assert connected.items == ["203.0.113.7"]


# -- XCLIENT / XFORWARD ----------------------------------------------------------------------------


def test_xclient(start_server) -> None:
    seen = Recorder()

    def on_mail_from(address: Any, session: Any) -> None:
        seen.add((dict(session.xclient), where_from(session)[:2], session.client_hostname,
                  session.host_name_appears_as))

    running = serve(start_server, use_xclient=True, on_mail_from=on_mail_from)
    with RawClient(running.address) as client:
        assert "XCLIENT NAME ADDR PORT PROTO HELO LOGIN" in client.ehlo()
        assert client.one("XCLIENT NAME=mail.example.org ADDR=198.51.100.9 PORT=4242 "
                          "PROTO=ESMTP HELO=orig.example") == GREETING
        # The client must greet again; XCLIENT is no longer offered.
        assert client.one("MAIL FROM:<a@example.com>") == "503 5.5.1 Error: send HELO/EHLO first"
        lines = client.cmd("EHLO orig.example")
        assert lines[0] == f"250-{NAME} Nice to meet you, mail.example.org"
        assert not any("XCLIENT" in line for line in lines)
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"
        assert client.one("RSET") == "250 2.0.0 Flushed"
        assert client.one("XCLIENT ADDR=192.0.2.99") == "550 5.7.0 Error: not allowed"
    assert seen.items == [(
        {"NAME": "mail.example.org", "ADDR": "198.51.100.9", "PORT": "4242",
         "PROTO": "ESMTP", "HELO": "orig.example"},
        ("198.51.100.9", 4242), "mail.example.org", "orig.example",
    )]


def test_xclient_unavailable_name(start_server) -> None:
    seen = Recorder()
    running = serve(start_server, use_xclient=True,
                    on_mail_from=lambda address, session: seen.add(
                        (session.client_hostname, dict(session.xclient))))
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("XCLIENT NAME=[UNAVAILABLE] ADDR=198.51.100.9") == GREETING
        # No name known: the client is shown by its address, as after a
        # failed reverse lookup, not by the name it claims in EHLO.
        lines = client.cmd("EHLO claimed.example")
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"
    assert seen.items == [("[198.51.100.9]", {"NAME": None, "ADDR": "198.51.100.9"})]
    assert lines[0] == f"250-{NAME} Nice to meet you, [198.51.100.9]"


def test_xclient_login(start_server) -> None:
    seen = Recorder()

    def on_auth(auth: Any, session: Any) -> object:
        seen.add((auth.mechanism, auth.username))
        return {"login": auth.username}

    running = start_server(name=NAME, use_xclient=True, on_auth=on_auth,
                           on_mail_from=lambda address, session: seen.add(session.user))
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("MAIL FROM:<a@example.com>") == (
            "530 5.7.0 Error: authentication required")
        assert client.one("XCLIENT ADDR=198.51.100.9 LOGIN=bob") == GREETING
        client.ehlo()
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"
    assert seen.items == [("XCLIENT", "bob"), {"login": "bob"}]


def test_xclient_syntax(start_server) -> None:
    running = serve(start_server, use_xclient=True, max_invalid_commands=None)
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("XCLIENT") == "501 5.5.4 Error: bad command parameter syntax"
        assert client.one("XCLIENT COLOR=red") == "501 5.5.4 Error: bad command parameter syntax"
        assert client.one("XCLIENT ADDR=999.1.1.1") == (
            "501 5.5.4 Error: bad command parameter syntax: invalid address")
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"
        assert client.one("XCLIENT NAME=x.example") == (
            "503 5.5.1 Error: mail transaction in progress")


def test_xforward(start_server) -> None:
    seen = Recorder()

    def on_mail_from(address: Any, session: Any) -> None:
        seen.add((dict(session.xforward), where_from(session)))

    running = serve(start_server, use_xforward=True, on_mail_from=on_mail_from)
    with RawClient(running.address) as client:
        assert "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE" in client.ehlo()
        assert client.one("XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 PROTO=ESMTP"
                          ) == "250 2.0.0 OK"
        assert client.one("XFORWARD HELO=spike.porcupine.org IDENT=abc123 SOURCE=REMOTE"
                          ) == "250 2.0.0 OK"
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"
        port = client.local_port
    assert seen.items == [(
        {"NAME": "spike.porcupine.org", "ADDR": "168.100.189.2", "PROTO": "ESMTP",
         "HELO": "spike.porcupine.org", "IDENT": "abc123", "SOURCE": "REMOTE"},
        # XFORWARD is for logging: the session's own view of the client stays.
        ("127.0.0.1", port, "127.0.0.1", running.port, "[127.0.0.1]"),
    )]


def test_xclient_and_xforward_refused_by_default(start_server) -> None:
    running = serve(start_server)
    with RawClient(running.address) as client:
        extensions = client.ehlo()
        assert not any(e.startswith(("XCLIENT", "XFORWARD")) for e in extensions)
        assert client.one("XCLIENT ADDR=198.51.100.9") == "550 5.7.0 Error: not allowed"
        assert client.one("XFORWARD ADDR=198.51.100.9") == "550 5.7.0 Error: not allowed"


# -- names ---------------------------------------------------------------------------


def test_name_banner_and_helo_response(start_server) -> None:
    running = start_server(name="mx.example.test", banner="Welcome, no spam please",
                           helo_response="%s greets %s", auth_optional=True)
    with RawClient(running.address) as client:
        assert client.greeting == ["220 mx.example.test ESMTP Welcome, no spam please"]
        assert client.cmd("EHLO client.example")[0] == "250-mx.example.test greets [127.0.0.1]"
        assert client.cmd("HELO client.example") == ["250 mx.example.test greets [127.0.0.1]"]


def test_lmtp_banner(start_server) -> None:
    running = start_server(name="lmtp.example.test", banner="ready", lmtp=True)
    with RawClient(running.address) as client:
        assert client.greeting == ["220 lmtp.example.test LMTP ready"]


def test_default_name_is_the_host_name(start_server) -> None:
    running = start_server(auth_optional=True, socket_timeout=0.5)
    name = socket.getfqdn()
    with RawClient(running.address) as client:
        assert client.greeting == [f"220 {name} ESMTP"]
        assert client.cmd("EHLO x")[0] == f"250-{name} Nice to meet you, [127.0.0.1]"
        assert client.line() == f"421 4.4.2 {name} Timeout - closing connection"


# -- logger --------------------------------------------------------------------------


class ListHandler(logging.Handler):
    """Collects records (``Handler.handle`` already serialises ``emit``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_custom_logger(start_server, caplog, backend: str) -> None:
    logger = logging.getLogger(f"tests.server.custom_logger.{backend}")
    handler = ListHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def on_mail_from(address: Any, session: Any) -> None:
        raise RuntimeError("broken sender check")

    try:
        running = serve(start_server, logger=logger, on_mail_from=on_mail_from)
        with RawClient(running.address) as client:
            client.ehlo()
            assert client.one("MAIL FROM:<a@example.com>") == (
                "451 4.3.0 Error: local error in processing")
    finally:
        logger.removeHandler(handler)
    records = list(handler.records)
    assert any(r.levelno == logging.INFO and "listening on" in r.getMessage() for r in records)
    [error] = [r for r in records if r.levelno >= logging.ERROR]
    assert error.exc_info is not None
    assert str(error.exc_info[1]) == "broken sender check"
    # Nothing went to the default logger.
    assert not [r for r in caplog.records if r.name in ("smtp_anyio", "smtp_sync")]
