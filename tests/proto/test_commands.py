"""Every command verb and its replies (RFC 5321 section 4.1, RFC 2033, RFC 2034).

The transaction commands (MAIL, RCPT, DATA, BDAT, RSET) are covered in depth
in ``test_transaction``; here each verb is checked for its plain replies, its
syntax errors and the sequencing rules that do not need a transaction.
"""

from __future__ import annotations

import pytest

from smtp_proto import (
    ConnectionClosed,
    Hello,
    MailFrom,
    MessageAborted,
    MessageComplete,
    Quit,
    Reset,
    ServerConfig,
    State,
)
from tests.proto.driver import converse, greeted, open_config
from tests.proto.support import cmd, ready, reject_with, split_bytes, talk

EHLO_OPEN = [
    "250-localhost Nice to meet you, client.example",
    "250-PIPELINING",
    "250-8BITMIME",
    "250-SMTPUTF8",
    "250-ENHANCEDSTATUSCODES",
    "250-CHUNKING",
    "250-BINARYMIME",
    "250-STARTTLS",
    "250 AUTH PLAIN LOGIN",
]


# -- one command, one reply, after EHLO -----------------------------------------

AFTER_EHLO = [
    # (command line, full reply line)
    ("NOOP", "250 2.0.0 OK"),
    ("noop", "250 2.0.0 OK"),
    ("NOOP with an argument", "250 2.0.0 OK"),  # RFC 5321 4.1.1.9: NOOP [SP String]
    ("RSET", "250 2.0.0 Flushed"),
    ("rset", "250 2.0.0 Flushed"),
    ("RSET now", "501 5.5.4 Error: syntax: RSET"),
    ("RSET   ", "250 2.0.0 Flushed"),
    ("HELP", "214 2.0.0 See https://tools.ietf.org/html/rfc5321 for details"),
    ("HELP MAIL", "214 2.0.0 See https://tools.ietf.org/html/rfc5321 for details"),
    ("VRFY postmaster",
     "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"),
    ("VRFY", "501 5.5.4 Error: syntax: VRFY address"),
    ("VRFY   ", "501 5.5.4 Error: syntax: VRFY address"),
    ("EXPN staff", "502 5.5.1 Error: EXPN not implemented"),
    ("QUIT now", "501 5.5.4 Error: syntax: QUIT"),
    ("STARTTLS now", "501 5.5.4 Error: syntax: STARTTLS"),
    ("FOO", "500 5.5.2 Error: command not recognized"),
    ("MAILFROM:<a@example.com>", "500 5.5.2 Error: command not recognized"),
    ("", "500 5.5.2 Error: command not recognized"),
    ("LHLO client.example", "500 5.5.2 Error: command not recognized"),
    ("MAIL", "501 5.5.4 Error: syntax: MAIL FROM:<address>"),
    ("MAIL TO:<a@example.com>", "501 5.5.4 Error: syntax: MAIL FROM:<address>"),
    ("RCPT", "503 5.5.1 Error: need MAIL command"),
    ("RCPT TO:<a@example.com>", "503 5.5.1 Error: need MAIL command"),
    ("DATA", "503 5.5.1 Error: need MAIL command"),
    ("BDAT", "501 5.5.4 Error: syntax: BDAT chunk-size [LAST]"),
    ("XCLIENT ADDR=192.0.2.1", "550 5.7.0 Error: not allowed"),
    ("XFORWARD ADDR=192.0.2.1", "550 5.7.0 Error: not allowed"),
    ("AUTH PLAIN", "538 5.7.11 Error: must issue a STARTTLS command first"),
    ("AUTH", "538 5.7.11 Error: must issue a STARTTLS command first"),
]


@pytest.mark.parametrize(("line", "reply"), AFTER_EHLO)
def test_single_command_reply(line: str, reply: str) -> None:
    conn = ready()
    result = talk(conn, cmd(line))
    assert result.replies == [reply]
    assert result.error is None
    assert conn.state is State.COMMAND


# -- before HELO/EHLO -----------------------------------------------------------

BEFORE_HELLO = [
    ("MAIL FROM:<a@example.com>", "503 5.5.1 Error: send HELO/EHLO first"),
    ("RCPT TO:<a@example.com>", "503 5.5.1 Error: send HELO/EHLO first"),
    ("DATA", "503 5.5.1 Error: send HELO/EHLO first"),
    ("AUTH PLAIN", "503 5.5.1 Error: send HELO/EHLO first"),
    ("NOOP", "250 2.0.0 OK"),
    ("RSET", "250 2.0.0 Flushed"),
    ("HELP", "214 2.0.0 See https://tools.ietf.org/html/rfc5321 for details"),
    ("VRFY someone",
     "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"),
    ("QUIT", "221 2.0.0 Bye"),
]


