"""The mail transaction: MAIL, RCPT, DATA, BDAT and RSET with their parameters.

RFC 5321 (sequencing, paths), RFC 1870 (SIZE), RFC 6152 (BODY=8BITMIME),
RFC 6531 (SMTPUTF8), RFC 8689 (REQUIRETLS), RFC 3461 (DSN), RFC 4954
(AUTH=), RFC 3030 (BDAT, BINARYMIME), RFC 3463 (enhanced codes).
"""

from __future__ import annotations

from typing import Any

import pytest

from smtp_proto import (
    DataChunk,
    MailFrom,
    MessageAborted,
    MessageComplete,
    MessageStart,
    RcptTo,
    Reset,
    ServerConfig,
)
from tests.proto.driver import greeted, open_config
from tests.proto.support import TLS, by_type, cmd, ready, reject_with, talk

FROM = "MAIL FROM:<sender@example.com>"
TO = "RCPT TO:<rcpt@example.com>"


def mail(arg: str, config: ServerConfig | None = None, **kwargs: object) -> Any:
    """Send ``MAIL <arg>`` on a fresh EHLO'd connection; return (conn, result)."""
    conn = ready(config, **kwargs)
    return conn, talk(conn, cmd(f"MAIL {arg}"))


# -- MAIL FROM: accepted forms -----------------------------------------------------------

MAIL_OK = [
    # (argument, config options, expected MailFrom fields)
    ("FROM:<a@example.com>", {}, {"address": "a@example.com", "params": {}}),
    ("FROM:<>", {}, {"address": ""}),
    ("from:<a@example.com>", {}, {"address": "a@example.com"}),
    ("From: <a@example.com>", {}, {"address": "a@example.com"}),
    ("FROM:<@relay.example,@b.example:a@example.com>", {}, {"address": "a@example.com"}),
    ('FROM:<"john doe"@example.com>', {}, {"address": '"john doe"@example.com'}),
    ('FROM:<"a>b"@example.com>', {}, {"address": '"a>b"@example.com'}),
    ("FROM:<a@[192.0.2.1]>", {}, {"address": "a@[192.0.2.1]"}),
    ("FROM:<a@[IPv6:2001:db8::1]>", {}, {"address": "a@[IPv6:2001:db8::1]"}),
    ("FROM:<a.b+c@sub.example.com>", {}, {"address": "a.b+c@sub.example.com"}),
    # RFC 1870
    ("FROM:<a@example.com> SIZE=12345", {}, {"size": 12345, "params": {"SIZE": "12345"}}),
    ("FROM:<a@example.com> size=0", {}, {"size": 0, "params": {"SIZE": "0"}}),
    ("FROM:<a@example.com> SIZE=1000", {"size": 1000}, {"size": 1000}),
    ("FROM:<a@example.com> SIZE=1", {"size": 1000, "hide_size": True}, {"size": 1}),
    # RFC 6152 / RFC 3030
    ("FROM:<a@example.com> BODY=7BIT", {}, {"body": "7BIT"}),
    ("FROM:<a@example.com> BODY=8bitmime", {}, {"body": "8BITMIME"}),
    ("FROM:<a@example.com> BODY=BINARYMIME", {}, {"body": "BINARYMIME"}),
    # RFC 6531
    ("FROM:<a@example.com> SMTPUTF8", {}, {"smtputf8": True, "params": {"SMTPUTF8": None}}),
    ("FROM:<j\u00f6rg@b\u00fccher.example> SMTPUTF8", {},
     {"address": "j\u00f6rg@b\u00fccher.example", "smtputf8": True}),
    ("FROM:<\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a> SMTPUTF8", {},
     {"address": "\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a"}),
    # RFC 4954 section 5
    ("FROM:<a@example.com> AUTH=<>", {}, {"auth": "<>"}),
    ("FROM:<a@example.com> AUTH=user+40example.com", {}, {"auth": "user@example.com"}),
    # RFC 3461 (DSN shown)
    ("FROM:<a@example.com> RET=FULL", {"hide_dsn": False}, {"ret": "FULL"}),
    ("FROM:<a@example.com> ret=hdrs", {"hide_dsn": False}, {"ret": "HDRS"}),
    ("FROM:<a@example.com> ENVID=QQ314159", {"hide_dsn": False}, {"envid": "QQ314159"}),
    ("FROM:<a@example.com> ENVID=a+2Bb+3Dc", {"hide_dsn": False}, {"envid": "a+b=c"}),
    ("FROM:<a@example.com> RET=HDRS ENVID=x SIZE=5 BODY=8BITMIME SMTPUTF8",
     {"hide_dsn": False},
     {"ret": "HDRS", "envid": "x", "size": 5, "body": "8BITMIME", "smtputf8": True,
      "params": {"RET": "HDRS", "ENVID": "x", "SIZE": "5", "BODY": "8BITMIME",
                 "SMTPUTF8": None}}),
]


