"""Every handler on every backend: what it is given, and what the client gets
when it accepts, refuses, or breaks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import re
import smtplib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiosmtplib
import pytest

from smtp_anyio import MessageAbortedError, SMTPError

from .conftest import Inbox
from .harness import controller, run_server
from .raw_smtp import RawClient, Recorder, b64

NAME = "mx.test"
BODY = b"Subject: test\r\n\r\nHello.\r\n"
QUEUED = "250 2.0.0 OK: message queued"
INTERNAL = "451 4.3.0 Error: local error in processing"
PASSWORDS = {"alice": "s3cret", "bob": "hunter2"}


def logger_name(backend: str) -> str:
    return "smtp_sync" if backend == "sync" else "smtp_anyio"


@dataclass(frozen=True)
class User:
    name: str


def check_password(auth: Any, session: Any = None) -> User | None:
    """A typical on_auth body: PLAIN/LOGIN passwords, CRAM-MD5 digests."""
    secret = PASSWORDS.get(auth.username)
    if secret is None:
        return None
    if auth.mechanism == "CRAM-MD5":
        return User(auth.username) if auth.validate_password(secret) else None
    return User(auth.username) if auth.password == secret else None


# -- on_connect ------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "enhanced", "expected"), [
    (554, "5.7.1", f"554 5.7.1 {NAME} No service for you"),
    (554, None, f"554 5.3.2 {NAME} No service for you"),
    (421, None, f"421 4.3.2 {NAME} No service for you"),
])
def test_on_connect_refuses(start_server, code: int, enhanced: str | None,
                            expected: str) -> None:
    seen = Recorder()

    def on_connect(session: Any) -> None:
        seen.add(session.remote_address)
        raise SMTPError(code, "No service for you", enhanced=enhanced)

    running = start_server(name=NAME, on_connect=on_connect)
    with RawClient(running.address, read_greeting=False) as client:
        assert client.reply() == [expected]
        assert client.expect_closed() == b""
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP(*running.address)
    assert refused.value.smtp_code == code
    assert seen.items == ["127.0.0.1", "127.0.0.1"]


def test_on_connect_accepts(start_server, inbox: Inbox) -> None:
    seen = Recorder()
    running = start_server(name=NAME, auth_optional=True, on_data=inbox.on_data,
                           on_connect=lambda session: seen.add(session.id))
    with smtplib.SMTP(*running.address) as client:
        client.sendmail("a@example.com", ["b@example.com"], BODY)
    [message] = inbox.wait_for(1)
    assert seen.items == [message.session_id]


# -- on_mail_from / on_rcpt_to -------------------------------------------------------------

SENDER_RULES: dict[str, SMTPError] = {
    "blocked@example.com": SMTPError(550, "Sender blocked", enhanced="5.7.1"),
    "grey@example.com": SMTPError(451, "Greylisted, try again later", enhanced="4.7.1"),
    "unknown@example.com": SMTPError(550, "Unknown sender"),
    "bad@example.com": SMTPError(553, "Sender address rejected"),
    "temp@example.com": SMTPError(450, "Mailbox busy"),
}


def test_on_mail_from_rejects_per_address(start_server) -> None:
    seen = Recorder()

    def on_mail_from(address: Any, session: Any) -> None:
        seen.add(address.address)
        if address.address in SENDER_RULES:
            raise SENDER_RULES[address.address]

    running = start_server(name=NAME, auth_optional=True, on_mail_from=on_mail_from)
    with RawClient(running.address) as client:
        client.ehlo()
        replies = [client.one(f"MAIL FROM:<{sender}>") for sender in SENDER_RULES]
        assert client.one("MAIL FROM:<>") == "250 2.1.0 Accepted"
    assert replies == [
        "550 5.7.1 Sender blocked",
        "451 4.7.1 Greylisted, try again later",
        "550 5.1.0 Unknown sender",       # the default enhanced code of a refused sender
        "553 5.1.7 Sender address rejected",
        "450 4.2.1 Mailbox busy",
    ]
    assert seen.items == [*SENDER_RULES, ""]
    with smtplib.SMTP(*running.address) as client:
        client.ehlo()
        assert client.mail("blocked@example.com") == (550, b"5.7.1 Sender blocked")
        assert client.mail("fine@example.com") == (250, b"2.1.0 Accepted")


def test_on_rcpt_to_rejects_per_recipient(start_server, inbox: Inbox) -> None:
    rules = {
        "nobody@example.com": SMTPError(550, "No such user", enhanced="5.1.1"),
        "full@example.com": SMTPError(452, "Mailbox full", enhanced="4.2.2"),
        "relay@elsewhere.example": SMTPError(550, "Relaying denied", enhanced="5.7.1"),
        "plain@example.com": SMTPError(551, "User not local"),
    }
    seen = Recorder()

    def on_rcpt_to(address: Any, session: Any) -> None:
        seen.add((session.envelope.mail_from.address, address.address))
        if address.address in rules:
            raise rules[address.address]

    running = start_server(name=NAME, auth_optional=True, on_rcpt_to=on_rcpt_to,
                           on_data=inbox.on_data)
    recipients = ["b@example.com", *rules, "c@example.com"]
    with smtplib.SMTP(*running.address) as client:
        refused = client.sendmail("a@example.com", recipients, BODY)
    assert refused == {
        "nobody@example.com": (550, b"5.1.1 No such user"),
        "full@example.com": (452, b"4.2.2 Mailbox full"),
        "relay@elsewhere.example": (550, b"5.7.1 Relaying denied"),
        "plain@example.com": (551, b"5.1.6 User not local"),
    }
    [message] = inbox.wait_for(1)
    assert message.recipients == ["b@example.com", "c@example.com"]
    assert seen.items == [("a@example.com", r) for r in recipients]


def test_every_recipient_refused(start_server, inbox: Inbox) -> None:
    def on_rcpt_to(address: Any, session: Any) -> None:
        raise SMTPError(550, "No such user", enhanced="5.1.1")

    running = start_server(name=NAME, auth_optional=True, on_rcpt_to=on_rcpt_to,
                           on_data=inbox.on_data)
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"
        assert client.one("RCPT TO:<b@example.com>") == "550 5.1.1 No such user"
        assert client.one("DATA") == "503 5.5.1 Error: need RCPT command"
    with smtplib.SMTP(*running.address) as client, pytest.raises(smtplib.SMTPRecipientsRefused):
        client.sendmail("a@example.com", ["b@example.com"], BODY)
    assert inbox.messages == []


def test_smtp_error_with_a_success_code_is_an_internal_error(start_server, caplog,
                                                              backend: str) -> None:
    def on_mail_from(address: Any, session: Any) -> None:
        raise SMTPError(250, "This is not an error")

    running = start_server(name=NAME, auth_optional=True, on_mail_from=on_mail_from)
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("MAIL FROM:<a@example.com>") == INTERNAL
        assert client.one("NOOP") == "250 2.0.0 OK"
    assert any(r.name == logger_name(backend) and r.levelno == logging.WARNING
               for r in caplog.records)


# -- on_auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_smtplib_login(start_server, inbox: Inbox, mechanism: str) -> None:
    attempts = Recorder()
    seen = Recorder()

    def on_auth(auth: Any, session: Any) -> User | None:
        attempts.add((auth.mechanism, auth.username))
        return check_password(auth)

    def on_mail_from(address: Any, session: Any) -> None:
        seen.add((session.user, session.transmission_type, session.auth_mechanism))

    def on_data(stream: Any, session: Any) -> None:
        seen.add(session.user)
        inbox.on_data(stream, session)

    running = start_server(name=NAME, auth_methods=[mechanism], allow_insecure_auth=True,
                           on_auth=on_auth, on_mail_from=on_mail_from, on_data=on_data)
    with smtplib.SMTP(*running.address) as client:
        client.ehlo()
        assert client.esmtp_features["auth"].split() == [mechanism]
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("alice", "wrong")
        assert refused.value.smtp_code == 535
        assert refused.value.smtp_error == b"5.7.8 Error: authentication credentials invalid"
        assert client.login("alice", "s3cret") == (235, b"2.7.0 Authentication successful")
        assert client.sendmail("alice@example.com", ["b@example.com"], BODY) == {}
    inbox.wait_for(1)
    assert attempts.items == [(mechanism, "alice"), (mechanism, "alice")]
    assert seen.items == [(User("alice"), "ESMTPA", mechanism), User("alice")]


def test_aiosmtplib_login(start_server, inbox: Inbox) -> None:
    seen = Recorder()

    def on_data(stream: Any, session: Any) -> None:
        seen.add(session.user)
        inbox.on_data(stream, session)

    running = start_server(name=NAME, auth_methods=["CRAM-MD5", "PLAIN", "LOGIN"],
                           allow_insecure_auth=True, on_auth=check_password, on_data=on_data)

    async def main() -> list[int]:
        codes = []
        for method in ("auth_crammd5", "auth_plain", "auth_login"):
            smtp = aiosmtplib.SMTP(hostname=running.host, port=running.port, timeout=5,
                                   start_tls=False)
            await smtp.connect()
            await smtp.ehlo()
            response = await getattr(smtp, method)("bob", "hunter2")
            codes.append(response.code)
            await smtp.sendmail("bob@example.com", ["c@example.com"], BODY)
            await smtp.quit()
        return codes

    assert asyncio.run(main()) == [235, 235, 235]
    inbox.wait_for(3)
    assert seen.items == [User("bob")] * 3


def test_auth_exchanges(start_server) -> None:
    running = start_server(name=NAME, auth_methods=["PLAIN", "LOGIN", "CRAM-MD5"],
                           allow_insecure_auth=True, on_auth=check_password,
                           max_invalid_commands=None)
    ok = "235 2.7.0 Authentication successful"
    invalid = "535 5.7.8 Error: authentication credentials invalid"
    with RawClient(running.address) as client:  # PLAIN with an initial response
        assert "AUTH PLAIN LOGIN CRAM-MD5" in client.ehlo()
        assert client.one("AUTH PLAIN " + b64("\0alice\0s3cret")) == ok
        assert "AUTH PLAIN LOGIN CRAM-MD5" not in client.ehlo()
        assert client.one("AUTH PLAIN " + b64("\0bob\0hunter2")) == (
            "503 5.5.1 Error: no identity changes permitted")
    with RawClient(running.address) as client:  # PLAIN after an empty challenge
        client.ehlo()
        assert client.one("AUTH PLAIN") == "334 "
        assert client.one(b64("\0alice\0wrong")) == invalid
        assert client.one("AUTH PLAIN") == "334 "
        assert client.one(b64("alice\0alice\0s3cret")) == ok
    with RawClient(running.address) as client:  # LOGIN
        client.ehlo()
        assert client.one("AUTH LOGIN") == "334 " + b64("Username:")
        assert client.one(b64("bob")) == "334 " + b64("Password:")
        assert client.one(b64("hunter2")) == ok
    with RawClient(running.address) as client:  # LOGIN with the user name given at once
        client.ehlo()
        assert client.one("AUTH LOGIN " + b64("bob")) == "334 " + b64("Password:")
        assert client.one(b64("hunter2")) == ok
    with RawClient(running.address) as client:  # CRAM-MD5
        client.ehlo()
        for password, expected in (("wrong", invalid), ("s3cret", ok)):
            line = client.one("AUTH CRAM-MD5")
            assert line.startswith("334 ")
            challenge = base64.b64decode(line[4:]).decode()
            assert re.fullmatch(r"<\d+\.\d+@mx\.test>", challenge), challenge
            digest = hmac.new(password.encode(), challenge.encode(), "md5").hexdigest()
            assert client.one(b64(f"alice {digest}")) == expected
    with RawClient(running.address) as client:  # mistakes
        client.ehlo()
        assert client.one("AUTH") == "501 5.5.4 Error: syntax: AUTH mechanism [initial-response]"
        assert client.one("AUTH GSSAPI") == "504 5.5.4 Error: unrecognized authentication type"
        assert client.one("AUTH PLAIN !!!") == "501 5.5.2 Error: cannot decode base64 response"
        assert client.one("AUTH PLAIN " + b64("no nul bytes")) == (
            "501 5.5.2 Error: invalid userdata")
        assert client.one("AUTH CRAM-MD5 abc") == (
            "501 5.5.4 Error: CRAM-MD5 takes no initial response")
        assert client.one("AUTH LOGIN") == "334 " + b64("Username:")
        assert client.one("*") == "501 5.7.0 Authentication aborted"
        assert client.one("AUTH PLAIN " + b64("\0alice\0s3cret")) == ok


def test_session_user_is_what_on_auth_returned(start_server, inbox: Inbox) -> None:
    seen = Recorder()
    token = object()

    def on_auth(auth: Any, session: Any) -> object:
        return token if auth.password == "pw" else None

    def on_rcpt_to(address: Any, session: Any) -> None:
        seen.add(session.user)

    def on_data(stream: Any, session: Any) -> None:
        seen.add(session.user)
        inbox.on_data(stream, session)

    running = start_server(name=NAME, allow_insecure_auth=True, on_auth=on_auth,
                           on_rcpt_to=on_rcpt_to, on_data=on_data)
    with smtplib.SMTP(*running.address) as client:
        client.login("anyone", "pw")
        client.sendmail("a@example.com", ["b@example.com"], BODY)
        client.sendmail("a@example.com", ["c@example.com"], BODY)
    inbox.wait_for(2)
    assert len(seen.items) == 4
    assert all(item is token for item in seen.items)


def test_on_auth_returning_nothing_refuses(start_server) -> None:
    running = start_server(name=NAME, allow_insecure_auth=True, max_auth_failures=2,
                           on_auth=lambda auth, session: False if auth.username == "f" else None)
    invalid = "535 5.7.8 Error: authentication credentials invalid"
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("AUTH PLAIN " + b64("\0f\0pw")) == invalid
        assert client.one("AUTH PLAIN " + b64("\0n\0pw")) == invalid
        client.send("AUTH PLAIN " + b64("\0n\0pw") + "\r\n")
        assert client.replies(2) == [
            invalid, f"421 4.7.0 {NAME} Error: too many failed authentication attempts"]
        assert client.expect_closed() == b""


def test_xoauth2_error_challenge(start_server) -> None:
    error = {"status": "401", "schemes": "bearer", "scope": "https://mail.example.com/"}
    seen = Recorder()

    def on_auth(auth: Any, session: Any) -> User:
        seen.add((auth.mechanism, auth.username, auth.access_token))
        if auth.access_token == "good-token":
            return User(auth.username)
        raise SMTPError(535, "Invalid token", enhanced="5.7.8", challenge=error)

    running = start_server(name=NAME, auth_methods=["XOAUTH2"], allow_insecure_auth=True,
                           on_auth=on_auth)
    with RawClient(running.address) as client:
        assert "AUTH XOAUTH2" in client.ehlo()
        line = client.one("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer bad-token\x01\x01"))
        assert line.startswith("334 ")
        assert json.loads(base64.b64decode(line[4:])) == error
        assert client.one("") == "535 5.7.8 Invalid token"
        assert client.one("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer good-token\x01\x01")
                          ) == "235 2.7.0 Authentication successful"
    assert seen.items == [("XOAUTH2", "alice", "bad-token"), ("XOAUTH2", "alice", "good-token")]

    async def main() -> tuple[int, int]:
        smtp = aiosmtplib.SMTP(hostname=running.host, port=running.port, timeout=5,
                               start_tls=False)
        await smtp.connect()
        await smtp.ehlo()
        try:
            await smtp.auth_xoauth2("bob", "expired")
        except aiosmtplib.SMTPAuthenticationError as exc:
            refused = exc.code
        accepted = (await smtp.auth_xoauth2("bob", "good-token")).code
        await smtp.quit()
        return refused, accepted

    assert asyncio.run(main()) == (535, 235)


def test_xoauth2_without_on_auth(start_server) -> None:
    running = start_server(name=NAME, auth_methods=["XOAUTH2"], allow_insecure_auth=True)
    with RawClient(running.address) as client:
        client.ehlo()
        line = client.one("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer tok\x01\x01"))
        assert line.startswith("334 ")
        assert json.loads(base64.b64decode(line[4:])) == {"status": "401", "schemes": "bearer"}
        assert client.one("") == "535 5.7.8 Error: authentication not implemented"


def test_auth_refused_on_plain_text(start_server) -> None:
    attempts = Recorder()

    def on_auth(auth: Any, session: Any) -> User:
        attempts.add(auth.username)
        return User(auth.username)

    running = start_server(name=NAME, on_auth=on_auth)  # allow_insecure_auth=False
    with RawClient(running.address) as client:
        assert "AUTH PLAIN LOGIN" in client.ehlo()  # advertised, as smtp-server does
        assert client.one("AUTH PLAIN " + b64("\0alice\0s3cret")) == (
            "538 5.7.11 Error: must issue a STARTTLS command first")
        assert client.one("MAIL FROM:<a@example.com>") == (
            "530 5.7.0 Error: authentication required")
    with smtplib.SMTP(*running.address) as client, \
            pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        client.login("alice", "s3cret")
    assert refused.value.smtp_code == 538
    assert attempts.items == []


def test_allow_insecure_auth(start_server) -> None:
    running = start_server(name=NAME, allow_insecure_auth=True, on_auth=check_password)
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("MAIL FROM:<a@example.com>") == (
            "530 5.7.0 Error: authentication required")
        assert client.one("AUTH PLAIN " + b64("\0alice\0s3cret")) == (
            "235 2.7.0 Authentication successful")
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"
        assert client.one("AUTH PLAIN " + b64("\0bob\0hunter2")) == (
            "503 5.5.1 Error: no identity changes permitted")
        # Neither RSET nor a new EHLO forgets who the client is.
        assert client.one("RSET") == "250 2.0.0 Flushed"
        client.ehlo()
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"


def test_auth_required_message(start_server) -> None:
    running = start_server(name=NAME, auth_required_message="Log in first, please")
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("MAIL FROM:<a@example.com>") == "530 5.7.0 Log in first, please"
        assert client.one("RCPT TO:<b@example.com>") == "530 5.7.0 Log in first, please"
        assert client.one("DATA") == "530 5.7.0 Log in first, please"


def test_auth_optional(start_server, inbox: Inbox) -> None:
    seen = Recorder()

    def on_mail_from(address: Any, session: Any) -> None:
        seen.add((session.user, session.transmission_type))

    running = start_server(name=NAME, auth_optional=True, allow_insecure_auth=True,
                           on_auth=check_password, on_mail_from=on_mail_from,
                           on_data=inbox.on_data)
    with RawClient(running.address) as client:
        assert "AUTH PLAIN LOGIN" in client.ehlo()
        client.envelope()
        assert client.data(BODY) == QUEUED
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"
        assert client.one("AUTH PLAIN " + b64("\0alice\0s3cret")) == (
            "503 5.5.1 Error: AUTH not permitted during a mail transaction")
        assert client.one("RSET") == "250 2.0.0 Flushed"
        assert client.one("AUTH PLAIN " + b64("\0alice\0s3cret")) == (
            "235 2.7.0 Authentication successful")
        client.envelope()
    assert seen.items == [(None, "ESMTP"), (None, "ESMTP"), (User("alice"), "ESMTPA")]


# -- on_data -----------------------------------------------------------------------------------


def test_on_data_custom_reply(start_server) -> None:
    def on_data(stream: Any, session: Any) -> str:
        body = stream.read()
        return f"Queued as Q{len(body)}"

    running = start_server(name=NAME, auth_optional=True, on_data=on_data)
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope()
        assert client.data(BODY) == f"250 2.0.0 Queued as Q{len(BODY)}"
    with smtplib.SMTP(*running.address) as client:
        client.ehlo()
        client.mail("a@example.com")
        client.rcpt("b@example.com")
        assert client.data(b"x\r\n") == (250, b"2.0.0 Queued as Q3")


@pytest.mark.parametrize(("error", "expected"), [
    (SMTPError(554, "Message looks like spam", enhanced="5.7.1"),
     "554 5.7.1 Message looks like spam"),
    (SMTPError(554, "Rejected"), "554 5.6.0 Rejected"),
    (SMTPError(452, "Insufficient storage", enhanced="4.3.1"), "452 4.3.1 Insufficient storage"),
    (SMTPError(451, "Try again later"), "451 4.3.0 Try again later"),
])
def test_on_data_rejects(start_server, error: SMTPError, expected: str) -> None:
    def on_data(stream: Any, session: Any) -> None:
        stream.read()
        raise error

    running = start_server(name=NAME, auth_optional=True, on_data=on_data)
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope()
        assert client.data(BODY) == expected
        # The transaction is over either way.
        assert client.one("RCPT TO:<b@example.com>") == "503 5.5.1 Error: need MAIL command"


def test_on_data_that_does_not_read(start_server, inbox: Inbox) -> None:
    """A handler that decides without reading: the server still consumes the
    whole body before answering, and the body's lines are not commands."""
    def on_data(stream: Any, session: Any) -> str:
        if session.envelope.mail_from.address == "skip@example.com":
            raise SMTPError(550, "Not even looking", enhanced="5.7.1")
        return "Ignored"

    running = start_server(name=NAME, auth_optional=True, on_data=on_data)
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope("skip@example.com")
        assert client.data(b"QUIT\r\n" * 50_000) == "550 5.7.1 Not even looking"
        client.envelope("unread@example.com")
        assert client.data(b"RSET\r\n" * 50_000) == "250 2.0.0 Ignored"
        assert client.one("NOOP") == "250 2.0.0 OK"


