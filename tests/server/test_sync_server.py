"""Behaviour specific to ``smtp_sync``, the threaded server.

The backend-neutral conformance suite already runs against ``sync``; this
module covers what only the threaded design has: the file-like message
stream that pulls from the socket in the connection's own thread, the bound
on threads (``max_clients``), accept loops that never block on a slow client
(TLS handshakes, PROXY headers, reverse DNS), ``serve_forever()`` / ``with``
/ ``close()`` across threads, and a blocking database in ``on_data``.

Every wait is bounded: socket reads have timeouts, threads are joined with
timeouts, queues are read with timeouts. Nothing sleeps to wait for the
server.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from smtp_sync import DEFAULT_MAX_CONNECTIONS, MessageAbortedError, SMTPError, SMTPServer

from .conftest import TLSMaterial
from .test_robustness import ErrorLog

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

TIMEOUT = 5.0
NAME = "mx.test"
REPO = Path(__file__).resolve().parents[2]
_loggers = itertools.count()


# -- a line client on a blocking socket ---------------------------------------------------


class PeerClosed(EOFError):
    """The server closed the connection while a reply was expected."""


class Peer:
    """One SMTP client on a plain or TLS socket; every read is bounded by the
    socket timeout."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.greeting: list[str] = []

    @classmethod
    def connect(
        cls, address: tuple[str, int], *, context: ssl.SSLContext | None = None,
        greet: bool = True, first: bytes = b"", timeout: float = TIMEOUT,
    ) -> Peer:
        sock = socket.create_connection(address, timeout=timeout)
        if context is not None:
            try:
                sock = context.wrap_socket(sock, server_hostname="localhost")
            except BaseException:
                sock.close()
                raise
        peer = cls(sock)
        if first:
            peer.send(first)
        if greet:
            peer.greeting = peer.reply()
            assert peer.greeting[0].startswith("220 "), peer.greeting
        return peer

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError):
            return b""

    def line(self) -> str:
        while b"\r\n" not in self.buf:
            chunk = self._fill()
            if not chunk:
                raise PeerClosed(f"connection closed; pending {self.buf!r}")
            self.buf += chunk
        raw, _, self.buf = self.buf.partition(b"\r\n")
        return raw.decode()

    def reply(self) -> list[str]:
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def cmd(self, line: str) -> list[str]:
        self.send(line + "\r\n")
        return self.reply()

    def one(self, line: str) -> str:
        lines = self.cmd(line)
        assert len(lines) == 1, lines
        return lines[0]

    def ehlo(self) -> list[str]:
        lines = self.cmd("EHLO client.example")
        assert lines[0].startswith("250"), lines
        return lines

    def envelope(self, sender: str = "a@example.com", rcpt: str = "b@example.com") -> None:
        assert self.one(f"MAIL FROM:<{sender}>").startswith("250 ")
        assert self.one(f"RCPT TO:<{rcpt}>").startswith("250 ")

    def start_data(self) -> None:
        assert self.one("DATA").startswith("354 ")

    def message(self, body: bytes, **envelope: str) -> str:
        """MAIL, RCPT, DATA and ``body`` (dot-stuffed, ending in CRLF); the
        final reply line."""
        self.envelope(**envelope)
        self.start_data()
        self.send(body + b".\r\n")
        [line] = self.reply()
        return line

    def starttls(self, context: ssl.SSLContext) -> None:
        assert self.one("STARTTLS").startswith("220 ")
        assert not self.buf
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")

    def read_to_eof(self) -> bytes:
        rest, self.buf = self.buf, b""
        while chunk := self._fill():
            rest += chunk
        return rest


# -- the server, served by serve_forever() in a thread --------------------------------------


@dataclass
class Served:
    server: SMTPServer
    addresses: dict[str, tuple[str, int]]
    errors: ErrorLog = field(repr=False, default_factory=ErrorLog)

    @property
    def address(self) -> tuple[str, int]:
        return self.addresses["plain"]


@contextlib.contextmanager
def serving(listeners: dict[str, dict[str, Any]] | None = None, **options: Any
            ) -> Iterator[Served]:
    """A server listening on 127.0.0.1 (one plain listener by default) and
    served by ``serve_forever()`` in a thread; closed at the end, which must
    make ``serve_forever()`` return and leave no ERROR in the log.

    Every test has a client served on each listener before ``close()``: the
    accept loops have started by then (see test_with_block_exited_at_once)."""
    errors = ErrorLog()
    logger = logging.getLogger(f"test_sync_server.{next(_loggers)}")
    logger.propagate = False
    logger.addHandler(errors)
    options.setdefault("name", NAME)
    options.setdefault("auth_optional", True)
    options.setdefault("disable_reverse_lookup", True)
    options.setdefault("close_timeout", 3.0)
    options.setdefault("socket_timeout", 10.0)
    server = SMTPServer(logger=logger, **options)
    addresses = {key: server.listen(0, "127.0.0.1", **kwargs)
                 for key, kwargs in (listeners or {"plain": {}}).items()}
    runner = threading.Thread(target=server.serve_forever, name="test serve_forever",
                              daemon=True)
    runner.start()
    try:
        yield Served(server, addresses, errors)
    finally:
        server.close()
        runner.join(TIMEOUT)
        logger.removeHandler(errors)
    assert not runner.is_alive(), "serve_forever() did not return after close()"
    errors.check()


def server_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """The threads the server started since ``before`` was taken."""
    return [t for t in threading.enumerate()
            if t not in before and t.name.startswith("smtp_sync")]


