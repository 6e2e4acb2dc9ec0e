"""Robustness on every backend: smuggling, vanishing clients, shutdown during
DATA, many concurrent clients, hostile input and half-closed sockets.

Everything here talks to a real server over real sockets, with plain
function handlers so that the threaded backend runs the same bodies.
Waits are on events, replies and socket reads, each bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import select
import smtplib
import socket
import struct
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from .conftest import Inbox
from .harness import run_server

TIMEOUT = 10.0
CLIENT_NAME = "client.example"  # smtplib would call getfqdn() without it


# -- a raw SMTP client ---------------------------------------------------------


class PeerClosed(Exception):
    """The server closed (or reset) the connection while we waited for a reply."""

    def __init__(self, pending: bytes) -> None:
        super().__init__(f"connection closed; unread bytes: {pending!r}")
        self.pending = pending


class RawClient:
    """Byte-exact SMTP over a blocking socket: what smtplib would tidy up."""

    def __init__(
        self, address: tuple[str, int], *, greet: bool = True, timeout: float = TIMEOUT,
        sock: socket.socket | None = None,
    ) -> None:
        self.sock = sock or socket.create_connection(address, timeout=timeout)
        self.sock.settimeout(timeout)
        self._buf = b""
        if greet:
            code, text = self.reply()
            assert code == 220, (code, text)

    # -- bytes ---------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            raise PeerClosed(self._buf)
        self._buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            self._fill()
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line

    def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: its code and its text lines."""
        texts = []
        while True:
            line = self._line()
            assert len(line) >= 3 and line[:3].isdigit(), f"not a reply line: {line!r}"
            texts.append(line[4:].decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(texts)

    def replies(self, count: int) -> list[tuple[int, str]]:
        return [self.reply() for _ in range(count)]

    def cmd(self, line: str | bytes) -> tuple[int, str]:
        raw = line.encode() if isinstance(line, str) else line
        self.send(raw + b"\r\n")
        return self.reply()

    def read_to_eof(self, timeout: float = TIMEOUT) -> bytes:
        """Everything the server sends until it closes (a reset counts as closed)."""
        self.sock.settimeout(timeout)
        data, self._buf = self._buf, b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return data
            if not chunk:
                return data
            data += chunk

    def close(self) -> None:
        self.sock.close()

    # -- SMTP ------------------------------------------------------------------------

    def ehlo(self, name: str = CLIENT_NAME) -> None:
        code, text = self.cmd(f"EHLO {name}")
        assert code == 250, (code, text)

    def envelope(self, sender: str = "a@example.com", *rcpts: str) -> None:
        """MAIL and RCPT (default one recipient), all accepted, then DATA -> 354."""
        for line in (f"MAIL FROM:<{sender}>",
                     *(f"RCPT TO:<{r}>" for r in rcpts or ("b@example.com",))):
            code, text = self.cmd(line)
            assert code == 250, (line, code, text)
        code, text = self.cmd("DATA")
        assert code == 354, (code, text)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send_one(address: tuple[str, int], body: bytes) -> None:
    """A well-behaved client delivers one message (smtplib, CRLF body)."""
    with smtplib.SMTP(*address, local_hostname=CLIENT_NAME, timeout=TIMEOUT) as client:
        assert client.sendmail("ok@example.com", ["rcpt@example.com"], body) == {}


def backend_module(backend: str) -> Any:
    """The package whose ``SMTPError``/``MessageAbortedError`` the handlers see."""
    return importlib.import_module("smtp_sync" if backend == "sync" else "smtp_anyio")


# -- no tracebacks in the server log ----------------------------------------------------


class ErrorLog(logging.Handler):
    """Collects ERROR (and worse) records from every logger and thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            self.records.append(record)

    def check(self) -> None:
        """Assert that nothing was logged so far (and forget it)."""
        with self._guard:
            records, self.records = self.records, []
        problems = [f"{r.name}: {r.getMessage()}"
                    + (f" ({r.exc_info[1]!r}, with traceback)" if r.exc_info else "")
                    for r in records]
        assert not problems, f"errors logged: {problems}"


@contextlib.contextmanager
def collecting_errors() -> Iterator[ErrorLog]:
    collector = ErrorLog()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        yield collector
    finally:
        root.removeHandler(collector)


@pytest.fixture(autouse=True)
def error_log() -> Iterator[ErrorLog]:
    """Fail the test if anything logs an ERROR. Set up before ``start_server``,
    so torn down after it: a traceback at server shutdown counts too. Tests
    may call ``error_log.check()`` themselves to check at a given point."""
    with collecting_errors() as collector:
        yield collector
    collector.check()


# -- SMTP smuggling ---------------------------------------------------------------


SMUGGLING_SEPARATORS = {
    "LF.LF": b"\n.\n",
    "CRLF.LF": b"\r\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
}
SMUGGLED = (
    b"MAIL FROM:<evil@attacker.example>\r\n"
    b"RCPT TO:<victim@example.com>\r\n"
    b"DATA\r\n"
    b"Subject: smuggled\r\n"
    b"\r\n"
    b"I am not a separate message\r\n"
)


def _smuggling_body(separator: bytes) -> tuple[bytes, bytes]:
    """(bytes sent after the 354, the message the server must deliver)."""
    content = b"Subject: carrier\r\n\r\nfirst part" + separator + SMUGGLED.rstrip(b"\r\n")
    sent = content + b"\r\n.\r\n"
    # RFC 5321 4.5.2: a line that starts with a dot loses it; only a line
    # "." alone ends the message. Lines here start after CRLF only.
    delivered = (b"\r\n" + content).replace(b"\r\n.", b"\r\n")[2:] + b"\r\n"
    return sent, delivered


@pytest.mark.parametrize("split", ["whole", "bytewise"])
@pytest.mark.parametrize("separator", list(SMUGGLING_SEPARATORS))
def test_smuggling_keep_delivers_one_message(
    start_server, inbox: Inbox, separator: str, split: str
) -> None:
    running = start_server(on_data=inbox.on_data, auth_optional=True, bare_line_endings="keep")
    sent, delivered = _smuggling_body(SMUGGLING_SEPARATORS[separator])
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope("carrier@example.com")
        if split == "whole":
            client.send(sent)
        else:
            for i in range(len(sent)):
                client.send(sent[i : i + 1])
        code, text = client.reply()
        assert code == 250, (code, text)
        # Had the separator ended the message, the smuggled MAIL's 250 would
        # come next instead of the 221.
        code, text = client.cmd("QUIT")
        assert code == 221, (code, text)
        assert client.read_to_eof() == b""
    assert len(inbox.messages) == 1
    [message] = inbox.messages
    assert message.body == delivered
    assert message.sender == "carrier@example.com"
    assert message.recipients == ["b@example.com"]


@pytest.mark.parametrize("separator", list(SMUGGLING_SEPARATORS))
def test_smuggling_reject_refuses_the_message(
    start_server, inbox: Inbox, separator: str
) -> None:
    running = start_server(on_data=inbox.on_data, auth_optional=True, bare_line_endings="reject")
    sent, _ = _smuggling_body(SMUGGLING_SEPARATORS[separator])
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope("carrier@example.com")
        client.send(sent)
        code, text = client.reply()
        assert code == 554, (code, text)
        assert text.startswith("5.6.0"), text
        code, text = client.cmd("QUIT")
        assert code == 221, (code, text)
        assert client.read_to_eof() == b""
    assert inbox.messages == []
    # The session stays usable for a clean message afterwards.
    send_one(running.address, b"Subject: clean\r\n\r\nok\r\n")
    [message] = inbox.wait_for(1)
    assert message.body == b"Subject: clean\r\n\r\nok\r\n"


# -- a client vanishing mid-DATA -------------------------------------------------------


class StoringHandler:
    """An ``on_data`` that stores as it reads, and must drop an aborted message."""

    def __init__(self, aborted_type: type[BaseException]) -> None:
        self.aborted_type = aborted_type
        self.started = threading.Event()
        self.aborted = threading.Event()
        self.reason: str | None = None
        self.partial: list[bytes] = []
        self.delivered: list[bytes] = []
        self._lock = threading.Lock()

    def on_data(self, stream: Any, session: Any) -> None:
        parts: list[bytes] = []
        try:
            for chunk in stream:
                parts.append(chunk)
                self.started.set()
        except self.aborted_type as exc:
            self.reason = getattr(exc, "reason", None)
            with self._lock:
                self.partial.append(b"".join(parts))
            self.aborted.set()
            raise
        with self._lock:
            self.delivered.append(b"".join(parts))


def _cut_connection(sock: socket.socket, how: str) -> None:
    if how == "close":
        sock.close()
    elif how == "shutdown":
        sock.shutdown(socket.SHUT_WR)
    else:  # "reset": SO_LINGER 0 makes close() send an RST
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


@pytest.mark.parametrize("how", ["close", "shutdown", "reset"])
def test_client_vanishing_mid_data_delivers_nothing(start_server, backend: str, how: str) -> None:
    handler = StoringHandler(backend_module(backend).MessageAbortedError)
    running = start_server(on_data=handler.on_data, auth_optional=True)
    client = RawClient(running.address)
    try:
        client.ehlo()
        client.envelope()
        client.send(b"Subject: half\r\n\r\n" + b"half a body\r\n" * 20_000)
        assert handler.started.wait(TIMEOUT), "on_data never got the first bytes"
        _cut_connection(client.sock, how)
        assert handler.aborted.wait(TIMEOUT), "on_data never saw MessageAbortedError"
        if how == "shutdown":
            # Half-closed: the server must not answer the broken message.
            rest = client.read_to_eof()
            assert b"250" not in rest and b"354" not in rest, rest
    finally:
        client.close()
    assert handler.reason == "connection_lost"
    assert handler.delivered == []
    [partial] = handler.partial  # what it had stored before the abort, to be dropped
    assert partial.startswith(b"Subject: half\r\n\r\nhalf a body\r\n")
    # The server keeps serving.
    send_one(running.address, b"Subject: next\r\n\r\nstill here\r\n")
    assert handler.delivered == [b"Subject: next\r\n\r\nstill here\r\n"]


@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_vanishing_mid_data_inbox_stays_empty(
    start_server, inbox: Inbox, how: str
) -> None:
    """With a handler that reads everything at once, nothing is stored either."""
    closed = threading.Event()
    running = start_server(on_data=inbox.on_data, auth_optional=True,
                           on_close=lambda session: closed.set())
    client = RawClient(running.address)
    client.ehlo()
    client.envelope()
    client.send(b"Subject: half\r\n\r\n" + b"x" * 300_000 + b"\r\nno end marker")
    _cut_connection(client.sock, how)
    assert closed.wait(TIMEOUT), "on_close was not called"
    assert inbox.messages == []
    send_one(running.address, b"Subject: next\r\n\r\nok\r\n")
    assert [m.body for m in inbox.wait_for(1)] == [b"Subject: next\r\n\r\nok\r\n"]


# -- close() during DATA --------------------------------------------------------------


def _start_close(running: Any) -> threading.Thread:
    closer = threading.Thread(target=running.call, args=(running.server.close,), daemon=True)
    closer.start()
    return closer


def _assert_not_served(address: tuple[str, int]) -> None:
    """After close(): a new connection is refused, reset or closed at once."""
    try:
        late = socket.create_connection(address, timeout=TIMEOUT)
    except OSError:
        return
    with late:
        data = RawClient(address, greet=False, sock=late).read_to_eof()
    assert not data.startswith(b"220"), data


def _early_on_data(stream: Any, session: Any) -> str:
    """Decides before the body has arrived (the rest is read and dropped)."""
    return "queued early"


@pytest.mark.parametrize("reader", ["reads-all", "returns-early", "no-handler"])
def test_close_lets_the_message_in_flight_finish(
    backend: str, inbox: Inbox, error_log: ErrorLog, reader: str,
) -> None:
    """close() while a message is being sent: it may finish and gets its 250,
    then the 421 (close() must not clear the pending decision first)."""
    on_data = {"reads-all": inbox.on_data, "returns-early": _early_on_data,
               "no-handler": None}[reader]
    # The server is run here rather than by the fixture, so that an error it
    # raises while stopping fails the test itself.
    with run_server(backend, on_data=on_data, auth_optional=True) as running, \
            RawClient(running.address) as busy, \
            RawClient(running.address) as idle:
        busy.ehlo()
        busy.envelope()
        busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
        idle.ehlo()
        closer = _start_close(running)
        # The idle session is told at once.
        code, text = idle.reply()
        assert code == 421, (code, text)
        assert idle.read_to_eof() == b""
        # The message in flight may finish and is accepted...
        busy.send(b"second half\r\n.\r\n")
        code, text = busy.reply()
        assert code == 250, (code, text)
        # ...then the session ends: a 421, or just the close.
        try:
            code, text = busy.reply()
        except PeerClosed as exc:
            assert exc.pending == b""
        else:
            assert code == 421, (code, text)
            assert busy.read_to_eof() == b""
        closer.join(TIMEOUT)
        assert not closer.is_alive(), "close() did not return"
        _assert_not_served(running.address)
    if reader == "reads-all":
        [message] = inbox.wait_for(1)
        assert message.body == b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n"
    error_log.check()


def test_close_cuts_a_stalled_message_after_close_timeout(
    start_server, inbox: Inbox, error_log: ErrorLog,
) -> None:
    closed = threading.Event()
    running = start_server(on_data=inbox.on_data, auth_optional=True, close_timeout=0.3,
                           on_close=lambda session: closed.set())
    with RawClient(running.address) as stalled, RawClient(running.address) as idle:
        stalled.ehlo()
        stalled.envelope()
        stalled.send(b"Subject: stalled\r\n\r\nand then nothing")
        idle.ehlo()
        closer = _start_close(running)
        assert idle.reply()[0] == 421
        rest = stalled.read_to_eof()
        assert b"250" not in rest, rest
        closer.join(TIMEOUT)
        assert not closer.is_alive(), "close() did not return"
    assert closed.wait(TIMEOUT)
    assert inbox.messages == []
    error_log.check()


# -- many concurrent clients -----------------------------------------------------------

LOAD_CLIENTS = 200
LOAD_MESSAGES = 20
LOAD_DEADLINE = 60.0


def _load_body(client: int, n: int) -> bytes:
    filler = b"y" * ((client * 31 + n * 17) % 700)
    return (
        f"Message-ID: <{client}.{n}@load.test>\r\nSubject: load {client}/{n}\r\n\r\n".encode()
        + b".a line that starts with a dot\r\n"
        + filler + b"\r\n"
        + f"end of {client}/{n}\r\n".encode()
    )


def test_many_concurrent_clients(start_server, inbox: Inbox, backend: str) -> None:
    running = start_server(on_data=inbox.on_data, auth_optional=True)
    deadline = time.monotonic() + LOAD_DEADLINE
    barrier = threading.Barrier(LOAD_CLIENTS, timeout=TIMEOUT * 3)

    def one_client(client: int) -> int:
        with smtplib.SMTP(*running.address, local_hostname=CLIENT_NAME,
                          timeout=LOAD_DEADLINE) as smtp:
            barrier.wait()  # all 200 sessions open at once
            for n in range(LOAD_MESSAGES):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"client {client} out of time at message {n}")
                refused = smtp.sendmail(f"c{client}@example.com", [f"r{n}@example.com"],
                                        _load_body(client, n))
                assert refused == {}
        return client

    started = time.monotonic()
    with ThreadPoolExecutor(LOAD_CLIENTS) as pool:
        done = list(pool.map(one_client, range(LOAD_CLIENTS)))
    elapsed = time.monotonic() - started
    assert done == list(range(LOAD_CLIENTS))
    total = LOAD_CLIENTS * LOAD_MESSAGES
    messages = inbox.wait_for(total)
    expected = Counter(_load_body(c, n) for c in range(LOAD_CLIENTS) for n in range(LOAD_MESSAGES))
    assert Counter(m.body for m in messages) == expected
    assert len(messages) == total
    print(f"\n{backend}: {total} messages from {LOAD_CLIENTS} clients in {elapsed:.2f} s")


# -- a slow handler pushes back on the client ------------------------------------------

BIG = 20 * 1024 * 1024
STALL = 1.0  # no progress for this long while the handler is held: the client is stuck


def big_body() -> bytes:
    """20 MiB of numbered 80-byte lines (no dots: what is sent is what arrives)."""
    return b"".join(b"%08d " % i + b"x" * 69 + b"\r\n" for i in range(BIG // 80))


def push_against_held_handler(
    running: Any, body: bytes, first_chunk: threading.Event,
    buffered: Callable[[], int], release: Callable[[], object],
) -> tuple[int, str, int, int]:
    """Send ``body`` to an ``on_data`` that holds after its first chunk.

    Sends without blocking until the server stops taking bytes for ``STALL``
    seconds and checks that the client is stuck long before the end and that
    the server buffered little (``buffered()``: the stream's byte_length);
    then ``release()``s the handler and sends the rest. Returns the final
    reply's code and text, the bytes sent before the stall and the bytes
    the server had buffered then.
    """
    payload = memoryview(body + b".\r\n")
    deadline = time.monotonic() + 30
    with RawClient(running.address, timeout=30.0) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        client.ehlo()
        client.envelope()
        sent = 0
        client.sock.setblocking(False)
        while sent < len(payload) and time.monotonic() < deadline:
            try:
                sent += client.sock.send(payload[sent : sent + 65536])
            except BlockingIOError:
                _, writable, _ = select.select([], [client.sock], [], STALL)
                if not writable:
                    break  # the server stopped reading
        assert first_chunk.wait(TIMEOUT)
        held = buffered()
        # Stuck long before the end: the server took its high-water mark plus
        # a read or so; the rest of what was sent sits in kernel buffers.
        assert sent < BIG // 2, f"the client pushed {sent} bytes into a held handler"
        assert held <= 1024 * 1024, f"the server buffered {held} bytes"
        release()
        client.sock.settimeout(30.0)
        client.send(payload[sent:])
        code, text = client.reply()
    print(f"\nclient stalled after {sent} bytes; server had read {held}")
    return code, text, sent, held


def test_slow_plain_on_data_pushes_back_on_the_client(start_server) -> None:
    first_chunk = threading.Event()
    gate = threading.Event()
    seen: dict[str, Any] = {}

    def on_data(stream: Any, session: Any) -> str:
        seen["stream"] = stream
        digest = hashlib.sha256()
        size = 0
        for chunk in stream:
            digest.update(chunk)
            size += len(chunk)
            first_chunk.set()
            assert gate.wait(60)  # the handler reads only when the test lets it
        seen["digest"], seen["size"] = digest.hexdigest(), size
        return "all read"

    running = start_server(on_data=on_data, auth_optional=True)
    body = big_body()
    code, text, _sent, _held = push_against_held_handler(
        running, body, first_chunk, buffered=lambda: seen["stream"].byte_length,
        release=gate.set,
    )
    assert code == 250, (code, text)
    assert text.endswith("all read")
    assert seen["size"] == len(body)
    assert seen["digest"] == hashlib.sha256(body).hexdigest()


# -- bad input ------------------------------------------------------------------------


def _assert_serving(running: Any, inbox: Inbox) -> None:
    before = len(inbox.messages)
    send_one(running.address, b"Subject: after\r\n\r\nthe server still works\r\n")
    body = b"Subject: after\r\n\r\nthe server still works\r\n"
    assert inbox.wait_for(before + 1)[-1].body == body


def test_megabyte_line_without_lf(
    start_server, inbox: Inbox, error_log: ErrorLog,
) -> None:
    running = start_server(on_data=inbox.on_data, auth_optional=True)
    line_size = 8 * 1024 * 1024  # 1 MB was asked; 8 makes the memory bound unmistakable
    piece = b"A" * 65536
    with RawClient(running.address) as client:
        client.ehlo()
        tracemalloc.start()
        try:
            for _ in range(line_size // len(piece)):
                client.send(piece)
            code, text = client.cmd(b"")  # the CRLF that finally ends the line
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert code == 500, (code, text)
        assert text.startswith("5.5.2"), text
        # The server kept at most about a read's worth of the line, never all of it.
        assert peak < 2 * 1024 * 1024, f"peak traced memory {peak} bytes"
        assert client.cmd("NOOP")[0] == 250
        client.envelope()
        client.send(b"Subject: after a long line\r\n\r\nok\r\n.\r\n")
        assert client.reply()[0] == 250
    assert inbox.wait_for(1)[0].body == b"Subject: after a long line\r\n\r\nok\r\n"
    error_log.check()


def test_nul_bytes(
    start_server, inbox: Inbox, error_log: ErrorLog,
) -> None:
    running = start_server(on_data=inbox.on_data, auth_optional=True)
    with RawClient(running.address) as client:
        client.ehlo()
        for line in (b"\x00", b"\x00\x00\x00NOOP", b"MAIL FROM:<a\x00b@example.com>",
                     b"EHLO a\x00b c", b"RCPT\x00 TO:<x@example.com>"):
            code, text = client.cmd(line)
            assert 500 <= code <= 559, (line, code, text)
        assert client.cmd("NOOP")[0] == 250
        client.ehlo()
        client.envelope()
        body = b"Subject: nul\r\n\r\nbefore\x00after\r\n\x00\r\n"
        client.send(body + b".\r\n")
        assert client.reply()[0] == 250
    assert inbox.wait_for(1)[0].body == body
    _assert_serving(running, inbox)
    error_log.check()


def test_invalid_utf8_in_commands(
    start_server, inbox: Inbox, error_log: ErrorLog,
) -> None:
    running = start_server(on_data=inbox.on_data, auth_optional=True)
    with RawClient(running.address) as client:
        for line in (b"\xff\xfe\xfd", b"EHLO \xc3\x28", b"HELO \xed\xa0\x80",
                     b"VRFY \xff@example.com", b"NOOP \xff", b"\xc0\xaf RCPT"):
            code, text = client.cmd(line)
            assert 200 <= code <= 559, (line, code, text)
        client.ehlo()
        for line in (b"MAIL FROM:<\xff\xfe@example.com>", b"MAIL FROM:<a@\xe9xample.com>",
                     b"MAIL FROM:<a@example.com> BODY=\xff"):
            code, text = client.cmd(line)
            assert 500 <= code <= 559, (line, code, text)
        client.envelope()
        client.send(b"Subject: latin-1 \xe9\r\n\r\n\xff\xfe\r\n.\r\n")
        assert client.reply()[0] == 250
    assert inbox.wait_for(1)[0].body == b"Subject: latin-1 \xe9\r\n\r\n\xff\xfe\r\n"
    _assert_serving(running, inbox)
    error_log.check()


def test_fifty_megabytes_over_the_size_limit(
    start_server, inbox: Inbox, error_log: ErrorLog,
) -> None:
    running = start_server(on_data=inbox.on_data, auth_optional=True, size=1_000_000)
    line = b"z" * 1022 + b"\r\n"
    block = line * 1024  # 1 MiB
    with RawClient(running.address, timeout=30.0) as client:
        client.ehlo()
        client.envelope()
        for _ in range(50):
            client.send(block)
        client.send(b".\r\n")
        code, text = client.reply()
        assert code == 552, (code, text)
        assert text.startswith("5.3.4"), text
        # The excess was read, not taken for commands: the session is in step.
        client.sock.settimeout(TIMEOUT)
        assert client.cmd("NOOP") == (250, "2.0.0 OK")
        client.envelope()
        client.send(b"Subject: small\r\n\r\nfits\r\n.\r\n")
        assert client.reply()[0] == 250
    assert [m.body for m in inbox.wait_for(1)] == [b"Subject: small\r\n\r\nfits\r\n"]
    error_log.check()


@pytest.mark.parametrize("garbage", [
    b"GARBAGE\r\n",
    b"EHLO client.example\r\n",
    b"PROXY TCP4 999.0.0.1 127.0.0.1 1234 25\r\n",
    b"PROXY TCP4 192.0.2.1 127.0.0.1 99999 25\r\n",
    b"PROXY " + b"A" * 200 + b"\r\n",
    b"\r\n\r\n\x00\r\nQUIT\n\x99\x11\x00\x0c" + b"\x00" * 12,
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),
], ids=["word", "smtp", "bad-ip", "bad-port", "too-long", "v2-bad-version", "tls-hello"])
def test_garbage_proxy_header(
    start_server, inbox: Inbox, error_log: ErrorLog, garbage: bytes,
) -> None:
    """A bad PROXY header closes the connection without a greeting, and
    without logging an error (or a traceback)."""
    running = start_server(on_data=inbox.on_data, auth_optional=True, use_proxy=True)
    with RawClient(running.address, greet=False) as client:
        client.send(garbage)
        rest = client.read_to_eof()
    assert not rest.startswith(b"220"), rest
    # A proxy that does send a valid header is served as before.
    with RawClient(running.address, greet=False) as client:
        client.send(b"PROXY TCP4 192.0.2.7 127.0.0.1 4321 25\r\n")
        assert client.reply()[0] == 220
        client.ehlo()
        client.envelope()
        client.send(b"Subject: proxied\r\n\r\nok\r\n.\r\n")
        assert client.reply()[0] == 250
    assert inbox.wait_for(1)[0].body == b"Subject: proxied\r\n\r\nok\r\n"
    error_log.check()


def test_http_request_is_answered_421(start_server, inbox: Inbox) -> None:
    running = start_server(on_data=inbox.on_data, auth_optional=True)
    with RawClient(running.address) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n")
        code, text = client.reply()
        assert code == 421, (code, text)
        assert client.read_to_eof() == b""  # nothing after the 421, then closed
    _assert_serving(running, inbox)


# -- half-closed clients -------------------------------------------------------------


def test_quit_then_half_close_still_gets_221(start_server) -> None:
    running = start_server(auth_optional=True)
    with RawClient(running.address) as client:
        client.send(b"QUIT\r\n")
        client.sock.shutdown(socket.SHUT_WR)
        rest = client.read_to_eof()
    assert rest.startswith(b"221 "), rest
    assert rest.count(b"\r\n") == 1


def test_pipelined_transaction_then_half_close(start_server, inbox: Inbox) -> None:
    """Everything up to QUIT written at once, then the write side shut: every
    reply still arrives, in order, and the message is delivered once."""
    running = start_server(on_data=inbox.on_data, auth_optional=True)
    with RawClient(running.address) as client:
        client.send(
            b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\n"
            b"RCPT TO:<b@example.com>\r\nDATA\r\n"
        )
        assert [code for code, _ in client.replies(4)] == [250, 250, 250, 354]
        client.send(b"Subject: half-closed\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
        client.sock.shutdown(socket.SHUT_WR)
        assert [code for code, _ in client.replies(3)] == [250, 250, 221]
        assert client.read_to_eof() == b""
    assert [m.body for m in inbox.wait_for(1)] == [b"Subject: half-closed\r\n\r\nbody\r\n"]
    assert len(inbox.messages) == 1