@pytest.mark.parametrize(("arg", "options", "expected"), MAIL_OK)
def test_mail_accepted(arg: str, options: dict[str, object], expected: dict[str, object]) -> None:
    conn, result = mail(arg, open_config(**options))
    assert result.replies == ["250 2.1.0 Accepted"]
    (event,) = result.of(MailFrom)
    for name, value in expected.items():
        assert getattr(event, name) == value, name
    assert conn.session.envelope.mail_from == event


def test_requiretls_accepted_over_tls() -> None:
    conn, result = mail("FROM:<a@example.com> REQUIRETLS",
                        open_config(hide_requiretls=False), tls=TLS)
    assert result.replies == ["250 2.1.0 Accepted"]
    assert result.of(MailFrom)[0].requiretls is True
    assert conn.session.envelope.requiretls is True


# -- MAIL FROM: refused -------------------------------------------------------------

MAIL_ERRORS = [
    # (argument, config options, full reply)
    ("FROM:a@example.com", {}, "501 5.5.4 Error: address must be enclosed in <>"),
    ("FROM:", {}, "501 5.5.4 Error: address must be enclosed in <>"),
    ("FROM:<a@example.com", {}, "501 5.5.4 Error: unterminated address"),
    ("FROM:<a@example.com>SIZE=1", {}, "501 5.5.4 Error: syntax error after address"),
    ("FROMM:<a@example.com>", {}, "501 5.5.4 Error: syntax: MAIL FROM:<address>"),
    ("<a@example.com>", {}, "501 5.5.4 Error: syntax: MAIL FROM:<address>"),
    ("FROM:<local>", {}, "501 5.1.7 Error: bad sender address syntax"),
    ("FROM:<a@-bad.example>", {}, "501 5.1.7 Error: bad sender address syntax"),
    ("FROM:<a..b@example.com>", {}, "501 5.1.7 Error: bad sender address syntax"),
    ("FROM:<a@example..com>", {}, "501 5.1.7 Error: bad sender address syntax"),
    ("FROM:<a b@example.com>", {}, "501 5.1.7 Error: bad sender address syntax"),
    ("FROM:<a@[300.1.1.1]>", {}, "501 5.1.7 Error: bad sender address syntax"),
    ("FROM:<@relay.example a@example.com>", {}, "501 5.1.7 Error: bad sender address syntax"),
    ("FROM:<postmaster>", {}, "501 5.1.7 Error: bad sender address syntax"),
    ("FROM:<" + "a" * 250 + "@example.com>", {}, "501 5.1.7 Error: sender address too long"),
    ("FROM:<a@" + "b" * 64 + ".example>", {}, "501 5.1.7 Error: bad sender address syntax"),
    # RFC 6531 section 3.7.4.1
    ("FROM:<j\u00f6rg@example.com>", {}, "553 5.6.7 Error: non-ASCII address needs SMTPUTF8"),
    # parameter syntax (RFC 5321 4.1.2)
    ("FROM:<a@example.com> =x", {}, "501 5.5.4 Error: bad parameter syntax"),
    ("FROM:<a@example.com> -X=1", {}, "501 5.5.4 Error: bad parameter syntax"),
    ("FROM:<a@example.com> SIZE=1 size=2", {}, "501 5.5.4 Error: duplicate parameter SIZE"),
    ("FROM:<a@example.com> SIZE=", {}, "501 5.5.4 Error: bad value for parameter SIZE"),
    ("FROM:<a@example.com> SIZE", {}, "501 5.5.4 Error: SIZE needs a value"),
    ("FROM:<a@example.com> SIZE=ten", {}, "501 5.5.4 Error: bad SIZE value"),
    ("FROM:<a@example.com> SIZE=-1", {}, "501 5.5.4 Error: bad SIZE value"),
    ("FROM:<a@example.com> SIZE=" + "9" * 21, {}, "501 5.5.4 Error: bad SIZE value"),
    ("FROM:<a@example.com> SIZE=\u0661", {}, "501 5.5.4 Error: bad SIZE value"),
    # RFC 1870 section 6
    ("FROM:<a@example.com> SIZE=1001", {"size": 1000},
     "552 5.3.4 Error: message exceeds fixed maximum message size 1000"),
    ("FROM:<a@example.com> SIZE=1001", {"size": 1000, "hide_size": True},
     "552 5.3.4 Error: message exceeds fixed maximum message size 1000"),
    ("FROM:<a@example.com> BODY", {}, "501 5.5.4 Error: BODY needs a value"),
    ("FROM:<a@example.com> BODY=9BIT", {}, "501 5.5.4 Error: BODY must be 7BIT or 8BITMIME"),
    ("FROM:<a@example.com> BODY=8BITMIME", {"hide_8bitmime": True},
     "555 5.5.4 Error: unsupported parameter BODY=8BITMIME"),
    ("FROM:<a@example.com> BODY=BINARYMIME", {"hide_chunking": True},
     "555 5.5.4 Error: unsupported parameter BODY=BINARYMIME"),
    ("FROM:<a@example.com> BODY=BINARYMIME", {"disabled_commands": {"BDAT"}},
     "555 5.5.4 Error: unsupported parameter BODY=BINARYMIME"),
    ("FROM:<a@example.com> SMTPUTF8=yes", {}, "501 5.5.4 Error: SMTPUTF8 takes no value"),
    ("FROM:<a@example.com> SMTPUTF8", {"hide_smtputf8": True},
     "555 5.5.4 Error: unsupported parameter SMTPUTF8"),
    ("FROM:<a@example.com> X-FOO=1", {}, "555 5.5.4 Error: unsupported parameter X-FOO"),
    ("FROM:<a@example.com> XYZ", {}, "555 5.5.4 Error: unsupported parameter XYZ"),
    # REQUIRETLS (RFC 8689): hidden by default, and only over TLS
    ("FROM:<a@example.com> REQUIRETLS", {},
     "555 5.5.4 Error: unsupported parameter REQUIRETLS"),
    ("FROM:<a@example.com> REQUIRETLS", {"hide_requiretls": False},
     "530 5.7.10 Error: REQUIRETLS needs a TLS connection"),
    ("FROM:<a@example.com> REQUIRETLS=1", {"hide_requiretls": False},
     "501 5.5.4 Error: REQUIRETLS takes no value"),
    # DSN (RFC 3461): hidden by default
    ("FROM:<a@example.com> RET=FULL", {}, "555 5.5.4 Error: unsupported parameter RET"),
    ("FROM:<a@example.com> ENVID=x", {}, "555 5.5.4 Error: unsupported parameter ENVID"),
    ("FROM:<a@example.com> RET=ALL", {"hide_dsn": False},
     "501 5.5.4 Error: RET must be FULL or HDRS"),
    ("FROM:<a@example.com> RET", {"hide_dsn": False}, "501 5.5.4 Error: RET needs a value"),
    ("FROM:<a@example.com> ENVID=" + "x" * 101, {"hide_dsn": False},
     "501 5.5.4 Error: bad ENVID value"),
    ("FROM:<a@example.com> ENVID=a+zz", {"hide_dsn": False},
     "501 5.5.4 Error: bad xtext encoding"),
    ("FROM:<a@example.com> ENVID=a+0D+0A", {"hide_dsn": False},
     "501 5.5.4 Error: control characters not allowed"),
    # AUTH= (RFC 4954 section 5)
    ("FROM:<a@example.com> AUTH=a+2", {}, "501 5.5.4 Error: bad xtext encoding"),
    ("FROM:<a@example.com> AUTH=a+0A", {}, "501 5.5.4 Error: control characters not allowed"),
    ("FROM:<a@example.com> AUTH", {}, "501 5.5.4 Error: AUTH needs a value"),
    ("FROM:<a@example.com> AUTH=<>", {"auth_methods": ()},
     "555 5.5.4 Error: unsupported parameter AUTH"),
    ("FROM:<a@example.com> AUTH=<>", {"disabled_commands": {"AUTH"}},
     "555 5.5.4 Error: unsupported parameter AUTH"),
]


