"""The basic round trip on every backend: a message in, byte-identical out."""

from __future__ import annotations

import smtplib

from .conftest import Inbox, TLSMaterial


def test_message_round_trip(start_server, inbox: Inbox) -> None:
    running = start_server(on_data=inbox.on_data, auth_optional=True)
    body = b"Subject: hi\r\n\r\n.leading dot\r\nline two\r\n"
    with smtplib.SMTP(*running.address) as client:
        refused = client.sendmail("a@example.com", ["b@example.com"], body)
    assert refused == {}
    [message] = inbox.wait_for(1)
    assert message.body == body
    assert message.sender == "a@example.com"
    assert message.recipients == ["b@example.com"]


def test_starttls_round_trip(start_server, inbox: Inbox, tls: TLSMaterial) -> None:
    running = start_server(on_data=inbox.on_data, auth_optional=True, **tls.server_options)
    with smtplib.SMTP("localhost", running.port) as client:
        client.starttls(context=tls.client_context())
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: tls\r\n\r\nsecret\r\n")
    [message] = inbox.wait_for(1)
    assert message.body == b"Subject: tls\r\n\r\nsecret\r\n"
