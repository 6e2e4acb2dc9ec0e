"""STARTTLS (RFC 3207), the ``Session`` fields, and where enhanced status codes
appear (RFC 2034, RFC 3463)."""

from __future__ import annotations

from typing import Any

import pytest

from smtp_proto import (
    NEED_DATA,
    PAUSED,
    AuthAttempt,
    Envelope,
    Hello,
    LocalProtocolError,
    MailFrom,
    MessageComplete,
    ServerConfig,
    ServerConnection,
    StartTLS,
    State,
    TLSInfo,
    format_reply,
)
from tests.proto.driver import Result, greeted, open_config
from tests.proto.support import TLS, b64, cmd, enhanced_of, ready, reject_with, talk

FROM = "MAIL FROM:<a@example.com>"
TO = "RCPT TO:<b@example.com>"
PLAIN = b64("\0alice\0secret")


def starttls(conn: ServerConnection, after: bytes = b"") -> Result:
    result = talk(conn, cmd("STARTTLS") + after)
    assert result.replies[-1] == "220 2.0.0 Ready to start TLS"
    assert result.events[-1] == StartTLS()
    assert conn.state is State.TLS_HANDSHAKE
    return result


# -- STARTTLS -------------------------------------------------------------------------------


def test_starttls_handshake_and_reset() -> None:
    conn = ready(open_config(allow_insecure_auth=True))
    talk(conn, cmd(f"AUTH PLAIN {PLAIN}", FROM))
    assert conn.session.user == "alice"
    assert conn.session.envelope.mail_from is not None
    starttls(conn)
    assert conn.next_event() is PAUSED
    conn.tls_established(TLS)
    session = conn.session
    assert conn.state is State.COMMAND
    assert session.secure is True
    assert session.tls is TLS
    assert session.servername == "mx.example"
    # RFC 3207 section 4.2: everything learnt from the client is forgotten.
    assert session.opening_command is None
    assert session.host_name_appears_as is None
    assert session.user is None
    assert session.auth_mechanism is None
    assert session.envelope == Envelope()
    # ... so the client must EHLO again.
    assert talk(conn, cmd(FROM)).replies == ["503 5.5.1 Error: send HELO/EHLO first"]
    result = talk(conn, cmd("EHLO client.example", FROM))
    assert "250-STARTTLS" not in result.replies
    assert result.codes == [250, 250]
    assert session.transmission_type == "ESMTPS"


def test_pipelined_bytes_after_starttls_are_discarded() -> None:
    # CVE-2011-0411: plaintext pipelined behind STARTTLS must not run after TLS.
    conn = ready()
    result = starttls(conn, cmd(FROM, TO, "DATA"))
    assert result.replies == ["220 2.0.0 Ready to start TLS"]
    assert result.of(MailFrom) == []
    conn.tls_established(TLS)
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b""


def test_bytes_received_during_the_handshake_are_discarded() -> None:
    conn = ready()
    starttls(conn)
    conn.receive_data(cmd("EHLO injected.example", FROM))
    assert conn.next_event() is PAUSED
    conn.tls_established(TLS)
    assert conn.next_event() is NEED_DATA
    result = talk(conn, cmd("EHLO real.example"))
    assert result.of(Hello) == [Hello("EHLO", "real.example")]


@pytest.mark.parametrize(
    ("setup", "kwargs", "line", "reply"),
    [
        ([], {"tls": TLS}, "STARTTLS", "503 5.5.1 Error: TLS already active"),
        ([], {}, "STARTTLS now", "501 5.5.4 Error: syntax: STARTTLS"),
        ([FROM, TO, "BDAT 1"], {}, "STARTTLS", "503 5.5.1 Error: mail transaction in progress"),
    ],
)
def test_starttls_refused(setup: list[str], kwargs: dict[str, Any], line: str, reply: str) -> None:
    conn = ready(**kwargs)
    prefix = cmd(*setup) + (b"x" if setup and setup[-1].startswith("BDAT") else b"")
    result = talk(conn, prefix + cmd(line))
    assert result.replies[-1] == reply
    assert result.of(StartTLS) == []
    assert conn.state is State.COMMAND


def test_starttls_disabled() -> None:
    conn = ready(open_config(disabled_commands={"STARTTLS"}))
    assert talk(conn, cmd("STARTTLS")).replies == ["502 5.5.1 Error: command not implemented"]


def test_second_starttls_after_upgrade() -> None:
    conn = ready()
    starttls(conn)
    conn.tls_established(TLS)
    result = talk(conn, cmd("EHLO c.example", "STARTTLS"))
    assert result.replies[-1] == "503 5.5.1 Error: TLS already active"


def test_eof_during_handshake_closes() -> None:
    conn = ready()
    starttls(conn)
    conn.receive_data(b"")
    event = conn.next_event()
    assert event.reason == "connection lost"  # type: ignore[union-attr]
    assert conn.closed


def test_implicit_tls() -> None:
    conn = ServerConnection(open_config(), tls=TLS)
    assert conn.session.secure is True
    assert conn.session.tls is TLS
    conn.send_greeting()
    assert conn.data_to_send() == b"220 localhost ESMTP\r\n"


