"""The docs' example server (docs/examples/blocking_server.py), run for real.

The server is started on a socket bound to port 0, either in a thread through
its ``serve()`` function (the socket listens before the thread starts, so a
client can connect at once) or as a subprocess whose first output line gives
the port. Messages go in with ``smtplib`` and must come out byte-identical.
"""

from __future__ import annotations

import importlib.util
import queue
import smtplib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "blocking_server.py"
TIMEOUT = 30.0


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_example_blocking_server", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


example = load_example()


@pytest.fixture
def server() -> Iterator[tuple[int, queue.Queue[object]]]:
    """(port, queue of received messages) of an example server in a thread."""
    sock = socket.create_server(("127.0.0.1", 0))
    received: queue.Queue[object] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(
        target=example.serve, args=(sock, received.put, stop), daemon=True
    )
    thread.start()
    try:
        yield sock.getsockname()[1], received
    finally:
        stop.set()
        thread.join(TIMEOUT)
        sock.close()
    assert not thread.is_alive()


def message_bytes(body_lines: int = 3) -> bytes:
    """A message with the things that trip up byte-exactness: lines that start
    with a dot (dot-stuffing), a lone dot, 8-bit bytes, a long line."""
    lines = [
        b"From: Alice <alice@example.org>",
        b"To: Bob <bob@example.com>",
        b"Subject: docs example",
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Transfer-Encoding: 8bit",
        b"",
        b".a line that starts with a dot",
        b"..two dots",
        b".",
        "caf\u00e9 \u2014 8-bit bytes".encode(),
        b"x" * 900,
    ]
    lines += [b"line %d of the body" % i for i in range(body_lines)]
    return b"\r\n".join(lines) + b"\r\n"


def test_message_arrives_byte_identical(server: tuple[int, queue.Queue[object]]) -> None:
    port, received = server
    data = message_bytes()
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
        client.ehlo()
        # The example turns TLS and AUTH off: neither may be offered.
        assert not client.has_extn("starttls")
        assert not client.has_extn("auth")
        refused = client.sendmail("alice@example.org", ["bob@example.com"], data)
    assert refused == {}
    message = received.get(timeout=TIMEOUT)
    assert message.mail_from == "alice@example.org"
    assert message.rcpt_to == ["bob@example.com"]
    assert message.data == data


def test_large_message_and_several_messages_per_session(
    server: tuple[int, queue.Queue[object]],
) -> None:
    port, received = server
    big = message_bytes(body_lines=40_000)  # about 1 MB, many network reads
    small = b"Subject: second\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
        client.sendmail("alice@example.org", ["bob@example.com", "carol@example.com"], big)
        client.sendmail("", ["bob@example.com"], small)  # null reverse path <>
    first = received.get(timeout=TIMEOUT)
    second = received.get(timeout=TIMEOUT)
    assert first.data == big
    assert first.rcpt_to == ["bob@example.com", "carol@example.com"]
    assert second.data == small
    assert second.mail_from == ""


def test_rejected_recipient(server: tuple[int, queue.Queue[object]]) -> None:
    port, received = server
    data = message_bytes()
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
        # One recipient refused, one accepted: the message goes to the one.
        refused = client.sendmail(
            "alice@example.org", ["bob@example.com", "mallory@elsewhere.test"], data
        )
        assert set(refused) == {"mallory@elsewhere.test"}
        code, text = refused["mallory@elsewhere.test"]
        assert code == 550
        assert text.startswith(b"5.1.1 ")

        # Every recipient refused: smtplib gives up before DATA.
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("alice@example.org", ["eve@elsewhere.test"], b"never\r\n")

        # The session goes on; the next message is the next one stored.
        client.sendmail("alice@example.org", ["bob@example.com"], b"Subject: 3\r\n\r\nok\r\n")

    delivered = received.get(timeout=TIMEOUT)
    assert delivered.rcpt_to == ["bob@example.com"]
    assert delivered.data == data
    following = received.get(timeout=TIMEOUT)
    assert following.data == b"Subject: 3\r\n\r\nok\r\n"
    assert received.empty()


def read_replies(sock: socket.socket, count: int) -> list[bytes]:
    """Read until ``count`` complete replies (multi-line ones count once)."""
    buf = b""
    while True:
        lines = buf.split(b"\r\n")[:-1]
        finals = [line for line in lines if line[3:4] == b" "]
        if len(finals) >= count:
            return lines
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {lines!r}"
        buf += chunk


def test_pipelined_commands_are_answered_in_order(
    server: tuple[int, queue.Queue[object]],
) -> None:
    port, received = server
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        assert read_replies(sock, 1)[0].startswith(b"220 ")
        sock.sendall(
            b"EHLO client.test\r\n"
            b"MAIL FROM:<alice@example.org>\r\n"
            b"RCPT TO:<bob@example.com>\r\n"
            b"RCPT TO:<nobody@elsewhere.test>\r\n"
            b"DATA\r\n"
        )
        lines = read_replies(sock, 5)
        finals = [line[:3] for line in lines if line[3:4] == b" "]
        assert finals == [b"250", b"250", b"250", b"550", b"354"]
        sock.sendall(b"Subject: pipelined\r\n\r\n..dot\r\n.\r\nQUIT\r\n")
        assert read_replies(sock, 2) == [b"250 2.0.0 OK: message queued as #1", b"221 2.0.0 Bye"]
    message = received.get(timeout=TIMEOUT)
    assert message.rcpt_to == ["bob@example.com"]
    assert message.data == b"Subject: pipelined\r\n\r\n.dot\r\n"


def readline_within(stream: IO[str] | None, timeout: float) -> str:
    """``stream.readline()``, but fail instead of hanging for ever."""
    assert stream is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no output line within {timeout} s")


def test_command_line_server(tmp_path: Path) -> None:
    """``python docs/examples/blocking_server.py --port 0`` as a user runs it."""
    save_dir = tmp_path / "mail"
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", "0", "--save-dir", str(save_dir),
         "--domain", "example.com"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        first = readline_within(proc.stdout, TIMEOUT)
        assert first.startswith("listening on 127.0.0.1:"), (first, proc.stderr)
        port = int(first.strip().rpartition(":")[2])
        data = message_bytes()
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            refused = client.sendmail(
                "alice@example.org", ["bob@example.com", "x@elsewhere.test"], data
            )
        assert set(refused) == {"x@elsewhere.test"}
        summary = readline_within(proc.stdout, TIMEOUT)
        assert summary.startswith(
            f"message from <alice@example.org> to <bob@example.com>: {len(data)} bytes"
        )
        saved = sorted(save_dir.iterdir())
        assert [p.name for p in saved] == ["000001.eml"]
        assert saved[0].read_bytes() == data
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
