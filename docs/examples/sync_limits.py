"""State shared by every client's thread needs a lock: at most ``limit``
connections at once from one IP address."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from smtp_sync import Session, SMTPError, SMTPServer


class PerAddressLimit(SMTPServer):
    def __init__(self, limit: int = 3, **options: Any) -> None:
        super().__init__(**options)
        self.limit = limit
        self.lock = threading.Lock()  # guards self.active
        self.active: Counter[str] = Counter()

    def on_connect(self, session: Session) -> None:
        address = session.remote_address or ""
        with self.lock:  # check and count as one step
            if self.active[address] >= self.limit:
                raise SMTPError(421, "Error: too many connections from your address",
                                enhanced="4.7.0")
            self.active[address] += 1
        session.counted = True  # this client's own session: no lock needed

    def on_close(self, session: Session) -> None:
        # Called for refused clients too: only undo what on_connect counted.
        if getattr(session, "counted", False):
            address = session.remote_address or ""
            with self.lock:
                self.active[address] -= 1
                if not self.active[address]:
                    del self.active[address]  # forget addresses that left