def test_handler_text_cannot_inject_replies(start_server) -> None:
    def on_mail_from(address: Any, session: Any) -> None:
        raise SMTPError(550, "Refused\r\n250 2.1.0 Accepted", enhanced="5.7.1")

    def on_data(stream: Any, session: Any) -> str:
        stream.read()
        return "Queued\r\n550 5.0.0 fake\rdone"

    running = start_server(name=NAME, auth_optional=True, on_mail_from=on_mail_from,
                           on_data=on_data)
    with RawClient(running.address) as client:
        client.ehlo()
        # One reply (a multi-line one), every line carrying the real code.
        assert client.cmd("MAIL FROM:<a@example.com>") == [
            "550-5.7.1 Refused", "550 5.7.1 250 2.1.0 Accepted"]
    running2 = start_server(name=NAME, auth_optional=True, on_data=on_data)
    with RawClient(running2.address) as client:
        client.ehlo()
        client.envelope()
        assert client.one("DATA").startswith("354 ")
        client.send(BODY + b".\r\n")
        lines = client.reply()
        assert lines[0] == "250-2.0.0 Queued"
        assert all(line.startswith(("250-", "250 ")) for line in lines)
        assert client.one("NOOP") == "250 2.0.0 OK"


def test_handler_refusals_are_not_client_errors(start_server) -> None:
    def on_rcpt_to(address: Any, session: Any) -> None:
        raise SMTPError(550, "No such user", enhanced="5.1.1")

    running = start_server(name=NAME, auth_optional=True, max_invalid_commands=2,
                           on_rcpt_to=on_rcpt_to)
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("MAIL FROM:<a@example.com>") == "250 2.1.0 Accepted"
        for n in range(5):
            assert client.one(f"RCPT TO:<u{n}@example.com>") == "550 5.1.1 No such user"
        assert client.one("NOOP") == "250 2.0.0 OK"


