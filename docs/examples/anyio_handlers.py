"""Every handler, as methods of a subclass: an inbound server that accepts
mail for a few mailboxes and keeps it in memory."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from smtp_anyio import MailFrom, MessageStream, RcptTo, Session, SMTPError, SMTPServer, TLSInfo


@dataclass
class Stored:
    queue_id: str
    sender: str
    recipients: list[str]
    body: bytes


class InboundServer(SMTPServer):
    def __init__(
        self, mailboxes: Iterable[str], blocked: Iterable[str] = (), **options: Any
    ) -> None:
        super().__init__(auth_methods=(), **options)
        self.mailboxes = {address.lower() for address in mailboxes}
        self.blocked = [ipaddress.ip_network(network) for network in blocked]
        self.stored: list[Stored] = []

    async def on_connect(self, session: Session) -> None:
        address = ipaddress.ip_address(session.remote_address or "0.0.0.0")
        if any(address in network for network in self.blocked):
            raise SMTPError(554, "Error: your network is blocked", enhanced="5.7.1")

    async def on_secure(self, tls: TLSInfo, session: Session) -> None:
        print(f"[{session.id}] {tls.version} {tls.cipher}", flush=True)

    async def on_mail_from(self, address: MailFrom, session: Session) -> None:
        if address.address.lower().endswith("@spam.example"):
            raise SMTPError(550, "Error: sender refused", enhanced="5.7.1")

    async def on_rcpt_to(self, address: RcptTo, session: Session) -> str | None:
        if address.address.lower() not in self.mailboxes:
            raise SMTPError(550, "Error: no such mailbox here", enhanced="5.1.1")
        return f"OK: <{address.address}> is local"

    async def on_data(self, stream: MessageStream, session: Session) -> str:
        body = await stream.read()
        envelope = session.envelope
        queue_id = secrets.token_hex(5)
        self.stored.append(Stored(
            queue_id,
            envelope.mail_from.address if envelope.mail_from else "",
            [rcpt.address for rcpt in envelope.rcpt_to],
            body,
        ))
        return f"OK: queued as {queue_id}"

    async def on_close(self, session: Session) -> None:
        print(f"[{session.id}] closed after {session.transaction - 1} transaction(s)",
              flush=True)
