"""Messages: ``on_data``, its stream and the message's answer.

One ``on_data`` task per connection runs the handler for each message in
turn; it is handed the stream with the message's first bytes. A coroutine
handler reads a :class:`MessageStream` in the loop; a plain function reads a
:class:`~smtp_server.BlockingMessageStream` in a worker thread.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from smtp_proto import Event, MessageAborted
from smtp_server import BlockingMessageStream, MessageAbortedError, Outcome, failed, succeeded

from ._driver_base import ConnectionBase
from ._stream import MessageStream

__all__ = ["MessageFlow"]


class MessageFlow(ConnectionBase):
    """The connection driver's message handling (see ``_driver_base``)."""

    __slots__ = ()

    def _begin_message(self) -> None:
        self.in_message = True
        self._data_outcome = None
        self._data_done = False
        handler = self.server.handlers.data
        if handler is None:
            self._stream = None
            return
        stream: MessageStream | BlockingMessageStream
        if self.server.handlers.data_is_async:
            stream = MessageStream(self.io.waiter, on_drained=lambda: self._resume("stream"))
        else:
            # A plain function reads with blocking calls: it runs in a worker
            # thread, and tells the loop from there when it has caught up.
            stream = BlockingMessageStream(on_drained=self._drained_in_thread)
        # on_data is handed the stream with the first bytes (or the end): a
        # handler woken at MessageStart would only go back to sleep waiting
        # for them, which costs a task switch per message.
        self._stream = self._queued_stream = stream

    def _drained_in_thread(self) -> None:
        """A plain on_data caught up (called in its thread): read again."""
        self.io.schedule(self._resume_stream)

    def _resume_stream(self) -> None:
        self._resume("stream")

    def _wake_data_worker(self) -> None:
        if self._data_wakeup is not None:
            self._data_wakeup.set()
            self._data_wakeup = None

    def _hand_over(self) -> None:
        """Wake (or start) the on_data task for the queued stream."""
        if self._in_feed and self.io.feeds_from_task:
            self._handover_due = True  # settle() decides, right after feed()
            return
        if self._data_worker:
            self._wake_data_worker()
        else:
            self._data_worker = True
            self.io.spawn(self._run_on_data)

    async def _run_on_data(self) -> None:
        """The connection's on_data task: runs the handler for each message
        in turn (waking one task costs less than starting one per message)."""
        handler = self.server.handlers.data
        assert handler is not None
        while True:
            stream = self._queued_stream
            if stream is None:
                if self._finished:
                    return
                wakeup = self._data_wakeup = self.io.waiter()
                await wakeup.wait()
                continue
            self._queued_stream = None
            await self._run_handler(handler, stream)

    async def _run_handler(
        self, handler: Callable[..., Any], stream: MessageStream | BlockingMessageStream
    ) -> None:
        self._data_active = True
        try:
            await self._on_data(handler, stream)
        finally:
            self._data_active = False
            if self._data_idle is not None:
                self._data_idle.set()

    async def settle(self) -> None:
        """Called by a reader task after :meth:`feed`: start ``on_data`` for
        a message handed over meanwhile. A message that is complete already
        (a short one, read in one go) has its ``on_data`` run right here, in
        the reader's task: no other task to wake, which on trio is a good
        part of the cost of a short message. Nothing is read meanwhile, and
        nothing needs to be: the next command waits for this answer."""
        if not self._handover_due:
            return
        self._handover_due = False
        stream = self._queued_stream
        if stream is None:
            return
        handler = self.server.handlers.data
        if stream.ended and not self._data_active and self.server.handlers.data_is_async:
            assert handler is not None
            self._queued_stream = None
            await self._run_handler(handler, stream)
        else:
            self._hand_over()

    async def _on_data(
        self, handler: Callable[..., Any], stream: MessageStream | BlockingMessageStream
    ) -> None:
        try:
            if isinstance(stream, BlockingMessageStream):
                result = await self._in_thread(handler, stream, self.session)
            else:
                result = handler(stream, self.session)
            if inspect.isawaitable(result):
                result = await result
            outcome: Outcome | None = succeeded(result)
        except MessageAbortedError:
            outcome = None
        except Exception as exc:
            outcome = failed(exc)
        stream.discard()
        self._resume("stream")
        if stream is not self._stream:
            return  # aborted meanwhile: nobody waits for this answer
        self._data_outcome = outcome
        self._data_done = True
        waiting = self._busy
        if isinstance(waiting, _AwaitingData):
            # The message is complete and its decision waits for us: answer
            # it here rather than waking another task.
            self._answer(waiting.event, outcome or succeeded())
            self._end_message()
            self._unblock()
            self._pump()
            if self.io.needs_flush():
                await self.io.flush()

    def _complete_message(self, event: Event) -> None:
        stream = self._stream
        if stream is None:
            self.conn.accept()
            self._end_message()
            return
        stream.end()
        if self._queued_stream is not None:
            self._hand_over()
        if self._data_done:
            self._answer(event, self._data_outcome or succeeded())
            self._end_message()
            return
        self._busy = _AwaitingData(event)

    def _abort_message(self, event: MessageAborted) -> None:
        if self._stream is not None:
            self._stream.abort(event.reason)
            if self._queued_stream is not None:
                self._hand_over()  # on_data still sees the message, and its abort
            self._stream = None
        self._resume("stream")
        self._end_message()
        self.log.info("[%s] message aborted: %s", self.session.id, event.reason)

    def _end_message(self) -> None:
        """After the message's answer (or abort): a closing server may now
        say 421 (the session task does it)."""
        self._stream = None
        self.in_message = False
        if self.server.closing:
            self._wake()


class _AwaitingData:
    """What blocks the pump while ``on_data`` has yet to return for a
    complete message; the ``on_data`` task answers ``event`` itself."""

    __slots__ = ("event",)

    def __init__(self, event: Event) -> None:
        self.event = event