def test_handler_421_closes_the_connection(start_server) -> None:
    def on_rcpt_to(address: Any, session: Any) -> None:
        raise SMTPError(421, "Too busy, come back later")

    running = start_server(name=NAME, auth_optional=True, on_rcpt_to=on_rcpt_to)
    with RawClient(running.address) as client:
        client.ehlo()
        client.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nNOOP\r\n")
        assert client.replies(2) == ["250 2.1.0 Accepted", "421 4.3.0 Too busy, come back later"]
        assert client.expect_closed() == b""


def test_on_auth_temporary_failure(start_server) -> None:
    def on_auth(auth: Any, session: Any) -> None:
        raise SMTPError(454, "Temporary authentication failure")

    running = start_server(name=NAME, allow_insecure_auth=True, on_auth=on_auth)
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("AUTH PLAIN " + b64("\0alice\0s3cret")) == (
            "454 4.7.0 Temporary authentication failure")
        assert client.one("NOOP") == "250 2.0.0 OK"


@pytest.mark.parametrize(("handler", "enhanced"), [
    ("on_mail_from", "4.7.1"),
    ("on_mail_from", "nonsense"),
    ("on_data", "2.0.0"),
    ("on_connect", "4.7.1"),
])
def test_handler_error_with_an_invalid_enhanced_code(backend: str, handler: str,
                                                      enhanced: str) -> None:
    refused = threading.Event()

    def refuse(*args: Any) -> None:
        if handler == "on_data":
            args[0].read()
        if not refused.is_set():  # only the first time
            refused.set()
            raise SMTPError(554 if handler == "on_connect" else 550, "Refused",
                            enhanced=enhanced)

    # The server runs inside the test: if it dies, that is this test's failure.
    with run_server(backend, name=NAME, auth_optional=True, **{handler: refuse}) as running:
        with RawClient(running.address, read_greeting=False) as client:
            if handler == "on_connect":
                # Whatever the enhanced code, the client hears a refusal.
                assert client.reply()[0][:4] in ("554 ", "451 ")
            else:
                assert client.reply()[0].startswith("220 ")
                client.ehlo()
                client.send("MAIL FROM:<a@example.com>\r\n")
                if handler == "on_data":
                    assert client.reply() == ["250 2.1.0 Accepted"]
                    assert client.one("RCPT TO:<b@example.com>") == "250 2.1.5 Accepted"
                    assert client.one("DATA").startswith("354 ")
                    client.send(BODY + b".\r\n")
                line = client.reply()[0]
                # The refusal (with a valid code of its class) or a 451.
                assert re.match(r"(550 5|554 5|451 4)\.\d+\.\d+ ", line), line
                assert client.one("NOOP") == "250 2.0.0 OK"
        # The server is still serving.
        with RawClient(running.address) as other:
            assert other.one("NOOP") == "250 2.0.0 OK"