@pytest.mark.parametrize(("arg", "options", "reply"), MAIL_ERRORS)
def test_mail_refused(arg: str, options: dict[str, object], reply: str) -> None:
    conn, result = mail(arg, open_config(**options))
    assert result.replies == [reply]
    assert result.of(MailFrom) == []
    assert conn.session.envelope.mail_from is None
    # The refusal leaves no transaction behind: a correct MAIL now works.
    assert talk(conn, cmd(FROM)).replies == ["250 2.1.0 Accepted"]


def test_nested_mail() -> None:
    conn = ready()
    result = talk(conn, cmd(FROM, "MAIL FROM:<other@example.com>"))
    assert result.replies == ["250 2.1.0 Accepted", "503 5.5.1 Error: nested MAIL command"]
    assert conn.session.envelope.mail_from.address == "sender@example.com"


def test_mail_needs_auth_when_required() -> None:
    conn = ready(ServerConfig(allow_insecure_auth=True))
    assert talk(conn, cmd(FROM)).replies == ["530 5.7.0 Error: authentication required"]


@pytest.mark.parametrize(
    ("code", "text", "enhanced", "reply"),
    [
        (550, None, None, "550 5.1.0 Error: sender rejected"),
        (553, None, None, "553 5.1.7 Error: sender rejected"),
        (451, "Try again later", None, "451 4.3.0 Try again later"),
        (452, None, None, "452 4.3.1 Error: sender rejected"),
        (550, "Blocked", "5.7.1", "550 5.7.1 Blocked"),
        (421, "Closing", None, "421 4.3.0 Closing"),
    ],
)
def test_mail_rejected_by_application(
    code: int, text: str | None, enhanced: str | None, reply: str
) -> None:
    conn = ready()
    result = talk(conn, cmd(FROM), reject_with(MailFrom, code, text, enhanced))
    assert result.replies == [reply]
    assert conn.session.envelope.mail_from is None
    assert conn.closed is (code == 421)


