"""Every ``ServerConfig`` option: what it changes on the wire, and its validation."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from smtp_proto import (
    ConnectionClosed,
    Hello,
    MailFrom,
    RcptTo,
    RemoteProtocolError,
    ServerConfig,
    ServerConnection,
    State,
    TLSInfo,
)
from tests.proto.driver import converse, drain, greeted, open_config
from tests.proto.support import TLS, b64, cmd, ready, reject_with, talk

FROM = "MAIL FROM:<a@example.com>"
TO = "RCPT TO:<b@example.com>"
PLAIN = b64("\0alice\0secret")


def ehlo_keywords(config: ServerConfig, **kwargs: Any) -> list[str]:
    """The extension lines of the EHLO reply, without ``250-``/``250 ``."""
    conn = greeted(config, **kwargs)
    result = talk(conn, cmd("EHLO client.example"))
    assert result.codes == [250]
    return [line[4:] for line in result.replies[1:]]


def greeting(config: ServerConfig, **kwargs: Any) -> bytes:
    conn = ServerConnection(config, **kwargs)
    conn.send_greeting()
    return conn.data_to_send()


# -- name, banner, helo_response, lmtp ------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "line"),
    [
        ({}, b"220 localhost ESMTP\r\n"),
        ({"name": "mx.example.org"}, b"220 mx.example.org ESMTP\r\n"),
        ({"banner": "Welcome, be nice"}, b"220 localhost ESMTP Welcome, be nice\r\n"),
        ({"name": "lmtp.local", "lmtp": True}, b"220 lmtp.local LMTP\r\n"),
        ({"lmtp": True, "banner": "ready"}, b"220 localhost LMTP ready\r\n"),
    ],
)
def test_greeting(options: dict[str, Any], line: bytes) -> None:
    # RFC 5321 4.2 / RFC 2034 section 3: the greeting carries no enhanced code.
    assert greeting(open_config(**options)) == line


@pytest.mark.parametrize(
    ("template", "first"),
    [
        ("%s Nice to meet you, %s", "localhost Nice to meet you, client.example"),
        ("%s greets %s", "localhost greets client.example"),
        ("Hello %s", "Hello localhost"),
        ("Welcome", "Welcome"),
        ("%s", "localhost"),
    ],
)
@pytest.mark.parametrize("verb", ["HELO", "EHLO"])
def test_helo_response(template: str, first: str, verb: str) -> None:
    conn = greeted(open_config(name="localhost", helo_response=template))
    result = talk(conn, cmd(f"{verb} client.example"))
    sep = " " if verb == "HELO" else "-"
    assert result.replies[0] == f"250{sep}{first}"


def test_name_in_ehlo_and_in_421() -> None:
    conn = greeted(open_config(name="mx.example", max_invalid_commands=0))
    result = talk(conn, cmd("EHLO c.example", "FOO"))
    assert result.replies[0] == "250-mx.example Nice to meet you, c.example"
    assert result.replies[-1] == "421 4.7.0 mx.example Error: too many invalid commands"


def test_lmtp_session() -> None:
    conn = ready(open_config(lmtp=True), hello=cmd("LHLO client.example"))
    assert conn.session.lmtp is True
    assert conn.session.transmission_type == "LMTP"


# -- EHLO keywords: every hide_* flag and the options that add keywords ------------------------

DEFAULT_KEYWORDS = ["PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING",
                    "BINARYMIME", "STARTTLS", "AUTH PLAIN LOGIN"]

KEYWORDS = [
    # (config options, connection kwargs, keywords expected, keywords absent)
    ({}, {}, DEFAULT_KEYWORDS, ["DSN", "REQUIRETLS", "SIZE", "XCLIENT", "XFORWARD"]),
    ({"hide_starttls": True}, {}, [], ["STARTTLS"]),
    ({}, {"tls": TLS}, [], ["STARTTLS"]),
    ({"disabled_commands": {"STARTTLS"}}, {}, [], ["STARTTLS"]),
    ({"hide_pipelining": True}, {}, [], ["PIPELINING"]),
    ({"hide_enhancedstatuscodes": True}, {}, [], ["ENHANCEDSTATUSCODES"]),
    # RFC 6531 section 3.1 item 8: no SMTPUTF8 without 8BITMIME.
    ({"hide_8bitmime": True}, {}, [], ["8BITMIME", "SMTPUTF8"]),
    ({"hide_smtputf8": True}, {}, ["8BITMIME"], ["SMTPUTF8"]),
    ({"size": 10240000}, {}, ["SIZE 10240000"], ["SIZE"]),
    ({"size": 1000, "hide_size": True}, {}, ["SIZE"], ["SIZE 1000"]),
    ({"hide_size": True}, {}, [], ["SIZE"]),
    ({"size": 0}, {}, [], ["SIZE", "SIZE 0"]),
    ({"hide_dsn": False}, {}, ["DSN"], []),
    ({"hide_dsn": True}, {}, [], ["DSN"]),
    ({"hide_requiretls": False}, {}, [], ["REQUIRETLS"]),  # RFC 8689: only over TLS
    ({"hide_requiretls": False}, {"tls": TLS}, ["REQUIRETLS"], ["STARTTLS"]),
    ({}, {"tls": TLS}, [], ["REQUIRETLS", "STARTTLS"]),
    ({"hide_chunking": True}, {}, [], ["CHUNKING", "BINARYMIME"]),
    ({"disabled_commands": {"BDAT"}}, {}, [], ["CHUNKING", "BINARYMIME"]),
    ({"auth_methods": ()}, {}, [], ["AUTH PLAIN LOGIN"]),
    ({"disabled_commands": {"AUTH"}}, {}, [], ["AUTH PLAIN LOGIN"]),
    ({"auth_methods": ("xoauth2", "PLAIN")}, {}, ["AUTH XOAUTH2 PLAIN"], ["AUTH PLAIN LOGIN"]),
    ({"auth_methods": ("CRAM-MD5",), "cram_md5_challenge": lambda: "<1@x>"}, {},
     ["AUTH CRAM-MD5"], ["AUTH PLAIN LOGIN"]),
    ({"use_xclient": True}, {}, ["XCLIENT NAME ADDR PORT PROTO HELO LOGIN"], []),
    ({"use_xclient": True, "disabled_commands": {"XCLIENT"}}, {}, [],
     ["XCLIENT NAME ADDR PORT PROTO HELO LOGIN"]),
    ({"use_xforward": True}, {}, ["XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"], []),
    ({"use_xforward": True, "disabled_commands": {"XFORWARD"}}, {}, [],
     ["XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"]),
]


@pytest.mark.parametrize(("options", "kwargs", "present", "absent"), KEYWORDS)
def test_ehlo_keywords(
    options: dict[str, Any], kwargs: dict[str, Any], present: list[str], absent: list[str]
) -> None:
    keywords = ehlo_keywords(open_config(**options), **kwargs)
    for word in present:
        assert word in keywords
    for word in absent:
        assert word not in keywords
    # Nothing else changes: every default keyword not named stays.
    for word in DEFAULT_KEYWORDS:
        if word not in absent:
            assert word in keywords, word


def test_keyword_order_is_stable() -> None:
    keywords = ehlo_keywords(open_config(size=100, hide_dsn=False, use_xclient=True,
                                         use_xforward=True))
    assert keywords == [
        "PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN", "CHUNKING",
        "BINARYMIME", "SIZE 100", "STARTTLS", "AUTH PLAIN LOGIN",
        "XCLIENT NAME ADDR PORT PROTO HELO LOGIN",
        "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE",
    ]


@pytest.mark.parametrize(
    ("options", "reply"),
    [
        ({"hide_8bitmime": True}, "555 5.5.4 Error: unsupported parameter SMTPUTF8"),
        ({"hide_smtputf8": True}, "555 5.5.4 Error: unsupported parameter SMTPUTF8"),
        ({}, "250 2.1.0 Accepted"),
    ],
)
def test_smtputf8_parameter_follows_the_advertisement(
    options: dict[str, Any], reply: str
) -> None:
    conn = ready(open_config(**options))
    assert talk(conn, cmd(FROM + " SMTPUTF8")).replies == [reply]


@pytest.mark.parametrize(
    ("options", "reply"),
    [
        ({"hide_8bitmime": True}, "501 5.5.4 Error: bad value for parameter AUTH"),
        ({}, "250 2.1.0 Accepted"),
    ],
)
def test_utf8_parameter_values_need_smtputf8(options: dict[str, Any], reply: str) -> None:
    conn = ready(open_config(**options))
    assert talk(conn, cmd(FROM + " AUTH=j\u00f6rg")).replies == [reply]


def test_hide_size_still_enforces_the_limit() -> None:
    conn = ready(open_config(size=10, hide_size=True))
    result = talk(conn, cmd(FROM + " SIZE=11", FROM, TO, "DATA", "x" * 20, "."))
    assert result.replies[0] == "552 5.3.4 Error: message exceeds fixed maximum message size 10"
    assert result.replies[-1] == "552 5.3.4 Error: message exceeds fixed maximum message size 10"


def test_hide_enhancedstatuscodes_strips_every_code() -> None:
    conn = ready(open_config(hide_enhancedstatuscodes=True))
    result = talk(conn, cmd("NOOP", TO, FROM, TO, "DATA", "x", ".", "VRFY x", "FOO", "QUIT"))
    assert result.replies == [
        "250 OK",
        "503 Error: need MAIL command",
        "250 Accepted",
        "250 Accepted",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 OK: message queued",
        "252 Cannot VRFY user, but will accept message and attempt delivery",
        "500 Error: command not recognized",
        "221 Bye",
    ]


def test_hide_enhancedstatuscodes_ignores_application_codes() -> None:
    conn = ready(open_config(hide_enhancedstatuscodes=True))
    result = talk(conn, cmd(FROM), reject_with(MailFrom, 550, "No", "5.7.1"))
    assert result.replies == ["550 No"]


def test_hide_chunking_refuses_bdat() -> None:
    conn = ready(open_config(hide_chunking=True))
    result = talk(conn, cmd(FROM, TO, "BDAT 4 LAST"))
    assert result.replies[-1] == "502 5.5.1 Error: command not implemented"


# -- disabled_commands ------------------------------------------------------------------------

DISABLABLE = [
    "HELO client.example", "EHLO client.example", "MAIL FROM:<a@example.com>",
    "RCPT TO:<b@example.com>", "DATA", "BDAT 1 LAST", "RSET", "NOOP", "QUIT", "VRFY x",
    "EXPN x", "HELP", "STARTTLS", "AUTH PLAIN", "XCLIENT ADDR=192.0.2.1",
    "XFORWARD ADDR=192.0.2.1",
]


@pytest.mark.parametrize("line", DISABLABLE)
def test_disabled_commands(line: str) -> None:
    verb = line.split(maxsplit=1)[0]
    config = open_config(disabled_commands={verb.lower()}, use_xclient=True, use_xforward=True)
    assert config.disabled_commands == frozenset({verb})
    conn = ready(config, hello=cmd("HELO c.example") if verb == "EHLO" else cmd("EHLO c.example"))
    result = talk(conn, cmd(line))
    assert result.replies[-1] == "502 5.5.1 Error: command not implemented"
    assert result.of(Hello) == []
    assert not conn.closed


# -- auth options ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "reply"),
    [
        ({}, "530 5.7.0 Error: authentication required"),
        ({"auth_required_message": "Log in first, please"}, "530 5.7.0 Log in first, please"),
        ({"auth_optional": True}, "250 2.1.0 Accepted"),
        ({"auth_methods": ()}, "250 2.1.0 Accepted"),
        ({"disabled_commands": {"AUTH"}}, "250 2.1.0 Accepted"),
    ],
)
def test_auth_required(options: dict[str, Any], reply: str) -> None:
    conn = ready(ServerConfig(**options))
    assert talk(conn, cmd(FROM)).replies == [reply]


@pytest.mark.parametrize("line", [TO, "DATA", "BDAT 0 LAST"])
def test_auth_required_message_on_every_transaction_command(line: str) -> None:
    conn = ready(ServerConfig(auth_required_message="Who are you?"))
    assert talk(conn, cmd(line)).replies == ["530 5.7.0 Who are you?"]


@pytest.mark.parametrize(
    ("options", "kwargs", "reply"),
    [
        ({}, {}, "538 5.7.11 Error: must issue a STARTTLS command first"),
        ({"allow_insecure_auth": True}, {}, "235 2.7.0 Authentication successful"),
        ({}, {"tls": TLS}, "235 2.7.0 Authentication successful"),
    ],
)
def test_allow_insecure_auth(options: dict[str, Any], kwargs: dict[str, Any], reply: str) -> None:
    conn = ready(ServerConfig(**options), **kwargs)
    assert talk(conn, cmd(f"AUTH PLAIN {PLAIN}")).replies == [reply]


@pytest.mark.parametrize(
    ("kwargs", "mail_reply"),
    [
        ({}, "530 5.7.0 Error: must issue a STARTTLS command first"),
        ({"tls": TLS}, "250 2.1.0 Accepted"),
    ],
)
def test_needs_upgrade(kwargs: dict[str, Any], mail_reply: str) -> None:
    conn = ready(open_config(needs_upgrade=True), **kwargs)
    assert talk(conn, cmd(FROM)).replies == [mail_reply]


def test_needs_upgrade_satisfied_by_starttls() -> None:
    conn = ready(open_config(needs_upgrade=True))
    assert talk(conn, cmd("STARTTLS")).codes == [220]
    conn.tls_established(TLS)
    assert talk(conn, cmd("EHLO c.example", FROM)).codes == [250, 250]


def test_needs_upgrade_still_allows_other_commands() -> None:
    conn = ready(open_config(needs_upgrade=True))
    assert talk(conn, cmd("NOOP", "RSET", "VRFY x")).codes == [250, 250, 252]


# -- max_allowed_unauthenticated_commands ---------------------------------------------------------


def test_unauthenticated_command_limit() -> None:
    config = ServerConfig(max_allowed_unauthenticated_commands=3, allow_insecure_auth=True)
    conn = greeted(config)
    result = talk(conn, cmd("EHLO c.example", "NOOP", "NOOP", "NOOP", "NOOP"))
    assert result.codes == [250, 250, 250, 421]
    assert result.replies[-1] == "421 4.7.0 localhost Error: too many unauthenticated commands"
    assert isinstance(result.error, RemoteProtocolError)
    assert conn.closed


def test_unauthenticated_limit_skips_auth_and_ends_with_it() -> None:
    config = ServerConfig(max_allowed_unauthenticated_commands=2, allow_insecure_auth=True)
    conn = greeted(config)
    result = talk(conn, cmd("EHLO c.example", "AUTH PLAIN", "*", f"AUTH PLAIN {PLAIN}",
                            "NOOP", "NOOP", "NOOP", "NOOP"))
    assert result.codes == [250, 334, 501, 235, 250, 250, 250, 250]
    assert result.error is None


@pytest.mark.parametrize(
    "config",
    [
        ServerConfig(max_allowed_unauthenticated_commands=None, allow_insecure_auth=True),
        ServerConfig(max_allowed_unauthenticated_commands=1, auth_optional=True),
        ServerConfig(max_allowed_unauthenticated_commands=1, auth_methods=()),
    ],
)
def test_unauthenticated_limit_off(config: ServerConfig) -> None:
    conn = greeted(config)
    result = talk(conn, cmd("EHLO c.example", *["NOOP"] * 20))
    assert result.codes == [250] * 21


# -- max_command_length ----------------------------------------------------------------------


def noop_of(total: int) -> bytes:
    """A NOOP line of exactly ``total`` octets, CRLF included."""
    return b"NOOP " + b"x" * (total - 7) + b"\r\n"


@pytest.mark.parametrize(
    ("limit", "size", "reply"),
    [
        (512, 512, "250 2.0.0 OK"),
        (512, 513, "500 5.5.2 Error: line too long"),
        (512, 5000, "500 5.5.2 Error: line too long"),
        (1000, 1000, "250 2.0.0 OK"),
        (1000, 1001, "500 5.5.2 Error: line too long"),
        (64, 64, "250 2.0.0 OK"),
        (64, 65, "500 5.5.2 Error: line too long"),
    ],
)
def test_max_command_length(limit: int, size: int, reply: str) -> None:
    conn = ready(open_config(max_command_length=limit))
    result = talk(conn, noop_of(size) + cmd("RSET"))
    assert result.replies == [reply, "250 2.0.0 Flushed"]


def test_over_long_line_arriving_in_pieces_gets_one_reply() -> None:
    conn = ready()
    result = converse(conn, [b"NOOP " + b"x" * 400, b"x" * 400, b"x" * 400, b"\r\nRSET\r\n"])
    assert result.replies == ["500 5.5.2 Error: line too long", "250 2.0.0 Flushed"]


def test_over_long_mail_is_not_executed() -> None:
    conn = ready()
    line = b"MAIL FROM:<" + b"a" * 2000 + b"@example.com>\r\n"
    result = talk(conn, line + cmd(FROM))
    assert result.replies == ["500 5.5.2 Error: line too long", "250 2.1.0 Accepted"]
    assert [e.address for e in result.of(MailFrom)] == ["a@example.com"]


def mail_line(total: int) -> bytes:
    head = b"MAIL FROM:<a@example.com> AUTH="
    return head + b"x" * (total - len(head) - 2) + b"\r\n"


def rcpt_line(total: int) -> bytes:
    head = b"RCPT TO:<b@example.com> ORCPT=rfc822;"
    return head + b"x" * (total - len(head) - 2) + b"\r\n"


def auth_line(total: int) -> bytes:
    head, tail = b"AUTH PLAIN", b" " + PLAIN.encode() + b"\r\n"
    return head + b" " * (total - len(head) - len(tail)) + tail


@pytest.mark.parametrize(
    ("build", "setup", "limit", "ok_code"),
    [
        # MAIL gets room for SIZE, DSN, AUTH=, BODY, SMTPUTF8, REQUIRETLS: 662 octets.
        (mail_line, [], 512 + 662, 250),
        # RCPT gets room for the DSN parameters: 500 octets.
        (rcpt_line, [FROM], 512 + 500, 250),
        # AUTH lines are 12288 octets (RFC 4954), plus room for the command.
        (auth_line, [], 12290 + 32, 235),
    ],
    ids=["MAIL", "RCPT", "AUTH"],
)
def test_larger_limits(build: Any, setup: list[str], limit: int, ok_code: int) -> None:
    config = open_config(hide_dsn=False, allow_insecure_auth=True)
    conn = ready(config)
    if setup:
        talk(conn, cmd(*setup))
    result = talk(conn, build(limit))
    assert result.codes == [ok_code]
    conn = ready(config)
    if setup:
        talk(conn, cmd(*setup))
    result = talk(conn, build(limit + 1))
    assert result.replies == ["500 5.5.2 Error: line too long"]


def test_larger_limits_grow_with_max_command_length() -> None:
    config = open_config(max_command_length=600)
    conn = ready(config)
    assert talk(conn, mail_line(600 + 662)).codes == [250]
    conn = ready(config)
    assert talk(conn, mail_line(600 + 663)).codes == [500]


# -- max_recipients ----------------------------------------------------------------------------


def test_max_recipients() -> None:
    conn = ready(open_config(max_recipients=2))
    result = talk(conn, cmd(FROM, "RCPT TO:<r1@example.com>", "RCPT TO:<r2@example.com>",
                            "RCPT TO:<r3@example.com>", "DATA", "x", "."))
    assert result.replies == [
        "250 2.1.0 Accepted",
        "250 2.1.5 Accepted",
        "250 2.1.5 Accepted",
        "452 4.5.3 Error: too many recipients",  # RFC 5321 4.5.3.1.10
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 OK: message queued",
    ]
    assert len(result.of(RcptTo)) == 2


def test_rejected_recipients_do_not_count() -> None:
    conn = ready(open_config(max_recipients=1))
    result = talk(conn, cmd(FROM, "RCPT TO:<no@example.com>", "RCPT TO:<yes@example.com>"),
                  lambda c, e: c.reject(550) if getattr(e, "address", "") == "no@example.com"
                  else c.accept())
    assert result.codes == [250, 550, 250]


def test_max_recipients_none() -> None:
    conn = ready(open_config(max_recipients=None))
    result = talk(conn, cmd(FROM, *[f"RCPT TO:<r{i}@example.com>" for i in range(1100)]))
    assert result.codes == [250] * 1101


# -- max_invalid_commands --------------------------------------------------------------------

COUNTED = [
    "FOO",  # 500
    "RSET x",  # 501
    "DATA",  # 503
    "AUTH GSSAPI",  # 504
    "MAIL FROM:<a@example.com> X-FOO",  # 555
    "BDAT 1 2 3",  # 501
]


@pytest.mark.parametrize("line", COUNTED)
def test_invalid_commands_limit(line: str) -> None:
    config = open_config(max_invalid_commands=2, allow_insecure_auth=True)
    conn = ready(config)
    result = talk(conn, cmd(line, line, line, "NOOP"))
    assert len(result.codes) == 3
    assert result.replies[-1] == "421 4.7.0 localhost Error: too many invalid commands"
    assert isinstance(result.error, RemoteProtocolError)
    assert conn.state is State.ERROR


def test_disabled_command_counts_as_invalid() -> None:
    conn = ready(open_config(max_invalid_commands=1, disabled_commands={"VRFY"}))
    result = talk(conn, cmd("VRFY a", "VRFY a"))
    assert result.codes == [502, 421]


NOT_COUNTED = [
    "EXPN list",  # 502, but a legitimate answer
    "XCLIENT ADDR=192.0.2.1",  # 550
    "MAIL FROM:<a@example.com> SIZE=99",  # 552
    "MAIL FROM:<\u00e4@example.com>",  # 553
    "AUTH PLAIN",  # 538 (no TLS)
]


@pytest.mark.parametrize("line", NOT_COUNTED)
def test_refusals_that_are_not_invalid_commands(line: str) -> None:
    conn = ready(open_config(max_invalid_commands=1, size=10))
    result = talk(conn, cmd(*[line] * 5))
    assert len(result.codes) == 5
    assert 421 not in result.codes


def test_application_rejections_are_not_invalid_commands() -> None:
    conn = ready(open_config(max_invalid_commands=1))
    result = talk(conn, cmd(FROM, *[TO] * 5), reject_with(RcptTo, 550))
    assert result.codes == [250] + [550] * 5


def test_a_delivered_message_resets_the_invalid_count() -> None:
    conn = ready(open_config(max_invalid_commands=2))
    result = talk(conn, cmd("FOO", "FOO", FROM, TO, "DATA", "x", ".", "FOO", "FOO", "FOO"))
    assert result.codes == [500, 500, 250, 250, 354, 250, 500, 500, 421]


def test_invalid_commands_unlimited() -> None:
    conn = ready(open_config(max_invalid_commands=None))
    result = talk(conn, cmd(*["FOO"] * 50))
    assert result.codes == [500] * 50


# -- reject_early_talkers ------------------------------------------------------------------------


def test_early_talker_rejected() -> None:
    conn = ServerConnection(open_config(reject_early_talkers=True))
    conn.receive_data(b"EHLO too.soon\r\n")
    conn.send_greeting()
    assert conn.data_to_send() == b"421 4.7.0 localhost You talk too soon\r\n"
    assert conn.session.early_talker is True
    assert conn.next_event() == ConnectionClosed("421 sent")
    assert conn.closed


def test_early_talker_tolerated_by_default() -> None:
    conn = ServerConnection(open_config())
    conn.receive_data(b"EHLO too.soon\r\n")
    assert conn.session.early_talker is True
    conn.send_greeting()
    result = drain(conn)
    assert result.replies[0] == "220 localhost ESMTP"
    assert result.of(Hello) == [Hello("EHLO", "too.soon")]


def test_polite_client_is_not_an_early_talker() -> None:
    conn = ServerConnection(open_config(reject_early_talkers=True))
    conn.send_greeting()
    assert conn.data_to_send() == b"220 localhost ESMTP\r\n"
    conn.receive_data(b"EHLO polite\r\n")
    assert conn.session.early_talker is False


def test_take_buffered_data_forgets_early_talk() -> None:
    conn = ServerConnection(open_config(reject_early_talkers=True))
    conn.receive_data(b"\x16\x03\x01")
    assert conn.take_buffered_data() == b"\x16\x03\x01"
    assert conn.session.early_talker is False
    conn.send_greeting()
    assert conn.data_to_send() == b"220 localhost ESMTP\r\n"


# -- use_proxy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("use_proxy", "remote", "expect_proxy", "state"),
    [
        (False, "192.0.2.1", None, State.GREETING),
        (True, "192.0.2.1", None, State.PROXY),
        (True, None, None, State.PROXY),
        (("10.0.0.0/8",), "10.1.2.3", None, State.PROXY),
        (("10.0.0.0/8",), "::ffff:10.1.2.3", None, State.PROXY),
        (("10.0.0.0/8",), "192.0.2.1", None, State.GREETING),
        (("10.0.0.0/8", "2001:db8::/32"), "2001:db8::5", None, State.PROXY),
        (("192.0.2.10",), "192.0.2.10", None, State.PROXY),
        (("192.0.2.10",), "192.0.2.11", None, State.GREETING),
        (("10.0.0.0/8",), None, None, State.GREETING),
        (("10.0.0.0/8",), "not-an-address", None, State.GREETING),
        (False, "192.0.2.1", True, State.PROXY),
        (True, "192.0.2.1", False, State.GREETING),
    ],
)
def test_use_proxy(
    use_proxy: Any, remote: str | None, expect_proxy: bool | None, state: State
) -> None:
    config = open_config(use_proxy=use_proxy)
    conn = ServerConnection(config, remote_address=remote, expect_proxy=expect_proxy)
    assert conn.state is state


def test_use_proxy_normalised() -> None:
    config = open_config(use_proxy=["10.0.0.1/8", "::1"])
    assert config.use_proxy == ("10.0.0.1/8", "::1")
    assert config.expects_proxy("10.200.0.1") is True
    assert config.expects_proxy("::1") is True
    assert config.expects_proxy("::2") is False


# -- validation ------------------------------------------------------------------------------

INVALID = [
    ({"name": ""}, "name must be a non-empty word"),
    ({"name": "two words"}, "name must be a non-empty word"),
    ({"name": "mx\r\nRCPT"}, "name must be a single line"),
    ({"banner": "hi\nthere"}, "banner must be a single line"),
    ({"helo_response": "%s\r%s"}, "helo_response must be a single line"),
    ({"auth_required_message": "a\nb"}, "auth_required_message must be a single line"),
    ({"auth_methods": ("NTLM",)}, "unknown auth method 'NTLM'"),
    ({"auth_methods": ("CRAM-MD5",)}, "CRAM-MD5 needs a cram_md5_challenge factory"),
    ({"disabled_commands": {"TURN", "ETRN"}},
     r"unknown commands in disabled_commands: \['ETRN', 'TURN'\]"),
    ({"size": -1}, "size must be a non-negative integer or None"),
    ({"size": "10"}, "size must be a non-negative integer or None"),
    ({"max_recipients": -1}, "max_recipients must be a non-negative integer or None"),
    ({"max_auth_failures": 1.5}, "max_auth_failures must be a non-negative integer or None"),
    ({"max_allowed_unauthenticated_commands": -5},
     "max_allowed_unauthenticated_commands must be a non-negative integer or None"),
    ({"max_invalid_commands": "many"}, "max_invalid_commands must be a non-negative integer"),
    ({"max_command_length": 63}, "max_command_length must be at least 64"),
    ({"bare_line_endings": "strip"}, "bare_line_endings must be 'keep' or 'reject'"),
    ({"use_proxy": ("not-an-ip",)}, "does not appear to be an IPv4 or IPv6 network"),
]


@pytest.mark.parametrize(("options", "message"), INVALID)
def test_invalid_config(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerConfig(**options)


@pytest.mark.parametrize(
    "option",
    ["size", "max_recipients", "max_auth_failures", "max_allowed_unauthenticated_commands",
     "max_invalid_commands"],
)
@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_not_limits(option: str, value: bool) -> None:
    # size=True would otherwise be advertised as "SIZE True".
    with pytest.raises(ValueError, match=f"{option} must be a non-negative integer"):
        ServerConfig(**{option: value})


def test_config_normalisation() -> None:
    config = ServerConfig(auth_methods=["plain", "Login"], disabled_commands=["vrfy", "Expn"],
                          size=0)
    assert config.auth_methods == ("PLAIN", "LOGIN")
    assert config.disabled_commands == frozenset({"VRFY", "EXPN"})
    assert config.size is None


def test_config_is_frozen() -> None:
    config = ServerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.size = 5  # type: ignore[misc]


def test_from_options_ignores_foreign_names() -> None:
    config = ServerConfig.from_options(
        [("name", "mx.example"), ("size", 100), ("port", 25), ("handler", object()),
         ("_proxy_networks", ("x",))]
    )
    assert (config.name, config.size) == ("mx.example", 100)
    assert config.use_proxy is False


def test_derived_views() -> None:
    assert ServerConfig().auth_required is True
    assert ServerConfig(auth_optional=True).auth_required is False
    assert ServerConfig(auth_methods=()).auth_enabled is False
    assert ServerConfig(hide_chunking=True).chunking is False
    assert ServerConfig(disabled_commands={"BDAT"}).chunking is False
    assert ServerConfig(hide_enhancedstatuscodes=True).enhanced_status_codes is False


def test_tls_info_defaults() -> None:
    info = TLSInfo()
    assert (info.version, info.cipher, info.servername, info.peer_certificate) == (
        None, None, None, None
    )