def aborting_on_data(outcome: Recorder) -> Any:
    """An on_data that records how the message ended for it."""
    def on_data(stream: Any, session: Any) -> None:
        try:
            body = stream.read()
        except MessageAbortedError as exc:
            outcome.add(("aborted", exc.reason))
            raise
        outcome.add(("complete", body))

    return on_data


@pytest.mark.parametrize(("ending", "reason"), [
    (b"RSET\r\n", "reset"),
    (b"QUIT\r\n", "quit"),
    (b"EHLO again.example\r\n", "reset"),
])
def test_on_data_sees_an_abandoned_bdat_message(start_server, ending: bytes,
                                                reason: str) -> None:
    outcome = Recorder()
    closed = Recorder()
    running = start_server(name=NAME, auth_optional=True,
                           on_data=aborting_on_data(outcome), on_close=closed.add)
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope()
        client.send(b"BDAT 5\r\nhello")
        assert client.reply() == ["250 2.0.0 5 octets received"]
        client.send(ending)
        assert client.reply()[0][:4] in ("250-", "250 ", "221 ")
    assert outcome.wait_for(1) == [("aborted", reason)]
    closed.wait_for(1)
    assert outcome.items == [("aborted", reason)]


def test_on_data_sees_the_client_vanish(start_server) -> None:
    outcome = Recorder()
    closed = Recorder()
    running = start_server(name=NAME, auth_optional=True,
                           on_data=aborting_on_data(outcome), on_close=closed.add)
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope()
        assert client.one("DATA").startswith("354 ")
        client.send(b"Subject: never finished\r\n\r\n" + b"x" * 100_000)
    assert outcome.wait_for(1) == [("aborted", "connection_lost")]
    assert len(closed.wait_for(1)) == 1


