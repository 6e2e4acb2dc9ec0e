"""``BlockingMessageStream``: the message body as a blocking, file-like object.

What ``on_data`` gets when it is a plain function: in ``smtp_sync`` always,
and in ``smtp_anyio`` when the handler is not a coroutine (it then runs in a
worker thread so that its blocking reads never stall the event loop). The
connection feeds chunks from its own thread; the handler reads in another.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ._errors import MessageAbortedError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["BlockingMessageStream"]

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class BlockingMessageStream(io.RawIOBase):
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
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._cond = threading.Condition()
        self._ended = False
        self._aborted: str | None = None
        self._on_drained = on_drained
        self._throttled = False
        self.byte_length = 0
        self.size_exceeded = False

    # -- producer side ---------------------------------------------------------

    def feed(self, data: bytes) -> bool:
        """Add a chunk; True when the producer should stop reading."""
        with self._cond:
            self._chunks.append(data)
            self._buffered += len(data)
            self.byte_length += len(data)
            if self._buffered > HIGH_WATER:
                self._throttled = True
            self._cond.notify_all()
            return self._throttled

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def abort(self, reason: str) -> None:
        with self._cond:
            if not self._ended:
                self._ended = True
                self._aborted = reason
                if reason == "size_exceeded":
                    self.size_exceeded = True
                self._cond.notify_all()

    def discard(self) -> None:
        with self._cond:
            self._chunks.clear()
            self._buffered = 0

    @property
    def ended(self) -> bool:
        return self._ended

    # -- consumer side ---------------------------------------------------------

    def _next_chunk(self) -> bytes | None:
        drained = False
        while self._pull is not None and not self._chunks and not self._ended:
            self._pull()
        with self._cond:
            while not self._chunks:
                if self._ended:
                    if self._aborted is not None:
                        raise MessageAbortedError(self._aborted)
                    return None
                self._cond.wait()
            chunk = self._chunks.popleft()
            self._buffered -= len(chunk)
            if self._throttled and self._buffered <= LOW_WATER:
                self._throttled = False
                drained = True
        if drained and self._on_drained is not None:
            self._on_drained()
        return chunk

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
                with self._cond:
                    self._chunks.appendleft(chunk[wanted:])
                    self._buffered += len(chunk) - wanted
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
                    with self._cond:
                        self._chunks.appendleft(chunk[end + 1 :])
                        self._buffered += len(chunk) - end - 1
                parts.append(chunk[: end + 1])
                break
            parts.append(chunk)
        return b"".join(parts)

    def readable(self) -> bool:
        return True
