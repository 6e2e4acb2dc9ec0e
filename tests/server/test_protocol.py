"""The command set end to end, on every backend, with real clients.

smtplib and aiosmtplib check that ordinary clients interoperate; the raw
socket client of ``raw_smtp`` checks the exact reply lines, the order of
pipelined replies, and what happens to the connection afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import smtplib
from typing import Any

import aiosmtplib
import pytest

from smtp_anyio import SMTPError

from .conftest import Inbox
from .raw_smtp import RawClient, Recorder

NAME = "mx.test"
GREETING = f"220 {NAME} ESMTP"
HELLO_LINE = f"{NAME} Nice to meet you, [127.0.0.1]"
QUEUED = "250 2.0.0 OK: message queued"
BODY = b"Subject: test\r\n\r\nHello.\r\n"

DEFAULT_EXTENSIONS = [
    "PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "BINARYMIME",
    "AUTH PLAIN LOGIN",
]
ENHANCED = re.compile(r"\A(\d)\d\d[ -](\d)\.\d{1,3}\.\d{1,3} ")


def serve(start_server: Any, inbox: Inbox | None = None, **options: Any) -> Any:
    """A server named ``mx.test`` that accepts mail without AUTH."""
    options.setdefault("name", NAME)
    options.setdefault("auth_optional", True)
    if inbox is not None:
        options.setdefault("on_data", inbox.on_data)
    return start_server(**options)


# -- greeting, EHLO, HELO ---------------------------------------------------------


def test_greeting_and_default_ehlo(start_server) -> None:
    running = serve(start_server)
    with RawClient(running.address) as client:
        assert client.greeting == [GREETING]
        lines = client.cmd("EHLO client.example")
    assert lines[0] == f"250-{HELLO_LINE}"
    assert all(line.startswith("250-") for line in lines[:-1])
    assert lines[-1].startswith("250 ")
    extensions = [line[4:] for line in lines[1:]]
    assert sorted(extensions) == sorted(DEFAULT_EXTENSIONS)


EHLO_CASES: dict[str, tuple[dict[str, Any], list[str], list[str]]] = {
    # id: (options, extensions removed from the default, extensions added)
    "hide_pipelining": ({"hide_pipelining": True}, ["PIPELINING"], []),
    "hide_8bitmime": ({"hide_8bitmime": True}, ["8BITMIME", "SMTPUTF8"], []),
    "hide_smtputf8": ({"hide_smtputf8": True}, ["SMTPUTF8"], []),
    "hide_enhancedstatuscodes": (
        {"hide_enhancedstatuscodes": True}, ["ENHANCEDSTATUSCODES"], []),
    "dsn": ({"hide_dsn": False}, [], ["DSN"]),
    "hide_chunking": ({"hide_chunking": True}, ["CHUNKING", "BINARYMIME"], []),
    "size": ({"size": 1000}, [], ["SIZE 1000"]),
    "hide_size": ({"size": 1000, "hide_size": True}, [], ["SIZE"]),
    "auth_methods": (
        {"auth_methods": ["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"]},
        ["AUTH PLAIN LOGIN"], ["AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2"]),
    "auth_disabled": ({"disabled_commands": ["AUTH"]}, ["AUTH PLAIN LOGIN"], []),
    "no_auth_methods": ({"auth_methods": []}, ["AUTH PLAIN LOGIN"], []),
    "requiretls_needs_tls": ({"hide_requiretls": False}, [], []),
    "xclient": ({"use_xclient": True}, [], ["XCLIENT NAME ADDR PORT PROTO HELO LOGIN"]),
    "xforward": (
        {"use_xforward": True}, [], ["XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"]),
}


@pytest.mark.parametrize("case", list(EHLO_CASES))
def test_ehlo_capabilities_follow_options(start_server, case: str) -> None:
    options, removed, added = EHLO_CASES[case]
    running = serve(start_server, **options)
    with RawClient(running.address) as client:
        extensions = client.ehlo()
    expected = [e for e in DEFAULT_EXTENSIONS if e not in removed] + added
    assert sorted(extensions) == sorted(expected)


def test_smtplib_sees_the_extensions(start_server) -> None:
    running = serve(start_server, size=4096, hide_dsn=False)
    with smtplib.SMTP(*running.address, local_hostname="client.example") as client:
        code, text = client.ehlo()
        assert code == 250
        assert text.decode().splitlines()[0] == HELLO_LINE
        assert client.has_extn("pipelining")
        assert client.has_extn("smtputf8")
        assert client.has_extn("dsn")
        assert client.esmtp_features["size"] == "4096"
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert not client.has_extn("starttls")  # no certificate configured


def test_aiosmtplib_sees_the_extensions(start_server) -> None:
    running = serve(start_server, size=4096)

    async def main() -> tuple[str, dict[str, str], list[str]]:
        smtp = aiosmtplib.SMTP(hostname=running.host, port=running.port, timeout=5,
                               start_tls=False, local_hostname="client.example")
        await smtp.connect()
        response = await smtp.ehlo()
        extensions = dict(smtp.esmtp_extensions)
        methods = list(smtp.server_auth_methods)
        await smtp.quit()
        return response.message, extensions, methods

    message, extensions, methods = asyncio.run(main())
    assert message.splitlines()[0] == HELLO_LINE
    assert extensions["size"] == "4096"
    assert "chunking" in extensions
    assert "8bitmime" in extensions
    assert "starttls" not in extensions
    assert sorted(methods) == ["login", "plain"]


def test_helo(start_server) -> None:
    running = serve(start_server)
    with RawClient(running.address) as client:
        assert client.cmd("HELO client.example") == [f"250 {HELLO_LINE}"]
        assert client.one("HELO") == "501 Error: syntax: HELO hostname"
        assert client.one("EHLO two words") == "501 Error: syntax: EHLO hostname"
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"
    with smtplib.SMTP(*running.address, local_hostname="client.example") as client:
        assert client.helo() == (250, HELLO_LINE.encode())
        assert not client.does_esmtp


def test_hello_required_before_mail(start_server) -> None:
    running = serve(start_server)
    with RawClient(running.address) as client:
        assert client.one("MAIL FROM:<a@example.com>") == "503 5.5.1 Error: send HELO/EHLO first"
        assert client.one("RCPT TO:<b@example.com>") == "503 5.5.1 Error: send HELO/EHLO first"
        assert client.one("DATA") == "503 5.5.1 Error: send HELO/EHLO first"


# -- the simple commands -----------------------------------------------------------

SIMPLE_COMMANDS = [
    ("NOOP", "250 2.0.0 OK"),
    ("NOOP ignored argument", "250 2.0.0 OK"),
    ("noop", "250 2.0.0 OK"),
    ("HELP", "214 2.0.0 See https://tools.ietf.org/html/rfc5321 for details"),
    ("HELP MAIL", "214 2.0.0 See https://tools.ietf.org/html/rfc5321 for details"),
    ("VRFY", "501 5.5.4 Error: syntax: VRFY address"),
    ("EXPN staff", "502 5.5.1 Error: EXPN not implemented"),
    ("RSET", "250 2.0.0 Flushed"),
    ("RSET now", "501 5.5.4 Error: syntax: RSET"),
    ("QUIT now", "501 5.5.4 Error: syntax: QUIT"),
    ("FOO bar", "500 5.5.2 Error: command not recognized"),
    ("LHLO client.example", "500 5.5.2 Error: command not recognized"),
    ("STARTTLS", "502 5.5.1 Error: command not implemented"),  # no certificate
    ("XCLIENT ADDR=192.0.2.1", "550 5.7.0 Error: not allowed"),
    ("XFORWARD ADDR=192.0.2.1", "550 5.7.0 Error: not allowed"),
    ("RCPT TO:<b@example.com>", "503 5.5.1 Error: need MAIL command"),
    ("DATA", "503 5.5.1 Error: need MAIL command"),
    ("MAIL FROM:a@example.com", "501 5.5.4 Error: address must be enclosed in <>"),
    ("MAIL TO:<a@example.com>", "501 5.5.4 Error: syntax: MAIL FROM:<address>"),
    ("MAIL FROM:<a@example.com>", "250 2.1.0 Accepted"),
    ("MAIL FROM:<c@example.com>", "503 5.5.1 Error: nested MAIL command"),
    ("DATA", "503 5.5.1 Error: need RCPT command"),
    ("DATA now", "503 5.5.1 Error: need RCPT command"),
    ("RCPT TO:<not an address>", "501 5.1.3 Error: bad recipient address syntax"),
    ("RCPT TO:<postmaster>", "250 2.1.5 Accepted"),
]


def test_simple_commands(start_server) -> None:
    running = serve(start_server, max_invalid_commands=None)
    with RawClient(running.address) as client:
        client.ehlo()
        for command, expected in SIMPLE_COMMANDS:
            assert client.one(command) == expected, command


def test_vrfy_answers_252(start_server) -> None:
    running = serve(start_server)
    with RawClient(running.address) as client:
        client.ehlo()
        line = client.one("VRFY postmaster")
    # RFC 5321 section 3.5.3: "cannot verify, but will accept".
    assert re.fullmatch(
        r"252 2\.\d\.\d Cannot VRFY user, but will accept message and attempt delivery", line)


def test_disabled_commands(start_server) -> None:
    running = serve(start_server, disabled_commands=["VRFY", "HELP", "NOOP"])
    with RawClient(running.address) as client:
        client.ehlo()
        for command in ("VRFY someone", "HELP", "NOOP"):
            assert client.one(command) == "502 5.5.1 Error: command not implemented"
        assert client.one("RSET") == "250 2.0.0 Flushed"


def test_quit_closes_the_connection(start_server) -> None:
    running = serve(start_server)
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("QUIT") == "221 2.0.0 Bye"
        assert client.expect_closed() == b""
    with smtplib.SMTP(*running.address) as client:
        assert client.noop() == (250, b"2.0.0 OK")
        assert client.quit() == (221, b"2.0.0 Bye")


def test_lines_after_quit_are_ignored(start_server, inbox: Inbox) -> None:
    running = serve(start_server, inbox)
    with RawClient(running.address) as client:
        client.ehlo()
        client.send("QUIT\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nNOOP\r\n")
        assert client.reply() == ["221 2.0.0 Bye"]
        assert client.expect_closed() == b""


def test_http_request_is_refused(start_server) -> None:
    running = serve(start_server)
    with RawClient(running.address) as client:
        client.send("GET / HTTP/1.1\r\nHost: mx.test\r\n\r\n")
        assert client.reply() == [f"421 4.7.0 {NAME} Error: HTTP requests not allowed"]
        assert client.expect_closed() == b""


def test_rset_drops_the_transaction(start_server, inbox: Inbox) -> None:
    running = serve(start_server, inbox)
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope("first@example.com", "dropped@example.com")
        assert client.one("RSET") == "250 2.0.0 Flushed"
        assert client.one("RCPT TO:<b@example.com>") == "503 5.5.1 Error: need MAIL command"
        assert client.one("DATA") == "503 5.5.1 Error: need MAIL command"
        client.envelope("second@example.com", "kept@example.com")
        assert client.data(BODY) == QUEUED
    [message] = inbox.wait_for(1)
    assert message.sender == "second@example.com"
    assert message.recipients == ["kept@example.com"]


# -- pipelining -----------------------------------------------------------------------


def test_pipelined_transaction_replies_in_order(start_server, inbox: Inbox) -> None:
    def on_rcpt_to(address: Any, session: Any) -> None:
        if address.address.startswith("nobody"):
            raise SMTPError(550, "No such user here")

    running = serve(start_server, inbox, on_rcpt_to=on_rcpt_to)
    with RawClient(running.address) as client:
        client.ehlo()
        client.send(
            "MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
            "RCPT TO:<nobody@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n"
        )
        assert client.replies(5) == [
            "250 2.1.0 Accepted",
            "250 2.1.5 Accepted",
            "550 5.1.1 No such user here",
            "250 2.1.5 Accepted",
            "354 End data with <CR><LF>.<CR><LF>",
        ]
        client.send(BODY + b".\r\nNOOP\r\nQUIT\r\n")
        assert client.replies(3) == [QUEUED, "250 2.0.0 OK", "221 2.0.0 Bye"]
        assert client.expect_closed() == b""
    [message] = inbox.wait_for(1)
    assert message.recipients == ["b@example.com", "c@example.com"]
    assert message.body == BODY


def test_whole_session_in_one_write(start_server, inbox: Inbox) -> None:
    running = serve(start_server, inbox)
    with RawClient(running.address, read_greeting=False) as client:
        client.send(
            b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
            b"DATA\r\n" + BODY + b".\r\nMAIL FROM:<c@example.com>\r\nRCPT TO:<d@example.com>\r\n"
            b"DATA\r\n" + BODY + b".\r\nQUIT\r\n"
        )
        assert client.reply() == [GREETING]
        assert client.reply()[0] == f"250-{HELLO_LINE}"
        assert client.replies(9) == [
            "250 2.1.0 Accepted", "250 2.1.5 Accepted",
            "354 End data with <CR><LF>.<CR><LF>", QUEUED,
            "250 2.1.0 Accepted", "250 2.1.5 Accepted",
            "354 End data with <CR><LF>.<CR><LF>", QUEUED,
            "221 2.0.0 Bye",
        ]
        assert client.expect_closed() == b""
    messages = inbox.wait_for(2)
    assert [(m.sender, m.recipients) for m in messages] == [
        ("a@example.com", ["b@example.com"]), ("c@example.com", ["d@example.com"])]


def test_aiosmtplib_round_trip(start_server, inbox: Inbox) -> None:
    running = serve(start_server, inbox)
    body = b"Subject: aio\r\n\r\nfrom aiosmtplib\r\n"

    async def main() -> tuple[dict[str, Any], str]:
        async with aiosmtplib.SMTP(hostname=running.host, port=running.port, timeout=5,
                                   start_tls=False) as smtp:
            return await smtp.sendmail("a@example.com", ["b@example.com", "c@example.com"],
                                       body)

    errors, message = asyncio.run(main())
    assert errors == {}
    assert message == "2.0.0 OK: message queued"
    [received] = inbox.wait_for(1)
    assert received.body == body
    assert received.recipients == ["b@example.com", "c@example.com"]


# -- DSN, SMTPUTF8, 8BITMIME ---------------------------------------------------------


def test_dsn_parameters(start_server, inbox: Inbox) -> None:
    seen = Recorder()

    def on_mail_from(address: Any, session: Any) -> None:
        seen.add(("mail", address.ret, address.envid, dict(address.params)))

    def on_rcpt_to(address: Any, session: Any) -> None:
        seen.add(("rcpt", address.address, address.notify, address.orcpt))

    def on_data(stream: Any, session: Any) -> None:
        seen.add(("data", session.envelope.dsn))
        inbox.on_data(stream, session)

    running = serve(start_server, hide_dsn=False, on_mail_from=on_mail_from,
                    on_rcpt_to=on_rcpt_to, on_data=on_data)
    with smtplib.SMTP(*running.address) as client:
        refused = client.sendmail(
            "a@example.com", ["b@example.com"], BODY,
            mail_options=["RET=HDRS", "ENVID=QQ314159+2Bx"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;b+40example.com"],
        )
    assert refused == {}
    inbox.wait_for(1)
    assert seen.items == [
        ("mail", "HDRS", "QQ314159+x", {"RET": "HDRS", "ENVID": "QQ314159+2Bx"}),
        ("rcpt", "b@example.com", ("SUCCESS", "FAILURE"), "rfc822;b@example.com"),
        ("data", {"ret": "HDRS", "envid": "QQ314159+x"}),
    ]


def test_dsn_parameter_errors(start_server) -> None:
    running = serve(start_server, hide_dsn=False)
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("MAIL FROM:<a@example.com> RET=ALL") == (
            "501 5.5.4 Error: RET must be FULL or HDRS")
        assert client.one("MAIL FROM:<a@example.com> RET=FULL") == "250 2.1.0 Accepted"
        assert client.one("RCPT TO:<b@example.com> NOTIFY=NEVER,SUCCESS") == (
            "501 5.5.4 Error: NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
        assert client.one("RCPT TO:<b@example.com> ORCPT=rfc822") == (
            "501 5.5.4 Error: ORCPT must be addr-type;address")
        assert client.one("RCPT TO:<b@example.com> NOTIFY=NEVER") == "250 2.1.5 Accepted"


def test_dsn_hidden_refuses_its_parameters(start_server) -> None:
    running = serve(start_server)  # hide_dsn defaults to True
    with RawClient(running.address) as client:
        assert "DSN" not in client.ehlo()
        assert client.one("MAIL FROM:<a@example.com> RET=HDRS") == (
            "555 5.5.4 Error: unsupported parameter RET")
        assert client.one("MAIL FROM:<a@example.com> ENVID=x") == (
            "555 5.5.4 Error: unsupported parameter ENVID")
        assert client.one("MAIL FROM:<a@example.com> FOO=bar") == (
            "555 5.5.4 Error: unsupported parameter FOO")
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"
        assert client.one("RCPT TO:<b@example.com> NOTIFY=NEVER") == (
            "555 5.5.4 Error: unsupported parameter NOTIFY")


def test_smtputf8_addresses(start_server, inbox: Inbox) -> None:
    seen = Recorder()

    def on_data(stream: Any, session: Any) -> None:
        seen.add((session.envelope.smtputf8, session.envelope.mail_from.smtputf8))
        inbox.on_data(stream, session)

    running = serve(start_server, on_data=on_data)
    body = "Subject: grüße\r\nFrom: jörg@exämple.com\r\n\r\nÜnïcödé\r\n".encode()
    with smtplib.SMTP(*running.address) as client:
        refused = client.sendmail("jörg@exämple.com", ["ñandú@example.com", "b@example.com"],
                                  body, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    assert refused == {}
    [message] = inbox.wait_for(1)
    assert message.sender == "jörg@exämple.com"
    assert message.recipients == ["ñandú@example.com", "b@example.com"]
    assert message.body == body
    assert seen.items == [(True, True)]


def test_utf8_address_needs_smtputf8(start_server) -> None:
    running = serve(start_server)
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("MAIL FROM:<jörg@exämple.com>") == (
            "553 5.6.7 Error: non-ASCII address needs SMTPUTF8")
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"
        assert client.one("RCPT TO:<ñandú@example.com>") == (
            "553 5.6.7 Error: non-ASCII address needs SMTPUTF8")


def test_smtputf8_hidden(start_server) -> None:
    running = serve(start_server, hide_smtputf8=True)
    with RawClient(running.address) as client:
        assert "SMTPUTF8" not in client.ehlo()
        assert client.one("MAIL FROM:<jörg@exämple.com> SMTPUTF8") == (
            "555 5.5.4 Error: unsupported parameter SMTPUTF8")


def test_8bitmime_body(start_server, inbox: Inbox) -> None:
    seen = Recorder()

    def on_data(stream: Any, session: Any) -> None:
        seen.add(session.envelope.body_type)
        inbox.on_data(stream, session)

    running = serve(start_server, on_data=on_data)
    body = b"Subject: 8bit\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xc3\xa9t\xc3\xa9 \xff\xfe\r\n"
    with smtplib.SMTP(*running.address) as client:
        client.sendmail("a@example.com", ["b@example.com"], body,
                        mail_options=["BODY=8BITMIME"])
        client.sendmail("a@example.com", ["b@example.com"], BODY, mail_options=["BODY=7BIT"])
    messages = inbox.wait_for(2)
    assert messages[0].body == body
    assert seen.items == ["8bitmime", "7bit"]


def test_8bitmime_hidden(start_server) -> None:
    running = serve(start_server, hide_8bitmime=True)
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("MAIL FROM:<a@example.com> BODY=8BITMIME") == (
            "555 5.5.4 Error: unsupported parameter BODY=8BITMIME")
        assert client.one("MAIL FROM:<a@example.com> BODY=9BIT") == (
            "501 5.5.4 Error: BODY must be 7BIT or 8BITMIME")
        assert client.one("MAIL FROM:<a@example.com> BODY=7BIT") == "250 2.1.0 Accepted"


# -- CHUNKING / BDAT / BINARYMIME ------------------------------------------------------


def test_bdat_chunks(start_server, inbox: Inbox) -> None:
    running = serve(start_server, inbox)
    first = b"Subject: chunks\r\n"
    # Dots, an end-of-data marker and a command inside a chunk are just octets.
    second = b"\r\n.\r\nQUIT\r\n..double dot\r\n"
    with RawClient(running.address) as client:
        assert "CHUNKING" in client.ehlo()
        client.envelope()
        client.send(b"BDAT %d\r\n" % len(first) + first)
        assert client.reply() == [f"250 2.0.0 {len(first)} octets received"]
        client.send(b"BDAT %d LAST\r\n" % len(second) + second)
        assert client.reply() == [QUEUED]
        assert client.one("NOOP") == "250 2.0.0 OK"
    [message] = inbox.wait_for(1)
    assert message.body == first + second


def test_bdat_pipelined_with_empty_last_chunk(start_server, inbox: Inbox) -> None:
    running = serve(start_server, inbox)
    with RawClient(running.address) as client:
        client.ehlo()
        client.send(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
            b"BDAT 5\r\nhelloBDAT 7\r\n, worldbdat 0 last\r\nNOOP\r\n"
        )
        assert client.replies(6) == [
            "250 2.1.0 Accepted", "250 2.1.5 Accepted",
            "250 2.0.0 5 octets received", "250 2.0.0 7 octets received",
            QUEUED, "250 2.0.0 OK",
        ]
    [message] = inbox.wait_for(1)
    assert message.body == b"hello, world"


def test_binarymime(start_server, inbox: Inbox) -> None:
    seen = Recorder()

    def on_data(stream: Any, session: Any) -> None:
        seen.add(session.envelope.body_type)
        inbox.on_data(stream, session)

    running = serve(start_server, on_data=on_data)
    payload = bytes(range(256)) + b"\n\r\x00.\r\n"
    with RawClient(running.address) as client:
        assert "BINARYMIME" in client.ehlo()
        assert client.one("MAIL FROM:<a@example.com> BODY=BINARYMIME") == "250 2.1.0 Accepted"
        assert client.one("RCPT TO:<b@example.com>") == "250 2.1.5 Accepted"
        assert client.one("DATA") == "503 5.5.1 Error: BODY=BINARYMIME requires BDAT"
        client.send(b"BDAT %d LAST\r\n" % len(payload) + payload)
        assert client.reply() == [QUEUED]
    [message] = inbox.wait_for(1)
    assert message.body == payload
    assert seen.items == ["binarymime"]


def test_bdat_without_transaction_discards_the_chunk(start_server, inbox: Inbox) -> None:
    running = serve(start_server, inbox)
    with RawClient(running.address) as client:
        client.ehlo()
        # The chunk's octets must be consumed, not read as a QUIT command.
        client.send(b"BDAT 6 LAST\r\nQUIT\r\n")
        assert client.reply() == ["503 5.5.1 Error: need MAIL command"]
        assert client.one("BDAT x") == "501 5.5.4 Error: syntax: BDAT chunk-size [LAST]"
        assert client.one("NOOP") == "250 2.0.0 OK"
        client.envelope()
        client.send(b"BDAT 4\r\nabcdDATA\r\n")
        assert client.replies(2) == [
            "250 2.0.0 4 octets received", "503 5.5.1 Error: DATA not allowed after BDAT"]
        assert client.one("RCPT TO:<c@example.com>") == (
            "503 5.5.1 Error: RCPT not allowed during BDAT transfer")
        client.send(b"BDAT 2 LAST\r\nef")
        assert client.reply() == [QUEUED]
    [message] = inbox.wait_for(1)
    assert message.body == b"abcdef"


def test_chunking_hidden(start_server) -> None:
    running = serve(start_server, hide_chunking=True)
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("MAIL FROM:<a@example.com> BODY=BINARYMIME") == (
            "555 5.5.4 Error: unsupported parameter BODY=BINARYMIME")
        client.envelope()
        assert client.one("BDAT 0 LAST") == "502 5.5.1 Error: command not implemented"


def test_rset_aborts_a_bdat_message(start_server, inbox: Inbox) -> None:
    running = serve(start_server, inbox)
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope("dropped@example.com")
        client.send(b"BDAT 7\r\ndropped")
        assert client.reply() == ["250 2.0.0 7 octets received"]
        assert client.one("RSET") == "250 2.0.0 Flushed"
        client.envelope("kept@example.com")
        client.send(b"BDAT 4 LAST\r\nkept")
        assert client.reply() == [QUEUED]
    [message] = inbox.wait_for(1)
    assert (message.sender, message.body) == ("kept@example.com", b"kept")


def test_large_message_streams_through(start_server) -> None:
    """Several megabytes through a handler that reads in small pieces: the
    backpressure between the connection and the handler loses nothing."""
    digests = Recorder()

    def on_data(stream: Any, session: Any) -> str:
        digest = hashlib.sha256()
        total = 0
        while piece := stream.read(4096):
            digest.update(piece)
            total += len(piece)
        digests.add((total, digest.hexdigest()))
        return f"Got {total} octets"

    running = serve(start_server, on_data=on_data)
    line = b"".join(bytes([65 + i % 26]) * 75 + b"\r\n" for i in range(26))
    body = b"Subject: big\r\n\r\n" + line * 2000 + b".dot-stuffed line\r\n"
    with smtplib.SMTP(*running.address) as client:
        client.ehlo()
        client.mail("a@example.com")
        client.rcpt("b@example.com")
        assert client.data(body) == (250, f"2.0.0 Got {len(body)} octets".encode())
    # The same bytes as one BDAT chunk (not dot-unstuffed), then two.
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope()
        client.send(b"BDAT %d LAST\r\n" % len(body) + body)
        assert client.reply() == [f"250 2.0.0 Got {len(body)} octets"]
        client.envelope()
        half = len(body) // 2
        client.send(b"BDAT %d\r\n" % half + body[:half]
                    + b"BDAT %d LAST\r\n" % (len(body) - half) + body[half:])
        assert client.replies(2) == [
            f"250 2.0.0 {half} octets received", f"250 2.0.0 Got {len(body)} octets"]
    expected = (len(body), hashlib.sha256(body).hexdigest())
    assert digests.items == [expected] * 3


# -- SIZE ---------------------------------------------------------------------------


def test_size_declared_in_mail_from(start_server) -> None:
    running = serve(start_server, size=1000)
    with RawClient(running.address) as client:
        assert "SIZE 1000" in client.ehlo()
        assert client.one("MAIL FROM:<a@example.com> SIZE=1001") == (
            "552 5.3.4 Error: message exceeds fixed maximum message size 1000")
        assert client.one("MAIL FROM:<a@example.com> SIZE=big") == "501 5.5.4 Error: bad SIZE value"
        assert client.one("MAIL FROM:<a@example.com> SIZE=1000") == "250 2.1.0 Accepted"


def test_size_exceeded_in_data(start_server, inbox: Inbox) -> None:
    running = serve(start_server, inbox, size=1000)
    # The excess is made of commands: had the server stopped reading at the
    # limit, it would now take them for commands and say goodbye.
    too_big = b"Subject: big\r\n\r\n" + b"QUIT\r\n" * 1000
    at_limit = b"Subject: fits\r\n\r\n" + b"x" * (1000 - 17 - 2) + b"\r\n"
    assert len(at_limit) == 1000
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope("big@example.com")
        assert client.data(too_big) == (
            "552 5.3.4 Error: message exceeds fixed maximum message size 1000")
        assert client.one("NOOP") == "250 2.0.0 OK"
        assert client.one("RCPT TO:<b@example.com>") == "503 5.5.1 Error: need MAIL command"
        client.envelope("one-more@example.com")
        assert client.data(b"y" + at_limit) == (
            "552 5.3.4 Error: message exceeds fixed maximum message size 1000")
        client.envelope("fits@example.com")
        assert client.data(at_limit) == QUEUED
    [message] = inbox.wait_for(1)
    assert (message.sender, message.body) == ("fits@example.com", at_limit)


def test_size_exceeded_in_bdat(start_server, inbox: Inbox) -> None:
    running = serve(start_server, inbox, size=1000)
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope("big@example.com")
        client.send(b"BDAT 600\r\n" + b"a" * 600)
        assert client.reply() == ["250 2.0.0 600 octets received"]
        client.send(b"BDAT 600\r\n" + b"b" * 600)
        assert client.reply() == [
            "552 5.3.4 Error: message exceeds fixed maximum message size 1000"]
        client.send(b"BDAT 6 LAST\r\nQUIT\r\n")
        assert client.reply() == ["503 5.5.1 Error: need MAIL command"]
        client.envelope("small@example.com")
        client.send(b"BDAT 5 LAST\r\nsmall")
        assert client.reply() == [QUEUED]
    [message] = inbox.wait_for(1)
    assert (message.sender, message.body) == ("small@example.com", b"small")


def test_size_with_smtplib(start_server, inbox: Inbox) -> None:
    running = serve(start_server, inbox, size=1000, hide_size=True)
    with smtplib.SMTP(*running.address) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == ""
        # smtplib declares SIZE=; the hidden limit is enforced all the same.
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("a@example.com", ["b@example.com"], b"x" * 2000)
        assert refused.value.smtp_code == 552
        assert refused.value.smtp_error.startswith(b"5.3.4 ")
        client.rset()
        assert client.sendmail("a@example.com", ["b@example.com"], BODY) == {}
    [message] = inbox.wait_for(1)
    assert message.body == BODY


# -- LMTP ------------------------------------------------------------------------------


def test_lmtp_greeting_and_lhlo(start_server) -> None:
    running = serve(start_server, lmtp=True)
    with RawClient(running.address) as client:
        assert client.greeting == [f"220 {NAME} LMTP"]
        # RFC 2034: no enhanced status code in a reply to HELO or EHLO.
        assert client.one("EHLO client.example") == "500 Error: EHLO not allowed in LMTP server"
        assert client.one("HELO client.example") == "500 Error: HELO not allowed in LMTP server"
        assert client.one("MAIL FROM:<a@example.com>") == "503 5.5.1 Error: send LHLO first"
        lines = client.cmd("LHLO client.example")
        assert lines[0] == f"250-{HELLO_LINE}"
        assert sorted(line[4:] for line in lines[1:]) == sorted(DEFAULT_EXTENSIONS)


def test_lmtp_one_reply_per_recipient(start_server, inbox: Inbox) -> None:
    seen = Recorder()

    def on_rcpt_to(address: Any, session: Any) -> None:
        if address.address.startswith("nobody"):
            raise SMTPError(550, "No such mailbox", enhanced="5.1.1")

    def on_data(stream: Any, session: Any) -> None:
        seen.add(session.transmission_type)
        inbox.on_data(stream, session)

    running = serve(start_server, lmtp=True, on_rcpt_to=on_rcpt_to, on_data=on_data)
    with RawClient(running.address) as client:
        client.cmd("LHLO client.example")
        client.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                    "RCPT TO:<nobody@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
        assert client.replies(5)[2] == "550 5.1.1 No such mailbox"
        client.send(BODY + b".\r\nNOOP\r\n")
        # One reply per accepted recipient, then the NOOP's: nothing more.
        assert client.replies(3) == [QUEUED, QUEUED, "250 2.0.0 OK"]
    [message] = inbox.wait_for(1)
    assert message.recipients == ["b@example.com", "c@example.com"]
    assert seen.items == ["LMTP"]


def test_lmtp_per_recipient_answers(start_server) -> None:
    def on_data(stream: Any, session: Any) -> list[Any]:
        stream.read()
        return [
            "Delivered to b",
            SMTPError(452, "Mailbox full", enhanced="4.2.2"),
            None,
            SMTPError(550, "Mailbox disabled"),
        ]

    running = serve(start_server, lmtp=True, on_data=on_data)
    with RawClient(running.address) as client:
        client.cmd("LHLO client.example")
        client.envelope("a@example.com", "b@example.com", "c@example.com", "d@example.com",
                        "e@example.com")
        client.send(b"DATA\r\n" + BODY + b".\r\n")
        assert client.replies(5) == [
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Delivered to b",
            "452 4.2.2 Mailbox full",
            "250 2.0.0 OK: message accepted",
            "550 5.6.0 Mailbox disabled",
        ]
        # The transaction is over.
        assert client.one("RCPT TO:<b@example.com>") == "503 5.5.1 Error: need MAIL command"


def test_lmtp_on_data_refusal_is_repeated_per_recipient(start_server) -> None:
    def on_data(stream: Any, session: Any) -> None:
        stream.read()
        raise SMTPError(554, "Content rejected", enhanced="5.7.1")

    running = serve(start_server, lmtp=True, on_data=on_data)
    with RawClient(running.address) as client:
        client.cmd("LHLO client.example")
        client.envelope("a@example.com", "b@example.com", "c@example.com")
        client.send(b"DATA\r\n" + BODY + b".\r\n")
        assert client.replies(3)[1:] == ["554 5.7.1 Content rejected"] * 2
        assert client.one("NOOP") == "250 2.0.0 OK"


def test_lmtp_wrong_number_of_answers(start_server, caplog) -> None:
    def on_data(stream: Any, session: Any) -> list[str]:
        stream.read()
        return ["only one"]

    running = serve(start_server, lmtp=True, on_data=on_data)
    with RawClient(running.address) as client:
        client.cmd("LHLO client.example")
        client.envelope("a@example.com", "b@example.com", "c@example.com")
        client.send(b"DATA\r\n" + BODY + b".\r\n")
        assert client.replies(3)[1:] == ["451 4.3.0 Error: local error in processing"] * 2
        assert client.one("NOOP") == "250 2.0.0 OK"
    assert any("LMTP" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_lmtp_bdat_and_size(start_server, inbox: Inbox) -> None:
    running = serve(start_server, inbox, lmtp=True, size=100)
    with RawClient(running.address) as client:
        client.cmd("LHLO client.example")
        client.envelope("a@example.com", "b@example.com", "c@example.com")
        client.send(b"BDAT 3\r\nabcBDAT 3 LAST\r\ndef")
        assert client.replies(3) == ["250 2.0.0 3 octets received", QUEUED, QUEUED]
        client.envelope("a@example.com", "b@example.com", "c@example.com")
        assert client.one("DATA").startswith("354 ")
        client.send(b"x" * 200 + b"\r\n.\r\n")
        too_big = "552 5.3.4 Error: message exceeds fixed maximum message size 100"
        assert client.replies(2) == [too_big, too_big]
        assert client.one("NOOP") == "250 2.0.0 OK"
    [message] = inbox.wait_for(1)
    assert message.body == b"abcdef"


def test_smtplib_lmtp_client(start_server, inbox: Inbox) -> None:
    running = serve(start_server, inbox, lmtp=True)
    client = smtplib.LMTP(running.host, running.port)
    try:
        assert client.sendmail("a@example.com", ["b@example.com"], BODY) == {}
    finally:
        client.quit()
    [message] = inbox.wait_for(1)
    assert message.body == BODY


# -- limits ------------------------------------------------------------------------------


def test_max_recipients(start_server, inbox: Inbox) -> None:
    running = serve(start_server, inbox, max_recipients=2)
    with smtplib.SMTP(*running.address) as client:
        refused = client.sendmail(
            "a@example.com", ["b@example.com", "c@example.com", "d@example.com"], BODY)
    assert refused == {"d@example.com": (452, b"4.5.3 Error: too many recipients")}
    [message] = inbox.wait_for(1)
    assert message.recipients == ["b@example.com", "c@example.com"]


def test_max_command_length(start_server) -> None:
    running = serve(start_server, max_command_length=100)
    with RawClient(running.address) as client:
        client.ehlo()
        # 100 octets with the CRLF is allowed, 101 is not.
        assert client.one("NOOP " + "x" * 93) == "250 2.0.0 OK"
        assert client.one("NOOP " + "x" * 94) == "500 5.5.2 Error: line too long"
        assert client.one("NOOP") == "250 2.0.0 OK"
        # MAIL and RCPT get the room their extensions need.
        sender = "s" * 60 + "@" + "d" * 50 + ".example.com"
        assert client.one(f"MAIL FROM:<{sender}>") == "250 2.1.0 Accepted"
        # A huge line is dropped as it streams, and the session goes on.
        client.send(b"NOOP " + b"x" * 1_000_000 + b"\r\n")
        assert client.reply() == ["500 5.5.2 Error: line too long"]
        assert client.one("RCPT TO:<b@example.com>") == "250 2.1.5 Accepted"


def test_max_invalid_commands(start_server) -> None:
    running = serve(start_server, max_invalid_commands=3)
    with RawClient(running.address) as client:
        client.ehlo()
        for _ in range(3):
            assert client.one("FOO") == "500 5.5.2 Error: command not recognized"
        assert client.one("BAR") == f"421 4.7.0 {NAME} Error: too many invalid commands"
        assert client.expect_closed() == b""


def test_accepted_message_resets_invalid_count(start_server, inbox: Inbox) -> None:
    running = serve(start_server, inbox, max_invalid_commands=2)
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("FOO").startswith("500 ")
        assert client.one("DATA").startswith("503 ")
        client.envelope()
        assert client.data(BODY) == QUEUED
        assert client.one("FOO").startswith("500 ")
        assert client.one("VRFY").startswith("501 ")
        assert client.one("FOO").startswith("421 ")
        assert client.expect_closed() == b""


def test_max_unauthenticated_commands(start_server) -> None:
    running = start_server(name=NAME, max_allowed_unauthenticated_commands=3)
    with RawClient(running.address) as client:
        client.ehlo()  # the first of three
        assert client.one("NOOP") == "250 2.0.0 OK"
        assert client.one("MAIL FROM:<a@example.com>") == (
            "530 5.7.0 Error: authentication required")
        assert client.one("NOOP") == (
            f"421 4.7.0 {NAME} Error: too many unauthenticated commands")
        assert client.expect_closed() == b""


# -- enhanced status codes ---------------------------------------------------------------


def test_enhanced_status_codes_on_every_reply(start_server, inbox: Inbox) -> None:
    def on_rcpt_to(address: Any, session: Any) -> None:
        if address.address.startswith("nobody"):
            raise SMTPError(550, "No such user")

    running = serve(start_server, inbox, on_rcpt_to=on_rcpt_to)
    with RawClient(running.address) as client:
        lines = [*client.greeting, *client.cmd("EHLO client.example")]
        assert all(not ENHANCED.match(line) for line in lines), lines
        replies = [
            client.one(command) for command in (
                "NOOP", "MAIL FROM:<a@example.com>", "RCPT TO:<nobody@example.com>",
                "RCPT TO:<b@example.com>", "FOO", "VRFY x", "HELP",
            )
        ]
        assert client.one("DATA") == "354 End data with <CR><LF>.<CR><LF>"  # 3xx: none
        client.send(BODY + b".\r\n")
        replies += [client.reply()[0], client.one("QUIT")]
    for line in replies:
        match = ENHANCED.match(line)
        assert match, line
        assert match.group(1) == match.group(2), line  # same class as the reply code


def test_hide_enhanced_status_codes(start_server, inbox: Inbox) -> None:
    def on_rcpt_to(address: Any, session: Any) -> None:
        if address.address.startswith("nobody"):
            raise SMTPError(550, "No such user", enhanced="5.1.1")

    running = serve(start_server, inbox, on_rcpt_to=on_rcpt_to,
                    hide_enhancedstatuscodes=True)
    with RawClient(running.address) as client:
        assert "ENHANCEDSTATUSCODES" not in client.ehlo()
        assert client.one("NOOP") == "250 OK"
        assert client.one("MAIL FROM:<a@example.com>") == "250 Accepted"
        assert client.one("RCPT TO:<nobody@example.com>") == "550 No such user"
        assert client.one("RCPT TO:<b@example.com>") == "250 Accepted"
        assert client.one("FOO") == "500 Error: command not recognized"
        assert client.data(BODY) == "250 OK: message queued"
        assert client.one("QUIT") == "221 Bye"
    inbox.wait_for(1)