def test_implicit_tls_established_before_greeting() -> None:
    conn = ServerConnection(open_config())
    info = TLSInfo(version="TLSv1.2", servername="smtp.example")
    conn.tls_established(info)
    assert conn.session.secure is True
    assert conn.session.servername == "smtp.example"
    conn.send_greeting()
    result = talk(conn, cmd("EHLO c.example"))
    assert "250-STARTTLS" not in result.replies


@pytest.mark.parametrize("when", ["command", "closed", "data"])
def test_tls_established_in_the_wrong_state(when: str) -> None:
    conn = ready()
    if when == "closed":
        talk(conn, cmd("QUIT"))
    elif when == "data":
        talk(conn, cmd(FROM, TO, "DATA"))
    with pytest.raises(LocalProtocolError):
        conn.tls_established(TLS)
    assert conn.session.tls is None


# -- session fields -----------------------------------------------------------------------------

TRANSMISSION = [
    # (config, connection kwargs, hello line, authenticate, expected)
    ({}, {}, "HELO c.example", False, "SMTP"),
    ({}, {}, "EHLO c.example", False, "ESMTP"),
    ({}, {"tls": TLS}, "EHLO c.example", False, "ESMTPS"),
    ({}, {"tls": TLS}, "EHLO c.example", True, "ESMTPSA"),
    ({"allow_insecure_auth": True}, {}, "EHLO c.example", True, "ESMTPA"),
    ({"lmtp": True}, {}, "LHLO c.example", False, "LMTP"),
    ({"lmtp": True}, {"tls": TLS}, "LHLO c.example", False, "LMTPS"),
    ({"lmtp": True}, {"tls": TLS}, "LHLO c.example", True, "LMTPSA"),
    ({"lmtp": True, "allow_insecure_auth": True}, {}, "LHLO c.example", True, "LMTPA"),
]


@pytest.mark.parametrize(("options", "kwargs", "hello", "auth", "expected"), TRANSMISSION)
def test_transmission_type(
    options: dict[str, Any], kwargs: dict[str, Any], hello: str, auth: bool, expected: str
) -> None:
    conn = ready(open_config(**options), hello=cmd(hello), **kwargs)
    if auth:
        assert talk(conn, cmd(f"AUTH PLAIN {PLAIN}")).codes == [235]
    assert conn.session.transmission_type == expected


def test_transaction_counter() -> None:
    conn = ready()
    session = conn.session
    assert session.transaction == 1
    talk(conn, cmd(FROM, TO, "RSET", FROM, TO, "DATA", "x", "."))
    assert session.transaction == 2
    talk(conn, cmd(FROM, TO, "DATA", "x", "."), reject_with(MessageComplete, 550))
    assert session.transaction == 3
    talk(conn, cmd(FROM, TO, "BDAT 1 LAST") + b"x")
    assert session.transaction == 4
    talk(conn, cmd(FROM, TO, "RSET", "EHLO again.example"))
    assert session.transaction == 4


def test_session_seeded_from_the_connection() -> None:
    conn = ServerConnection(open_config(), remote_address="192.0.2.1", remote_port=40000,
                            local_address="198.51.100.1", local_port=25, session_id="abc")
    s = conn.session
    assert (s.id, s.remote_address, s.remote_port, s.local_address, s.local_port) == (
        "abc", "192.0.2.1", 40000, "198.51.100.1", 25
    )
    assert s.client_hostname == "[192.0.2.1]"
    assert s.secure is False and s.tls is None and s.user is None
    assert s.lmtp is False and s.early_talker is False
    assert s.xclient == {} and s.xforward == {} and s.proxy is None


def test_session_accepts_application_attributes() -> None:
    conn = ready()
    conn.session.spam_score = 1.5  # type: ignore[attr-defined]
    talk(conn, cmd("NOOP"))
    assert conn.session.spam_score == 1.5  # type: ignore[attr-defined]


def test_envelope_holds_the_decided_events() -> None:
    conn = ready()
    talk(conn, cmd(FROM + " BODY=8BITMIME", TO, "RCPT TO:<c@example.com>"))
    env = conn.session.envelope
    assert env.mail_from.address == "a@example.com"
    assert env.body_type == "8bitmime"
    assert [r.address for r in env.rcpt_to] == ["b@example.com", "c@example.com"]


# -- enhanced status codes --------------------------------------------------------------------

EXERCISE = [
    "NOOP", "HELP", "VRFY x", "EXPN x", "FOO", "RSET", "RSET x", "RCPT TO:<b@example.com>",
    "DATA", "MAIL FROM:<bad>", "MAIL FROM:<a@example.com> SIZE=99999",
    "MAIL FROM:<a@example.com> X=1", "MAIL FROM:<\u00e4@example.com>", "AUTH GSSAPI",
    "AUTH", "AUTH PLAIN", "*", "AUTH PLAIN !!", f"AUTH PLAIN {PLAIN}", "AUTH LOGIN",
    "*", "XCLIENT ADDR=192.0.2.1", "XFORWARD ADDR=192.0.2.1", "BDAT x",
    "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "RCPT TO:<c@example.com>",
    "RCPT TO:<d@example.com>", "RCPT TO:<e@example.com>", "RCPT TO:<f@example.com>",
    "RCPT TO:<g@example.com>", "RCPT TO:<>", "DATA", "body", ".",
    "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "BDAT 3", "abcBDAT 0 LAST",
    "STARTTLS x", "QUIT",
]


