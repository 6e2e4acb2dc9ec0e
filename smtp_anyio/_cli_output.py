"""Console and log output of the command-line server that never blocks the
event loop.

A ``print()`` in the loop blocks the whole server as soon as standard output
is a pipe nobody reads (its 64 KiB fill up): no more replies, no greetings.
So the loop only appends lines to a bounded queue, and a thread of its own
writes them out. When the queue is full the line is dropped and counted, and
the count is written in the dropped lines' place once the writer gets going
again (``N lines dropped``). Log records go the same way, through
:class:`WriterHandler`, to a second writer on standard error, so that one
stream stuck does not hold up the other.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TextIO

__all__ = ["LIMIT", "LineWriter", "WriterHandler", "close_all"]

LIMIT = 10_000
"""Lines a writer holds before it drops new ones."""


class LineWriter:
    """Writes lines to ``stream`` from a daemon thread; :meth:`put` never
    blocks.

    The thread writes to the stream's file descriptor directly when it has
    one: a thread blocked in a write then holds no lock of ``sys.stdout``
    (which the interpreter takes at exit to flush it), and every batch of
    lines reaches a pipe at once, unbuffered, so that a reader sees each
    line as soon as it is written.
    """

    def __init__(self, stream: TextIO, *, limit: int = LIMIT, name: str = "output") -> None:
        self._limit = limit
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        self._emit = _fd_writer(stream)
        self._lines: deque[str] = deque()
        self._dropped = 0
        self._closing = False
        self._broken = False
        self._ready = threading.Condition(threading.Lock())
        # A daemon: a writer stuck on a pipe nobody reads must not keep the
        # process alive at exit (close() waits for it a bounded time).
        self._thread = threading.Thread(target=self._run, name=f"smtp_anyio {name} writer",
                                        daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Lines dropped and not yet reported."""
        return self._dropped

    def put(self, line: str) -> None:
        """Queue ``line`` (without its newline); drop it if the queue is full."""
        with self._ready:
            if len(self._lines) >= self._limit or self._closing:
                self._dropped += 1
                return
            self._lines.append(line)
            if len(self._lines) == 1:
                self._ready.notify()

    def finish(self) -> None:
        """Let the thread end once it has written what is queued; lines put
        afterwards are dropped."""
        with self._ready:
            self._closing = True
            self._ready.notify()

    def close(self, timeout: float) -> bool:
        """:meth:`finish`, and wait up to ``timeout`` seconds for the queued
        lines to be written; True if they were."""
        self.finish()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._lines and not self._closing:
                    self._ready.wait()
                if not self._lines:
                    return  # closing, and all written
                batch = list(self._lines)
                self._lines.clear()
                # Lines are dropped only while the queue is full, that is
                # after every line of this batch: the count goes after them.
                dropped, self._dropped = self._dropped, 0
            if dropped:
                batch.append(f"{dropped} lines dropped")
            if self._broken:
                continue
            text = "".join(f"{line}\n" for line in batch)
            try:
                self._emit(text.encode(self._encoding, "backslashreplace"))
            except (OSError, ValueError):
                # The reader went away (EPIPE) or the stream was closed:
                # nothing can be written any more; keep draining the queue
                # so that the server never notices.
                self._broken = True


def close_all(writers: Sequence[LineWriter], timeout: float) -> bool:
    """Close ``writers`` within ``timeout`` seconds in all: each drains
    meanwhile, so that one stuck stream does not cost the others theirs."""
    for writer in writers:
        writer.finish()
    deadline = time.monotonic() + timeout
    # Every writer is waited for, even after one that timed out.
    drained = [writer.close(max(0.0, deadline - time.monotonic())) for writer in writers]
    return all(drained)


def _fd_writer(stream: TextIO) -> Callable[[bytes], None]:
    """A function writing bytes to ``stream``: to its descriptor when it has
    one (see :class:`LineWriter`), else (a test's capture object) to the
    stream itself."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        def write_stream(data: bytes) -> None:
            stream.write(data.decode(stream.encoding or "utf-8", "replace"))
            stream.flush()
        return write_stream
    stream.flush()  # anything printed before the writer started goes first

    def write_fd(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    return write_fd


class WriterHandler(logging.Handler):
    """Log records onto a :class:`LineWriter`: formatted in the thread that
    logs (as :class:`logging.handlers.QueueHandler` does, so that nothing of
    the record is used later from another thread), written by the writer's
    thread.

    Not ``QueueHandler`` with a ``QueueListener``: their queue is unbounded
    unless given a bound, a bounded one makes ``QueueHandler`` report each
    full-queue error on standard error -- from the logging thread, the very
    write that must not happen there -- and ``QueueListener.stop()`` waits
    without a limit for a listener stuck on a pipe nobody reads.
    """

    def __init__(self, writer: LineWriter, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception as exc:
            # Not handleError(): it prints to sys.stderr from this thread.
            line = f"logging error: {exc!r} formatting {record.msg!r} % {record.args!r}"
        self.writer.put(line)