# -- a handler that breaks -----------------------------------------------------------------------

BROKEN = ["on_connect", "on_auth", "on_mail_from", "on_rcpt_to", "on_data"]


@pytest.mark.parametrize("broken", BROKEN)
def test_handler_exception_is_451_and_logged(start_server, inbox: Inbox, caplog,
                                             backend: str, broken: str) -> None:
    raised = threading.Event()

    def maybe_fail() -> None:
        if not raised.is_set():
            raised.set()
            raise RuntimeError(f"boom in {broken}")

    handlers: dict[str, Any] = {
        "on_connect": lambda session: None,
        "on_auth": check_password,
        "on_mail_from": lambda address, session: None,
        "on_rcpt_to": lambda address, session: None,
        "on_data": inbox.on_data,
    }
    original = handlers[broken]

    def failing(*args: Any) -> Any:
        maybe_fail()
        return original(*args)

    handlers[broken] = failing
    running = start_server(name=NAME, auth_optional=True, allow_insecure_auth=True,
                           **handlers)
    caplog.set_level(logging.ERROR, logger=logger_name(backend))
    with RawClient(running.address, read_greeting=False) as client:
        if broken == "on_connect":
            assert client.reply() == [f"451 4.3.0 {NAME} Error: local error in processing"]
            assert client.expect_closed() == b""
        else:
            assert client.reply()[0].startswith("220 ")
            client.ehlo()
            steps = [
                ("on_auth", "AUTH PLAIN " + b64("\0alice\0s3cret")),
                ("on_mail_from", "MAIL FROM:<a@example.com>"),
                ("on_rcpt_to", "RCPT TO:<b@example.com>"),
            ]
            for name, command in steps:
                line = client.one(command)
                if name == broken:
                    assert line == INTERNAL
                    line = client.one(command)  # the same connection goes on
                assert line.startswith(("235 ", "250 ")), line
            if broken == "on_data":
                assert client.data(BODY) == INTERNAL
            assert raised.is_set()
            assert client.one("NOOP") == "250 2.0.0 OK"
    errors = [r for r in caplog.records
              if r.name == logger_name(backend) and r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    [record] = errors
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert str(record.exc_info[1]) == f"boom in {broken}"
    assert "Traceback" in caplog.text
    assert f"boom in {broken}" in caplog.text
    # The server keeps serving: the next message goes through.
    with smtplib.SMTP(*running.address) as client:
        client.login("alice", "s3cret")
        assert client.sendmail("a@example.com", ["b@example.com"], BODY) == {}
    [message] = inbox.wait_for(1)
    assert message.body == BODY


def test_on_close_exception_is_logged(start_server, caplog, backend: str) -> None:
    closed = threading.Event()

    def on_close(session: Any) -> None:
        closed.set()
        raise RuntimeError("boom in on_close")

    running = start_server(name=NAME, auth_optional=True, on_close=on_close)
    caplog.set_level(logging.ERROR, logger=logger_name(backend))
    with RawClient(running.address) as client:
        assert client.one("QUIT") == "221 2.0.0 Bye"
        assert client.expect_closed() == b""
    assert closed.wait(5)
    with RawClient(running.address) as client:  # still serving
        assert client.one("NOOP") == "250 2.0.0 OK"
    assert any(r.exc_info and str(r.exc_info[1]) == "boom in on_close" for r in caplog.records)


# -- on_close ---------------------------------------------------------------------------------


def test_on_close_called_once_per_connection(backend: str) -> None:
    connected = Recorder()
    closed = Recorder()
    count = iter(range(100))

    def on_connect(session: Any) -> None:
        connected.add(session)
        if next(count) == 3:
            raise SMTPError(554, "Fourth one refused")

    with run_server(backend, name=NAME, auth_optional=True, on_connect=on_connect,
                    on_close=closed.add) as running:
        with smtplib.SMTP(*running.address) as client:  # polite QUIT
            client.noop()
        with RawClient(running.address) as client:  # drops mid-transaction
            client.ehlo()
            client.envelope()
        with RawClient(running.address) as client:  # drops inside DATA
            client.ehlo()
            client.envelope()
            assert client.one("DATA").startswith("354 ")
            client.send(b"Subject: cut\r\n")
        with RawClient(running.address, read_greeting=False) as client:  # refused
            assert client.reply()[0].startswith("554 ")
            assert client.expect_closed() == b""
        closed.wait_for(4)
        # An idle client still connected when the server closes.
        idle = RawClient(running.address)
    try:
        assert idle.expect_closed().startswith(b"421 ")
    finally:
        idle.close()
    assert len(closed.items) == 5
    assert len(connected.items) == 5
    # The very session objects on_connect saw, each exactly once.
    assert {id(s) for s in closed.items} == {id(s) for s in connected.items}
    assert len({s.id for s in closed.items}) == 5


# -- session fields ---------------------------------------------------------------------------


def snapshot(session: Any) -> dict[str, Any]:
    envelope = session.envelope
    return {
        "id": session.id,
        "remote_address": session.remote_address,
        "remote_port": session.remote_port,
        "local_address": session.local_address,
        "local_port": session.local_port,
        "client_hostname": session.client_hostname,
        "host_name_appears_as": session.host_name_appears_as,
        "opening_command": session.opening_command,
        "transmission_type": session.transmission_type,
        "secure": session.secure,
        "user": session.user,
        "transaction": session.transaction,
        "mail_from": envelope.mail_from.address if envelope.mail_from else None,
        "rcpt_to": [r.address for r in envelope.rcpt_to],
        "body_type": envelope.body_type,
        "smtputf8": envelope.smtputf8,
    }


def recording_handlers(seen: Recorder) -> dict[str, Any]:
    def on_data(stream: Any, session: Any) -> None:
        stream.read()
        seen.add(("data", snapshot(session)))

    return {
        "on_connect": lambda session: seen.add(("connect", snapshot(session))),
        "on_mail_from": lambda address, session: seen.add(("mail", snapshot(session))),
        "on_rcpt_to": lambda address, session: seen.add(("rcpt", snapshot(session))),
        "on_data": on_data,
    }


def test_session_fields_in_handlers(start_server) -> None:
    seen = Recorder()
    running = start_server(name=NAME, auth_optional=True, **recording_handlers(seen))
    body8 = b"Subject: 8bit\r\n\r\n\xc3\xa9\r\n"
    with smtplib.SMTP(*running.address, local_hostname="client.example") as client:
        client_port = client.sock.getsockname()[1]
        client.sendmail("a@example.com", ["b@example.com", "c@example.com"], BODY)
        client.sendmail("jörg@example.com", ["d@example.com"], body8,
                        mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    items = list(seen.items)
    assert [where for where, _ in items] == [
        "connect", "mail", "rcpt", "rcpt", "data", "mail", "rcpt", "data"]
    snaps = [snap for _, snap in items]
    assert re.fullmatch(r"[0-9a-f]{16}", snaps[0]["id"])
    common = {
        "id": snaps[0]["id"],
        "remote_address": "127.0.0.1",
        "remote_port": client_port,
        "local_address": "127.0.0.1",
        "local_port": running.port,
        "client_hostname": "[127.0.0.1]",
        "secure": False,
        "user": None,
    }
    greeted = {**common, "host_name_appears_as": "client.example", "opening_command": "EHLO",
               "transmission_type": "ESMTP"}
    plain = {"body_type": "7bit", "smtputf8": False}
    assert snaps == [
        {**common, "host_name_appears_as": None, "opening_command": None,
         "transmission_type": "SMTP", "transaction": 1, "mail_from": None, "rcpt_to": [],
         **plain},
        {**greeted, "transaction": 1, "mail_from": None, "rcpt_to": [], **plain},
        {**greeted, "transaction": 1, "mail_from": "a@example.com", "rcpt_to": [], **plain},
        {**greeted, "transaction": 1, "mail_from": "a@example.com",
         "rcpt_to": ["b@example.com"], **plain},
        {**greeted, "transaction": 1, "mail_from": "a@example.com",
         "rcpt_to": ["b@example.com", "c@example.com"], **plain},
        {**greeted, "transaction": 2, "mail_from": None, "rcpt_to": [], **plain},
        # RFC 6531 section 3.7.3: an SMTPUTF8 transaction is "UTF8SMTP".
        {**greeted, "transaction": 2, "mail_from": "jörg@example.com", "rcpt_to": [],
         "body_type": "8bitmime", "smtputf8": True, "transmission_type": "UTF8SMTP"},
        {**greeted, "transaction": 2, "mail_from": "jörg@example.com",
         "rcpt_to": ["d@example.com"], "body_type": "8bitmime", "smtputf8": True,
         "transmission_type": "UTF8SMTP"},
    ]
    with smtplib.SMTP(*running.address) as client:
        client.sendmail("a@example.com", ["b@example.com"], BODY)
    later = [snap for _, snap in seen.items[len(items):]]
    assert later[0]["id"] != snaps[0]["id"]
    assert later[-1]["transaction"] == 1


def test_session_after_helo(start_server) -> None:
    seen = Recorder()
    running = start_server(name=NAME, auth_optional=True, **recording_handlers(seen))
    with smtplib.SMTP(*running.address, local_hostname="old.example") as client:
        client.helo("old.example")
        client.sendmail("a@example.com", ["b@example.com"], BODY)
        # A new greeting is an implicit RSET and changes the session's view.
        client.helo("new.example")
        client.mail("c@example.com")
    snaps = [snap for _, snap in seen.items]
    assert [(s["opening_command"], s["host_name_appears_as"], s["transmission_type"])
            for s in snaps[1:]] == [("HELO", "old.example", "SMTP")] * 3 + [
                ("HELO", "new.example", "SMTP")]
    assert snaps[-1]["transaction"] == 2


# -- subclassing ------------------------------------------------------------------------------


@contextlib.contextmanager
def run_subclass(backend: str, cls: type, **options: Any) -> Iterator[Any]:
    """Like ``harness.run_server``, for a server class of the test's own."""
    options.setdefault("disable_reverse_lookup", True)
    options.setdefault("name", NAME)
    with controller(backend, server=cls(**options)) as running:
        yield running.server


def make_subclass(backend: str) -> type:
    """A server whose handlers are methods: coroutines on the anyio
    backends, plain methods on the threaded one."""
    if backend == "sync":
        from smtp_sync import SMTPServer as SyncServer

        class ThreadedServer(SyncServer):
            def __init__(self, **options: Any) -> None:
                super().__init__(**options)
                self.events = Recorder()

            def on_connect(self, session: Any) -> None:
                self.events.add("connect")

            def on_auth(self, auth: Any, session: Any) -> object:
                return check_password(auth)

            def on_mail_from(self, address: Any, session: Any) -> None:
                if address.address.startswith("blocked"):
                    raise SMTPError(550, "Blocked sender", enhanced="5.7.1")
                self.events.add(("mail", session.user))

            def on_rcpt_to(self, address: Any, session: Any) -> None:
                if address.address.startswith("nobody"):
                    raise SMTPError(550, "No such user")

            def on_data(self, stream: Any, session: Any) -> str:
                body = stream.read()
                self.events.add(("data", [r.address for r in session.envelope.rcpt_to], body))
                return "Stored by subclass"

            def on_close(self, session: Any) -> None:
                self.events.add("close")

        return ThreadedServer

    from smtp_anyio import SMTPServer

    class AsyncServer(SMTPServer):
        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            self.events = Recorder()

        async def on_connect(self, session: Any) -> None:
            self.events.add("connect")

        async def on_auth(self, auth: Any, session: Any) -> object:
            return check_password(auth)

        async def on_mail_from(self, address: Any, session: Any) -> None:
            if address.address.startswith("blocked"):
                raise SMTPError(550, "Blocked sender", enhanced="5.7.1")
            self.events.add(("mail", session.user))

        async def on_rcpt_to(self, address: Any, session: Any) -> None:
            if address.address.startswith("nobody"):
                raise SMTPError(550, "No such user")

        async def on_data(self, stream: Any, session: Any) -> str:
            body = b"".join([chunk async for chunk in stream])
            self.events.add(("data", [r.address for r in session.envelope.rcpt_to], body))
            return "Stored by subclass"

        async def on_close(self, session: Any) -> None:
            self.events.add("close")

    return AsyncServer


def test_subclass_handlers(backend: str) -> None:
    cls = make_subclass(backend)
    with run_subclass(backend, cls, allow_insecure_auth=True) as server:
        port = server.addresses[0][1]
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.login("alice", "s3cret")
            assert client.mail("blocked@example.com") == (550, b"5.7.1 Blocked sender")
            assert client.mail("alice@example.com") == (250, b"2.1.0 Accepted")
            assert client.rcpt("nobody@example.com") == (550, b"5.1.1 No such user")
            assert client.rcpt("b@example.com") == (250, b"2.1.5 Accepted")
            assert client.data(BODY) == (250, b"2.0.0 Stored by subclass")
        events = server.events.wait_for(4)
    assert events == ["connect", ("mail", User("alice")),
                      ("data", ["b@example.com"], BODY), "close"]


def test_keyword_handler_wins_over_method(backend: str) -> None:
    cls = make_subclass(backend)

    def on_data(stream: Any, session: Any) -> str:
        stream.read()
        return "Stored by keyword"

    with run_subclass(backend, cls, auth_optional=True, on_data=on_data) as server:
        port = server.addresses[0][1]
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.ehlo()
            assert client.mail("blocked@example.com")[0] == 550  # still the method
            client.mail("a@example.com")
            client.rcpt("b@example.com")
            assert client.data(BODY) == (250, b"2.0.0 Stored by keyword")


def test_subclass_with_a_plain_on_data_method(async_backend: str) -> None:
    """On the anyio backends a plain ``on_data`` method runs in a worker
    thread and reads a blocking, file-like stream."""
    from smtp_anyio import SMTPServer

    seen = Recorder()
    loop_thread: list[int] = []

    class BlockingReader(SMTPServer):
        async def on_connect(self, session: Any) -> None:
            loop_thread.append(threading.get_ident())

        def on_data(self, stream: Any, session: Any) -> str:
            first = stream.readline()
            rest = stream.read()
            seen.add((first, rest, threading.get_ident() not in loop_thread))
            return "Read in a thread"

    with run_subclass(async_backend, BlockingReader, auth_optional=True) as server:
        port = server.addresses[0][1]
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.ehlo()
            client.mail("a@example.com")
            client.rcpt("b@example.com")
            assert client.data(BODY) == (250, b"2.0.0 Read in a thread")
    assert seen.items == [(b"Subject: test\r\n", b"\r\nHello.\r\n", True)]
