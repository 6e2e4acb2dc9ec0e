"""One INFO line per connection opened and one per connection closed, on
every backend: peer, TLS, user, messages, duration; never a password."""

from __future__ import annotations

import logging
import re
import smtplib
import threading
from typing import Any


class Lines(logging.Handler):
    """Collects formatted records; ``wait_for(pattern)`` blocks until one
    matches (an event, not a sleep)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.lines.append(record.getMessage())
            self.changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            found[:] = [m for line in self.lines if (m := re.search(pattern, line))]
            return bool(found)

        with self.changed:
            assert self.changed.wait_for(seen, timeout), (pattern, self.lines)
        return found[0]


def test_connection_lines(start_server: Any, backend: str) -> None:
    logger = logging.getLogger(f"test.session_log.{backend}")
    logger.setLevel(logging.INFO)
    lines = Lines()
    logger.addHandler(lines)
    try:
        running = start_server(
            logger=logger, allow_insecure_auth=True, auth_methods=["PLAIN"],
            on_auth=lambda auth, session: auth.username if auth.password == "s3cret" else None)
        with smtplib.SMTP(*running.address, timeout=10) as client:
            port = client.sock.getsockname()[1]  # type: ignore[union-attr]
            client.login("alice", "s3cret")
            client.sendmail("a@example.org", ["b@example.com"], b"Subject: x\r\n\r\nbody\r\n")
        opened = lines.wait_for(rf"^\[(\w+)\] connection from 127\.0\.0\.1:{port}$")
        closed = lines.wait_for(
            rf"^\[{opened.group(1)}\] closed: peer=127\.0\.0\.1:{port} tls=no user=alice "
            r"messages=1 duration=(\d+\.\d{3})s$")
        assert float(closed.group(1)) < 10
        assert not [line for line in lines.lines if "s3cret" in line]
    finally:
        logger.removeHandler(lines)


def test_debug_transcript_redacts_credentials_and_info_names_refusals(
    start_server: Any, backend: str
) -> None:
    import base64

    from smtp_anyio import SMTPError

    def on_rcpt_to(address: Any, session: Any) -> None:
        if address.address.startswith("nobody@"):
            raise SMTPError(550, "No such user here", enhanced="5.1.1")

    logger = logging.getLogger(f"test.transcript.{backend}")
    logger.setLevel(logging.DEBUG)
    lines = Lines()
    logger.addHandler(lines)
    secret = base64.b64encode(b"\0alice\0s3cret").decode()
    try:
        running = start_server(
            logger=logger, allow_insecure_auth=True, auth_methods=["PLAIN", "LOGIN"],
            on_rcpt_to=on_rcpt_to,
            on_auth=lambda auth, session: auth.username if auth.password == "s3cret" else None)
        with smtplib.SMTP(*running.address, timeout=10) as client:
            client.ehlo("client.example")
            assert client.docmd("AUTH", f"PLAIN {secret}")[0] == 235
            client.mail("a@example.org")
            assert client.rcpt("nobody@example.com")[0] == 550
            client.rcpt("b@example.com")
            client.data(b"Subject: x\r\n\r\nbody\r\n")
        lines.wait_for(r"\] closed: ")
        lines.wait_for(r"\] C: AUTH PLAIN \*\*\*$")
        lines.wait_for(
            r"\] refused (?i:rcpt to):<nobody@example\.com>: 550 5\.1\.1 No such user here$")
        lines.wait_for(r"\] C: <message body: 20 bytes>$")
        lines.wait_for(r"\] S: 250 2\.0\.0 ")
        assert not [line for line in lines.lines if "s3cret" in line or secret in line]
    finally:
        logger.removeHandler(lines)
