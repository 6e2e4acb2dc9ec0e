"""A HELO/EHLO name cannot forge a header line or break delivery, on every
backend, over a real socket.

Before: ``EHLO a\\rX-Injected:yes`` was accepted and, written into a
``Received:`` header as the docs showed, gave the message a header of the
client's choosing; ``EHLO \\xff\\xfe`` was accepted too, and every message of
the session then failed with ``451`` when the header was encoded. Now both
get ``501`` at once (without an enhanced code: RFC 2034), the session goes
on, and ``received_header`` writes a header that stays one header.
"""

from __future__ import annotations

import email.parser
import email.policy
import threading
from collections.abc import Callable
from typing import Any

import pytest

from smtp_anyio import received_header
from tests.server.raw_smtp import RawClient

NAME = "mx.test"
BODY = b"Subject: hi\r\n\r\nhello\r\n"


class Store:
    """An ``on_data`` that prepends the trace header, as the docs show."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self._cond = threading.Condition()

    def on_data(self, stream: Any, session: Any) -> None:
        header = received_header(session, by=NAME)
        message = header.encode("utf-8") + stream.read()
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait_for(self, count: int) -> list[bytes]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.messages) >= count, 10), self.messages
            return list(self.messages)


def serve(start_server: Callable[..., Any], store: Store) -> Any:
    return start_server(name=NAME, auth_optional=True, on_data=store.on_data)


def send_message(client: RawClient, mail: str = "MAIL FROM:<a@example.com>",
                 rcpt: str = "RCPT TO:<b@example.com>") -> str:
    assert client.one(mail).startswith("250 ")
    assert client.one(rcpt).startswith("250 ")
    assert client.one("DATA").startswith("354 ")
    client.send(BODY + b".\r\n")
    [reply] = client.reply()
    return reply


def headers_of(message: bytes) -> list[tuple[str, str]]:
    parsed = email.parser.BytesParser(policy=email.policy.SMTPUTF8).parsebytes(message)
    return [(key, str(value)) for key, value in parsed.items()]


def test_bare_cr_in_ehlo_is_refused_and_the_session_delivers(start_server: Any) -> None:
    store = Store()
    running = serve(start_server, store)
    with RawClient(running.address) as client:
        assert client.cmd(b"EHLO a\rX-Injected:yes") == [
            "501 Error: control characters not allowed in EHLO hostname"]
        # Nothing was greeted: a transaction still needs a good EHLO.
        assert client.one("MAIL FROM:<a@example.com>") == "503 5.5.1 Error: send HELO/EHLO first"
        assert client.cmd("EHLO client.example")[-1].startswith("250 ")
        assert send_message(client) == "250 2.0.0 OK: message queued"
    [message] = store.wait_for(1)
    assert message.startswith(b"Received: from client.example (unknown [127.0.0.1])\r\n")
    assert [key for key, _ in headers_of(message)] == ["Received", "Subject"]


def test_non_utf8_ehlo_is_refused_at_once_not_at_delivery(start_server: Any) -> None:
    store = Store()
    running = serve(start_server, store)
    with RawClient(running.address) as client:
        assert client.cmd(b"EHLO \xff\xfe") == ["501 Error: EHLO hostname is not valid UTF-8"]
        assert client.cmd("EHLO client.example")[-1].startswith("250 ")
        # Before, this was a 451 for every message of the session.
        assert send_message(client) == "250 2.0.0 OK: message queued"
        assert send_message(client) == "250 2.0.0 OK: message queued"
    assert len(store.wait_for(2)) == 2


@pytest.mark.parametrize("name", [b"a\x00b", b"\x1b[31mred", b"a\tb", b"a\xc2\x85b"])
def test_other_control_characters(start_server: Any, name: bytes) -> None:
    running = serve(start_server, Store())
    with RawClient(running.address) as client:
        assert client.cmd(b"HELO " + name) == [
            "501 Error: control characters not allowed in HELO hostname"]
        assert client.one("NOOP") == "250 2.0.0 OK"  # the session goes on


def test_utf8_name_goes_into_a_smtputf8_header(start_server: Any) -> None:
    store = Store()
    running = serve(start_server, store)
    with RawClient(running.address) as client:
        assert client.cmd("EHLO b\u00fccher.example")[-1].startswith("250 ")
        reply = send_message(client, "MAIL FROM:<a@example.com> SMTPUTF8",
                             "RCPT TO:<j\u00f6rg@example.com>")
        assert reply == "250 2.0.0 OK: message queued"
        # Without SMTPUTF8 the header is ASCII: the name goes into a comment.
        assert send_message(client) == "250 2.0.0 OK: message queued"
    utf8, ascii_only = store.wait_for(2)
    assert utf8.startswith("Received: from b\u00fccher.example (unknown [127.0.0.1])\r\n"
                           "\tby mx.test\r\n\twith UTF8SMTP id ".encode())
    assert "\tfor <j\u00f6rg@example.com>; ".encode() in utf8
    header = ascii_only[: ascii_only.index(b"Subject:")]
    assert header.startswith(
        b"Received: from [127.0.0.1] (unknown [127.0.0.1]) (helo=b%C3%BCcher.example)\r\n")
    header.decode("ascii")
