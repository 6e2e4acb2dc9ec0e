"""What a client says about itself cannot carry a line break or a control
character into the session.

HELO/EHLO/LHLO names end up in ``session.host_name_appears_as``, and from
there in logs and ``Received:`` headers; XCLIENT and XFORWARD attributes in
``session.xclient`` / ``xforward`` and the session's addresses. A name with
a control character (a bare CR first of all: only LF ends a command line) or
with bytes that are not UTF-8 is refused with a syntax error of the
argument, 501 -- without an enhanced code for HELO/EHLO, which RFC 2034
section 3 forbids -- and the session is as if the command had not been sent.
Non-ASCII UTF-8 stays welcome (RFC 6531: U-labels).

Every conversation here is also fed in every split (whole, byte by byte and
cut at each position): the replies, events and session must not change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from smtp_proto import (
    DataChunk,
    Event,
    Hello,
    MailFrom,
    MessageComplete,
    RemoteProtocolError,
    ServerConfig,
    State,
    XClient,
    XForward,
)
from tests.proto.driver import converse, greeted, open_config
from tests.proto.support import split_bytes

EHLO_OK = b"EHLO client.example\r\n"
ENVELOPE = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
MESSAGE = b"DATA\r\nSubject: hi\r\n\r\nhello\r\n.\r\n"


class Outcome(NamedTuple):
    replies: list[str]
    events: list[Event]  # without DataChunk: how a body is cut depends on the reads
    body: bytes
    error: str
    state: State
    opening_command: str | None
    hello_name: str | None
    xclient: dict[str, str | None]
    xforward: dict[str, str | None]
    remote_address: str | None
    client_hostname: str | None
    mail_from: MailFrom | None


def outcome(config: ServerConfig, chunks: list[bytes], **kwargs: Any) -> Outcome:
    """Everything observable after feeding ``chunks`` (accepting every decision)."""
    conn = greeted(config, **kwargs)
    result = converse(conn, chunks)
    s = conn.session
    return Outcome(
        result.replies, [e for e in result.events if not isinstance(e, DataChunk)],
        result.body, repr(result.error), conn.state, s.opening_command,
        s.host_name_appears_as, dict(s.xclient), dict(s.xforward), s.remote_address,
        s.client_hostname, s.envelope.mail_from,
    )


def splits(data: bytes) -> Iterator[list[bytes]]:
    yield split_bytes(data)
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]


def in_every_split(config: ServerConfig, data: bytes, **kwargs: Any) -> Outcome:
    """``outcome`` of ``data`` in one read, checked equal for every split."""
    expected = outcome(config, [data], **kwargs)
    for chunks in splits(data):
        assert outcome(config, chunks, **kwargs) == expected, chunks
    return expected


# -- HELO / EHLO / LHLO ------------------------------------------------------------------------

CONTROL = "501 Error: control characters not allowed in {} hostname"
NOT_UTF8 = "501 Error: {} hostname is not valid UTF-8"

REFUSED = [
    pytest.param(b"EHLO a\rX-Injected:yes", CONTROL, id="bare-CR-header-injection"),
    pytest.param(b"EHLO client.example\r", CONTROL, id="CR-before-CRLF"),
    pytest.param(b"HELO a\x00b", CONTROL, id="NUL"),
    pytest.param(b"EHLO \x1b[31mred", CONTROL, id="ESC"),
    pytest.param(b"EHLO a\tb", CONTROL, id="TAB"),
    pytest.param(b"EHLO client.example\t", CONTROL, id="trailing-TAB-not-trimmed"),
    pytest.param(b"EHLO \x0bclient.example", CONTROL, id="leading-VT-not-trimmed"),
    pytest.param(b"EHLO a\x7f", CONTROL, id="DEL"),
    pytest.param(b"EHLO a\xc2\x85b", CONTROL, id="C1-NEL"),
    pytest.param(b"ehlo a\xc2\x9b31m", CONTROL, id="C1-CSI-lower-case-verb"),
    pytest.param(b"EHLO \xff\xfe", NOT_UTF8, id="not-UTF-8"),
    pytest.param(b"EHLO caf\xe9.example", NOT_UTF8, id="Latin-1"),
    pytest.param(b"EHLO a\xc0\x8ab", NOT_UTF8, id="overlong-LF"),
    pytest.param(b"HELO \xed\xa0\x80.example", NOT_UTF8, id="encoded-surrogate"),
    pytest.param(b"EHLO a\x00\xff", NOT_UTF8, id="both-not-UTF-8-first"),
]


@pytest.mark.parametrize(("line", "reply"), REFUSED)
def test_hello_name_with_control_or_non_utf8_is_refused(line: bytes, reply: str) -> None:
    verb = line.split(b" ")[0].decode().upper()
    got = in_every_split(open_config(), line + b"\r\nMAIL FROM:<a@example.com>\r\n")
    assert got.replies == [reply.format(verb), "503 5.5.1 Error: send HELO/EHLO first"]
    assert got.events == []
    assert (got.opening_command, got.hello_name) == (None, None)


def test_lhlo_name_with_a_bare_cr_is_refused() -> None:
    got = in_every_split(open_config(lmtp=True), b"LHLO a\rb\r\n")
    assert got.replies == [CONTROL.format("LHLO")]
    assert got.events == []


def test_session_goes_on_after_a_refused_name() -> None:
    data = b"EHLO a\rX-Injected:yes\r\n" + EHLO_OK + ENVELOPE + MESSAGE
    got = in_every_split(open_config(), data)
    assert got.replies[0] == CONTROL.format("EHLO")
    assert [r[:3] for r in got.replies if r[3] == " "] == [
        "501", "250", "250", "250", "354", "250"]
    assert got.replies[-1] == "250 2.0.0 OK: message queued"
    assert [e for e in got.events if isinstance(e, Hello)] == [Hello("EHLO", "client.example")]
    assert got.events[-1] == MessageComplete("DATA", len(b"Subject: hi\r\n\r\nhello\r\n"))
    assert got.body == b"Subject: hi\r\n\r\nhello\r\n"
    assert (got.error, got.opening_command, got.hello_name) == (
        "None", "EHLO", "client.example")


def test_refused_name_leaves_the_transaction_alone() -> None:
    # RFC 5321 section 4.1.4: only an accepted HELO/EHLO resets the transaction.
    data = EHLO_OK + ENVELOPE + b"EHLO \xff\xfe\r\n" + MESSAGE
    got = in_every_split(open_config(), data)
    assert got.replies[-3:] == [NOT_UTF8.format("EHLO"), "354 End data with <CR><LF>.<CR><LF>",
                                "250 2.0.0 OK: message queued"]
    assert isinstance(got.events[-1], MessageComplete)
    assert got.hello_name == "client.example"


def test_a_bare_lf_ends_the_name_and_the_rest_is_a_command() -> None:
    # A bare LF ends a command line: what follows it can never join the name.
    got = in_every_split(open_config(), b"EHLO a\nX-Injected: yes\r\n")
    assert got.replies[0] == "250-localhost Nice to meet you, a"
    assert got.replies[-1] == "500 5.5.2 Error: command not recognized"
    assert got.events == [Hello("EHLO", "a")]
    assert got.hello_name == "a"


def test_refused_names_count_towards_max_invalid_commands() -> None:
    got = in_every_split(open_config(max_invalid_commands=2),
                         b"EHLO a\rb\r\nHELO \xff\r\nEHLO c\x00d\r\nNOOP\r\n")
    assert got.replies == [CONTROL.format("EHLO"), NOT_UTF8.format("HELO"),
                           "421 4.7.0 localhost Error: too many invalid commands"]
    assert "too many invalid commands" in got.error
    assert got.state is State.ERROR


@pytest.mark.parametrize(
    ("line", "name", "options"),
    [
        # RFC 6531: a U-label in the EHLO name; the core does not check the
        # name's syntax and accepts it whatever SMTPUTF8's setting.
        (b"EHLO b\xc3\xbccher.example", "b\u00fccher.example", {}),
        (b"EHLO b\xc3\xbccher.example", "b\u00fccher.example", {"hide_smtputf8": True}),
        (b"EHLO [IPv6:2001:db8::1]", "[IPv6:2001:db8::1]", {}),
        (b"HELO   client.example   ", "client.example", {}),  # spaces are trimmed
        (b"EHLO under_score", "under_score", {}),  # the application judges names
    ],
)
def test_printable_names_are_kept(line: bytes, name: str, options: dict[str, Any]) -> None:
    got = in_every_split(open_config(**options), line + b"\r\n")
    assert got.replies[-1].startswith("250 ")
    assert got.events == [Hello(line[:4].decode(), name)]  # type: ignore[arg-type]
    assert got.hello_name == name


# -- XCLIENT and XFORWARD ----------------------------------------------------------------------

SYNTAX = "501 5.5.4 Error: bad command parameter syntax"
BAD_XTEXT = "501 5.5.4 Error: bad xtext encoding"
XTEXT_CONTROL = "501 5.5.4 Error: control characters not allowed"
BAD_ADDRESS = "501 5.5.4 Error: bad command parameter syntax: invalid address"

PROXY_REFUSED = [
    (b"HELO=\xff\xfe", BAD_XTEXT),  # not UTF-8
    (b"NAME=a\xc2\x9bb", XTEXT_CONTROL),  # a raw C1 control
    (b"NAME=a+85b", XTEXT_CONTROL),  # a C1 control as xtext
    (b"HELO=a+0D+0AX-Injected:+20yes", XTEXT_CONTROL),
    (b"HELO=a+00", XTEXT_CONTROL),
    # A raw CR is white space between attributes: the rest has no "=".
    (b"HELO=a\rX-Injected:yes", SYNTAX),
    (b"ADDR=fe80::1%eth0", BAD_ADDRESS),  # an IPv6 zone is no client address
    (b"ADDR=IPV6:fe80::1%+0D", XTEXT_CONTROL),
    (b"ADDR=fe80::1%a\x1bb", XTEXT_CONTROL),
]


@pytest.mark.parametrize("verb", [b"XCLIENT", b"XFORWARD"])
@pytest.mark.parametrize(("attribute", "reply"), PROXY_REFUSED)
def test_proxy_attributes_cannot_carry_controls(verb: bytes, attribute: bytes, reply: str) -> None:
    config = open_config(use_xclient=True, use_xforward=True)
    data = EHLO_OK + verb + b" " + attribute + b"\r\nMAIL FROM:<a@example.com>\r\n"
    got = in_every_split(config, data, remote_address="10.0.0.1")
    assert got.replies[-2:] == [reply, "250 2.1.0 Accepted"]
    assert not any(isinstance(e, XClient | XForward) for e in got.events)
    assert (got.xclient, got.xforward) == ({}, {})
    # Nothing changed: not the address, not the greeting (XCLIENT resets it).
    assert (got.remote_address, got.client_hostname) == ("10.0.0.1", "[10.0.0.1]")
    assert (got.opening_command, got.hello_name) == ("EHLO", "client.example")


def test_proxy_attributes_keep_utf8() -> None:
    config = open_config(use_xclient=True, use_xforward=True)
    data = EHLO_OK + b"XFORWARD HELO=B\xc3\xbccher.example\r\n"
    got = in_every_split(config, data)
    assert got.replies[-1] == "250 2.0.0 OK"
    assert got.events[-1] == XForward({"HELO": "b\u00fccher.example"})
    assert got.xforward == {"HELO": "b\u00fccher.example"}


@pytest.mark.parametrize(
    ("param", "reply"),
    [
        (b"ENVID=a+9B", XTEXT_CONTROL),
        (b"ENVID=a\xc2\x9bb", XTEXT_CONTROL),  # raw C1: allowed in a UTF-8 value, not decoded
        (b"AUTH=a+85b@example.com", XTEXT_CONTROL),
    ],
)
def test_xtext_parameters_cannot_carry_c1_controls(param: bytes, reply: str) -> None:
    config = open_config(hide_dsn=False, auth_optional=True)
    data = EHLO_OK + b"MAIL FROM:<a@example.com> SMTPUTF8 " + param + b"\r\n"
    got = in_every_split(config, data)
    assert got.replies[-1] == reply
    assert not any(isinstance(e, MailFrom) for e in got.events)
    assert got.mail_from is None


def test_refused_attribute_counts_as_an_error() -> None:
    config = open_config(use_xclient=True, max_invalid_commands=1)
    got = in_every_split(config, EHLO_OK + b"XCLIENT NAME=a+0Db\r\nXCLIENT HELO=\xff\r\n")
    assert got.replies[-2:] == [
        XTEXT_CONTROL, "421 4.7.0 localhost Error: too many invalid commands"]
    assert RemoteProtocolError.__name__ in got.error