@pytest.mark.parametrize(("line", "reply"), BEFORE_HELLO)
def test_command_before_hello(line: str, reply: str) -> None:
    conn = greeted(open_config())
    assert talk(conn, cmd(line)).replies == [reply]


def test_bdat_before_hello_is_refused_and_its_octets_consumed() -> None:
    conn = greeted(open_config())
    result = talk(conn, cmd("BDAT 6 LAST") + b"NOOP\r\n" + cmd("NOOP"))
    assert result.replies == ["503 5.5.1 Error: send HELO/EHLO first", "250 2.0.0 OK"]


def test_lmtp_asks_for_lhlo() -> None:
    conn = greeted(open_config(lmtp=True))
    assert talk(conn, cmd("MAIL FROM:<a@example.com>")).replies == [
        "503 5.5.1 Error: send LHLO first"
    ]


# -- HELO / EHLO / LHLO -------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kwargs", "first"),
    [
        ("HELO client.example", {}, "250 localhost Nice to meet you, client.example"),
        ("helo client.example", {}, "250 localhost Nice to meet you, client.example"),
        ("HELO [192.0.2.9]", {}, "250 localhost Nice to meet you, [192.0.2.9]"),
        ("HELO client.example", {"remote_address": "192.0.2.1"},
         "250 localhost Nice to meet you, [192.0.2.1]"),
        ("HELO client.example", {"remote_address": "192.0.2.1", "client_hostname": "mx.example"},
         "250 localhost Nice to meet you, mx.example"),
        ("HELO   client.example  ", {}, "250 localhost Nice to meet you, client.example"),
    ],
)
def test_helo_reply(line: str, kwargs: dict[str, str], first: str) -> None:
    conn = greeted(open_config(), **kwargs)
    result = talk(conn, cmd(line))
    assert result.replies == [first]
    (hello,) = result.of(Hello)
    assert hello == Hello("HELO", line.split()[1])
    assert conn.session.opening_command == "HELO"
    assert conn.session.host_name_appears_as == line.split()[1]


def test_ehlo_lists_extensions() -> None:
    conn = greeted(open_config())
    result = talk(conn, cmd("EHLO client.example"))
    assert result.replies == EHLO_OPEN
    assert result.codes == [250]
    assert result.of(Hello) == [Hello("EHLO", "client.example")]
    assert conn.session.opening_command == "EHLO"


def test_ehlo_with_default_config_requires_auth_but_still_lists_it() -> None:
    conn = greeted(ServerConfig())
    result = talk(conn, cmd("EHLO c.example"))
    assert result.replies[-1] == "250 AUTH PLAIN LOGIN"


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        # RFC 2034 section 3: no enhanced code on replies to HELO/EHLO.
        ("HELO", "501 Error: syntax: HELO hostname"),
        ("EHLO", "501 Error: syntax: EHLO hostname"),
        ("EHLO   ", "501 Error: syntax: EHLO hostname"),
        ("EHLO two words", "501 Error: syntax: EHLO hostname"),
        ("HELO a b", "501 Error: syntax: HELO hostname"),
    ],
)
def test_hello_syntax_errors(line: str, reply: str) -> None:
    conn = greeted(open_config())
    result = talk(conn, cmd(line))
    assert result.replies == [reply]
    assert result.of(Hello) == []
    assert conn.session.opening_command is None


@pytest.mark.parametrize(
    ("code", "text", "enhanced", "reply"),
    [
        (550, None, None, "550 Error: hello rejected"),
        (550, "Go away", None, "550 Go away"),
        (550, "Go away", "5.7.1", "550 Go away"),
        (450, "Try later", None, "450 Try later"),
        (504, None, None, "504 Error: hello rejected"),
    ],
)
def test_hello_rejected_by_application(
    code: int, text: str | None, enhanced: str | None, reply: str
) -> None:
    conn = greeted(open_config())
    result = talk(conn, cmd("EHLO client.example"), reject_with(Hello, code, text, enhanced))
    # No enhanced code, even one the application gave: replies to EHLO carry
    # none (RFC 2034 section 3).
    assert result.replies == [reply]
    assert conn.session.opening_command is None
    assert talk(conn, cmd("MAIL FROM:<a@example.com>")).replies == [
        "503 5.5.1 Error: send HELO/EHLO first"
    ]


def test_hello_rejected_with_421_closes() -> None:
    conn = greeted(open_config())
    result = talk(conn, cmd("EHLO client.example", "NOOP"), reject_with(Hello, 421, "Bye now"))
    assert result.replies == ["421 Bye now"]
    assert isinstance(result.events[-1], ConnectionClosed)
    assert conn.closed


def test_ehlo_resets_the_transaction() -> None:
    # RFC 5321 section 4.1.4: EHLO in a transaction acts like RSET.
    conn = ready()
    result = talk(conn, cmd("MAIL FROM:<a@example.com>", "EHLO again.example",
                            "RCPT TO:<b@example.com>"))
    assert result.codes == [250, 250, 503]
    assert result.replies[-1] == "503 5.5.1 Error: need MAIL command"
    assert conn.session.host_name_appears_as == "again.example"


