"""Tests of the shop's mail, with the ``smtp_server`` fixture: a server that
accepts and records every message, started for each test."""

from __future__ import annotations

import smtplib

import pytest
from testing_app import send_welcome, send_welcome_later

from smtp_anyio import RcptTo, Session, SMTPError
from smtp_anyio.testing import ServerFixture


def test_signup_mails_a_welcome(smtp_server: ServerFixture) -> None:
    send_welcome("bob@example.com", smtp=smtp_server.address)

    [message] = smtp_server.messages
    assert message.mail_from == "shop@shop.example"
    assert message.rcpt_to == ("bob@example.com",)
    assert message.as_email()["Subject"] == "Welcome to the shop"


def test_a_welcome_sent_in_the_background(smtp_server: ServerFixture) -> None:
    worker = send_welcome_later("bob@example.com", smtp=smtp_server.address)

    [message] = smtp_server.wait_for(1)  # blocks until it has arrived
    assert message.rcpt_to == ("bob@example.com",)
    worker.join()  # and the client has said QUIT before the server stops


async def no_such_user(address: RcptTo, session: Session) -> None:
    raise SMTPError(550, "No such user here", enhanced="5.1.1")


@pytest.mark.smtp_server(on_rcpt_to=no_such_user)
def test_a_refused_address_is_an_error(smtp_server: ServerFixture) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send_welcome("nobody@example.com", smtp=smtp_server.address)
    assert smtp_server.messages == []


@pytest.mark.smtp_server(size=100, backend="trio")
def test_a_server_that_takes_small_messages_only(smtp_server: ServerFixture) -> None:
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send_welcome("bob@example.com", smtp=smtp_server.address)
    assert refused.value.smtp_code == 552
