"""An aiosmtpd test ported (the original is on the testing page)."""

from __future__ import annotations

import smtplib

from smtp_anyio import RcptTo, Session, SMTPError
from smtp_anyio.testing import Controller, MessageLog


async def on_rcpt_to(address: RcptTo, session: Session) -> None:
    if not address.address.endswith("@example.com"):
        raise SMTPError(550, "not relaying to that domain")


def test_relaying() -> None:
    log = MessageLog()
    controller = Controller(on_rcpt_to=on_rcpt_to, on_data=log, auth_methods=())
    controller.start()
    try:
        with smtplib.SMTP(controller.host, controller.port) as client:
            refused = client.sendmail("a@example.org", ["b@example.com", "c@elsewhere.org"],
                                      "Subject: hi\r\n\r\nhello\r\n")
    finally:
        controller.stop()
    # The server adds the enhanced status code (RFC 3463) to the text.
    assert refused == {"c@elsewhere.org": (550, b"5.1.1 not relaying to that domain")}
    [message] = log.messages
    assert message.mail_from == "a@example.org"
    assert message.rcpt_to == ("b@example.com",)
    assert message.data == b"Subject: hi\r\n\r\nhello\r\n"
