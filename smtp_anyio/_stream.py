"""``MessageStream``: the body of one message, as ``on_data`` sees it.

An async iterator of byte chunks with backpressure: when the handler falls
behind by more than ``HIGH_WATER`` bytes the connection stops reading from
the client until the handler has caught up, so memory stays bounded however
slow the handler or large the message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import anyio

from ._errors import MessageAbortedError

__all__ = ["HIGH_WATER", "MessageStream"]

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class MessageStream:
    """Chunks of the message body; ``async for chunk in stream``.

    ``byte_length`` counts the bytes delivered to the stream so far, and
    ``size_exceeded`` turns true with the chunk that reaches the server's
    ``size`` when the message is bigger (nothing beyond ``size`` is
    delivered). If the message is aborted (too big, connection lost, RSET...)
    iteration raises :class:`MessageAbortedError` after the bytes received
    before the abort: a handler that stores as it reads must then discard
    what it stored.
    """

    def __init__(self, on_drained: Callable[[], None] | None = None) -> None:
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._wakeup: anyio.Event | None = None
        self._ended = False
        self._aborted: str | None = None
        self._on_drained = on_drained
        self._throttled = False
        self.byte_length = 0
        self.size_exceeded = False

    # -- producer side (the connection) -------------------------------------

    def feed(self, data: bytes) -> bool:
        """Add a chunk; returns True when the reader should be throttled."""
        self._chunks.append(data)
        self._buffered += len(data)
        self.byte_length += len(data)
        self._wake()
        if self._buffered > HIGH_WATER:
            self._throttled = True
        return self._throttled

    def end(self) -> None:
        self._ended = True
        self._wake()

    def abort(self, reason: str) -> None:
        if not self._ended:
            self._aborted = reason
            self._ended = True
            if reason == "size_exceeded":
                self.size_exceeded = True
            self._wake()

    def discard(self) -> None:
        """The handler is gone: drop what it will never read."""
        self._chunks.clear()
        self._buffered = 0

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    # -- consumer side (the handler) -----------------------------------------

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._ended:
                if self._aborted is not None:
                    raise MessageAbortedError(self._aborted)
                raise StopAsyncIteration
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._throttled and self._buffered <= LOW_WATER:
            self._throttled = False
            if self._on_drained is not None:
                self._on_drained()
        return chunk

    async def read(self) -> bytes:
        """The whole (rest of the) message as one ``bytes``."""
        return b"".join([chunk async for chunk in self])

    @property
    def ended(self) -> bool:
        return self._ended
