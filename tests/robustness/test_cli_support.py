"""The command-line server as the ``test_cli_*`` files drive it: a
``python -m smtp_anyio`` subprocess on a port it picks and prints, a raw
SMTP client for what smtplib will not do (a 200 MB BDAT streamed from a
generator, a message left half-sent), and what the tests read of the
process and its Maildir. No tests here."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.example_programs import Program, Raw

QUEUE_ID = re.compile(r"\d+\.M\d+P\d+Q\d+R[0-9a-f]{8}")
"""A queue id: ``<seconds>.M<microseconds>P<pid>Q<counter>R<random>``."""


def cli_argv(maildir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "smtp_anyio", "--listen", "127.0.0.1:0",
            "--maildir", str(maildir), *extra]


class CLIProcess(Program):
    """``python -m smtp_anyio`` on a free port, its stdout read as it comes."""

    def __init__(self, maildir: Path, *extra: str) -> None:
        super().__init__(cli_argv(maildir, *extra), cwd=maildir.parent)
        self.smtp_port = self.port()
        self.wait_for(r"^delivering to ")
        self.maildir = maildir

    def memory(self, field: str) -> int:
        """``VmRSS`` (resident now) or ``VmHWM`` (its peak so far), in bytes."""
        return memory(self.proc.pid, field)


def memory(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def files(maildir: Path, sub: str) -> list[str]:
    return sorted(p.name for p in (maildir / sub).iterdir())


class Client(Raw):
    """``example_programs.Raw`` with each reply as one string (its lines
    joined by newlines; "<closed>" at EOF), which these tests compare."""

    def reply(self) -> str:  # type: ignore[override]
        return "\n".join(super().reply())

    def command(self, line: str) -> str:  # type: ignore[override]
        self.send(line + "\r\n")
        return self.reply()

    def hello(self) -> str:
        """The greeting, then EHLO; returns the EHLO reply."""
        assert self.reply().startswith("220 ")
        return self.command("EHLO client.example")

    def envelope(self) -> None:
        assert self.command("MAIL FROM:<a@example.org>").startswith("250 ")
        assert self.command("RCPT TO:<b@example.com>").startswith("250 ")


def queue_id(reply: str | bytes) -> str:
    """The id in ``250 2.0.0 OK: queued as <id>`` (with or without the code)."""
    text = reply.decode() if isinstance(reply, bytes) else reply
    found = re.fullmatch(rf"(?:250 )?2\.0\.0 OK: queued as ({QUEUE_ID.pattern})", text)
    assert found, text
    return found.group(1)