@pytest.mark.parametrize(
    ("kwargs", "reply"),
    [
        ({}, "250 2.1.0 Accepted"),
        ({"text": "Sender OK"}, "250 2.1.0 Sender OK"),
        ({"text": "OK", "enhanced": "2.1.0"}, "250 2.1.0 OK"),
        ({"code": 251, "text": "Fine"}, "251 2.1.0 Fine"),
    ],
)
def test_mail_accept_variants(kwargs: dict[str, Any], reply: str) -> None:
    conn = ready()
    result = talk(conn, cmd(FROM), by_type({MailFrom: lambda c, _e: c.accept(**kwargs)}))
    assert result.replies == [reply]


# -- RCPT TO ---------------------------------------------------------------------------

RCPT_OK = [
    # (MAIL params, RCPT argument, config options, expected RcptTo fields)
    ("", "TO:<b@example.com>", {}, {"address": "b@example.com", "params": {}}),
    ("", "to:<b@example.com>", {}, {"address": "b@example.com"}),
    ("", "TO: <b@example.com>", {}, {"address": "b@example.com"}),
    ("", "TO:<postmaster>", {}, {"address": "postmaster"}),
    ("", "TO:<PostMaster>", {}, {"address": "PostMaster"}),
    ("", "TO:<@hop.example:b@example.com>", {}, {"address": "b@example.com"}),
    (" SMTPUTF8", "TO:<\u00e4@\u00fc.example>", {}, {"address": "\u00e4@\u00fc.example"}),
    ("", "TO:<b@example.com> NOTIFY=SUCCESS,FAILURE", {"hide_dsn": False},
     {"notify": ("SUCCESS", "FAILURE")}),
    ("", "TO:<b@example.com> NOTIFY=delay", {"hide_dsn": False}, {"notify": ("DELAY",)}),
    ("", "TO:<b@example.com> NOTIFY=NEVER", {"hide_dsn": False}, {"notify": ("NEVER",)}),
    ("", "TO:<b@example.com> ORCPT=rfc822;b+40example.com", {"hide_dsn": False},
     {"orcpt": "rfc822;b@example.com", "params": {"ORCPT": "rfc822;b+40example.com"}}),
    ("", "TO:<b@example.com> NOTIFY=FAILURE ORCPT=rfc822;x@y.example", {"hide_dsn": False},
     {"notify": ("FAILURE",), "orcpt": "rfc822;x@y.example"}),
]


