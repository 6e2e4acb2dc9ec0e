"""A line-level SMTP client on a plain socket, for the exact bytes of replies.

smtplib and aiosmtplib hide what the server sent (enhanced codes, line
splits, the order of pipelined replies); this client shows it. Every read
blocks on the socket with a timeout: a test never sleeps to wait for the
server.
"""

from __future__ import annotations

import base64
import socket
import threading
from types import TracebackType
from typing import Any

TIMEOUT = 5.0


class RawClient:
    """``RawClient(address)`` connects and reads the greeting (unless
    ``read_greeting=False``); ``cmd("NOOP")`` sends a line and returns the
    reply as a list of lines without CRLF."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        read_greeting: bool = True,
        timeout: float = TIMEOUT,
        first: bytes = b"",
    ) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buf = b""
        if first:
            self.sock.sendall(first)
        self.greeting: list[str] | None = self.reply() if read_greeting else None

    # -- context manager ---------------------------------------------------------

    def __enter__(self) -> RawClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    @property
    def local_port(self) -> int:
        return int(self.sock.getsockname()[1])

    # -- bytes -----------------------------------------------------------------------

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode("utf-8") if isinstance(data, str) else data)

    def _fill(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def line(self) -> str:
        """One reply line (blocks up to the socket timeout)."""
        while b"\r\n" not in self.buf:
            chunk = self._fill()
            if not chunk:
                raise EOFError(f"connection closed; pending bytes {self.buf!r}")
            self.buf += chunk
        raw, _, self.buf = self.buf.partition(b"\r\n")
        return raw.decode("utf-8")

    def reply(self) -> list[str]:
        """One complete (possibly multi-line) reply."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        code = lines[0][:3]
        assert all(line[:3] == code for line in lines), lines
        return lines

    def replies(self, count: int) -> list[str]:
        """``count`` single-line replies, e.g. after a pipelined write."""
        out = []
        for _ in range(count):
            [line] = self.reply()
            out.append(line)
        return out

    # -- commands ------------------------------------------------------------------

    def cmd(self, line: str | bytes) -> list[str]:
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.reply()

    def one(self, line: str | bytes) -> str:
        """Send a command whose reply is a single line, and return that line."""
        lines = self.cmd(line)
        assert len(lines) == 1, lines
        return lines[0]

    def ehlo(self, name: str = "client.example") -> list[str]:
        """EHLO; returns the extension keywords (the lines after the first)."""
        lines = self.cmd(f"EHLO {name}")
        assert lines[0].startswith("250"), lines
        return [line[4:] for line in lines[1:]]

    def envelope(self, sender: str = "a@example.com", *recipients: str) -> None:
        """MAIL and RCPT (default one recipient), each expected to succeed."""
        assert self.one(f"MAIL FROM:<{sender}>").startswith("250 "), sender
        for rcpt in recipients or ("b@example.com",):
            assert self.one(f"RCPT TO:<{rcpt}>").startswith("250 "), rcpt

    def data(self, body: bytes) -> str:
        """DATA with ``body`` (already dot-stuffed, ending in CRLF)."""
        assert self.one("DATA").startswith("354 ")
        self.send(body + b".\r\n")
        [line] = self.reply()
        return line

    def expect_closed(self) -> bytes:
        """Read until the server closes; returns whatever came before."""
        rest = self.buf
        self.buf = b""
        while True:
            chunk = self._fill()
            if not chunk:
                return rest
            rest += chunk


def b64(data: str | bytes) -> str:
    """Base64 of ``data`` (UTF-8 for text), as SASL lines carry it."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


class Recorder:
    """A thread-safe list of what handlers saw, with a blocking wait."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def add(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[Any]:
        """Block until ``count`` items were added (an event, not a sleep)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.items) >= count, timeout):
                raise AssertionError(f"{len(self.items)} of {count} items: {self.items!r}")
            return list(self.items)