def test_rejected_ehlo_keeps_the_transaction() -> None:
    # RFC 5321 section 4.1.4: after refusing EHLO the server stays in the same state.
    conn = ready()
    talk(conn, cmd("MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>"))
    result = talk(conn, cmd("EHLO other.example", "DATA"), reject_with(Hello, 550))
    assert result.replies == ["550 Error: hello rejected", "354 End data with <CR><LF>.<CR><LF>"]
    assert conn.session.host_name_appears_as == "client.example"


def test_rejected_ehlo_between_bdat_chunks_keeps_the_message() -> None:
    conn = ready()
    first = talk(conn, cmd("MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "BDAT 3")
                 + b"abc")
    assert first.codes == [250, 250, 250]
    result = talk(conn, cmd("EHLO other.example", "BDAT 3 LAST") + b"def",
                  reject_with(Hello, 550))
    assert result.replies == ["550 Error: hello rejected", "250 2.0.0 OK: message queued"]
    assert result.of(MessageAborted) == []
    assert result.of(MessageComplete) == [MessageComplete("BDAT", 6)]


def test_lhlo_in_lmtp() -> None:
    conn = greeted(open_config(lmtp=True))
    result = talk(conn, cmd("LHLO client.example"))
    assert result.replies[0] == "250-localhost Nice to meet you, client.example"
    assert result.of(Hello) == [Hello("LHLO", "client.example")]
    assert conn.session.opening_command == "LHLO"


@pytest.mark.parametrize("verb", ["HELO", "EHLO"])
def test_helo_and_ehlo_refused_in_lmtp(verb: str) -> None:
    conn = greeted(open_config(lmtp=True))
    result = talk(conn, cmd(f"{verb} client.example"))
    # A reply to HELO/EHLO: no enhanced code (RFC 2034 section 3).
    assert result.replies == [f"500 Error: {verb} not allowed in LMTP server"]
    assert result.of(Hello) == []


def test_second_ehlo_is_answered_again() -> None:
    conn = ready()
    result = talk(conn, cmd("EHLO client.example"))
    assert result.replies == EHLO_OPEN


# -- QUIT ---------------------------------------------------------------------------


def test_quit() -> None:
    conn = ready()
    result = talk(conn, cmd("QUIT", "NOOP"))
    assert result.replies == ["221 2.0.0 Bye"]
    assert [type(e) for e in result.events] == [Quit, ConnectionClosed]
    assert result.events[-1] == ConnectionClosed("quit")
    assert conn.closed
    assert conn.state is State.CLOSED


# -- line handling ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"NOOP\r\n",
        b"NOOP\n",  # bare LF ends a command line (as in Postfix)
        b"nOoP\r\n",
    ],
)
def test_line_terminators(data: bytes) -> None:
    conn = ready()
    assert talk(conn, data).replies == ["250 2.0.0 OK"]


def test_command_split_across_reads() -> None:
    conn = ready()
    result = converse(conn, split_bytes(cmd("NOOP", "RSET", "HELP")))
    assert result.codes == [250, 250, 214]


def test_incomplete_line_waits() -> None:
    conn = ready()
    result = talk(conn, b"NOOP")
    assert result.output == b""
    assert talk(conn, b"\r\n").replies == ["250 2.0.0 OK"]


@pytest.mark.parametrize(
    "line",
    [b"\xff\xfe\r\n", b"N\xc3OOP\r\n", b"\x00\r\n", b"EHLO\x00x\r\n"],
)
def test_garbage_lines_are_unrecognized(line: bytes) -> None:
    conn = ready()
    result = talk(conn, line)
    assert result.replies == ["500 5.5.2 Error: command not recognized"]
    assert result.error is None


def test_non_utf8_hello_argument_is_refused() -> None:
    # It could not be encoded again (a Received: header would fail at
    # delivery); more in test_client_names. RFC 2034: no enhanced code.
    conn = greeted(open_config())
    result = talk(conn, b"EHLO \xff.example\r\n")
    assert result.replies == ["501 Error: EHLO hostname is not valid UTF-8"]
    assert result.of(Hello) == []
    assert conn.session.host_name_appears_as is None


def test_non_ascii_address_bytes_are_refused() -> None:
    conn = ready()
    result = talk(conn, b"MAIL FROM:<\xff@example.com>\r\n")
    assert result.replies == ["501 5.1.7 Error: bad sender address syntax"]
    assert result.of(MailFrom) == []


def test_rset_event_and_reply_order() -> None:
    conn = ready()
    result = talk(conn, cmd("RSET"))
    assert result.events == [Reset()]
    assert result.replies == ["250 2.0.0 Flushed"]