@pytest.mark.parametrize(("mail_params", "arg", "options", "expected"), RCPT_OK)
def test_rcpt_accepted(
    mail_params: str, arg: str, options: dict[str, object], expected: dict[str, object]
) -> None:
    conn = ready(open_config(**options))
    result = talk(conn, cmd(FROM + mail_params, f"RCPT {arg}"))
    assert result.replies == ["250 2.1.0 Accepted", "250 2.1.5 Accepted"]
    (event,) = result.of(RcptTo)
    for name, value in expected.items():
        assert getattr(event, name) == value, name
    assert conn.session.envelope.rcpt_to == [event]


RCPT_ERRORS = [
    ("TO:<>", {}, "501 5.1.3 Error: bad recipient address syntax"),
    ("TO:<nodomain>", {}, "501 5.1.3 Error: bad recipient address syntax"),
    ("TO:<b@example.com", {}, "501 5.5.4 Error: unterminated address"),
    ("TO:b@example.com", {}, "501 5.5.4 Error: address must be enclosed in <>"),
    ("FROM:<b@example.com>", {}, "501 5.5.4 Error: syntax: RCPT TO:<address>"),
    ("", {}, "501 5.5.4 Error: syntax: RCPT TO:<address>"),
    ("TO:<" + "r" * 250 + "@example.com>", {}, "501 5.1.3 Error: recipient address too long"),
    ("TO:<\u00e4@example.com>", {}, "553 5.6.7 Error: non-ASCII address needs SMTPUTF8"),
    ("TO:<b@example.com> SIZE=1", {}, "555 5.5.4 Error: unsupported parameter SIZE"),
    ("TO:<b@example.com> NOTIFY=NEVER", {}, "555 5.5.4 Error: unsupported parameter NOTIFY"),
    ("TO:<b@example.com> ORCPT=rfc822;b@example.com", {},
     "555 5.5.4 Error: unsupported parameter ORCPT"),
    ("TO:<b@example.com> NOTIFY=NEVER,SUCCESS", {"hide_dsn": False},
     "501 5.5.4 Error: NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"),
    ("TO:<b@example.com> NOTIFY=SUCCESS,SUCCESS", {"hide_dsn": False},
     "501 5.5.4 Error: NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"),
    ("TO:<b@example.com> NOTIFY=SOMETIMES", {"hide_dsn": False},
     "501 5.5.4 Error: NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"),
    ("TO:<b@example.com> NOTIFY=SUCCESS,", {"hide_dsn": False},
     "501 5.5.4 Error: NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"),
    ("TO:<b@example.com> NOTIFY", {"hide_dsn": False}, "501 5.5.4 Error: NOTIFY needs a value"),
    ("TO:<b@example.com> ORCPT=rfc822", {"hide_dsn": False},
     "501 5.5.4 Error: ORCPT must be addr-type;address"),
    ("TO:<b@example.com> ORCPT=;b@example.com", {"hide_dsn": False},
     "501 5.5.4 Error: ORCPT must be addr-type;address"),
    ("TO:<b@example.com> ORCPT=rfc822;", {"hide_dsn": False},
     "501 5.5.4 Error: ORCPT must be addr-type;address"),
    ("TO:<b@example.com> ORCPT=rfc822;a+0Ab", {"hide_dsn": False},
     "501 5.5.4 Error: control characters not allowed"),
    ("TO:<b@example.com> NOTIFY=NEVER notify=NEVER", {"hide_dsn": False},
     "501 5.5.4 Error: duplicate parameter NOTIFY"),
]


