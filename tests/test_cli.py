"""``python -m smtp_anyio``: the README's first command, run for real.

Each test starts the command-line server as a subprocess on a free port,
waits for its "listening on" line (never a sleep), talks to it with smtplib
and stops it with a signal, checking that it exits cleanly.
"""

from __future__ import annotations

import mailbox
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.example_programs import without_trace


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CLI:
    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smtp_anyio", *args],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []

    def wait_for(self, prefix: str, limit: int = 20) -> str:
        """Read output lines until one starts with ``prefix``."""
        assert self.proc.stdout is not None
        for _ in range(limit):
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"exited early: {self.lines}")
            self.lines.append(line.rstrip("\n"))
            if line.startswith(prefix):
                return line.rstrip("\n")
        raise AssertionError(f"no line starting with {prefix!r} in {self.lines}")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.lines += out.splitlines()
        return self.proc.returncode


@pytest.fixture
def run_cli(tmp_path: Path) -> Iterator[object]:
    started: list[CLI] = []

    def start(*args: str) -> CLI:
        cli = CLI(list(args), tmp_path)
        started.append(cli)
        return cli

    yield start
    for cli in started:
        if cli.proc.poll() is None:
            cli.proc.kill()
            cli.proc.wait(timeout=10)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_delivers_into_a_maildir_and_stops_on_signal(run_cli, tmp_path: Path, backend: str
                                                     ) -> None:
    port = _free_port()
    cli = run_cli("--listen", f"127.0.0.1:{port}", "--backend", backend)
    cli.wait_for("listening on 127.0.0.1:")
    cli.wait_for("delivering to")
    body = b"Subject: cli\r\n\r\n.a line with a dot\r\nbye\r\n"
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.sendmail("a@example.com", ["b@example.com"], body)
    line = cli.wait_for("")  # the one line per message
    assert "from=<a@example.com>" in line and "to=<b@example.com>" in line
    assert cli.stop(signal.SIGTERM) == 0
    box = mailbox.Maildir(tmp_path / "maildir", create=False)
    # Iterating a Mailbox yields messages, not keys.
    stored = [box.get_bytes(key) for key in box.keys()]  # noqa: SIM118
    [message] = stored
    assert without_trace(message) == body  # byte-identical, dot-unstuffed
    assert message.startswith(b"Return-Path: <a@example.com>\r\nReceived: from ")


def test_auth_file_size_and_implicit_tls(run_cli, tmp_path: Path) -> None:
    (tmp_path / "users").write_text("# users\nalice:s3cret\n", encoding="utf-8")
    plain, implicit = _free_port(), _free_port()
    cli = run_cli("--listen", f"127.0.0.1:{plain}", "--implicit-tls", f"127.0.0.1:{implicit}",
                  "--tls-self-signed", "--auth-file", "users", "--size", "1000",
                  "--maildir", "box")
    cli.wait_for("delivering to")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the throw-away certificate
    with smtplib.SMTP("127.0.0.1", plain) as client:
        client.starttls(context=context)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("alice", "wrong")
        client.login("alice", "s3cret")
        with pytest.raises(smtplib.SMTPSenderRefused) as too_big:
            # smtplib announces SIZE=2000 (RFC 1870): refused at MAIL already.
            client.sendmail("a@example.com", ["b@example.com"], b"x" * 2000)
        assert too_big.value.smtp_code == 552
    with smtplib.SMTP_SSL("127.0.0.1", implicit, context=context) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            # Authentication is required when an auth file is given.
            client.sendmail("a@example.com", ["b@example.com"], b"Subject: no\r\n\r\n")
        assert refused.value.smtp_code == 530
        client.login("alice", "s3cret")
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: tls\r\n\r\nok\r\n")
    cli.wait_for("")
    assert cli.stop(signal.SIGINT) == 0
    box = mailbox.Maildir(tmp_path / "box", create=False)
    stored = [box.get_bytes(key) for key in box.keys()]  # noqa: SIM118
    assert [without_trace(message) for message in stored] == [b"Subject: tls\r\n\r\nok\r\n"]


def _reply_code(replies: object) -> int:
    """Read one (possibly multi-line) reply; its code."""
    while True:
        line = replies.readline()  # type: ignore[attr-defined]
        if line[3:4] != b"-":
            return int(line[:3])


def test_lmtp_mode(run_cli) -> None:
    port = _free_port()
    cli = run_cli("--listen", f"127.0.0.1:{port}", "--lmtp")
    cli.wait_for("delivering to")
    # smtplib.LMTP reads one reply after DATA; LMTP sends one per recipient.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        replies = sock.makefile("rb")
        sock.sendall(b"LHLO client.example\r\nMAIL FROM:<a@example.com>\r\n"
                     b"RCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
        codes = [_reply_code(replies) for _ in range(6)]  # greeting, LHLO, 3, 354
        assert codes == [220, 250, 250, 250, 250, 354]
        sock.sendall(b"Subject: lmtp\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        finals = [_reply_code(replies) for _ in range(3)]
    assert finals == [250, 250, 221]
    cli.wait_for("")
    assert cli.stop() == 0


def test_bad_arguments_fail_fast(run_cli) -> None:
    cli = run_cli("--listen", "nonsense")
    assert cli.proc.wait(timeout=15) == 2


def test_size_defaults_to_25_mib_and_0_means_no_limit(run_cli) -> None:
    from smtp_anyio._cli import build_parser

    assert build_parser().parse_args([]).size == 26214400
    assert build_parser().parse_args(["--size", "0"]).size == 0
    cli = run_cli("--size", "-1")  # refused at once, not a negative limit
    assert cli.proc.wait(timeout=15) == 2
