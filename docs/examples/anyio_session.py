"""What the session tells you: a Received: trace header, and a queue record
that keeps the DSN parameters for the bounces to come."""

from __future__ import annotations

import json
from typing import Any

from smtp_anyio import MessageStream, Session, SMTPServer, received_header


def queue_record(session: Session) -> dict[str, Any]:
    """The envelope as JSON-able data, DSN parameters included."""
    envelope = session.envelope
    assert envelope.mail_from is not None
    return {
        "sender": envelope.mail_from.address,
        "body": envelope.body_type,  # "7bit", "8bitmime" or "binarymime"
        "smtputf8": envelope.smtputf8,
        "dsn": envelope.dsn,  # {"ret": "FULL" | "HDRS" | None, "envid": str | None}
        "recipients": [
            {"address": rcpt.address, "notify": rcpt.notify, "orcpt": rcpt.orcpt}
            for rcpt in envelope.rcpt_to
        ],
        "client": {"address": session.remote_address, "helo": session.host_name_appears_as,
                   "user": session.user, "protocol": session.transmission_type},
    }


class TracingServer(SMTPServer):
    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name=name, **options)
        self.name = name
        self.queue: list[tuple[str, bytes]] = []  # (JSON record, message)

    async def on_data(self, stream: MessageStream, session: Session) -> None:
        # The trace header (RFC 5321 section 4.4). What the client said is
        # checked and escaped by received_header: it cannot add a line.
        header = received_header(session, by=self.name)
        message = header.encode("utf-8") + await stream.read()
        self.queue.append((json.dumps(queue_record(session)), message))