@pytest.mark.parametrize(("arg", "options", "reply"), RCPT_ERRORS)
def test_rcpt_refused(arg: str, options: dict[str, object], reply: str) -> None:
    conn = ready(open_config(**options))
    result = talk(conn, cmd(FROM, f"RCPT {arg}"))
    assert result.replies == ["250 2.1.0 Accepted", reply]
    assert result.of(RcptTo) == []
    assert conn.session.envelope.rcpt_to == []


@pytest.mark.parametrize(
    ("code", "text", "enhanced", "reply"),
    [
        (550, None, None, "550 5.1.1 Error: recipient rejected"),
        (550, "No such user", "5.1.1", "550 5.1.1 No such user"),
        (450, None, None, "450 4.2.1 Error: recipient rejected"),
        (551, "User not local", None, "551 5.1.6 User not local"),
        (452, "Too many", "4.5.3", "452 4.5.3 Too many"),
    ],
)
def test_rcpt_rejected_by_application(
    code: int, text: str | None, enhanced: str | None, reply: str
) -> None:
    conn = ready()
    result = talk(conn, cmd(FROM, TO, "DATA"), reject_with(RcptTo, code, text, enhanced))
    assert result.replies == ["250 2.1.0 Accepted", reply, "503 5.5.1 Error: need RCPT command"]
    assert conn.session.envelope.rcpt_to == []


def test_rcpt_accept_with_251() -> None:
    conn = ready()
    result = talk(conn, cmd(FROM, TO),
                  by_type({RcptTo: lambda c, _e: c.accept("User not local; will forward",
                                                          code=251)}))
    assert result.replies[-1] == "251 2.1.5 User not local; will forward"
    assert len(conn.session.envelope.rcpt_to) == 1


def test_recipients_accumulate_in_order() -> None:
    conn = ready()
    talk(conn, cmd(FROM, "RCPT TO:<one@example.com>", "RCPT TO:<two@example.com>",
                   "RCPT TO:<three@example.com>"))
    assert [r.address for r in conn.session.envelope.rcpt_to] == [
        "one@example.com", "two@example.com", "three@example.com"
    ]


def test_rcpt_needs_auth_when_required() -> None:
    conn = ready(ServerConfig(allow_insecure_auth=True))
    assert talk(conn, cmd(TO)).replies == ["530 5.7.0 Error: authentication required"]


# -- DATA sequencing ----------------------------------------------------------------------

DATA_SEQUENCE = [
    # (commands before DATA, reply to DATA)
    ([], "503 5.5.1 Error: need MAIL command"),
    ([FROM], "503 5.5.1 Error: need RCPT command"),
    ([FROM, "RCPT TO:<>"], "503 5.5.1 Error: need RCPT command"),
    ([FROM, TO], "354 End data with <CR><LF>.<CR><LF>"),
    ([FROM, TO, "RSET"], "503 5.5.1 Error: need MAIL command"),
]


@pytest.mark.parametrize(("before", "reply"), DATA_SEQUENCE)
def test_data_sequence(before: list[str], reply: str) -> None:
    conn = ready()
    result = talk(conn, cmd(*before, "DATA"))
    assert result.replies[-1] == reply
    assert bool(result.of(MessageStart)) is reply.startswith("354")


def test_data_with_argument() -> None:
    conn = ready()
    result = talk(conn, cmd(FROM, TO, "DATA now"))
    assert result.replies[-1] == "501 5.5.4 Error: syntax: DATA"
    assert result.of(MessageStart) == []


def test_data_needs_auth_when_required() -> None:
    conn = ready(ServerConfig(allow_insecure_auth=True))
    assert talk(conn, cmd("DATA")).replies == ["530 5.7.0 Error: authentication required"]


def test_data_full_message() -> None:
    conn = ready()
    result = talk(conn, cmd(FROM, TO, "DATA", "Subject: hi", "", "body", "."))
    assert result.replies == [
        "250 2.1.0 Accepted",
        "250 2.1.5 Accepted",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 OK: message queued",
    ]
    assert result.of(MessageStart) == [MessageStart("DATA")]
    assert result.body == b"Subject: hi\r\n\r\nbody\r\n"
    assert result.of(MessageComplete) == [MessageComplete("DATA", len(result.body))]
    # The transaction is over: a fresh envelope, the next one numbered 2.
    assert conn.session.envelope.mail_from is None
    assert conn.session.transaction == 2
    assert talk(conn, cmd(TO)).replies == ["503 5.5.1 Error: need MAIL command"]


