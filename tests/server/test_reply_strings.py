"""aiosmtpd's handlers answer with a reply string (``"550 not relaying to
that domain"``); a handler ported mechanically does the same. Such a string
is honoured as that reply, never taken as the text of an acceptance (which
would make ``250 2.1.5 550 not relaying...``: an open relay). A plain text
stays the text of the default reply, as in smtp-server."""

from __future__ import annotations

import smtplib
from typing import Any

import pytest

from .raw_smtp import RawClient, b64


def _serve(start_server: Any, **handlers: Any) -> Any:
    return start_server(name="mx.example", auth_optional=True, allow_insecure_auth=True,
                        **handlers)


@pytest.mark.parametrize(("returned", "expected"), [
    ("550 not relaying to that domain", "550 5.1.1 not relaying to that domain"),
    ("550 5.7.1 Relaying denied", "550 5.7.1 Relaying denied"),
    ("451 4.3.0 try later", "451 4.3.0 try later"),
    ("250 OK", "250 2.1.5 OK"),
    ("250 2.1.5 Recipient ok", "250 2.1.5 Recipient ok"),
    ("Recipient ok", "250 2.1.5 Recipient ok"),  # plain text: smtp-server's reading
    ("550", "550 5.1.1 Error 550"),
])
def test_on_rcpt_to_reply_strings(start_server: Any, returned: str, expected: str) -> None:
    running = _serve(start_server, on_rcpt_to=lambda address, session: returned)
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.one("MAIL FROM:<a@example.org>").startswith("250 ")
        assert client.one("RCPT TO:<b@elsewhere.example>") == expected


def test_on_mail_from_refusal_string(start_server: Any) -> None:
    running = _serve(start_server, on_mail_from=lambda a, s: "553 5.7.1 Sender refused")
    with smtplib.SMTP(*running.address, timeout=10) as client:
        client.ehlo()
        assert client.mail("a@example.org") == (553, b"5.7.1 Sender refused")


def test_on_auth_refusal_string_is_no_login(start_server: Any) -> None:
    running = _serve(start_server, on_auth=lambda auth, session: "535 5.7.8 Bad credentials",
                     client_limit_exceptions=["192.0.2.0/24"])
    with RawClient(running.address) as client:
        client.ehlo()
        reply = client.one("AUTH PLAIN " + b64("\0alice\0wrong"))
        assert reply == "535 5.7.8 Bad credentials"
        # Not logged in: a second AUTH is allowed (it would be 503 after a login).
        assert client.one("AUTH PLAIN " + b64("\0alice\0wrong")).startswith("535 ")


def test_on_data_reply_strings(start_server: Any) -> None:
    def on_data(stream: Any, session: Any) -> str:
        body = stream.read()
        return "554 5.6.0 Content refused" if b"spam" in body else "250 Message accepted"

    running = _serve(start_server, on_data=on_data)
    with smtplib.SMTP(*running.address, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@example.org", ["b@example.com"], b"Subject: spam\r\n\r\nx\r\n")
        assert refused.value.smtp_code == 554
        assert refused.value.smtp_error == b"5.6.0 Content refused"
        client.sendmail("a@example.org", ["b@example.com"], b"Subject: ham\r\n\r\nx\r\n")
        assert client.noop()[0] == 250


def test_lmtp_reply_strings_per_recipient(start_server: Any) -> None:
    def on_data(stream: Any, session: Any) -> list[str]:
        stream.read()
        return ["250 2.0.0 delivered", "552 5.2.2 Mailbox full"]

    running = _serve(start_server, on_data=on_data, lmtp=True)
    with RawClient(running.address) as client:
        assert client.cmd("LHLO client.example")[-1].startswith("250 ")
        client.envelope("a@example.org", "one@example.com", "two@example.com")
        client.send("DATA\r\n")
        assert client.reply()[0].startswith("354")
        client.send("Subject: x\r\n\r\nbody\r\n.\r\n")
        assert client.replies(2) == ["250 2.0.0 delivered", "552 5.2.2 Mailbox full"]
