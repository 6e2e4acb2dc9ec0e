"""``MessageStream``: the body of one message, as ``on_data`` sees it.

An async iterator of byte chunks with backpressure: when the handler falls
behind by more than ``HIGH_WATER`` bytes the connection stops reading from
the client until the handler has caught up, so memory stays bounded however
slow the handler or large the message.
"""

from __future__ import annotations

from collections.abc import Callable

from smtp_server import HIGH_WATER, ChunkQueue, StreamState

from ._io import EventWaiter, Waiter

__all__ = ["HIGH_WATER", "MessageStream"]


class MessageStream(StreamState):
    """Chunks of the message body; ``async for chunk in stream``.

    ``byte_length`` counts the bytes delivered to the stream so far, and
    ``size_exceeded`` turns true with the chunk that reaches the server's
    ``size`` when the message is bigger (nothing beyond ``size`` is
    delivered). If the message is aborted (too big, connection lost, RSET...)
    iteration raises :class:`MessageAbortedError` after the bytes received
    before the abort: a handler that stores as it reads must then discard
    what it stored.
    """

    def __init__(
        self,
        waiter: Callable[[], Waiter] | None = None,
        on_drained: Callable[[], None] | None = None,
    ) -> None:
        self._queue = ChunkQueue()
        self._waiter: Callable[[], Waiter] = waiter or EventWaiter
        self._wakeup: Waiter | None = None
        self._on_drained = on_drained

    # -- producer side (the connection) -------------------------------------

    def feed(self, data: bytes) -> bool:
        """Add a chunk; returns True when the reader should be throttled."""
        throttle = self._queue.push(data)
        self._wake()
        return throttle

    def end(self) -> None:
        self._queue.ended = True
        self._wake()

    def abort(self, reason: str) -> None:
        if self._queue.abort(reason):
            self._wake()

    def discard(self) -> None:
        """The handler is gone: drop what it will never read."""
        self._queue.clear()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    # -- consumer side (the handler) -----------------------------------------

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> bytes:
        queue = self._queue
        while not queue.chunks:
            if queue.ended:
                queue.check_end()
                raise StopAsyncIteration
            self._wakeup = wakeup = self._waiter()
            await wakeup.wait()
        chunk, drained = queue.pop()
        if drained and self._on_drained is not None:
            self._on_drained()
        return chunk

    async def read(self) -> bytes:
        """The whole (rest of the) message as one ``bytes``."""
        return b"".join([chunk async for chunk in self])
