"""TLS in tests: a throw-away CA from trustme issues the server's
certificate, and the client trusts that CA only."""

from __future__ import annotations

import smtplib
import ssl
from typing import Any

import pytest
import trustme

from smtp_anyio.testing import ServerFixture


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def smtp_server_options(ca: trustme.CA) -> dict[str, Any]:
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    return {
        "key": leaf.private_key_pem.bytes(),
        "cert": b"".join(pem.bytes() for pem in leaf.cert_chain_pems),
        "needs_upgrade": True,  # nothing before STARTTLS
    }


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_starttls(smtp_server: ServerFixture, client_context: ssl.SSLContext) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.starttls(context=client_context)
        client.sendmail("alice@example.org", ["bob@example.com"], b"Subject: hi\r\n\r\nhi\r\n")
    [message] = smtp_server.messages
    assert message.tls is not None and message.tls.version in ("TLSv1.2", "TLSv1.3")


def test_no_mail_before_starttls(smtp_server: ServerFixture) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client, \
            pytest.raises(smtplib.SMTPSenderRefused):
        client.sendmail("alice@example.org", ["bob@example.com"], b"Subject: hi\r\n\r\nhi\r\n")


@pytest.mark.smtp_server(secure=True)  # implicit TLS, port 465 style
def test_implicit_tls(smtp_server: ServerFixture, client_context: ssl.SSLContext) -> None:
    with smtplib.SMTP_SSL(smtp_server.host, smtp_server.port, context=client_context) as client:
        client.sendmail("alice@example.org", ["bob@example.com"], b"Subject: hi\r\n\r\nhi\r\n")
    assert smtp_server.messages[0].tls is not None