def exercised(config: ServerConfig) -> Result:
    conn = greeted(config)
    wire = cmd("EHLO client.example", *EXERCISE).replace(b"abc\r\n", b"abc")

    def decide(c: ServerConnection, event: Any) -> None:
        if isinstance(event, AuthAttempt):
            c.reject(535)
        elif getattr(event, "address", "") == "c@example.com":
            c.reject(550)
        elif getattr(event, "address", "") == "d@example.com":
            c.reject(450, "Later")
        else:
            c.accept()

    return talk(conn, wire, decide)


def test_enhanced_codes_on_every_reply() -> None:
    # RFC 2034 section 3: every 2xx/4xx/5xx line carries a status code whose class
    # matches the reply, except the greeting and the replies to HELO/EHLO/LHLO;
    # 3xx replies never carry one.
    result = exercised(open_config(size=1000, max_recipients=3, max_invalid_commands=None,
                                   allow_insecure_auth=True))
    lines = result.replies
    assert lines[0].startswith("250-localhost")
    ehlo_end = next(i for i, line in enumerate(lines) if line.startswith("250 "))
    rest = lines[ehlo_end + 1 :]
    assert len(rest) > 30
    codes = {line[:3] for line in rest}
    assert {"250", "214", "252", "502", "500", "501", "503", "552", "555", "553", "504",
            "334", "535", "550", "354", "452", "450", "221"} <= codes
    for line in rest:
        enhanced = enhanced_of(line)
        if line[0] == "3":
            assert enhanced is None, line
        else:
            assert enhanced is not None, line
            assert enhanced[0] == line[0], line


def test_no_enhanced_codes_when_hidden() -> None:
    result = exercised(open_config(size=1000, max_recipients=3, max_invalid_commands=None,
                                   allow_insecure_auth=True, hide_enhancedstatuscodes=True))
    assert len(result.replies) > 30
    for line in result.replies:
        assert enhanced_of(line) is None, line


@pytest.mark.parametrize("hidden", [False, True])
def test_greeting_and_hello_replies_have_no_enhanced_codes(hidden: bool) -> None:
    conn = ServerConnection(open_config(hide_enhancedstatuscodes=hidden))
    conn.send_greeting()
    assert enhanced_of(conn.data_to_send().decode()) is None
    result = talk(conn, cmd("HELO", "HELO c.example", "EHLO c.example"))
    assert result.replies[0] == "501 Error: syntax: HELO hostname"
    assert all(enhanced_of(line) is None for line in result.replies)


def test_starttls_reply_has_an_enhanced_code() -> None:
    conn = ready()
    assert starttls(conn).replies == ["220 2.0.0 Ready to start TLS"]


def test_reply_text_cannot_inject_lines() -> None:
    conn = ready()
    result = talk(conn, cmd(FROM), reject_with(MailFrom, 550, "bad\rRSET\x00x"))
    assert result.replies == ["550 5.1.0 bad RSET x"]


def test_multiline_application_text() -> None:
    conn = ready()
    result = talk(conn, cmd(FROM), reject_with(MailFrom, 550, "first\nsecond\r\nthird"))
    assert result.replies == ["550-5.1.0 first", "550-5.1.0 second", "550 5.1.0 third"]
    assert result.codes == [550]


def test_hello_rejection_keeps_no_enhanced_code() -> None:
    conn = greeted(ServerConfig())
    result = talk(conn, cmd("EHLO c.example"), reject_with(Hello, 554, "No", "5.7.1"))
    assert result.replies == ["554 No"]


@pytest.mark.parametrize(
    ("args", "out"),
    [
        ((250, "OK", "2.0.0"), b"250 2.0.0 OK\r\n"),
        ((250, "OK"), b"250 OK\r\n"),
        ((334, ""), b"334 \r\n"),
        ((250, "a\nb\r\nc", "2.0.0"), b"250-2.0.0 a\r\n250-2.0.0 b\r\n250 2.0.0 c\r\n"),
        ((550, "x\ry\x00z\x7f"), b"550 x y z \r\n"),
        ((250, "caf\u00e9"), "250 caf\u00e9\r\n".encode()),
    ],
)
def test_format_reply(args: tuple[Any, ...], out: bytes) -> None:
    assert format_reply(*args) == out


@pytest.mark.parametrize(
    ("code", "enhanced"), [(250, "5.0.0"), (550, "2.0.0"), (450, "4.0"), (250, "2.x.0"),
                           (250, "2.0.1000")],
)
def test_format_reply_refuses_mismatched_enhanced_codes(code: int, enhanced: str) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        format_reply(code, "text", enhanced)
