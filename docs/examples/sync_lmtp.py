"""A threaded LMTP server that delivers into one Maildir per user, with a
quota: each recipient gets its own reply after the message.

Deliveries for the same mailbox may run in several client threads at once;
a lock per mailbox makes "check the quota, then add" one step.

    python docs/examples/sync_lmtp.py --port 2424 --root mail --quota 1000000
"""

from __future__ import annotations

import argparse
import mailbox
import threading
from pathlib import Path
from typing import Any

from smtp_sync import MessageStream, RcptTo, Session, SMTPError, SMTPServer


class MailboxLocks:
    """One lock per mailbox name, made on first use."""

    def __init__(self) -> None:
        self._guard = threading.Lock()  # protects the dict itself
        self._locks: dict[str, threading.Lock] = {}

    def __getitem__(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())


class LocalDelivery(SMTPServer):
    def __init__(self, root: Path, quota: int, **options: Any) -> None:
        super().__init__(lmtp=True, auth_methods=(), **options)
        self.root = root
        self.quota = quota
        self.locks = MailboxLocks()

    def folder(self, address: str) -> Path:
        return self.root / address.partition("@")[0].lower()

    def on_rcpt_to(self, address: RcptTo, session: Session) -> None:
        if not self.folder(address.address).is_dir():
            raise SMTPError(550, "Error: no such user", enhanced="5.1.1")

    def deliver(self, folder: Path, message: bytes) -> str | SMTPError:
        with self.locks[folder.name]:
            used = sum(f.stat().st_size for sub in ("new", "cur") for f in (folder / sub).iterdir())
            if used + len(message) > self.quota:
                return SMTPError(452, f"Error: mailbox {folder.name} is full", enhanced="4.2.2")
            key = mailbox.Maildir(folder, factory=None, create=False).add(message)
        return f"OK: delivered to {folder.name} as {key}"

    def on_data(self, stream: MessageStream, session: Session) -> list[str | SMTPError]:
        message = stream.read()
        # One result per accepted recipient, in order: a text (250), an
        # SMTPError instance (its reply), or None (250 with the default text).
        return [self.deliver(self.folder(rcpt.address), message)
                for rcpt in session.envelope.rcpt_to]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="LMTP delivery into Maildirs.")
    parser.add_argument("--port", type=int, default=2424, help="0 picks a free port")
    parser.add_argument("--root", type=Path, default=Path("mail"),
                        help="one Maildir per user under this folder")
    parser.add_argument("--quota", type=int, default=100 * 1024 * 1024, help="bytes per user")
    args = parser.parse_args()
    server = LocalDelivery(args.root, args.quota, size=10 * 1024 * 1024)
    host, bound = server.listen(args.port)
    print(f"listening on {host}:{bound}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.close()
