"""Plain functions as handlers: quick decisions run in the event loop, and a
plain ``on_data`` runs in a worker thread with a blocking, file-like stream."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from smtp_anyio import RcptTo, Session, SMTPError, SMTPServer

LOCAL_DOMAINS = {"example.com", "example.net"}


def on_rcpt_to(address: RcptTo, session: Session) -> None:
    # Called right in the event loop: keep it quick, never block here.
    domain = address.address.rpartition("@")[2].lower()
    if domain not in LOCAL_DOMAINS:
        raise SMTPError(550, "Error: relay access denied", enhanced="5.7.1")


def build_server(spool: Path) -> SMTPServer:
    def on_data(stream, session: Session) -> str:  # stream: blocking, file-like
        # Called in a worker thread: blocking calls are fine here.
        fd, name = tempfile.mkstemp(dir=spool, suffix=".eml")
        try:
            with os.fdopen(fd, "wb") as spooled:
                shutil.copyfileobj(stream, spooled)  # stream.read(n) until b""
        except BaseException:  # MessageAbortedError, disk full...: no half messages
            os.unlink(name)
            raise
        return f"OK: spooled as {Path(name).name}"

    return SMTPServer(on_rcpt_to=on_rcpt_to, on_data=on_data, auth_optional=True)
