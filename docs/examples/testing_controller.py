"""Testing a server of one's own: its handlers run in a Controller, and a
real client talks to it."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator

import pytest

from smtp_anyio import MessageStream, RcptTo, Session, SMTPError, SMTPServer
from smtp_anyio.testing import Controller, MessageLog

MAILBOXES = {"bob@example.com", "carol@example.com"}


class Mailroom(SMTPServer):
    """The application's server: known mailboxes only, nothing executable;
    ``store`` keeps what it accepts (a mail store in production)."""

    def __init__(self, store: Callable[[bytes, Session], object]) -> None:
        super().__init__(auth_optional=True)
        self.store = store

    async def on_rcpt_to(self, address: RcptTo, session: Session) -> None:
        if address.address not in MAILBOXES:
            raise SMTPError(550, "No such user here", enhanced="5.1.1")

    async def on_data(self, stream: MessageStream, session: Session) -> None:
        data = await stream.read()
        if b"\r\nContent-Type: application/x-msdownload" in data:
            raise SMTPError(554, "Executables are refused", enhanced="5.7.1")
        self.store(data, session)


@pytest.fixture
def log() -> MessageLog:
    return MessageLog()


@pytest.fixture(params=["asyncio", "trio"])
def mailroom(request: pytest.FixtureRequest, log: MessageLog) -> Iterator[Controller]:
    # MessageLog.record(data, session) is the store: what is accepted is logged.
    with Controller(server=Mailroom(store=log.record), backend=request.param) as controller:
        yield controller


def test_unknown_recipients_are_refused(mailroom: Controller, log: MessageLog) -> None:
    with smtplib.SMTP(mailroom.host, mailroom.port) as client:
        refused = client.sendmail("alice@example.org", ["bob@example.com", "eve@example.com"],
                                  b"Subject: hi\r\n\r\nhello\r\n")
    assert refused == {"eve@example.com": (550, b"5.1.1 No such user here")}
    [message] = log.messages
    assert message.rcpt_to == ("bob@example.com",)


def test_executables_are_refused(mailroom: Controller, log: MessageLog) -> None:
    body = b"Subject: invoice\r\nContent-Type: application/x-msdownload\r\n\r\nMZ\r\n"
    with smtplib.SMTP(mailroom.host, mailroom.port) as client, \
            pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("alice@example.org", ["bob@example.com"], body)
    assert refused.value.smtp_code == 554
    assert log.messages == []


def test_without_a_fixture() -> None:
    log = MessageLog()
    controller = Controller(on_data=log, auth_optional=True, size=1_000_000)
    host, port = controller.start()  # returns once the server listens
    try:
        with smtplib.SMTP(host, port) as client:
            client.sendmail("alice@example.org", ["bob@example.com"], b"Subject: hi\r\n\r\nhi\r\n")
    finally:
        controller.stop()  # closes gracefully; a message in flight finishes
    assert log.messages[0].data == b"Subject: hi\r\n\r\nhi\r\n"