@pytest.mark.parametrize(
    ("answer", "reply"),
    [
        (lambda c: c.accept(), "250 2.0.0 OK: message queued"),
        (lambda c: c.accept("Queued as 4F2A"), "250 2.0.0 Queued as 4F2A"),
        (lambda c: c.reject(554), "554 5.6.0 Error: message rejected"),
        (lambda c: c.reject(550), "550 5.6.0 Error: message rejected"),
        (lambda c: c.reject(550, "Spam", "5.7.1"), "550 5.7.1 Spam"),
        (lambda c: c.reject(451, "Later"), "451 4.3.0 Later"),
        (lambda c: c.reject(452), "452 4.3.1 Error: message rejected"),
    ],
)
def test_message_answers(answer: Any, reply: str) -> None:
    conn = ready()
    result = talk(conn, cmd(FROM, TO, "DATA", "x", "."),
                  by_type({MessageComplete: lambda c, _e: answer(c)}))
    assert result.replies[-1] == reply
    assert conn.session.envelope.mail_from is None
    assert conn.session.transaction == 2


# -- BDAT sequencing (RFC 3030) ----------------------------------------------------------------


def test_bdat_single_last_chunk() -> None:
    conn = ready()
    result = talk(conn, cmd(FROM, TO, "BDAT 5 LAST") + b"hello")
    assert result.replies[-1] == "250 2.0.0 OK: message queued"
    assert result.of(MessageStart) == [MessageStart("BDAT")]
    assert result.body == b"hello"
    assert result.of(MessageComplete) == [MessageComplete("BDAT", 5)]
    assert conn.session.transaction == 2


def test_bdat_several_chunks() -> None:
    conn = ready()
    result = talk(conn, cmd(FROM, TO, "BDAT 3") + b"abc" + cmd("BDAT 4") + b"defg"
                  + cmd("bdat 2 last") + b"hi")
    assert result.replies[2:] == [
        "250 2.0.0 3 octets received",
        "250 2.0.0 4 octets received",
        "250 2.0.0 OK: message queued",
    ]
    assert len(result.of(MessageStart)) == 1
    assert result.body == b"abcdefghi"
    assert result.of(MessageComplete) == [MessageComplete("BDAT", 9)]


@pytest.mark.parametrize(
    ("before", "reply"),
    [
        ([], "503 5.5.1 Error: need MAIL command"),
        ([FROM], "503 5.5.1 Error: need RCPT command"),
    ],
)
def test_bdat_refused_still_consumes_octets(before: list[str], reply: str) -> None:
    # RFC 3030 section 3: the chunk follows whatever the reply; it must never be
    # read as commands.
    conn = ready()
    smuggled = cmd("RSET", "MAIL FROM:<evil@example.com>")
    result = talk(conn, cmd(*before, f"BDAT {len(smuggled)} LAST") + smuggled + cmd("NOOP"))
    assert result.replies[-2:] == [reply, "250 2.0.0 OK"]
    assert [e.address for e in result.of(MailFrom)] == (["sender@example.com"] if before else [])
    assert result.of(MessageStart) == []
    assert result.of(Reset) == []


def test_bdat_needs_auth_when_required_and_consumes_octets() -> None:
    conn = ready(ServerConfig(allow_insecure_auth=True))
    result = talk(conn, cmd("BDAT 6") + b"NOOP\r\n")
    assert result.replies == ["530 5.7.0 Error: authentication required"]


@pytest.mark.parametrize(
    "line",
    ["BDAT", "BDAT x", "BDAT -1", "BDAT 1.5", "BDAT 5 NOTLAST", "BDAT 5 LAST x",
     "BDAT " + "9" * 21, "BDAT \u0662"],
)
def test_bdat_syntax_errors(line: str) -> None:
    conn = ready()
    result = talk(conn, cmd(FROM, TO, line))
    assert result.replies[-1] == "501 5.5.4 Error: syntax: BDAT chunk-size [LAST]"
    assert result.of(MessageStart) == []


