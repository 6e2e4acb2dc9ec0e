"""The threaded server's helpers: the same Controller, MessageLog and
fixture (``smtp_sync_server``), with plain-function handlers."""

from __future__ import annotations

import smtplib

import pytest
from testing_app import send_welcome

from smtp_sync import RcptTo, Session, SMTPError
from smtp_sync.testing import Controller, MessageLog, ServerFixture


def only_bob(address: RcptTo, session: Session) -> None:
    if address.address != "bob@example.com":
        raise SMTPError(550, "No such user here", enhanced="5.1.1")


def test_a_threaded_server_in_a_controller() -> None:
    log = MessageLog()
    with Controller(on_rcpt_to=only_bob, on_data=log, auth_optional=True) as controller:
        send_welcome("bob@example.com", smtp=controller.address)
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            send_welcome("eve@example.com", smtp=controller.address)
    assert [m.rcpt_to for m in log.messages] == [("bob@example.com",)]


@pytest.mark.smtp_sync_server(on_rcpt_to=only_bob)
def test_with_the_threaded_fixture(smtp_sync_server: ServerFixture) -> None:
    send_welcome("bob@example.com", smtp=smtp_sync_server.address)
    assert smtp_sync_server.messages[0].as_email()["To"] == "bob@example.com"
