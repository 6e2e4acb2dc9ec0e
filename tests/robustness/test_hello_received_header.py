"""``received_header()``: an RFC 5321 section 4.4 trace header that no
session field can break.

The HELO name, the reverse-DNS name, the address, the recipient and even the
TLS library's strings reach the header; the property test throws arbitrary
text at all of them (controls, surrogates of undecodable bytes, line
separators, the comment specials) and checks that the result is one header
field: CRLF only in folds (followed by a TAB), no control character, lines
within RFC 5322's 998, ASCII unless the transaction used SMTPUTF8, and that
a mail parser sees exactly one ``Received`` field and nothing else.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import smtp_anyio
import smtp_server
import smtp_sync
from smtp_proto import Envelope, MailFrom, RcptTo, Session, TLSInfo

DATE = datetime(2026, 11, 24, 10, 15, 2, tzinfo=timezone(timedelta(hours=1)))
STAMP = "Tue, 24 Nov 2026 10:15:02 +0100"
received_header = smtp_server.received_header


def session(
    helo: str | None = "client.example",
    *,
    address: str | None = "192.0.2.7",
    rdns: str | None = None,
    recipients: tuple[str, ...] = ("bob@example.com",),
    smtputf8: bool = False,
    **fields: Any,
) -> Session:
    s = Session(id="3fa2c1d0b9e84f17", remote_address=address, opening_command="EHLO",
                host_name_appears_as=helo,
                client_hostname=rdns if rdns is not None else f"[{address}]", **fields)
    s.envelope.mail_from = MailFrom("alice@example.org", smtputf8=smtputf8)
    s.envelope.rcpt_to.extend(RcptTo(r) for r in recipients)
    return s


def test_exported_from_every_server_package() -> None:
    assert smtp_anyio.received_header is smtp_sync.received_header is received_header


def test_the_documented_header() -> None:
    tls = TLSInfo(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384")
    s = session(rdns="mail.client.example", secure=True, tls=tls)
    assert received_header(s, by="mx.example.org", date=DATE) == (
        "Received: from client.example (mail.client.example [192.0.2.7])\r\n"
        "\tby mx.example.org (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
        "\twith ESMTPS id 3fa2c1d0b9e84f17-1\r\n"
        f"\tfor <bob@example.com>; {STAMP}\r\n"
    )


@pytest.mark.parametrize(
    ("address", "literal"),
    [
        ("192.0.2.7", "[192.0.2.7]"),
        ("2001:db8::7", "[IPv6:2001:db8::7]"),  # RFC 5321 section 4.1.3
        ("::ffff:192.0.2.7", "[192.0.2.7]"),
        ("fe80::1%eth0", "[IPv6:fe80::1]"),  # a zone is no part of a literal
    ],
)
def test_address_literals(address: str, literal: str) -> None:
    header = received_header(session(address=address), by="mx.example.org", date=DATE)
    assert header.startswith(f"Received: from client.example (unknown {literal})\r\n")


def test_no_address_no_tcp_info() -> None:
    header = received_header(session(address=None, rdns=""), by="mx.example.org", date=DATE)
    assert header.startswith("Received: from client.example\r\n\tby mx.example.org\r\n")


@pytest.mark.parametrize(
    ("helo", "comment"),
    [
        ("a\rX-Injected:yes", "(helo=a%0DX-Injected:yes)"),
        ("x\x00\x1b[31m\udcff", "(helo=x%00%1B[31m%FF)"),  # %FF: the undecodable byte
        ("under_score", "(helo=under_score)"),  # not an RFC 5321 Domain
        ("a(b)c\\100%", "(helo=a%28b%29c%5C100%25)"),  # comment specials, our escape
        ("b\u00fccher.example", "(helo=b%C3%BCcher.example)"),  # UTF-8 needs SMTPUTF8
    ],
)
def test_a_helo_name_that_is_no_domain_goes_into_a_comment(helo: str, comment: str) -> None:
    header = received_header(session(helo), by="mx.example.org", date=DATE)
    first = header.split("\r\n")[0]
    assert first == f"Received: from [192.0.2.7] (unknown [192.0.2.7]) {comment}"


def test_smtputf8_transaction_keeps_utf8() -> None:
    s = session("b\u00fccher.example", recipients=("j\u00f6rg@b\u00fccher.example",),
                smtputf8=True)
    header = received_header(s, by="mx.example.org", date=DATE)
    assert header == (
        "Received: from b\u00fccher.example (unknown [192.0.2.7])\r\n"
        "\tby mx.example.org\r\n"
        "\twith UTF8SMTP id 3fa2c1d0b9e84f17-1\r\n"  # RFC 6531 section 3.7.3
        f"\tfor <j\u00f6rg@b\u00fccher.example>; {STAMP}\r\n"
    )
    header.encode("utf-8")
    with pytest.raises(UnicodeEncodeError):
        header.encode("ascii")


def test_utf8_controls_are_escaped_even_with_smtputf8() -> None:
    # Line and paragraph separators, C1 controls, bidi overrides: UTF-8, but
    # no text a header should show.
    s = session("\u00e9\u2028\u0085\u202e", smtputf8=True)
    header = received_header(s, by="mx.example.org", date=DATE)
    assert "\r\n\t(helo=\u00e9%E2%80%A8%C2%85%E2%80%AE)\r\n" in header


def test_reverse_dns_name_must_be_a_domain() -> None:
    header = received_header(session(rdns="evil)\r\nX-Injected: yes"), by="mx.example.org",
                             date=DATE)
    assert header.startswith("Received: from client.example (unknown [192.0.2.7])\r\n")


@pytest.mark.parametrize(
    ("recipients", "for_recipient", "clause"),
    [
        (("bob@example.com",), True, "for <bob@example.com>"),
        (("bob@example.com", "carol@example.com"), True, None),  # RFC 5321: one path only
        (("bob@example.com",), False, None),
        (("bob@example.com", "carol@example.com"), "carol@example.com",
         "for <carol@example.com>"),
        (("postmaster",), True, "for <postmaster>"),
        (("bob@example.com",), "bob@example.com>\r\nX-Injected: yes", None),  # no Path
        (("j\u00f6rg@example.com",), True, None),  # UTF-8 without SMTPUTF8
    ],
)
def test_for_clause(recipients: tuple[str, ...], for_recipient: str | bool,
                    clause: str | None) -> None:
    header = received_header(session(recipients=recipients), by="mx.example.org",
                             for_recipient=for_recipient, date=DATE)
    lines = header.split("\r\n")
    if clause is None:
        assert lines[-2] == f"\twith ESMTP id 3fa2c1d0b9e84f17-1; {STAMP}"
    else:
        assert lines[-2] == f"\t{clause}; {STAMP}"


def test_envelope_argument_decides_protocol_and_recipient() -> None:
    s = session()
    kept = Envelope(MailFrom("a@example.org", smtputf8=True), [RcptTo("z@example.net")])
    header = received_header(s, kept, by="mx.example.org", date=DATE)
    assert "\twith UTF8SMTP id " in header
    assert f"\tfor <z@example.net>; {STAMP}\r\n" in header
    assert s.envelope.rcpt_to == [RcptTo("bob@example.com")]  # the session is untouched


def test_application_values() -> None:
    lmtp = session(lmtp=True)
    lmtp.opening_command = "LHLO"
    header = received_header(lmtp, by="[192.0.2.25]", protocol="LMTPSA",
                             id="<q1.x@mx.example.org>", date=DATE)
    assert "\tby [192.0.2.25]\r\n\twith LMTPSA id <q1.x@mx.example.org>\r\n" in header
    header = received_header(lmtp, by="mx.example.org", date=DATE)
    assert "\twith LMTP id 3fa2c1d0b9e84f17-1\r\n" in header


@pytest.mark.parametrize(
    "kwargs",
    [
        {"by": "mx.example.org\r\nX-Injected: yes"},
        {"by": "mx_1.example.org"},
        {"by": ""},
        {"by": "mx.example.org", "protocol": "ESMTP\r\nX: y"},
        {"by": "mx.example.org", "id": "a b"},
        {"by": "mx.example.org", "id": "x;y"},
    ],
)
def test_application_values_that_do_not_fit_raise(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="must be"):
        received_header(session(), date=DATE, **kwargs)  # type: ignore[arg-type]


def test_session_without_id_has_no_id_clause() -> None:
    s = session()
    s.id = ""
    assert "\twith ESMTP\r\n" in received_header(s, by="mx.example.org", date=DATE)


def test_date_defaults_to_now() -> None:
    header = received_header(session(), by="mx.example.org")
    stamp = header.rsplit("; ", 1)[1].removesuffix("\r\n")
    when = email.utils.parsedate_to_datetime(stamp)
    assert abs(when - datetime.now(UTC)) < timedelta(minutes=1)


def test_a_long_name_is_cut_and_folded() -> None:
    header = received_header(session("_" * 5000), by="mx.example.org", date=DATE)
    assert "(helo=" + "_" * 200 + "...)" in header
    assert max(len(line) for line in header.split("\r\n")) < 998
    assert header.split("\r\n")[1].startswith("\t(helo=")  # folded before the comment


# -- the property ---------------------------------------------------------------------------

_nasty = st.sampled_from(list(
    "\r\n\t\x00\x0b\x1b\x7f\x85\x9b\u2028\u2029\u202e\ufeff\udcff\udc80\ud800"
    "()\\%;<>[]@:\" .-_\u00fc"))
_any_text = st.text(st.characters() | st.characters(categories=["Cs"]) | _nasty, max_size=80)
_names = _any_text | st.sampled_from(["client.example", "[192.0.2.1]", "b\u00fccher.example"])
_addresses = st.none() | _any_text | st.ip_addresses().map(str)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Session, bool | str]:
    """A session whose every client- or world-controlled field is arbitrary,
    and a ``for_recipient`` argument."""
    secure = draw(st.booleans())
    s = Session(
        id=draw(_any_text), remote_address=draw(_addresses), client_hostname=draw(_names),
        opening_command=draw(st.sampled_from(["HELO", "EHLO", "LHLO"])),
        host_name_appears_as=draw(st.none() | _names), secure=secure, lmtp=draw(st.booleans()),
        tls=TLSInfo(version=draw(_any_text), cipher=draw(_any_text)) if secure else None,
    )
    s.envelope.mail_from = MailFrom("a@example.org", smtputf8=draw(st.booleans()))
    s.envelope.rcpt_to.extend(RcptTo(r) for r in draw(st.lists(_names, max_size=2)))
    return s, draw(st.booleans() | _any_text)


@settings(max_examples=400, deadline=None)
@given(case=cases())
def test_no_session_field_can_break_the_header(case: tuple[Session, bool | str]) -> None:
    s, for_recipient = case
    smtputf8 = s.envelope.smtputf8
    header = received_header(s, by="mx.example.org", for_recipient=for_recipient, date=DATE)

    assert header.startswith("Received: from ")
    assert header.replace("\r\n\t", " ").endswith(f"; {STAMP}\r\n")  # maybe folded
    body = header[:-2]
    # CR and LF only as CRLF + TAB folds; nothing else a line or field could end on.
    assert re.search(r"\r(?!\n\t)|(?<!\r)\n", body) is None, body
    unfolded = body.replace("\r\n\t", " ")
    bad = [c for c in unfolded
           if c < " " or "\x7f" <= c <= "\x9f" or "\ud800" <= c <= "\udfff"
           or c in "\u2028\u2029\ufeff\u202e"]
    assert bad == [], unfolded
    assert all(len(line) <= 998 for line in header.split("\r\n"))  # RFC 5322 2.1.1
    header.encode("utf-8" if smtputf8 else "ascii")
    # A mail parser sees one Received field, and the body where it belongs.
    message = email.parser.Parser(policy=email.policy.SMTPUTF8).parsestr(
        header.replace("\r\n", "\n") + "\nbody\n")
    assert message.keys() == ["Received"]
    assert message.get_payload() == "body\n"
