"""An LMTP server that delivers into one Maildir per user, with a quota:
each recipient gets its own reply after the message."""

from __future__ import annotations

import mailbox
from pathlib import Path
from typing import Any

import anyio

from smtp_anyio import MessageStream, RcptTo, Session, SMTPError, SMTPServer


class DeliveryServer(SMTPServer):
    def __init__(self, root: Path, quota: int, **options: Any) -> None:
        super().__init__(lmtp=True, auth_methods=(), **options)
        self.root = root
        self.quota = quota

    def mailbox_of(self, address: str) -> Path:
        return self.root / address.partition("@")[0].lower()

    def usage(self, folder: Path) -> int:
        return sum(f.stat().st_size for sub in ("new", "cur") for f in (folder / sub).iterdir())

    async def on_rcpt_to(self, address: RcptTo, session: Session) -> None:
        if not self.mailbox_of(address.address).is_dir():
            raise SMTPError(550, "Error: no such user", enhanced="5.1.1")

    def deliver(self, folder: Path, message: bytes) -> str | SMTPError:
        if self.usage(folder) + len(message) > self.quota:
            return SMTPError(452, f"Error: mailbox {folder.name} is full", enhanced="4.2.2")
        key = mailbox.Maildir(folder, factory=None, create=False).add(message)
        return f"OK: delivered to {folder.name} as {key}"

    async def on_data(self, stream: MessageStream, session: Session) -> list[str | SMTPError]:
        message = await stream.read()
        results: list[str | SMTPError] = []
        for rcpt in session.envelope.rcpt_to:  # one result per recipient, in order
            folder = self.mailbox_of(rcpt.address)
            results.append(await anyio.to_thread.run_sync(self.deliver, folder, message))
        return results
