"""``python -m smtp_anyio`` with nobody reading its output: standard output
and standard error are pipes that fill up, and the server must go on
answering -- each 250 in time, each greeting, each message stored once --
dropping console lines it cannot write and saying how many."""

from __future__ import annotations

import os
import re
import select
import signal
import smtplib
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from smtp_anyio._cli_output import LineWriter
from tests.example_programs import TIMEOUT, child_env
from tests.robustness.test_cli_support import QUEUE_ID, cli_argv, files, queue_id

CONNECTIONS = 4
MESSAGES = 500  # per connection: 2,000 lines, some 30 times what a pipe holds
REPLY_BOUND = 10.0  # seconds for any one message, MAIL to 250 (it takes milliseconds)


def _fill(fd: int) -> int:
    """Write into the pipe ``fd`` until it is full; the bytes written."""
    os.set_blocking(fd, False)
    written = 0
    # Then byte by byte: a write of up to 4 KiB is all or nothing, and
    # would leave room for a few lines.
    for size in (4096, 1):
        try:
            while True:
                written += os.write(fd, b"#" * size)
        except BlockingIOError:
            pass
    # The child shares the open file, flags included: it must block (in its
    # writer thread), not get EAGAIN.
    os.set_blocking(fd, True)
    return written


def _read_until(fd: int, pattern: bytes, buffer: bytearray) -> re.Match[bytes]:
    """Read ``fd`` into ``buffer`` until ``pattern`` matches in it (bounded
    by TIMEOUT, so that a server stuck at startup fails the test)."""
    deadline = time.monotonic() + TIMEOUT
    while not (found := re.search(pattern, buffer, re.M)):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {pattern!r} within {TIMEOUT} s: {bytes(buffer)!r}"
        data = os.read(fd, 65536)
        assert data, f"exited before {pattern!r}: {bytes(buffer)!r}"
        buffer += data
    return found


def _read_all(fd: int) -> bytes:
    chunks = []
    while data := os.read(fd, 65536):
        chunks.append(data)
    return b"".join(chunks)


def _send(port: int, count: int, replies: list[tuple[int, bytes, float]]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=REPLY_BOUND) as client:
        client.ehlo()
        for number in range(count):
            started = time.monotonic()
            client.mail("a@example.org")
            client.rcpt("b@example.com")
            code, text = client.data(f"Subject: {number}\r\n\r\nhello\r\n".encode())
            replies.append((code, text, time.monotonic() - started))


def test_unread_stdout_and_stderr_block_no_reply(tmp_path: Path) -> None:
    maildir = tmp_path / "mail"
    # Standard error: a pipe full before the server starts, never read;
    # with -v the server logs its listener there first thing.
    err_read, err_write = os.pipe()
    junk = _fill(err_write)
    proc = subprocess.Popen(cli_argv(maildir, "-v"), cwd=tmp_path, env=child_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_write)
    os.close(err_write)
    assert proc.stdout is not None
    out_fd = proc.stdout.fileno()
    try:
        head = bytearray()
        port = int(_read_until(out_fd, rb"^listening on 127\.0\.0\.1:(\d+)$", head).group(1))
        _read_until(out_fd, rb"^delivering to .*\n", head)
        # From here on nobody reads standard output: it fills after some
        # 700 message lines.
        replies: list[list[tuple[int, bytes, float]]] = [[] for _ in range(CONNECTIONS)]
        senders = [threading.Thread(target=_send, args=(port, MESSAGES, replies[k]))
                   for k in range(CONNECTIONS)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        answers = [reply for per_connection in replies for reply in per_connection]
        assert len(answers) == CONNECTIONS * MESSAGES  # no sender died on a timeout
        assert Counter(code for code, _, _ in answers) == {250: CONNECTIONS * MESSAGES}
        slowest = max(seconds for _, _, seconds in answers)
        assert slowest < REPLY_BOUND
        # A new client still gets its greeting.
        with smtplib.SMTP("127.0.0.1", port, timeout=REPLY_BOUND) as client:
            assert client.noop()[0] == 250
        # Every 250 is a message in new/, exactly once, and nothing else is.
        ids = [queue_id(text) for _, text, _ in answers]
        names = files(maildir, "new")
        assert len(names) == len(set(ids)) == CONNECTIONS * MESSAGES
        assert sorted(name.rpartition(".")[0] for name in names) == sorted(ids)
        assert files(maildir, "tmp") == []

        # Now read both, as the server waits (a few seconds) at exit for its
        # last lines to be read.
        errors = bytearray()
        err_reader = threading.Thread(target=lambda: errors.extend(_read_all(err_read)))
        err_reader.start()
        proc.send_signal(signal.SIGTERM)
        output = (bytes(head) + _read_all(out_fd)).decode().splitlines()
        assert proc.wait(TIMEOUT) == 0
        err_reader.join(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
        proc.stdout.close()
        os.close(err_read)

    # Every message line names a delivered file, each at most once; the
    # lines dropped, if any, are counted: together they make every message.
    message_lines = [line for line in output if QUEUE_ID.match(line)]
    printed = Counter(line.split()[0] for line in message_lines)
    assert set(printed) <= set(names) and max(printed.values()) == 1
    dropped = sum(int(m.group(1)) for line in output
                  if (m := re.fullmatch(r"(\d+) lines dropped", line)))
    assert len(message_lines) + dropped == CONNECTIONS * MESSAGES
    assert output[-1] == "SIGTERM: shutting down"
    # The log lines waited behind the junk, and were written once it was read.
    assert errors[:junk] == b"#" * junk
    assert re.search(rf"INFO smtp_anyio: listening on 127\.0\.0\.1:{port}$".encode(),
                     errors[junk:], re.M)


def test_a_full_writer_drops_lines_and_says_how_many() -> None:
    read_end, write_end = os.pipe()
    junk = _fill(write_end)
    stream = os.fdopen(write_end, "w", encoding="utf-8")
    writer = LineWriter(stream, limit=10, name="test")
    received = bytearray()
    notice = threading.Event()

    def reader() -> None:
        while data := os.read(read_end, 65536):
            received.extend(data)
            if re.search(rb"^\d+ lines dropped$", received, re.M):
                notice.set()

    try:
        started = time.monotonic()
        for number in range(100):
            writer.put(f"line {number}")
        assert time.monotonic() - started < 1.0  # never waited for the pipe
        # At most one batch taken by the writer (now stuck) and ten queued.
        assert 80 <= writer.dropped <= 90
        thread = threading.Thread(target=reader)
        thread.start()
        assert notice.wait(TIMEOUT)
        writer.put("after")  # written again once the pipe has room
        assert writer.close(TIMEOUT)
    finally:
        stream.close()
    thread.join(TIMEOUT)
    os.close(read_end)
    assert bytes(received[:junk]) == b"#" * junk
    lines = received[junk:].decode().splitlines()
    kept = len(lines) - 2
    # The first lines in order, then the count of the rest, then "after".
    assert lines == [f"line {n}" for n in range(kept)] + [f"{100 - kept} lines dropped",
                                                           "after"]