def test_data_after_bdat() -> None:
    conn = ready()
    result = talk(conn, cmd(FROM, TO, "BDAT 1") + b"x" + cmd("DATA"))
    assert result.replies[-1] == "503 5.5.1 Error: DATA not allowed after BDAT"


def test_rcpt_and_mail_during_bdat() -> None:
    conn = ready()
    result = talk(conn, cmd(FROM, TO, "BDAT 1") + b"x" + cmd(TO, FROM))
    assert result.replies[-2:] == [
        "503 5.5.1 Error: RCPT not allowed during BDAT transfer",
        "503 5.5.1 Error: nested MAIL command",
    ]


def test_bdat_after_last_is_out_of_sequence() -> None:
    # RFC 3030 section 2: a BDAT after BDAT LAST gets 503.
    conn = ready()
    result = talk(conn, cmd(FROM, TO, "BDAT 1 LAST") + b"x" + cmd("BDAT 1 LAST") + b"y")
    assert result.replies[-1] == "503 5.5.1 Error: need MAIL command"
    assert len(result.of(MessageComplete)) == 1


def test_binarymime_needs_bdat() -> None:
    conn = ready()
    result = talk(conn, cmd(FROM + " BODY=BINARYMIME", TO, "DATA"))
    assert result.replies[-1] == "503 5.5.1 Error: BODY=BINARYMIME requires BDAT"
    assert conn.session.envelope.body_type == "binarymime"
    result = talk(conn, cmd("BDAT 4 LAST") + b"\x00\xff\r\n")
    assert result.replies == ["250 2.0.0 OK: message queued"]
    assert result.body == b"\x00\xff\r\n"


def test_bdat_refused_when_chunking_hidden() -> None:
    conn = ready(open_config(hide_chunking=True))
    result = talk(conn, cmd(FROM, TO, "BDAT 1 LAST"))
    assert result.replies[-1] == "502 5.5.1 Error: command not implemented"


# -- RSET -----------------------------------------------------------------------------------


def test_rset_drops_the_transaction_but_not_the_hello() -> None:
    conn = ready()
    result = talk(conn, cmd(FROM, TO, "RSET", TO, FROM))
    assert result.replies == [
        "250 2.1.0 Accepted",
        "250 2.1.5 Accepted",
        "250 2.0.0 Flushed",
        "503 5.5.1 Error: need MAIL command",
        "250 2.1.0 Accepted",
    ]
    assert result.of(Reset) == [Reset()]
    assert conn.session.opening_command == "EHLO"
    assert conn.session.envelope.rcpt_to == []
    assert conn.session.transaction == 1


def test_rset_between_bdat_chunks_aborts_the_message() -> None:
    conn = ready()
    result = talk(conn, cmd(FROM, TO, "BDAT 3") + b"abc" + cmd("RSET", "BDAT 1 LAST") + b"z")
    kinds = [type(e) for e in result.events]
    assert kinds[-4:] == [MessageStart, DataChunk, MessageAborted, Reset]
    assert result.of(MessageAborted) == [MessageAborted("reset", 3)]
    assert result.of(MessageComplete) == []
    assert result.replies[-2:] == ["250 2.0.0 Flushed", "503 5.5.1 Error: need MAIL command"]


def test_envelope_properties() -> None:
    conn = ready(open_config(hide_dsn=False))
    env = conn.session.envelope
    assert (env.body_type, env.smtputf8, env.requiretls, env.dsn_ret, env.dsn_envid) == (
        "7bit", False, False, None, None
    )
    talk(conn, cmd(FROM + " BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1"))
    env = conn.session.envelope
    assert (env.body_type, env.smtputf8, env.requiretls, env.dsn_ret, env.dsn_envid) == (
        "8bitmime", True, False, "HDRS", "id+1"
    )


def test_mail_after_size_refusal_keeps_hello() -> None:
    conn = greeted(open_config(size=10))
    result = talk(conn, cmd("EHLO c.example", FROM + " SIZE=11", FROM + " SIZE=10"))
    assert result.replies[-2:] == [
        "552 5.3.4 Error: message exceeds fixed maximum message size 10",
        "250 2.1.0 Accepted",
    ]
