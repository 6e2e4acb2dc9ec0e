"""Running the docs' example programs: shared by the tests of the anyio and
the threaded servers' pages.

``Program`` starts an example as a subprocess (the repository importable as
``pip install`` would make it) and reads its output lines as they come, so
that tests wait on what the program says, never on a sleep. ``Raw`` is a
line-level SMTP client for what smtplib cannot do: LMTP's reply per
recipient, XCLIENT, a 334 error challenge, a message left half-sent.
"""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
TIMEOUT = 30.0


def child_env(**extra: str) -> dict[str, str]:
    """The environment of example programs: the repository importable from
    any working directory (as ``pip install`` would make it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def example(name: str, *args: str) -> list[str]:
    """The command line that runs docs/examples/<name>.py."""
    return [sys.executable, str(EXAMPLES / f"{name}.py"), *args]


class Program:
    """A running program whose stdout lines are read as they come."""

    def __init__(self, argv: list[str], cwd: Path = ROOT, **env: str) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=child_env(**env), text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._lines.put),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._stderr.append),
                             daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    @staticmethod
    def _pump(stream: Any, sink: Callable[[Any], None]) -> None:
        for line in stream:
            sink(line.rstrip("\n"))
        sink(None)

    @property
    def stderr(self) -> str:
        return "\n".join(line for line in self._stderr if line is not None)

    def line(self) -> str:
        try:
            line = self._lines.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"{self.argv}: no output within {TIMEOUT} s\n{self.stderr}")
        if line is None:
            self.proc.wait(TIMEOUT)
            pytest.fail(f"{self.argv} ended ({self.proc.returncode}):\n{self.stderr}")
        return line

    def wait_for(self, pattern: str) -> re.Match[str]:
        """Read lines until one matches ``pattern`` (a regex, searched)."""
        seen = []
        while True:
            line = self.line()
            seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found
            if len(seen) > 500:
                pytest.fail(f"{pattern!r} not in {seen[-20:]}")

    def port(self, pattern: str = r"listening on 127\.0\.0\.1:(\d+)") -> int:
        return int(self.wait_for(pattern).group(1))

    def exit_status(self) -> int:
        """Wait for the program to end by itself; all its output read."""
        status = self.proc.wait(TIMEOUT)
        for pump in self._pumps:
            pump.join(TIMEOUT)
        return status

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(TIMEOUT)

    def __enter__(self) -> Program:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class Raw:
    """Send command lines, read replies."""

    def __init__(self, port: int, sock: socket.socket | None = None) -> None:
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.file = self.sock.makefile("rb")

    def reply(self) -> list[str]:
        lines = []
        while True:
            raw = self.file.readline()
            if not raw:
                lines.append("<closed>")
                return lines
            line = raw.decode().rstrip("\r\n")
            lines.append(line)
            if line[3:4] != "-":
                return lines

    def send(self, data: str | bytes) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def command(self, line: str) -> list[str]:
        self.send(line + "\r\n")
        return self.reply()

    def start_message(self, hello: str = "EHLO client.example", rcpts: tuple[str, ...] = (
            "bob@example.com",)) -> None:
        """Greeting, hello, MAIL, RCPT(s), DATA: ready for the body."""
        assert self.reply()[0].startswith("220 ")
        assert self.command(hello)[-1].startswith("250 ")
        assert self.command("MAIL FROM:<alice@example.org>")[0].startswith("250 ")
        for rcpt in rcpts:
            self.command(f"RCPT TO:<{rcpt}>")
        assert self.command("DATA")[0].startswith("354 ")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# What the command-line server puts in front of a stored message: Return-Path,
# Delivered-To (a copy for one recipient), Received (folded lines).
_TRACE = re.compile(
    rb"Return-Path: <[^\r\n]*>\r\n(?:Delivered-To: [^\r\n]*\r\n)?"
    rb"Received: [^\r\n]*\r\n(?:\t[^\r\n]*\r\n)*")


def trace_length(data: bytes) -> int:
    """How many bytes of ``data`` (a stored message, or its start) are the
    trace headers; fails the test if they are not there."""
    found = _TRACE.match(data)
    assert found, f"no trace headers in front of {data[:300]!r}"
    return found.end()


def without_trace(data: bytes) -> bytes:
    """A stored message as the client sent it."""
    return data[trace_length(data):]
