"""Store every message in SQLite with a blocking driver (the standard
library's ``sqlite3``), straight from ``on_data``.

Each client is served by its own thread, and a ``sqlite3`` connection may
only be used by the thread that opened it: the server keeps one database
connection per thread (``threading.local``), opened at the client's first
message and closed by ``on_close``, which runs in the same thread.

    python docs/examples/sync_sqlite.py --port 2525 --db mail.sqlite3
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

from smtp_sync import MessageStream, Session, SMTPServer

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id         INTEGER PRIMARY KEY,
    sender     TEXT NOT NULL,
    recipients TEXT NOT NULL,     -- a JSON list of addresses
    size       INTEGER NOT NULL,
    body       BLOB NOT NULL
)
"""


class ArchiveServer(SMTPServer):
    def __init__(self, path: Path, **options: Any) -> None:
        super().__init__(**options)
        self.path = path
        self.local = threading.local()  # .db: this thread's connection
        with closing(self.connect()) as db, db:  # commit, then close
            db.execute(SCHEMA)

    def connect(self) -> sqlite3.Connection:
        # timeout: how long a writer waits while another thread writes
        db = sqlite3.connect(self.path, timeout=30.0)
        db.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        return db

    def database(self) -> sqlite3.Connection:
        """This thread's connection (this client's, since a client is a thread)."""
        db: sqlite3.Connection | None = getattr(self.local, "db", None)
        if db is None:
            db = self.local.db = self.connect()
        return db

    def on_data(self, stream: MessageStream, session: Session) -> str:
        body = stream.read()  # in memory: the size option bounds it
        envelope = session.envelope
        sender = envelope.mail_from.address if envelope.mail_from else ""
        recipients = json.dumps([rcpt.address for rcpt in envelope.rcpt_to])
        db = self.database()
        with db:  # one transaction, committed before the client hears 250
            cursor = db.execute(
                "INSERT INTO messages (sender, recipients, size, body) VALUES (?, ?, ?, ?)",
                (sender, recipients, len(body), body),
            )
        return f"queued as {cursor.lastrowid}"

    def on_close(self, session: Session) -> None:
        # The same thread as this client's on_data: close its connection.
        db = getattr(self.local, "db", None)
        if db is not None:
            self.local.db = None
            db.close()


def build_server(path: Path) -> ArchiveServer:
    return ArchiveServer(path, size=10 * 1024 * 1024, auth_optional=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Store every message in SQLite.")
    parser.add_argument("--port", type=int, default=2525, help="0 picks a free port")
    parser.add_argument("--db", type=Path, default=Path("mail.sqlite3"))
    args = parser.parse_args()
    server = build_server(args.db)
    host, bound = server.listen(args.port)
    print(f"listening on {host}:{bound}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.close()
