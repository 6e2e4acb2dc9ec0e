"""HAProxy PROXY protocol v1/v2, and Postfix's XCLIENT and XFORWARD."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest

from smtp_proto import (
    NEED_DATA,
    AuthAttempt,
    ConnectionClosed,
    LocalProtocolError,
    ProxyHeader,
    RemoteProtocolError,
    ServerConnection,
    State,
    TLSInfo,
    XClient,
    XForward,
    parse_proxy_header,
)
from tests.proto.driver import Result, converse, drain, open_config
from tests.proto.support import cmd, ready, reject_with, split_bytes, talk

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
GREETING = "220 localhost ESMTP"


def v2(
    command: int = 1,
    family: int = 0x11,
    addresses: bytes = b"",
    tlvs: tuple[tuple[int, bytes], ...] = (),
    *,
    version: int = 2,
    length: int | None = None,
) -> bytes:
    """A PROXY v2 header built field by field (proxy-protocol.txt section 2.2)."""
    body = addresses + b"".join(struct.pack("!BH", kind, len(value)) + value
                                for kind, value in tlvs)
    size = len(body) if length is None else length
    return SIGNATURE + struct.pack("!BBH", version << 4 | command, family, size) + body


def inet4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return struct.pack("!4s4sHH", ipaddress.IPv4Address(src).packed,
                       ipaddress.IPv4Address(dst).packed, sport, dport)


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return struct.pack("!16s16sHH", ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed, sport, dport)


def unix(src: bytes, dst: bytes) -> bytes:
    return struct.pack("!108s108s", src, dst)


def proxied(**kwargs: Any) -> ServerConnection:
    return ServerConnection(open_config(use_proxy=True), remote_address="10.0.0.1",
                            remote_port=5555, local_address="10.0.0.2", local_port=25, **kwargs)


# -- valid headers -------------------------------------------------------------------------------

VALID = [
    pytest.param(
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n",
        ProxyHeader(1, "PROXY", "TCP4", "192.0.2.1", 56324, "198.51.100.2", 25),
        ("192.0.2.1", 56324, "198.51.100.2", 25), id="v1-tcp4",
    ),
    pytest.param(
        b"PROXY TCP6 2001:db8::1 2001:db8:0:0::2 65535 0\r\n",
        ProxyHeader(1, "PROXY", "TCP6", "2001:db8::1", 65535, "2001:db8::2", 0),
        ("2001:db8::1", 65535, "2001:db8::2", 0), id="v1-tcp6",
    ),
    pytest.param(
        b"PROXY UNKNOWN\r\n",
        ProxyHeader(1, "PROXY", "UNKNOWN"),
        ("10.0.0.1", 5555, "10.0.0.2", 25), id="v1-unknown",
    ),
    pytest.param(
        b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
        ProxyHeader(1, "PROXY", "UNKNOWN"),
        ("10.0.0.1", 5555, "10.0.0.2", 25), id="v1-unknown-with-junk",
    ),
    pytest.param(
        v2(1, 0x11, inet4("192.0.2.7", "198.51.100.9", 1234, 587)),
        ProxyHeader(2, "PROXY", "TCP4", "192.0.2.7", 1234, "198.51.100.9", 587),
        ("192.0.2.7", 1234, "198.51.100.9", 587), id="v2-tcp4",
    ),
    pytest.param(
        v2(1, 0x11, inet4("192.0.2.7", "198.51.100.9", 1234, 587),
           tlvs=((0x01, b"smtp"), (0x02, b"mx.example"), (0x04, b""),
                 (0x20, b"\x01\x00\x00\x00\x00"))),
        ProxyHeader(2, "PROXY", "TCP4", "192.0.2.7", 1234, "198.51.100.9", 587,
                    ((0x01, b"smtp"), (0x02, b"mx.example"), (0x04, b""),
                     (0x20, b"\x01\x00\x00\x00\x00"))),
        ("192.0.2.7", 1234, "198.51.100.9", 587), id="v2-tcp4-tlvs",
    ),
    pytest.param(
        v2(1, 0x21, inet6("2001:db8::7", "2001:db8::9", 40000, 25)),
        ProxyHeader(2, "PROXY", "TCP6", "2001:db8::7", 40000, "2001:db8::9", 25),
        ("2001:db8::7", 40000, "2001:db8::9", 25), id="v2-tcp6",
    ),
    pytest.param(
        v2(1, 0x12, inet4("192.0.2.7", "198.51.100.9", 53, 53)),
        ProxyHeader(2, "PROXY", "UDP4", "192.0.2.7", 53, "198.51.100.9", 53),
        ("192.0.2.7", 53, "198.51.100.9", 53), id="v2-udp4",
    ),
    pytest.param(
        v2(1, 0x31, unix(b"/run/client.sock", b"/run/smtp.sock")),
        ProxyHeader(2, "PROXY", "UNIX", "/run/client.sock", None, "/run/smtp.sock", None),
        ("/run/client.sock", None, "/run/smtp.sock", None), id="v2-unix",
    ),
    pytest.param(
        v2(0, 0x11, inet4("192.0.2.7", "198.51.100.9", 1234, 587)),
        ProxyHeader(2, "LOCAL", "TCP4", "192.0.2.7", 1234, "198.51.100.9", 587),
        ("10.0.0.1", 5555, "10.0.0.2", 25), id="v2-local-keeps-real-addresses",
    ),
    pytest.param(
        v2(0, 0x00), ProxyHeader(2, "LOCAL", "UNKNOWN"),
        ("10.0.0.1", 5555, "10.0.0.2", 25), id="v2-local-unspec",
    ),
    pytest.param(
        v2(1, 0x00, tlvs=((0x04, b""),)), ProxyHeader(2, "PROXY", "UNKNOWN", tlvs=((4, b""),)),
        ("10.0.0.1", 5555, "10.0.0.2", 25), id="v2-proxy-unspec",
    ),
]


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(("header", "event", "addresses"), VALID)
def test_proxy_header(header: bytes, event: ProxyHeader, addresses: tuple[Any, ...],
                      split: bool) -> None:
    conn = proxied()
    assert conn.state is State.PROXY
    with pytest.raises(LocalProtocolError):
        conn.send_greeting()  # the header comes first
    result = converse(conn, split_bytes(header) if split else [header])
    assert result.events == [event]
    assert result.output == b""  # nothing is said before the header
    assert conn.state is State.GREETING
    s = conn.session
    assert s.proxy == event
    assert (s.remote_address, s.remote_port, s.local_address, s.local_port) == addresses
    if event.command == "PROXY" and event.source_address is not None:
        assert s.client_hostname == f"[{event.source_address}]"
    else:
        assert s.client_hostname == "[10.0.0.1]"
    assert s.early_talker is False
    conn.send_greeting()
    assert conn.data_to_send() == b"220 localhost ESMTP\r\n"


def test_parse_proxy_header_reports_consumed_length() -> None:
    header = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"
    parsed = parse_proxy_header(header + b"EHLO x\r\n")
    assert parsed is not None
    assert parsed[1] == len(header)
    assert parse_proxy_header(header[:10]) is None
    assert parse_proxy_header(b"") is None


def test_bytes_after_the_header() -> None:
    conn = proxied()
    result = talk(conn, b"PROXY UNKNOWN\r\nEHLO early.example\r\n")
    assert len(result.events) == 1
    assert conn.session.early_talker is True
    conn.send_greeting()
    result = drain(conn)
    assert result.codes == [220, 250]


def test_implicit_tls_after_the_header() -> None:
    conn = proxied()
    talk(conn, v2(1, 0x11, inet4("192.0.2.7", "192.0.2.8", 1, 465)) + b"\x16\x03\x01\x02\x00")
    assert conn.take_buffered_data() == b"\x16\x03\x01\x02\x00"
    assert conn.session.early_talker is False
    conn.tls_established(TLSInfo(version="TLSv1.3"))
    conn.send_greeting()
    assert conn.data_to_send() == b"220 localhost ESMTP\r\n"
    assert conn.session.secure is True


INVALID = [
    pytest.param(b"EHLO client.example\r\n", id="smtp-instead"),
    pytest.param(b"GET / HTTP/1.1\r\n", id="http"),
    pytest.param(b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", id="lowercase"),
    pytest.param(b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", id="no-space"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", id="v1-missing-port"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", id="v1-extra-field"),
    pytest.param(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", id="v1-bad-protocol"),
    pytest.param(b"PROXY TCP4 ::1 ::2 1 2\r\n", id="v1-tcp4-with-ipv6"),
    pytest.param(b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", id="v1-tcp6-with-ipv4"),
    pytest.param(b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", id="v1-bad-address"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", id="v1-port-too-big"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 080 25\r\n", id="v1-port-leading-zero"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 25\r\n", id="v1-negative-port"),
    pytest.param(b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", id="v1-double-space"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\xff\r\n", id="v1-non-ascii"),
    pytest.param(b"PROXY\r\n", id="v1-bare"),
    pytest.param(b"PROXY " + b"x" * 120, id="v1-too-long-without-crlf"),
    pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n" + b"x" * 100, id="v1-lf-only"),
    pytest.param(v2(1, 0x11, inet4("1.2.3.4", "5.6.7.8", 1, 2), version=1), id="v2-version-1"),
    pytest.param(v2(2, 0x11, inet4("1.2.3.4", "5.6.7.8", 1, 2)), id="v2-command-2"),
    pytest.param(v2(1, 0x44, inet4("1.2.3.4", "5.6.7.8", 1, 2)), id="v2-bad-family"),
    pytest.param(v2(1, 0x11, b"\x01\x02\x03\x04"), id="v2-short-inet4"),
    pytest.param(v2(1, 0x21, inet4("1.2.3.4", "5.6.7.8", 1, 2)), id="v2-short-inet6"),
    pytest.param(v2(1, 0x11, inet4("1.2.3.4", "5.6.7.8", 1, 2) + b"\x01\x00"),
                 id="v2-truncated-tlv-header"),
    pytest.param(v2(1, 0x11, inet4("1.2.3.4", "5.6.7.8", 1, 2) + b"\x01\x00\x05ab"),
                 id="v2-truncated-tlv-value"),
    pytest.param(b"\r\n\r\n\x00\r\nQUIT!" + b"\x21\x11\x00\x00", id="v2-bad-signature"),
    # ipaddress takes any text after "%" as an IPv6 zone, and only CRLF ends
    # a v1 line: without a check, these became the session's address.
    pytest.param(b"PROXY TCP6 fe80::1%a\nX-Injected:yes ::1 1 2\r\n", id="v1-zone-bare-lf"),
    pytest.param(b"PROXY TCP6 fe80::1%\x1b[31m ::1 1 2\r\n", id="v1-zone-esc"),
    pytest.param(b"PROXY TCP6 ::1 fe80::1%eth0 1 2\r\n", id="v1-zone"),
    pytest.param(v2(1, 0x31, unix(b"/run/a\r\nX-Injected: yes", b"/run/smtp.sock")),
                 id="v2-unix-crlf"),
    pytest.param(v2(1, 0x31, unix(b"/run/smtp.sock", b"/run/\xc2\x85")), id="v2-unix-c1"),
    pytest.param(v2(1, 0x31, unix(b"/run/\xff\xfe", b"/run/smtp.sock")), id="v2-unix-not-utf8"),
]


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("data", INVALID)
def test_invalid_proxy_header(data: bytes, split: bool) -> None:
    conn = proxied()
    result = converse(conn, split_bytes(data) if split else [data])
    assert isinstance(result.error, RemoteProtocolError)
    assert "PROXY" in str(result.error)
    assert result.events == []
    assert result.output == b""
    assert conn.closed
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_partial_v2_header_waits() -> None:
    conn = proxied()
    header = v2(1, 0x11, inet4("192.0.2.1", "192.0.2.2", 1, 2), tlvs=((1, b"x" * 300),))
    assert talk(conn, header[:-1]).events == []
    assert conn.next_event() is NEED_DATA
    assert len(talk(conn, header[-1:]).events) == 1


def test_eof_before_the_header() -> None:
    conn = proxied()
    result = converse(conn, [b"PROX", b""])
    assert result.events == [ConnectionClosed("connection lost")]


def test_no_proxy_header_expected_means_plain_smtp() -> None:
    conn = ServerConnection(open_config(use_proxy=("10.0.0.0/8",)), remote_address="192.0.2.1")
    conn.send_greeting()
    result = talk(conn, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
    assert result.replies == [GREETING, "500 5.5.2 Error: command not recognized"]


# -- XCLIENT ---------------------------------------------------------------------------------

XC = {"use_xclient": True}


def xclient(line: str, **options: Any) -> tuple[ServerConnection, Result]:
    conn = ready(open_config(**{**XC, **options}), remote_address="10.0.0.1")
    return conn, talk(conn, cmd(line))


XCLIENT_OK = [
    # (arguments, XClient attributes, session fields)
    ("ADDR=192.0.2.7", {"ADDR": "192.0.2.7"},
     {"remote_address": "192.0.2.7", "client_hostname": "[192.0.2.7]"}),
    ("NAME=Mail.Example.COM ADDR=192.0.2.7 PORT=4000",
     {"NAME": "mail.example.com", "ADDR": "192.0.2.7", "PORT": "4000"},
     {"remote_address": "192.0.2.7", "client_hostname": "mail.example.com",
      "remote_port": 4000}),
    ("ADDR=IPV6:2001:DB8::7", {"ADDR": "2001:db8::7"}, {"remote_address": "2001:db8::7"}),
    # An unknown name shows as the address, as after a failed reverse lookup.
    ("addr=192.0.2.7 name=[UNAVAILABLE]", {"ADDR": "192.0.2.7", "NAME": None},
     {"client_hostname": "[192.0.2.7]"}),
    ("NAME=[TEMPUNAVAIL]", {"NAME": None},
     {"client_hostname": "[10.0.0.1]", "remote_address": "10.0.0.1"}),
    ("ADDR=[UNAVAILABLE]", {"ADDR": None}, {"remote_address": None, "client_hostname": None}),
    ("PORT=[UNAVAILABLE]", {"PORT": None}, {"remote_port": None}),
    ("HELO=Client.Example PROTO=ESMTP", {"HELO": "client.example", "PROTO": "ESMTP"}, {}),
    ("NAME=a+2Db.example", {"NAME": "a-b.example"}, {"client_hostname": "a-b.example"}),
    ("ADDR=192.0.2.7 ADDR=192.0.2.8", {"ADDR": "192.0.2.7"}, {"remote_address": "192.0.2.7"}),
]


@pytest.mark.parametrize(("args", "attributes", "fields"), XCLIENT_OK)
def test_xclient(args: str, attributes: dict[str, Any], fields: dict[str, Any]) -> None:
    conn, result = xclient(f"XCLIENT {args}")
    assert result.events == [XClient(attributes)]
    # Postfix answers XCLIENT with a fresh greeting; the client must EHLO again.
    assert result.replies == [GREETING]
    for name, value in fields.items():
        assert getattr(conn.session, name) == value, name
    assert conn.session.xclient == attributes
    assert conn.session.opening_command is None
    assert talk(conn, cmd("MAIL FROM:<a@example.com>")).replies == [
        "503 5.5.1 Error: send HELO/EHLO first"
    ]


XCLIENT_ERRORS = [
    ("XCLIENT", "501 5.5.4 Error: bad command parameter syntax"),
    ("XCLIENT FOO=bar", "501 5.5.4 Error: bad command parameter syntax"),
    ("XCLIENT ADDR", "501 5.5.4 Error: bad command parameter syntax"),
    ("XCLIENT IDENT=x", "501 5.5.4 Error: bad command parameter syntax"),
    ("XCLIENT ADDR=999.1.1.1", "501 5.5.4 Error: bad command parameter syntax: invalid address"),
    ("XCLIENT ADDR=", "501 5.5.4 Error: bad command parameter syntax: invalid address"),
    ("XCLIENT PORT=70000", "501 5.5.4 Error: bad command parameter syntax: invalid port"),
    ("XCLIENT PORT=http", "501 5.5.4 Error: bad command parameter syntax: invalid port"),
    ("XCLIENT NAME=a+zz", "501 5.5.4 Error: bad xtext encoding"),
    ("XCLIENT NAME=a+0Ab", "501 5.5.4 Error: control characters not allowed"),
]


@pytest.mark.parametrize(("line", "reply"), XCLIENT_ERRORS)
def test_xclient_syntax_errors(line: str, reply: str) -> None:
    conn, result = xclient(line)
    assert result.replies == [reply]
    assert result.events == []
    assert conn.session.xclient == {}
    assert conn.session.remote_address == "10.0.0.1"
    assert conn.session.opening_command == "EHLO"


def test_xclient_not_enabled() -> None:
    conn = ready(remote_address="10.0.0.1")
    result = talk(conn, cmd("XCLIENT ADDR=192.0.2.7"))
    assert result.replies == ["550 5.7.0 Error: not allowed"]
    assert conn.session.remote_address == "10.0.0.1"


def test_xclient_not_allowed_twice_after_addr() -> None:
    conn, _ = xclient("XCLIENT ADDR=192.0.2.7")
    result = talk(conn, cmd("EHLO c.example", "XCLIENT ADDR=192.0.2.99"))
    assert not any(line.startswith("250-XCLIENT") for line in result.replies)
    assert result.replies[-1] == "550 5.7.0 Error: not allowed"
    assert conn.session.remote_address == "192.0.2.7"


def test_xclient_again_after_name_only() -> None:
    conn, _ = xclient("XCLIENT NAME=a.example")
    result = talk(conn, cmd("XCLIENT ADDR=192.0.2.7"))
    assert result.replies == [GREETING]
    assert conn.session.xclient == {"NAME": "a.example", "ADDR": "192.0.2.7"}
    assert conn.session.remote_address == "192.0.2.7"


def test_xclient_during_transaction() -> None:
    conn = ready(open_config(**XC))
    result = talk(conn, cmd("MAIL FROM:<a@example.com>", "XCLIENT ADDR=192.0.2.7"))
    assert result.replies[-1] == "503 5.5.1 Error: mail transaction in progress"


def test_xclient_login_accepted() -> None:
    conn, result = xclient("XCLIENT ADDR=192.0.2.7 LOGIN=alice")
    assert result.events == [XClient({"ADDR": "192.0.2.7", "LOGIN": "alice"}),
                             AuthAttempt("XCLIENT", "alice")]
    assert result.replies == [GREETING]  # not 235
    assert conn.session.user == "alice"
    assert conn.session.auth_mechanism == "XCLIENT"


def test_xclient_login_rejected() -> None:
    conn = ready(open_config(**XC))
    result = talk(conn, cmd("XCLIENT LOGIN=mallory"), reject_with(AuthAttempt, 535))
    assert result.replies == ["535 5.7.8 Error: authentication credentials invalid"]
    assert conn.session.user is None
    assert conn.session.auth_failures == 1


def test_xclient_login_unavailable_logs_out() -> None:
    conn = ready(open_config(**XC))
    talk(conn, cmd("XCLIENT LOGIN=alice"))
    assert conn.session.user == "alice"
    result = talk(conn, cmd("XCLIENT LOGIN=[UNAVAILABLE]"))
    assert result.events == [XClient({"LOGIN": None})]
    assert result.replies == [GREETING]
    assert conn.session.user is None
    assert conn.session.auth_mechanism is None


def test_xclient_login_satisfies_auth_requirement() -> None:
    config = open_config(auth_optional=False, **XC)
    conn = ready(config)
    result = talk(conn, cmd("MAIL FROM:<a@example.com>", "XCLIENT LOGIN=alice",
                            "EHLO c.example", "MAIL FROM:<a@example.com>"))
    assert result.codes == [530, 220, 250, 250]


# -- XFORWARD -------------------------------------------------------------------------------------


def test_xforward() -> None:
    conn = ready(open_config(use_xforward=True), remote_address="10.0.0.1")
    result = talk(conn, cmd("XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 PROTO=ESMTP",
                            "XFORWARD HELO=Spike.Porcupine.ORG IDENT=123 SOURCE=REMOTE PORT=25",
                            "MAIL FROM:<a@example.com>"))
    assert result.replies == ["250 2.0.0 OK", "250 2.0.0 OK", "250 2.1.0 Accepted"]
    assert result.of(XForward) == [
        XForward({"NAME": "spike.porcupine.org", "ADDR": "168.100.189.2", "PROTO": "ESMTP"}),
        XForward({"HELO": "spike.porcupine.org", "IDENT": "123", "SOURCE": "REMOTE",
                  "PORT": "25"}),
    ]
    assert conn.session.xforward == {
        "NAME": "spike.porcupine.org", "ADDR": "168.100.189.2", "PROTO": "ESMTP",
        "HELO": "spike.porcupine.org", "IDENT": "123", "SOURCE": "REMOTE", "PORT": "25",
    }
    # XFORWARD only informs: the session's own view of the peer is unchanged.
    assert conn.session.remote_address == "10.0.0.1"
    assert conn.session.opening_command == "EHLO"


@pytest.mark.parametrize(
    ("options", "setup", "line", "reply"),
    [
        ({}, [], "XFORWARD ADDR=192.0.2.1", "550 5.7.0 Error: not allowed"),
        ({"use_xforward": True}, ["MAIL FROM:<a@example.com>"], "XFORWARD ADDR=192.0.2.1",
         "503 5.5.1 Error: mail transaction in progress"),
        ({"use_xforward": True}, [], "XFORWARD", "501 5.5.4 Error: bad command parameter syntax"),
        ({"use_xforward": True}, [], "XFORWARD LOGIN=alice",
         "501 5.5.4 Error: bad command parameter syntax"),
        ({"use_xforward": True}, [], "XFORWARD ADDR=nowhere",
         "501 5.5.4 Error: bad command parameter syntax: invalid address"),
        ({"use_xforward": True}, [], "XFORWARD PORT=99999",
         "501 5.5.4 Error: bad command parameter syntax: invalid port"),
    ],
)
def test_xforward_refused(options: dict[str, Any], setup: list[str], line: str,
                          reply: str) -> None:
    conn = ready(open_config(**options))
    result = talk(conn, cmd(*setup, line))
    assert result.replies[-1] == reply
    assert result.of(XForward) == []
    assert conn.session.xforward == {}


def test_xforward_unavailable_values() -> None:
    conn = ready(open_config(use_xforward=True))
    talk(conn, cmd("XFORWARD NAME=[UNAVAILABLE] ADDR=[UNAVAILABLE]"))
    assert conn.session.xforward == {"NAME": None, "ADDR": None}
