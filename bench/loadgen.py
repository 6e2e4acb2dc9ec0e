"""The load generators of W5, W6 and W7 (W1 to W4 use Postfix's smtp-source).

    python bench/loadgen.py tls --port N [--procs 2 --concurrency 100 --count 4000 --seconds 10]
    python bench/loadgen.py pipeline --port N [--procs 2 --sessions 20 --messages 20000
                                               --length 1024 --seconds 30]

Each prints one JSON line: ``{"done": n, "seconds": s, "errors": e, ...}``.
W5 (``open_idle``) runs inside ``run.py``, which reads the server's memory
between opening the connections and closing them. Every loop here is bounded
by a count and by a deadline, and only ever connects to 127.0.0.1. Sockets
close with ``SO_LINGER`` 0 (a reset, as smtp-source does) so that thousands
of short connections leave no ``TIME_WAIT`` behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import socket
import ssl
import struct
import sys
import time
from typing import Any

HOST = "127.0.0.1"
LINGER_0 = struct.pack("ii", 1, 0)
SENDER = "foo@bench.localhost"


def message_body(length: int) -> bytes:
    """What ``smtp-source -l length`` sends after DATA: four header lines, a
    blank line, then ``length`` bytes of ``X`` in 80-byte CRLF lines whose
    first character is a digit (so no line starts with a dot), then CRLF."""
    data = bytearray(b"X" * length)
    for i in range(80, length, 80):
        data[i - 80] = ord("0123456789"[(i // 80) % 10])
        data[i - 2 : i] = b"\r\n"
    headers = (
        f"From: <{SENDER}>\r\nTo: <{SENDER}>\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
        f"Message-Id: <bench.0001@bench.localhost>\r\n\r\n"
    ).encode()
    return headers + bytes(data) + b"\r\n.\r\n"


def _reset_on_close(sock: Any) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)


def raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# -- W5: idle connections ------------------------------------------------------


async def _read_reply(reader: asyncio.StreamReader) -> bytes:
    """One whole reply (all lines of a multi-line one); its code."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return line[:3]


async def open_idle(port: int, count: int, *, concurrency: int = 100,
                    timeout: float = 60.0) -> tuple[list[asyncio.StreamWriter], float]:
    """Open ``count`` connections, read the greeting, send EHLO, read its
    reply, and keep them open; returns the writers and the seconds it took.
    Raises TimeoutError past ``timeout``."""
    writers: list[asyncio.StreamWriter] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            reader, writer = await asyncio.open_connection(HOST, port)
            writers.append(writer)
            if await _read_reply(reader) != b"220":
                raise ConnectionError("no 220 greeting")
            writer.write(b"EHLO bench.localhost\r\n")
            if await _read_reply(reader) != b"250":
                raise ConnectionError("EHLO refused")

    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(one() for _ in range(count)))
    except BaseException:
        close_all(writers)
        raise
    return writers, time.perf_counter() - started


def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        _reset_on_close(writer.get_extra_info("socket"))
        writer.close()


# -- W6: implicit-TLS handshakes ---------------------------------------------------


