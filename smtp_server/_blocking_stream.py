"""``BlockingMessageStream``: the message body as a blocking, file-like object.

What ``on_data`` gets when it is a plain function: in ``smtp_sync`` always,
and in ``smtp_anyio`` when the handler is not a coroutine (it then runs in a
worker thread so that its blocking reads never stall the event loop). The
connection feeds chunks from its own thread; the handler reads in another
(or, in ``smtp_sync``, pulls them through the connection in the same one).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ._chunks import ChunkQueue, StreamState

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["BlockingMessageStream"]


class BlockingMessageStream(StreamState, io.RawIOBase):
    """``read(n=-1)``, ``readinto()``, ``readline()`` and iteration by chunks,
    blocking until the bytes arrive; a readable binary file as far as
    ``email.message_from_binary_file()`` or ``hashlib.file_digest()`` are
    concerned. ``size_exceeded`` and ``byte_length`` as on the async stream;
    an aborted message raises :class:`MessageAbortedError`."""

    def __init__(
        self,
        on_drained: Callable[[], None] | None = None,
        *,
        pull: Callable[[], None] | None = None,
    ) -> None:
        """``pull``: instead of waiting for another thread to feed it, call
        this to make the connection read more (``smtp_sync`` runs ``on_data``
        in the connection's own thread)."""
        super().__init__()
        self._pull = pull
        self._queue = ChunkQueue()
        # Pulling, producer and reader are one thread: nothing to lock or wake.
        self._cond: threading.Condition | _SameThread = (
            _SameThread() if pull is not None else threading.Condition())
        self._on_drained = on_drained

    # -- producer side ---------------------------------------------------------

    def feed(self, data: bytes) -> bool:
        """Add a chunk; True when the producer should stop reading."""
        with self._cond:
            throttle = self._queue.push(data)
            self._cond.notify_all()
            return throttle

    def end(self) -> None:
        with self._cond:
            self._queue.ended = True
            self._cond.notify_all()

    def abort(self, reason: str) -> None:
        with self._cond:
            if self._queue.abort(reason):
                self._cond.notify_all()

    def discard(self) -> None:
        with self._cond:
            self._queue.clear()

    # -- consumer side ---------------------------------------------------------

    def _next_chunk(self) -> bytes | None:
        queue = self._queue
        while self._pull is not None and not queue.chunks and not queue.ended:
            self._pull()
        with self._cond:
            while not queue.chunks:
                if queue.ended:
                    queue.check_end()
                    return None
                self._cond.wait()
            chunk, drained = queue.pop()
        if drained and self._on_drained is not None:
            self._on_drained()
        return chunk

    def _put_back(self, rest: bytes) -> None:
        with self._cond:
            self._queue.unpop(rest)

    def __iter__(self) -> Iterator[bytes]:
        """The message by chunks as they arrive (not by lines, unlike files)."""
        while True:
            chunk = self._next_chunk()
            if chunk is None:
                return
            yield chunk

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when negative)."""
        if size is None or size < 0:
            return b"".join(self)
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            chunk = self._next_chunk()
            if chunk is None:
                break
            if len(chunk) > wanted:
                self._put_back(chunk[wanted:])
                chunk = chunk[:wanted]
            parts.append(chunk)
            wanted -= len(chunk)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        """One line, CRLF included (or what is left at the end). ``size`` is
        accepted for file compatibility; lines are bounded by the message."""
        parts: list[bytes] = []
        while True:
            chunk = self._next_chunk()
            if chunk is None:
                break
            end = chunk.find(b"\n")
            if end >= 0:
                if end + 1 < len(chunk):
                    self._put_back(chunk[end + 1 :])
                parts.append(chunk[: end + 1])
                break
            parts.append(chunk)
        return b"".join(parts)

    def readable(self) -> bool:
        return True


class _SameThread:
    """The part of ``threading.Condition`` the stream uses, for a stream fed
    and read by one thread (``smtp_sync``): costs nothing, never waits."""

    __slots__ = ()

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        return None

    def notify_all(self) -> None:
        return None

    def wait(self) -> bool:
        raise RuntimeError("a pulled stream never waits")  # pragma: no cover
