"""The bookkeeping both message streams share: queued chunks, counts, the
backpressure marks and how the message ended. No waiting here: the async
stream waits on anyio events, the blocking one on a condition or a pull."""

from __future__ import annotations

from collections import deque

from ._errors import MessageAbortedError

__all__ = ["HIGH_WATER", "LOW_WATER", "ChunkQueue", "StreamState"]

HIGH_WATER = 256 * 1024
"""Unread bytes above which the connection stops reading from the client."""
LOW_WATER = 64 * 1024
"""Unread bytes below which it starts again."""


class ChunkQueue:
    __slots__ = ("aborted", "buffered", "byte_length", "chunks", "ended", "size_exceeded",
                 "throttled")

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.ended = False
        self.aborted: str | None = None
        self.throttled = False
        self.byte_length = 0
        self.size_exceeded = False

    def push(self, data: bytes) -> bool:
        """Queue a chunk; True while the reader should be throttled."""
        self.chunks.append(data)
        self.buffered += len(data)
        self.byte_length += len(data)
        if self.buffered > HIGH_WATER:
            self.throttled = True
        return self.throttled

    def abort(self, reason: str) -> bool:
        """Mark the message aborted; False if it had already ended."""
        if self.ended:
            return False
        self.ended = True
        self.aborted = reason
        if reason == "size_exceeded":
            self.size_exceeded = True
        return True

    def clear(self) -> None:
        self.chunks.clear()
        self.buffered = 0

    def pop(self) -> tuple[bytes, bool]:
        """The next chunk (there must be one), and whether the reader has
        now caught up enough to lift the throttle."""
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        drained = self.throttled and self.buffered <= LOW_WATER
        if drained:
            self.throttled = False
        return chunk, drained

    def unpop(self, rest: bytes) -> None:
        """Put back the unread end of a chunk."""
        self.chunks.appendleft(rest)
        self.buffered += len(rest)

    def check_end(self) -> None:
        """With no chunk left: raise if the message was aborted."""
        if self.aborted is not None:
            raise MessageAbortedError(self.aborted)


class StreamState:
    """What both streams show of their queue (``_queue``) to the handler."""

    _queue: ChunkQueue

    @property
    def byte_length(self) -> int:
        """Bytes delivered to the stream so far."""
        return self._queue.byte_length

    @property
    def size_exceeded(self) -> bool:
        """The message outgrew the server's ``size``."""
        return self._queue.size_exceeded

    @size_exceeded.setter
    def size_exceeded(self, value: bool) -> None:
        self._queue.size_exceeded = value

    @property
    def ended(self) -> bool:
        """The body is complete, or aborted."""
        return self._queue.ended