def join_all(threads: list[threading.Thread], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"threads still running: {alive}"


def body_of(n: int, lines: int = 3) -> bytes:
    return (f"Message-ID: <{n}@sync.test>\r\nSubject: message {n}\r\n\r\n".encode()
            + b"".join(b"line %d of %d\r\n" % (i, n) for i in range(lines)))


class Inbox:
    """A thread-safe on_data that keeps (body, session facts) per message."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def on_data(self, stream: Any, session: Any) -> None:
        body = stream.read()
        with self._cond:
            self.items.append({"body": body, "tls": session.tls is not None,
                               "port": session.local_port,
                               "thread": threading.get_ident(),
                               "remote": session.remote_address,
                               "hostname": session.client_hostname})
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.items) >= count, timeout), self.items
            return list(self.items)


# -- the file-like stream -----------------------------------------------------------------


def test_read_in_small_pieces_and_nothing_after_the_end() -> None:
    seen: dict[str, Any] = {}

    def on_data(stream: Any, session: Any) -> str:
        pieces, lengths = [], []
        consumed = 0
        while piece := stream.read(7):
            consumed += len(piece)
            pieces.append(piece)
            lengths.append((consumed, stream.byte_length))
        seen["pieces"] = pieces
        seen["lengths"] = lengths
        seen["after"] = (stream.read(), stream.read(5), stream.readline(), list(stream))
        seen["final"] = stream.byte_length
        seen["size_exceeded"] = stream.size_exceeded
        return "stored in pieces"

    lines = [b"line %03d " % i + b"x" * (i % 13) + b"\r\n" for i in range(5000)]
    lines[10] = b".a line that starts with a dot\r\n"
    body = b"Subject: pieces\r\n\r\n" + b"".join(lines)
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    with serving(on_data=on_data) as served, Peer.connect(served.address) as client:
        client.ehlo()
        client.envelope()
        client.start_data()
        for at in range(0, len(stuffed), 1000):  # several writes, several chunks
            client.send(stuffed[at:at + 1000])
        client.send(b".\r\n")
        [line] = client.reply()
        assert line.startswith("250 ") and line.endswith("stored in pieces"), line
    pieces = seen["pieces"]
    assert b"".join(pieces) == body
    assert all(len(p) == 7 for p in pieces[:-1]), [len(p) for p in pieces]
    assert 1 <= len(pieces[-1]) <= 7
    # byte_length counts what has arrived (unstuffed), never less than what
    # was read, and grows while reading.
    assert all(consumed <= length <= len(body) for consumed, length in seen["lengths"])
    lengths = [length for _, length in seen["lengths"]]
    assert lengths == sorted(lengths)
    assert lengths[0] <= 65536 < len(body)  # the first read came before the rest
    assert seen["final"] == len(body)
    assert seen["after"] == (b"", b"", b"", [])
    assert seen["size_exceeded"] is False


def test_readline_across_chunk_boundaries() -> None:
    """The client sends the next piece only once the handler has read the
    previous one, so each piece is its own chunk and lines span them."""
    marks: queue.Queue[tuple[str, bytes, int]] = queue.Queue()

    def on_data(stream: Any, session: Any) -> str:
        marks.put(("head", stream.read(4), stream.byte_length))
        marks.put(("first", stream.readline(), stream.byte_length))
        marks.put(("second", stream.readline(), stream.byte_length))
        marks.put(("blank", stream.readline(), stream.byte_length))
        marks.put(("last", stream.readline(), stream.byte_length))
        marks.put(("end", stream.readline() + stream.read(), stream.byte_length))
        return "lines read"

    p1 = b"Subject: spl"
    p2 = b"it line\r\nsecond li"
    p3 = b"ne\r\n\r\nlast line\r\n"
    with serving(on_data=on_data) as served, Peer.connect(served.address) as client:
        client.ehlo()
        client.envelope()
        client.start_data()
        client.send(p1)
        assert marks.get(timeout=TIMEOUT) == ("head", b"Subj", len(p1))
        client.send(p2)
        assert marks.get(timeout=TIMEOUT) == ("first", b"ect: split line\r\n", len(p1 + p2))
        client.send(p3 + b".\r\n")
        total = len(p1 + p2 + p3)
        assert marks.get(timeout=TIMEOUT) == ("second", b"second line\r\n", total)
        assert marks.get(timeout=TIMEOUT) == ("blank", b"\r\n", total)
        assert marks.get(timeout=TIMEOUT) == ("last", b"last line\r\n", total)
        assert marks.get(timeout=TIMEOUT) == ("end", b"", total)
        [line] = client.reply()
        assert line.startswith("250 ") and line.endswith("lines read"), line
        assert client.one("NOOP").startswith("250 ")


def test_iteration_yields_chunks_as_they_arrive() -> None:
    got: queue.Queue[tuple[bytes, int] | None] = queue.Queue()

    def on_data(stream: Any, session: Any) -> None:
        for chunk in stream:
            got.put((chunk, stream.byte_length))
        got.put(None)

    # None ends with CR, LF or a dot: the core keeps nothing back.
    pieces = [b"Subject: it", b"eration\r\n\r\nfirst", b" part, second", b" part\r\nend"]
    with serving(on_data=on_data) as served, Peer.connect(served.address) as client:
        client.ehlo()
        client.envelope()
        client.start_data()
        sent = 0
        for piece in pieces:
            client.send(piece)
            sent += len(piece)
            received = b""
            while len(received) < len(piece):  # at most len(piece) chunks
                item = got.get(timeout=TIMEOUT)
                assert item is not None, "iteration ended early"
                chunk, length = item
                received += chunk
                # Nothing more was sent: byte_length is exactly what arrived.
                assert length == sent - len(piece) + len(received)
            assert received == piece
        client.send(b"\r\n.\r\n")
        item = got.get(timeout=TIMEOUT)
        assert item == (b"\r\n", sent + 2)
        assert got.get(timeout=TIMEOUT) is None
        assert client.reply()[0].startswith("250 ")


def test_readline_across_bdat_chunks_in_lock_step() -> None:
    """A client that waits for each BDAT reply before the next chunk, while
    on_data is blocked in readline(): the connection thread must answer the
    chunk before it blocks for the next one."""
    lines: list[bytes] = []

    def on_data(stream: Any, session: Any) -> str:
        while line := stream.readline():
            lines.append(line)
        return "chunks joined"

    chunks = [b"Subject: bd", b"at\r\n\r\nline one\r", b"\nline two\r\n"]
    with serving(on_data=on_data) as served, Peer.connect(served.address) as client:
        assert "CHUNKING" in [line[4:] for line in client.ehlo()]
        client.envelope()
        for n, chunk in enumerate(chunks):
            last = " LAST" if n == len(chunks) - 1 else ""
            client.send(f"BDAT {len(chunk)}{last}\r\n".encode() + chunk)
            [line] = client.reply()
            if last:
                assert line.startswith("250 ") and line.endswith("chunks joined"), line
            else:
                assert line == f"250 2.0.0 {len(chunk)} octets received", line
    assert lines == [b"Subject: bdat\r\n", b"\r\n", b"line one\r\n", b"line two\r\n"]


def test_size_exceeded_raises_message_aborted_error() -> None:
    limit = 1000
    seen: list[dict[str, Any]] = []

    def on_data(stream: Any, session: Any) -> str:
        received = bytearray()
        live: list[tuple[int, bool]] = []
        try:
            for chunk in stream:
                received += chunk
                live.append((len(received), stream.size_exceeded))
        except MessageAbortedError as exc:
            try:
                stream.read()
                again = "nothing"
            except MessageAbortedError as second:
                again = second.reason
            seen.append({"reason": exc.reason, "size_exceeded": stream.size_exceeded,
                         "byte_length": stream.byte_length, "received": bytes(received),
                         "again": again, "live": live})
            raise
        seen.append({"received": bytes(received), "size_exceeded": stream.size_exceeded})
        return "fits"

    big = b"Subject: big\r\n\r\n" + b"".join(b"%04d " % i + b"z" * 60 + b"\r\n"
                                             for i in range(80))
    small = b"Subject: small\r\n\r\nfits\r\n"
    with serving(on_data=on_data, size=limit) as served, \
            Peer.connect(served.address) as client:
        assert "SIZE 1000" in [line[4:] for line in client.ehlo()]
        line = client.message(big)
        assert line.startswith("552 5.3.4 "), line
        # The session stays usable: the next message fits.
        line = client.message(small)
        assert line.startswith("250 ") and line.endswith("fits"), line
    first, second = seen
    # size_exceeded turns true with the chunk that reaches the limit (the
    # body came in one write, so the core saw the excess with that chunk).
    live = first.pop("live")
    assert live[-1] == (limit, True), live
    assert all(not exceeded for _, exceeded in live[:-1]), live
    assert first == {"reason": "size_exceeded", "size_exceeded": True, "byte_length": limit,
                     "received": big[:limit], "again": "size_exceeded"}
    assert second == {"received": small, "size_exceeded": False}


@pytest.mark.parametrize("behaviour", ["returns-at-once", "reads-one-line", "raises"])
def test_handler_returning_early_drains_the_rest(behaviour: str) -> None:
    calls: list[bytes] = []

    def on_data(stream: Any, session: Any) -> str:
        if behaviour == "reads-one-line":
            calls.append(stream.readline())
        else:
            calls.append(b"")
        if behaviour == "raises":
            raise SMTPError(451, "try again later")
        return "queued early"

    # Larger than the stream's buffer marks (256 KiB): several reads.
    big = b"Subject: big\r\n\r\n" + b"".join(b"%06d " % i + b"q" * 70 + b"\r\n"
                                             for i in range(8000))
    expected = "451 " if behaviour == "raises" else "250 "
    with serving(on_data=on_data) as served, Peer.connect(served.address) as client:
        client.ehlo()
        for _ in range(2):
            line = client.message(big)
            assert line.startswith(expected), line
            if behaviour != "raises":
                assert line.endswith("queued early"), line
        # In step: one reply per command, nothing left over.
        client.send("NOOP\r\nRSET\r\nQUIT\r\n")
        assert [client.reply()[0][:4] for _ in range(3)] == ["250 ", "250 ", "221 "]
        assert client.read_to_eof() == b""
    first_line = b"Subject: big\r\n" if behaviour == "reads-one-line" else b""
    assert calls == [first_line, first_line]


# -- threads bounded under a flood ----------------------------------------------------------


FLOOD = 50
MAX_CLIENTS = 5
THREAD_SLACK = 3


def test_connection_flood_is_bounded_by_max_clients() -> None:
    before = set(threading.enumerate())
    baseline = threading.active_count()
    closed = threading.Semaphore(0)
    inbox = Inbox()
    with serving(max_clients=MAX_CLIENTS, on_data=inbox.on_data,
                 on_close=lambda session: closed.release()) as served:
        # serve_forever's thread, one accept loop, one thread per client.
        bound = baseline + 2 + MAX_CLIENTS + THREAD_SLACK
        peak = threading.active_count()
        peers: list[Peer] = []
        try:
            for _ in range(FLOOD):
                peers.append(Peer(socket.create_connection(served.address, timeout=TIMEOUT)))
                peak = max(peak, threading.active_count())
            started = time.monotonic()
            greeted, refused = [], []
            for peer in peers:
                first = peer.line()
                peak = max(peak, threading.active_count())
                if first.startswith("220 "):
                    greeted.append(peer)
                else:
                    assert first.startswith("421 4.3.2 ") and "Too many" in first, first
                    refused.append(peer)
            for peer in refused:  # closed right after the 421
                assert peer.read_to_eof() == b""
                peak = max(peak, threading.active_count())
            refusing = time.monotonic() - started
            assert (len(greeted), len(refused)) == (MAX_CLIENTS, FLOOD - MAX_CLIENTS)
            assert refusing < 3.0, f"{len(refused)} refusals took {refusing:.2f}s"
            assert peak <= bound, (peak, baseline)
            # The admitted clients are served normally.
            for n, peer in enumerate(greeted):
                peer.ehlo()
                assert peer.message(body_of(n)).startswith("250 ")
                assert peer.one("QUIT").startswith("221 ")
                assert peer.read_to_eof() == b""
        finally:
            for peer in peers:
                peer.close()
        for _ in range(MAX_CLIENTS):
            assert closed.acquire(timeout=TIMEOUT)
        # Once the client threads have ended, their slots are free again.
        connection_threads = [t for t in server_threads(before)
                              if not t.name.startswith("smtp_sync accept")]
        join_all(connection_threads)
        # Measured here: baseline 1, peak 8 (bound 11), 3 after the flood.
        assert threading.active_count() <= baseline + 2
        with Peer.connect(served.address) as late:
            late.ehlo()
            assert late.message(body_of(99)).startswith("250 ")
        assert len(inbox.wait_for(MAX_CLIENTS + 1)) == MAX_CLIENTS + 1


def test_default_max_connections_bounds_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without max_clients, DEFAULT_MAX_CONNECTIONS is the bound (lowered
    here so as not to start a thousand threads)."""
    import smtp_sync._server

    assert smtp_sync._server.DEFAULT_MAX_CONNECTIONS == DEFAULT_MAX_CONNECTIONS
    monkeypatch.setattr(smtp_sync._server, "DEFAULT_MAX_CONNECTIONS", 2)
    with serving() as served:
        assert served.server.options.max_clients is None
        with Peer.connect(served.address) as first, Peer.connect(served.address):
            with Peer.connect(served.address, greet=False) as third:
                line = third.line()
                assert line.startswith("421 4.3.2 ") and "Too many" in line, line
                assert third.read_to_eof() == b""
            assert first.one("NOOP").startswith("250 ")


def test_over_the_bound_on_an_implicit_tls_port_closes_without_plaintext(
        tls: TLSMaterial) -> None:
    with serving({"tls": {"secure": True}}, max_clients=1, **tls.server_options) as served:
        address = served.addresses["tls"]
        with Peer.connect(address, context=tls.client_context()) as admitted:
            admitted.ehlo()
            with Peer.connect(address, greet=False) as refused:
                # No 421 in clear text on a TLS port: just the close.
                assert refused.read_to_eof() == b""
            assert admitted.one("NOOP").startswith("250 ")


# -- accept loops never block on a slow client ----------------------------------------------


def _still_open(sock: socket.socket) -> bool:
    """Nothing received and not closed (a non-blocking peek)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(timeout)


def test_silent_tls_clients_do_not_block_the_accept_loop(tls: TLSMaterial) -> None:
    inbox = Inbox()
    with serving({"tls": {"secure": True}}, on_data=inbox.on_data,
                 **tls.server_options) as served:
        address = served.addresses["tls"]
        silent = [socket.create_connection(address, timeout=TIMEOUT) for _ in range(3)]
        try:
            started = time.monotonic()
            with Peer.connect(address, context=tls.client_context()) as client:
                client.ehlo()
                assert client.message(body_of(1)).startswith("250 ")
            assert time.monotonic() - started < 2.0
            [item] = inbox.wait_for(1)
            assert item["tls"] is True
            # The silent ones are still waiting in their own threads.
            assert all(_still_open(sock) for sock in silent)
        finally:
            for sock in silent:
                sock.close()


@pytest.mark.parametrize("first", [b"", b"PROXY TCP4 203.0.113.1"], ids=["silent", "partial"])
def test_slow_proxy_clients_do_not_block_the_accept_loop(first: bytes) -> None:
    seen: queue.Queue[str | None] = queue.Queue()
    with serving(use_proxy=True, close_timeout=10.0,
                 on_connect=lambda session: seen.put(session.remote_address)) as served:
        slow = socket.create_connection(served.address, timeout=TIMEOUT)
        try:
            if first:
                slow.sendall(first)
            header = b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 25\r\n"
            started = time.monotonic()
            with Peer.connect(served.address, first=header) as client:
                assert time.monotonic() - started < 2.0
                assert seen.get(timeout=TIMEOUT) == "203.0.113.9"
                assert "[203.0.113.9]" in client.ehlo()[0]
                assert client.message(body_of(1)).startswith("250 ")
            assert _still_open(slow)
            assert seen.empty()  # the slow client never reached on_connect
            # close() wakes the thread waiting for the header at once.
            started = time.monotonic()
            served.server.close()
            assert time.monotonic() - started < 2.0
        finally:
            slow.close()


def test_blocking_resolver_delays_only_its_own_client() -> None:
    release = threading.Event()
    first_asked = threading.Event()
    asked: list[str] = []
    guard = threading.Lock()
    lookup_timeout = 1.5

    def resolver(address: str) -> str:
        with guard:
            asked.append(address)
            first = len(asked) == 1
        if first:
            first_asked.set()
            release.wait(30)  # "a long time": until the test ends
            return "slow.example"
        return "fast.example"

    try:
        with serving(disable_reverse_lookup=False, resolver=resolver,
                     reverse_lookup_timeout=lookup_timeout) as served:
            slow = Peer(socket.create_connection(served.address, timeout=TIMEOUT))
            with slow:
                slow_started = time.monotonic()
                assert first_asked.wait(TIMEOUT)
                started = time.monotonic()
                with Peer.connect(served.address) as fast:
                    fast_wait = time.monotonic() - started
                    assert fast_wait < lookup_timeout / 2, fast_wait
                    assert "fast.example" in fast.ehlo()[0]
                # The stuck lookup is given up after reverse_lookup_timeout.
                assert slow.reply()[0].startswith("220 ")
                slow_wait = time.monotonic() - slow_started
                assert lookup_timeout - 0.2 <= slow_wait <= lookup_timeout + 2.0, slow_wait
                assert "[127.0.0.1]" in slow.ehlo()[0]
    finally:
        release.set()


def test_many_blocking_lookups_delay_no_one_beyond_the_timeout() -> None:
    """More stuck lookups than resolver workers: a new client still waits no
    longer than reverse_lookup_timeout (it may go unnamed)."""
    release = threading.Event()
    stuck = threading.Semaphore(0)
    lookup_timeout = 1.0

    def resolver(address: str) -> str:
        stuck.release()
        release.wait(30)
        return "never.example"

    try:
        with serving(disable_reverse_lookup=False, resolver=resolver,
                     reverse_lookup_timeout=lookup_timeout) as served:
            hung = [socket.create_connection(served.address, timeout=TIMEOUT)
                    for _ in range(6)]
            try:
                for _ in range(4):  # the resolver pool is busy
                    assert stuck.acquire(timeout=TIMEOUT)
                started = time.monotonic()
                with Peer.connect(served.address) as late:
                    waited = time.monotonic() - started
                    assert waited <= lookup_timeout + 1.0, waited
                    assert late.ehlo()[0].startswith("250-")
            finally:
                for sock in hung:
                    sock.close()
    finally:
        release.set()


# -- serving and closing across threads --------------------------------------------------------


def test_serve_forever_returns_when_another_thread_closes() -> None:
    before = set(threading.enumerate())
    server = SMTPServer(name=NAME, auth_optional=True, disable_reverse_lookup=True)
    address = server.listen(0)
    returned = threading.Event()

    def run() -> None:
        server.serve_forever()
        returned.set()

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    with Peer.connect(address) as client:
        assert client.one("NOOP").startswith("250 ")
        assert not returned.is_set()
        closers = [threading.Thread(target=server.close, daemon=True) for _ in range(2)]
        for closer in closers:  # two at once: both return once closed
            closer.start()
        assert client.reply()[0].startswith("421 ")
        assert client.read_to_eof() == b""
        join_all(closers)
    assert returned.wait(TIMEOUT), "serve_forever() did not return"
    runner.join(TIMEOUT)
    join_all(server_threads(before))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=TIMEOUT).close()
    server.close()  # a second close() returns at once


def test_with_block_serves_in_the_background() -> None:
    before = set(threading.enumerate())
    inbox = Inbox()
    server = SMTPServer(name=NAME, auth_optional=True, disable_reverse_lookup=True,
                        on_data=inbox.on_data)
    address = server.listen(0)
    with server as entered:
        assert entered is server
        with Peer.connect(address) as client:
            client.ehlo()
            assert client.message(body_of(1)).startswith("250 ")
        [item] = inbox.wait_for(1)
        assert item["thread"] != threading.get_ident()
    join_all(server_threads(before))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=TIMEOUT).close()


_IMMEDIATE_EXIT = """
import threading
from smtp_sync import SMTPServer

failures = []
threading.excepthook = lambda args: failures.append(repr(args.exc_value))

# 1. The thread that `with` starts runs late (as a busy scheduler may make
#    it): it reaches serve_forever() only once close() has returned.
closed = threading.Event()

def late(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "serve_forever":
        closed.wait(5)

server = SMTPServer(disable_reverse_lookup=True)
server.listen(0)
close = server.close

def close_then_resume():
    try:
        close()
    finally:
        closed.set()

server.close = close_then_resume
threading.settrace(late)
try:
    with server:
        threading.settrace(None)
except Exception as exc:
    failures.append(repr(exc))
closed.set()
for thread in threading.enumerate():
    if thread is not threading.current_thread():
        thread.join(5)
        if thread.is_alive():
            failures.append(f"{thread.name} still running")

# 2. The natural race, a number of times.
for _ in range(50):
    if failures:
        break
    server = SMTPServer(disable_reverse_lookup=True)
    server.listen(0)
    try:
        with server:
            pass
    except Exception as exc:
        failures.append(repr(exc))
print(failures[:2])
"""


def test_with_block_exited_at_once() -> None:
    """``with server: pass``: no exception from close(), none in a thread,
    and no thread left behind, however late the background thread runs. In a
    child process: a failed close() leaves serve_forever() waiting for good."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(_IMMEDIATE_EXIT)],
                            capture_output=True, text=True, timeout=60, cwd=REPO, env=env,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_listen_after_serving_started(tls: TLSMaterial) -> None:
    inbox = Inbox()
    with serving(on_data=inbox.on_data, **tls.server_options) as served:
        with Peer.connect(served.address) as client:  # accepting has started
            client.ehlo()
            assert client.message(body_of(1)).startswith("250 ")
        plain = served.server.listen(0)
        secure = served.server.listen(0, secure=True)
        assert {plain, secure} <= set(served.server.listening)
        with Peer.connect(plain) as client:
            client.ehlo()
            assert client.message(body_of(2)).startswith("250 ")
        with Peer.connect(secure, context=tls.client_context()) as client:
            client.ehlo()
            assert client.message(body_of(3)).startswith("250 ")
        items = inbox.wait_for(3)
    assert [(i["port"], i["tls"]) for i in items] == [
        (served.address[1], False), (plain[1], False), (secure[1], True)]


def test_plain_and_implicit_tls_listeners_at_once(tls: TLSMaterial) -> None:
    inbox = Inbox()
    listeners = {"plain": {}, "tls": {"secure": True}, "other": {}}
    failures: list[BaseException] = []

    def client(key: str, n: int) -> None:
        try:
            context = tls.client_context()
            secure = key == "tls"
            with Peer.connect(served.addresses[key], context=context if secure else None
                              ) as peer:
                keywords = [line[4:] for line in peer.ehlo()]
                assert ("STARTTLS" in keywords) is not secure
                if key == "other":
                    peer.starttls(context)
                    peer.ehlo()
                assert peer.message(body_of(n)).startswith("250 ")
        except BaseException as exc:
            failures.append(exc)

    with serving(listeners, on_data=inbox.on_data, **tls.server_options) as served:
        threads = [threading.Thread(target=client, args=(key, n), daemon=True)
                   for n, key in enumerate(list(listeners) * 3)]
        for thread in threads:
            thread.start()
        join_all(threads)
        assert failures == []
        items = inbox.wait_for(len(threads))
    ports = {address[1]: key for key, address in served.addresses.items()}
    by_listener = sorted((ports[i["port"]], i["tls"]) for i in items)
    assert by_listener == [("other", True)] * 3 + [("plain", False)] * 3 + [("tls", True)] * 3


def test_update_secure_context_from_another_thread(tls: TLSMaterial) -> None:
    other = TLSMaterial()
    old_context = tls.client_context()
    new_context = other.client_context()
    with serving({"plain": {}, "tls": {"secure": True}}, **tls.server_options) as served, \
            Peer.connect(served.addresses["tls"], context=old_context) as before, \
            Peer.connect(served.address) as plain:
        before.ehlo()
        before.envelope()
        plain.ehlo()
        updater = threading.Thread(
            target=served.server.update_secure_context, kwargs=other.server_options,
            daemon=True)
        updater.start()
        updater.join(TIMEOUT)
        assert not updater.is_alive()
        # New handshakes present the new certificate...
        with pytest.raises(ssl.SSLCertVerificationError):
            Peer.connect(served.addresses["tls"], context=old_context).close()
        with Peer.connect(served.addresses["tls"], context=new_context) as after:
            after.ehlo()
            assert after.message(body_of(1)).startswith("250 ")
        # ...STARTTLS on a session opened before the update too...
        plain.starttls(new_context)
        plain.ehlo()
        assert plain.message(body_of(2)).startswith("250 ")
        # ...and the TLS session opened before goes on with its own.
        before.start_data()
        before.send(body_of(3) + b".\r\n")
        assert before.reply()[0].startswith("250 ")


def test_update_secure_context_enables_tls_on_a_running_server(tls: TLSMaterial) -> None:
    """Started without a certificate: no STARTTLS. Given one from another
    thread: new sessions get STARTTLS, and an implicit-TLS listener can be
    added; the session opened before keeps its (TLS-less) capabilities."""
    with serving() as served, Peer.connect(served.address) as before:
        assert "STARTTLS" not in [line[4:] for line in before.ehlo()]
        with pytest.raises(ValueError):
            served.server.listen(0, secure=True)
        updater = threading.Thread(target=served.server.update_secure_context,
                                   kwargs=tls.server_options, daemon=True)
        updater.start()
        updater.join(TIMEOUT)
        assert not updater.is_alive()
        with Peer.connect(served.address) as after:
            assert "STARTTLS" in [line[4:] for line in after.ehlo()]
            after.starttls(tls.client_context())
            after.ehlo()
            assert after.message(body_of(1)).startswith("250 ")
        secure = served.server.listen(0, secure=True)
        with Peer.connect(secure, context=tls.client_context()) as implicit:
            implicit.ehlo()
            assert implicit.message(body_of(2)).startswith("250 ")
        assert before.one("STARTTLS").startswith("502 ")


def test_update_secure_context_while_handshaking(tls: TLSMaterial) -> None:
    """Swaps from one thread while another keeps handshaking: every handshake
    gets one of the two certificates, none fails."""
    other = TLSMaterial()
    both = ssl.create_default_context()
    tls.ca.configure_trust(both)
    other.ca.configure_trust(both)
    stop = threading.Event()
    swaps: list[int] = []

    def swap(server: SMTPServer) -> None:
        for n in range(200):
            if stop.is_set():
                break
            server.update_secure_context(**(other if n % 2 == 0 else tls).server_options)
            swaps.append(n)

    with serving({"tls": {"secure": True}}, **tls.server_options) as served:
        swapper = threading.Thread(target=swap, args=(served.server,), daemon=True)
        swapper.start()
        try:
            for _ in range(15):
                with Peer.connect(served.addresses["tls"], context=both) as client:
                    assert client.one("NOOP").startswith("250 ")
        finally:
            stop.set()
            swapper.join(TIMEOUT)
        assert not swapper.is_alive()
        assert swaps, "no swap happened"


# -- graceful close --------------------------------------------------------------------------


def _close_in_thread(server: SMTPServer) -> tuple[threading.Thread, list[float]]:
    took: list[float] = []

    def close() -> None:
        started = time.monotonic()
        server.close()
        took.append(time.monotonic() - started)

    closer = threading.Thread(target=close, daemon=True)
    closer.start()
    return closer, took


def test_close_tells_idle_clients_at_once() -> None:
    before = set(threading.enumerate())
    with serving(close_timeout=10.0) as served:
        idle = [Peer.connect(served.address) for _ in range(5)]
        try:
            for n, peer in enumerate(idle):
                if n % 2:
                    peer.ehlo()
                    peer.envelope()  # in a transaction, but not in DATA
            closer, took = _close_in_thread(served.server)
            for peer in idle:
                line = peer.line()
                assert line.startswith("421 ") and "shutting down" in line, line
                assert peer.read_to_eof() == b""
            closer.join(TIMEOUT)
            assert took and took[0] < 1.0, took
        finally:
            for peer in idle:
                peer.close()
    join_all(server_threads(before))


def test_close_lets_a_reading_handler_finish_its_message() -> None:
    """close() while on_data is blocked in readline(), pulling from the
    socket: the message completes (250), then the session ends."""
    marks: queue.Queue[str] = queue.Queue()
    stored: list[bytes] = []

    def on_data(stream: Any, session: Any) -> str:
        marks.put("reading")
        head = stream.readline()
        stored.append(head + stream.read())
        return "kept"

    with serving(on_data=on_data, close_timeout=10.0) as served, \
            Peer.connect(served.address) as busy, Peer.connect(served.address) as idle:
        busy.ehlo()
        busy.envelope()
        busy.start_data()
        busy.send(b"Subject: in fli")
        assert marks.get(timeout=TIMEOUT) == "reading"
        closer, took = _close_in_thread(served.server)
        assert idle.line().startswith("421 ")  # close() is under way
        busy.send(b"ght\r\n\r\nsecond half\r\n.\r\n")
        [line] = busy.reply()
        assert line.startswith("250 ") and line.endswith("kept"), line
        rest = busy.read_to_eof()
        assert rest in (b"", b"421 4.3.2 mx.test Service shutting down\r\n"), rest
        closer.join(TIMEOUT)
        assert took and took[0] < 2.0, took  # not close_timeout
    assert stored == [b"Subject: in flight\r\n\r\nsecond half\r\n"]


def test_close_cuts_a_stalled_client_after_close_timeout() -> None:
    aborted: queue.Queue[str] = queue.Queue()
    closed = threading.Event()

    def on_data(stream: Any, session: Any) -> None:
        try:
            stream.read()
        except MessageAbortedError as exc:
            aborted.put(exc.reason)
            raise

    with serving(on_data=on_data, close_timeout=0.3,
                 on_close=lambda session: closed.set()) as served, \
            Peer.connect(served.address) as stalled:
        stalled.ehlo()
        stalled.envelope()
        stalled.start_data()
        stalled.send(b"Subject: stalled\r\n\r\nand then nothing")
        closer, took = _close_in_thread(served.server)
        closer.join(TIMEOUT)
        assert not closer.is_alive()
        assert took and 0.25 <= took[0] < 1.0, took
        assert b"250" not in stalled.read_to_eof()
        assert aborted.get(timeout=TIMEOUT) == "connection_lost"
        assert closed.wait(TIMEOUT)


def test_close_does_not_wait_for_a_silent_tls_handshake(tls: TLSMaterial) -> None:
    with serving({"tls": {"secure": True}}, close_timeout=2.0,
                 **tls.server_options) as served:
        address = served.addresses["tls"]
        with socket.create_connection(address, timeout=TIMEOUT):
            # Accepted in order: once this one is served, the silent one
            # has its thread, blocked in the handshake.
            with Peer.connect(address, context=tls.client_context()) as client:
                assert client.one("NOOP").startswith("250 ")
            started = time.monotonic()
            served.server.close()
            took = time.monotonic() - started
            assert took < 1.0, f"close() took {took:.2f}s"


def test_incomplete_proxy_header_times_out_without_spinning() -> None:
    with serving(use_proxy=True, socket_timeout=0.5) as served:
        # a client served first, so that close() finds the accept loop running
        with Peer.connect(served.address, first=b"PROXY UNKNOWN\r\n") as other:
            assert other.one("NOOP").startswith("250 ")
        slow = Peer.connect(served.address, greet=False, first=b"PROXY TCP4 203.0.113.1")
        try:
            slow.sock.settimeout(2.5)
            cpu, wall = time.process_time(), time.monotonic()
            try:
                rest = slow.read_to_eof()
            except TimeoutError:
                rest = None
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        finally:
            slow.close()
        assert rest == b"", "not closed 2 s after socket_timeout"
        assert cpu < wall / 2, f"{cpu:.2f}s of CPU in {wall:.2f}s"


# -- a blocking database in on_data -----------------------------------------------------------


def test_sqlite_in_on_data_stores_every_message_once(tmp_path: Path) -> None:
    database = tmp_path / "mail.sqlite3"
    with sqlite3.connect(database) as setup:
        setup.execute("CREATE TABLE mail (message_id TEXT UNIQUE NOT NULL, "
                      "session TEXT NOT NULL, body BLOB NOT NULL)")
    setup.close()

    def on_data(stream: Any, session: Any) -> str:
        body = stream.read()
        message_id = next(line for line in body.split(b"\r\n")
                          if line.startswith(b"Message-ID:")).split(b":", 1)[1].strip()
        db = sqlite3.connect(database, timeout=10)  # one blocking connection per call
        try:
            with db:
                db.execute("INSERT INTO mail VALUES (?, ?, ?)",
                           (message_id.decode(), session.id, body))
        finally:
            db.close()
        return "stored"

    clients = 20
    barrier = threading.Barrier(clients, timeout=TIMEOUT)
    failures: list[BaseException] = []

    def send(n: int) -> None:
        try:
            message = EmailMessage()
            message["Message-ID"] = f"<{n}@sqlite.test>"
            message["Subject"] = f"message {n}"
            message.set_content(f"body of {n}\n" * (n + 1))
            with smtplib.SMTP(*served.address, timeout=10) as smtp:
                smtp.ehlo()
                barrier.wait()  # every client connected: DATA at once
                smtp.send_message(message, "a@example.com", [f"r{n}@example.com"])
        except BaseException as exc:
            failures.append(exc)

    with serving(on_data=on_data) as served:
        threads = [threading.Thread(target=send, args=(n,), daemon=True)
                   for n in range(clients)]
        for thread in threads:
            thread.start()
        join_all(threads, timeout=20)
        assert failures == []
    db = sqlite3.connect(database)
    try:
        rows = db.execute("SELECT message_id, session, body FROM mail").fetchall()
    finally:
        db.close()
    assert len(rows) == clients
    assert sorted(r[0] for r in rows) == sorted(f"<{n}@sqlite.test>" for n in range(clients))
    assert len({r[1] for r in rows}) == clients  # one session each
    assert all(f"body of {r[0][1:].split('@')[0]}".encode() in r[2] for r in rows)


# -- API edges ---------------------------------------------------------------------------


def test_coroutine_handlers_are_refused() -> None:
    """An async handler would only produce a coroutine object, which looks
    like success (an async on_auth would let anyone in): refused up front."""
    async def on_auth(auth: object, session: object) -> object:
        return None

    async def resolver(address: str) -> str:
        return "x"

    with pytest.raises(TypeError, match="on_auth"):
        SMTPServer(on_auth=on_auth)
    with pytest.raises(TypeError, match="resolver"):
        SMTPServer(resolver=resolver)


def test_stream_is_a_binary_file_for_the_stdlib() -> None:
    import email
    import hashlib

    seen: list[object] = []

    def on_data(stream: Any, session: Any) -> None:
        if not seen:
            seen.append(email.message_from_binary_file(stream)["Subject"])
        else:
            seen.append(hashlib.file_digest(stream, "sha256").hexdigest())

    body = b"Subject: parsed\r\n\r\n" + b"line\r\n" * 5000
    server = SMTPServer(on_data=on_data, auth_optional=True, disable_reverse_lookup=True)
    host, port = server.listen(0)
    with server, smtplib.SMTP(host, port) as client:
        client.sendmail("a@example.com", ["b@example.com"], body)
        client.sendmail("a@example.com", ["b@example.com"], body)
    assert seen == ["parsed", hashlib.sha256(body).hexdigest()]


def test_with_block_opens_only_the_listeners_asked_for() -> None:
    server = SMTPServer(auth_optional=True, disable_reverse_lookup=True)
    with server:
        host, port = server.listen(0)  # inside the block, as with smtp_anyio
        with smtplib.SMTP(host, port) as client:
            assert client.noop()[0] == 250
        assert server.listening == ((host, port),)


def test_close_from_a_signal_handler_during_close_does_not_hang(tmp_path: Any) -> None:
    """A second close() from a signal handler interrupting the first, in the
    same thread, must return instead of waiting for itself."""
    script = tmp_path / "reentrant_close.py"
    script.write_text(textwrap.dedent('''
        import signal, socket, threading
        from smtp_sync import SMTPServer
        reading = threading.Event()
        release = threading.Event()
        def on_data(stream, session):
            stream.readline()
            reading.set()
            release.wait(10)
            stream.read()
        server = SMTPServer(on_data=on_data, auth_optional=True,
                            disable_reverse_lookup=True, close_timeout=5)
        host, port = server.listen(0)
        server.__enter__()
        client = socket.create_connection((host, port), timeout=10)
        replies = client.makefile("rb")
        replies.readline()
        client.sendall(b"HELO c\\r\\nMAIL FROM:<a@b.c>\\r\\nRCPT TO:<d@e.f>\\r\\nDATA\\r\\n")
        for _ in range(4):
            replies.readline()
        client.sendall(b"Subject: x\\r\\n")
        reading.wait(10)
        def on_signal(signum, frame):
            server.close()  # re-entrant: must not wait for the outer close
            release.set()
            client.sendall(b"\\r\\nbody\\r\\n.\\r\\n")
        signal.signal(signal.SIGALRM, on_signal)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        server.close()  # waits for the message in flight
        print("closed", replies.readline().decode().strip())
    '''))
    done = subprocess.run([sys.executable, str(script)], check=False, capture_output=True,
                          text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("closed 250"), done.stdout


_SIGNAL_PROGRAM = textwrap.dedent("""
    import signal, smtplib, sys, threading
    from smtp_sync import SMTPServer

    server = SMTPServer(disable_reverse_lookup=True)
    host, port = server.listen(0)
    signal.signal(signal.SIGUSR1,
                  lambda *_: threading.Thread(target=server.close, daemon=True).start())

    def signal_from_another_thread():
        with smtplib.SMTP(host, port, timeout=10) as client:  # serving by now
            client.noop()
        # The signal lands on this thread, not on the one in serve_forever().
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)

    threading.Thread(target=signal_from_another_thread, daemon=True).start()
    server.serve_forever()
    print("returned", flush=True)
""")


def test_serve_forever_runs_a_signal_handler_whichever_thread_got_the_signal() -> None:
    """A process's signal goes to any of its threads; the Python handler then
    waits for the main thread to run bytecode. serve_forever() must not sit
    in a wait no signal can end (CI once saw SIGTERM ignored that way)."""
    result = subprocess.run([sys.executable, "-c", _SIGNAL_PROGRAM], check=False,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "returned\n"


def test_close_gives_back_every_descriptor_it_opened() -> None:
    """A server that served a client and closed leaves no descriptor open
    (its listener, its client's socket and its wake-up pair): a service that
    makes and closes servers in a loop does not run out."""
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc/self/fd to count descriptors")

    def open_descriptors() -> int:
        return len(list(fd_dir.iterdir()))

    before = open_descriptors()
    for _ in range(3):
        server = SMTPServer(auth_optional=True, disable_reverse_lookup=True,
                            on_data=lambda stream, session: None)
        with server:
            host, port = server.listen(0, "127.0.0.1")
            with smtplib.SMTP(host, port) as client:
                client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nx\r\n")
    assert open_descriptors() == before