class _Greeted(asyncio.Protocol):
    """Connected (the loop did the TLS handshake): wait for the 220, reset."""

    def __init__(self, finished: asyncio.Future[bool]) -> None:
        self.finished = finished
        self.transport: Any = None
        self.buffer = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n" in self.buffer:
            _reset_on_close(self.transport.get_extra_info("socket"))
            self.transport.abort()
            if not self.finished.done():
                self.finished.set_result(self.buffer.startswith(b"220"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_result(False)


async def _handshakes(port: int, count: int, concurrency: int,
                      seconds: float) -> tuple[int, int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + seconds
    left = count
    done = errors = 0

    async def client() -> None:
        nonlocal left, done, errors
        while left > 0 and time.monotonic() < deadline and errors < 100:
            left -= 1
            finished: asyncio.Future[bool] = loop.create_future()
            try:
                async with asyncio.timeout(10):
                    await loop.create_connection(lambda f=finished: _Greeted(f), HOST, port,
                                                 ssl=context, server_hostname="")
                    greeted = await finished
            except (OSError, TimeoutError):
                greeted = False
            if greeted:
                done += 1
            else:
                errors += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done, errors


def _tls_process(go: Any, results: Any, job: tuple[int, int, int, float]) -> None:
    go.wait()
    results.put(_loop_runner()(_handshakes(*job)))


# -- W7: a pipelining client ---------------------------------------------------------


class _Shared:
    def __init__(self, remaining: int, deadline: float) -> None:
        self.remaining = remaining
        self.deadline = deadline
        self.done = 0
        self.errors = 0


class _Pipeliner(asyncio.Protocol):
    """One session: EHLO, then per message MAIL+RCPT+DATA in one write, the
    three replies, the body in one write, its reply; QUIT at the end."""

    ENVELOPE = (f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{SENDER}>\r\nDATA\r\n").encode()

    def __init__(self, shared: _Shared, body: bytes, finished: asyncio.Future[None]) -> None:
        self.shared = shared
        self.body = body
        self.finished = finished
        self.transport: Any = None
        self.buffer = b""
        self.codes: list[bytes] = []
        self.expect = 1
        self.state = "greeting"

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        _reset_on_close(transport.get_extra_info("socket"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        pos = 0
        while True:
            eol = buffer.find(b"\r\n", pos)
            if eol < 0:
                break
            if buffer[pos + 3 : pos + 4] != b"-":
                self.codes.append(buffer[pos : pos + 3])
                if len(self.codes) == self.expect:
                    codes, self.codes = self.codes, []
                    self.advance(codes)
            pos = eol + 2
        self.buffer = buffer[pos:]

    def advance(self, codes: list[bytes]) -> None:
        state = self.state
        if state == "greeting":
            self.send(b"EHLO bench.localhost\r\n", "ehlo", 1)
        elif state == "ehlo":
            self.next_message()
        elif state == "envelope":
            if codes != [b"250", b"250", b"354"]:
                self.fail(codes)
                return
            self.send(self.body, "body", 1)
        elif state == "body":
            if codes != [b"250"]:
                self.fail(codes)
                return
            self.shared.done += 1
            self.next_message()
        elif state == "quit":
            self.transport.close()

    def next_message(self) -> None:
        shared = self.shared
        if shared.remaining <= 0 or time.monotonic() > shared.deadline:
            self.send(b"QUIT\r\n", "quit", 1)
            return
        shared.remaining -= 1
        self.send(self.ENVELOPE, "envelope", 3)

    def send(self, data: bytes, state: str, expect: int) -> None:
        self.state = state
        self.expect = expect
        self.transport.write(data)

    def fail(self, codes: list[bytes]) -> None:
        self.shared.errors += 1
        print(f"pipeline: unexpected replies {codes} in {self.state}", file=sys.stderr)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_result(None)


async def _pipeline_async(port: int, sessions: int, messages: int, length: int,
                          seconds: float) -> tuple[int, int]:
    loop = asyncio.get_running_loop()
    shared = _Shared(messages, time.monotonic() + seconds)
    body = message_body(length)
    finished = []
    for _ in range(sessions):
        done: asyncio.Future[None] = loop.create_future()
        finished.append(done)
        await loop.create_connection(lambda d=done: _Pipeliner(shared, body, d), HOST, port)
    try:
        async with asyncio.timeout(seconds + 10):
            await asyncio.gather(*finished)
    except TimeoutError:
        shared.errors += 1
    return shared.done, shared.errors


def _pipeline_process(go: Any, results: Any, job: tuple[int, int, int, int, float]) -> None:
    go.wait()
    results.put(_loop_runner()(_pipeline_async(*job)))


def _loop_runner() -> Any:
    """uvloop where installed: the clients should cost as little as they can."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


# -- the command line ----------------------------------------------------------------


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _run_processes(target: Any, per_process: list[tuple[Any, ...]]) -> dict[str, Any]:
    context = multiprocessing.get_context("fork")
    go = context.Event()
    results = context.Queue()
    procs = [context.Process(target=target, args=(go, results, args), daemon=True)
             for args in per_process]
    for proc in procs:
        proc.start()
    time.sleep(0.2)  # let them all reach go.wait()
    started = time.perf_counter()
    go.set()
    outcomes = [results.get() for _ in procs]
    seconds = time.perf_counter() - started
    for proc in procs:
        proc.join()
    return {"done": sum(o[0] for o in outcomes), "errors": sum(o[1] for o in outcomes),
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    tls = sub.add_parser("tls", help="W6: implicit-TLS handshake, the greeting, a reset")
    tls.add_argument("--port", type=int, required=True)
    tls.add_argument("--procs", type=int, default=2)
    tls.add_argument("--concurrency", type=int, default=100, help="per process")
    tls.add_argument("--count", type=int, default=4000)
    tls.add_argument("--seconds", type=float, default=10.0)
    pipe = sub.add_parser("pipeline", help="W7: MAIL+RCPT+DATA in one write, then the body")
    pipe.add_argument("--port", type=int, required=True)
    pipe.add_argument("--procs", type=int, default=2)
    pipe.add_argument("--sessions", type=int, default=20)
    pipe.add_argument("--messages", type=int, default=20000)
    pipe.add_argument("--length", type=int, default=1024)
    pipe.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    raise_nofile()
    if args.command == "tls":
        result = _run_processes(_tls_process, [
            (args.port, n, args.concurrency, args.seconds)
            for n in _split(args.count, args.procs)])
    else:
        procs = min(args.procs, args.sessions)
        result = _run_processes(_pipeline_process, [
            (args.port, s, m, args.length, args.seconds)
            for s, m in zip(_split(args.sessions, procs), _split(args.messages, procs),
                            strict=True)])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
