"""The connection driver: feeds bytes to the core, runs handlers, keeps time.

It is push-driven: the transport calls :meth:`Connection.feed` with whatever
arrived, and everything that needs no waiting (the core's own replies, plain
function handlers, the default handlers) happens right there, inside that
call, with one write per read. Only coroutine handlers, TLS handshakes and
``on_data`` run as tasks; while one decides, reading pauses, so replies stay
in order (RFC 2920) and buffers stay bounded.

Everything here runs in the event loop; on asyncio ``feed`` is called from
protocol callbacks, outside any task, so it must not call anyio functions
that need to detect the running library (``anyio.Event()``, clocks).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from smtp_proto import (
    NEED_DATA,
    PAUSED,
    AuthAttempt,
    ConnectionClosed,
    DataChunk,
    Event,
    Hello,
    LocalProtocolError,
    MailFrom,
    MessageAborted,
    MessageComplete,
    MessageStart,
    ProxyHeader,
    RcptTo,
    RemoteProtocolError,
    ServerConnection,
    Session,
    StartTLS,
    State,
    TLSInfo,
)

from ._base import new_session_id
from ._dispatch import (
    Outcome,
    answer,
    default_decision,
    failed,
    handler_error,
    refuse,
    succeeded,
)
from ._errors import MessageAbortedError, SMTPError
from ._stream import MessageStream
from ._syncstream import BlockingMessageStream

if TYPE_CHECKING:
    from ._io import ConnectionIO, Waiter
    from ._server import SMTPServer

__all__ = ["Connection"]

_PRE_GREETING_LIMIT = 64 * 1024
_FINAL_FLUSH = 5.0


class Connection:
    """One client: a :class:`ServerConnection` plus its handlers and timers."""

    # Slots, not a __dict__: one of these per open connection.
    __slots__ = (
        "_busy",
        "_data_active",
        "_data_done",
        "_data_idle",
        "_data_outcome",
        "_data_wakeup",
        "_data_worker",
        "_fed_before_greeting",
        "_finished",
        "_handover_due",
        "_in_feed",
        "_jobs",
        "_paused",
        "_proxied",
        "_queued_stream",
        "_stream",
        "_wakeup",
        "admitted",
        "conn",
        "implicit_tls",
        "in_message",
        "io",
        "last_activity",
        "log",
        "server",
        "session",
    )

    def __init__(
        self, server: SMTPServer, io: ConnectionIO, *,
        handshake: bool = False, tls: TLSInfo | None = None,
    ) -> None:
        """``handshake``: implicit TLS still to negotiate; ``tls``: already done."""
        self.server = server
        self.io = io
        self.implicit_tls = handshake
        remote = io.remote or (None, None)
        local = io.local or (None, None)
        self.conn = ServerConnection(
            server.protocol_config,
            remote_address=remote[0], remote_port=remote[1],
            local_address=local[0], local_port=local[1],
            session_id=new_session_id(), tls=tls,
        )
        self.session: Session = self.conn.session
        self.log: logging.Logger = server.logger
        self._paused: set[str] = set()
        self._busy: object = None          # what blocks the pump (a decision, TLS)
        self._stream: MessageStream | BlockingMessageStream | None = None
        self._data_outcome: Outcome | None = None
        self._data_done = False
        self._data_worker = False        # the on_data task is started
        self._queued_stream: MessageStream | BlockingMessageStream | None = None
        self._data_wakeup: Waiter | None = None
        self._data_active = False        # on_data is running
        self._data_idle: anyio.Event | None = None
        self._finished = False
        self._jobs = 0                   # decision tasks running
        self._in_feed = False            # inside feed(), see _hand_over()
        self._handover_due = False       # on_data to start in settle()
        self._wakeup: Waiter | None = None
        self._proxied = False
        self._fed_before_greeting = 0
        self.last_activity = time.monotonic()
        self.in_message = False
        self.admitted = False  # past max_clients: the handlers (on_close too) apply

    # -- input, from the transport ------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._finished:
            return
        self.last_activity = time.monotonic()
        conn = self.conn
        if conn.state is State.GREETING:
            self._fed_before_greeting += len(data)
            if self._fed_before_greeting > _PRE_GREETING_LIMIT:
                self._pause("greeting")
        try:
            conn.receive_data(data)
        except LocalProtocolError:
            return
        if self._busy is not None:
            # Input while a decision is out: stop reading until it is made.
            # (Pausing only now, not when the decision starts, saves two
            # system calls per decision for clients that wait for replies.)
            self._pause("busy")
            return
        self._in_feed = True
        try:
            self._pump()
        finally:
            self._in_feed = False

    def feed_eof(self) -> None:
        if self._finished:
            return
        try:
            self.conn.receive_data(b"")
        except LocalProtocolError:
            return
        self._pump()

    # -- the pump --------------------------------------------------------------

    def _pump(self) -> None:
        """Drain the core's events until it needs bytes or a decision."""
        conn = self.conn
        server = self.server
        while self._busy is None and not self._finished:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self.log.info("[%s] closing: %s", self.session.id, exc)
                self._finish()
                break
            if event is NEED_DATA or event is PAUSED:
                break
            if isinstance(event, DataChunk):
                stream = self._stream
                if stream is not None and not self._data_done:
                    stream.size_exceeded = conn.size_exceeded
                    if stream.feed(event.data):
                        self._pause("stream")
                    if self._queued_stream is not None:
                        self._hand_over()
            elif isinstance(event, RcptTo):
                self._decide(event, server.handlers.rcpt_to)
            elif isinstance(event, MailFrom):
                self._decide(event, server.handlers.mail_from)
            elif isinstance(event, MessageStart):
                self._begin_message()
            elif isinstance(event, MessageComplete):
                self._complete_message(event)
            elif isinstance(event, MessageAborted):
                self._abort_message(event)
            elif isinstance(event, Hello):
                conn.accept()
            elif isinstance(event, AuthAttempt):
                self._decide(event, server.handlers.auth)
            elif isinstance(event, StartTLS):
                self._begin_tls()
            elif isinstance(event, ProxyHeader):
                self._proxied = True
                if self.implicit_tls:
                    self._pause("tls")  # what follows is the TLS handshake
                self._wake()
            elif isinstance(event, ConnectionClosed):
                self._finish()
                break
        out = conn.data_to_send()
        if out:
            self.io.write(out)

    def _decide(self, event: Event, handler: Callable[..., Any] | None) -> None:
        conn = self.conn
        if handler is None:
            default_decision(conn, event)
            return
        try:
            result = handler(event, self.session)
        except Exception as exc:
            self._answer(event, failed(exc))
            return
        if inspect.isawaitable(result):
            self._run(self._await_decision(event, result))
        else:
            self._answer(event, succeeded(result))

    def _answer(self, event: Event, outcome: Outcome) -> None:
        """Answer ``event`` unless the session ended while it was decided."""
        if self.conn.pending is event:
            answer(self.conn, event, outcome, self.log)

    def _run(self, job: Awaitable[None]) -> None:
        """Block the pump while ``job`` runs as a task (reading pauses if
        input arrives meanwhile, see feed())."""
        self._busy = job
        self._jobs += 1
        self.io.spawn(self._job_wrapper, job)

    async def _job_wrapper(self, job: Awaitable[None]) -> None:
        try:
            await job
            self._unblock()
            self._pump()
            if self.io.needs_flush():
                await self.io.flush()
        finally:
            self._jobs -= 1

    def _unblock(self) -> None:
        self._busy = None
        self.last_activity = time.monotonic()
        self._resume("busy")
        if self.server.closing:
            self._wake()

    async def _await_decision(self, event: Event, result: Awaitable[object]) -> None:
        try:
            outcome = succeeded(await result)
        except Exception as exc:
            outcome = failed(exc)
        self._answer(event, outcome)

    # -- messages ----------------------------------------------------------------

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
            stream = BlockingMessageStream(
                on_drained=lambda: anyio.from_thread.run_sync(self._resume, "stream"))
        # on_data is handed the stream with the first bytes (or the end): a
        # handler woken at MessageStart would only go back to sleep waiting
        # for them, which costs a task switch per message.
        self._stream = self._queued_stream = stream

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
                result = await anyio.to_thread.run_sync(handler, stream, self.session)
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

    # -- TLS -----------------------------------------------------------------------

    def _begin_tls(self) -> None:
        self._pause("tls")
        out = self.conn.data_to_send()
        if out:
            self.io.write(out)
        self._run(self._starttls())

    async def _starttls(self) -> None:
        """STARTTLS: handshake, then ``on_secure``."""
        info = await self._handshake(b"")
        handler = self.server.handlers.secure
        if info is not None and handler is not None:
            error = await self._call(handler, info, self.session)
            if error is not None:
                self._refuse(error)

    async def _handshake(self, prefix: bytes) -> TLSInfo | None:
        """Run the TLS handshake and tell the core; None if it failed (the
        connection is then closed). ``prefix``: handshake bytes already read."""
        try:
            info = await self.io.start_tls(
                self.server.tls.context, self.server.options.socket_timeout, prefix)
        except Exception as exc:
            self.log.info("[%s] TLS handshake failed: %r", self.session.id, exc)
            self._finish(abort=True)
            return None
        self.conn.tls_established(info)
        self.log.info("[%s] TLS established: %s %s", self.session.id, info.version, info.cipher)
        self._resume("tls")
        return info

    # -- the session task ------------------------------------------------------------

    async def run(self) -> None:
        """The connection's task: set up, then watch for the end or idleness."""
        server = self.server
        try:
            if self.implicit_tls and self.conn.state is not State.PROXY:
                self._pause("tls")
            await self.io.run_tasks(self, self._session)
        finally:
            self._finished = True
            if self._stream is not None:
                self._stream.abort("connection_lost")
            close = server.handlers.close if self.admitted else None
            if not self.io.close_now() or close is not None:
                with anyio.CancelScope(shield=True):
                    await self.io.aclose()
                    if close is not None:
                        await self._call(close, self.session)
            server.forget(self)

    async def _session(self) -> bool:
        """Set up, serve, wind down; True if the connection's other tasks
        (decisions, on_data) must be cancelled."""
        if await self._setup():
            await self._watch()
        # Send the last replies (a 221, a 421) before the tasks are cancelled:
        # one may be in the middle of sending them. And let an on_data see its
        # MessageAbortedError rather than a cancellation. (Most sessions end
        # with nothing to wait for: no timer, no cancellation.)
        if self.io.needs_flush() or self._data_active:
            with anyio.move_on_after(_FINAL_FLUSH):
                await self.io.flush()
                if self._data_active:
                    self._data_idle = anyio.Event()
                    await self._data_idle.wait()
        if self._jobs or self._data_active:
            return True
        self._wake_data_worker()  # it sees _finished and returns
        return False

    async def _setup(self) -> bool:
        server = self.server
        conn = self.conn
        timeout = server.options.socket_timeout
        if server.over_capacity():
            conn.shutdown("Too many connected clients, try again in a moment")
            return self._flush_and_stop()
        self.admitted = True
        if self._done():  # e.g. a bad PROXY header arrived before this task ran
            return False
        if conn.state is State.PROXY:
            with anyio.move_on_after(timeout):
                while not self._proxied and not self._done():
                    await self._sleep_until_woken()
            if not self._proxied:
                self._finish(abort=True)
                return False
        if self.implicit_tls:
            self._pause("tls")
            await self._handshake(self.conn.take_buffered_data())
            if self._done():
                return False
        if not server.options.disable_reverse_lookup and self.session.remote_address:
            name = await server.reverse_lookup(self.session.remote_address)
            if name:
                self.session.client_hostname = name
        if server.handlers.connect is not None:
            error = await self._call(server.handlers.connect, self.session)
            if error is not None:
                return self._refuse(error)
        if self.session.secure and server.handlers.secure is not None and self.session.tls:
            error = await self._call(server.handlers.secure, self.session.tls, self.session)
            if error is not None:
                return self._refuse(error)
        delay = server.early_talker_delay
        if delay > 0:
            await anyio.sleep(delay)
        if self._done():
            return False
        conn.send_greeting()
        self._resume("greeting")
        self._pump()
        if self.io.needs_flush():
            await self.io.flush()
        return not self._finished

    async def _watch(self) -> None:
        timeout = self.server.options.socket_timeout
        while not self._finished:
            if self.server.closing and not self.in_message and self._busy is None:
                # Server shutdown: 421 between transactions, never inside one.
                self.conn.shutdown()
                self._pump()
                self._flush_and_stop()
                return
            idle = time.monotonic() - self.last_activity
            # Not idle: a handler is deciding, or on_data is behind and we
            # stopped reading (the client waits for us, not we for it).
            if idle >= timeout and self._busy is None and "stream" not in self._paused:
                self.log.info("[%s] idle timeout", self.session.id)
                self.conn.idle_timeout()
                self._pump()
                self._flush_and_stop()
                return
            await self._sleep_until_woken(max(timeout - idle, 0.05))

    async def _sleep_until_woken(self, timeout: float | None = None) -> None:
        wakeup = self._wakeup = self.io.waiter()
        await wakeup.wait(timeout)

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    async def _call(self, handler: Callable[..., Any], *args: object) -> SMTPError | None:
        """Run a lifecycle handler; returns the SMTPError it raised, if any."""
        try:
            result = handler(*args)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            return handler_error(exc, self.log, self.session.id, handler)
        return None

    def _refuse(self, error: SMTPError) -> bool:
        refuse(self.conn, error)
        return self._flush_and_stop()

    def _flush_and_stop(self) -> bool:
        out = self.conn.data_to_send()
        if out:
            self.io.write(out)
        self._finish()
        return False

    # -- server shutdown -----------------------------------------------------------

    def shutdown(self) -> None:
        """Server closing: the session task says 421 as soon as no message
        or decision is in flight."""
        self._wake()

    def abort(self) -> None:
        self._finish(abort=True)

    # -- helpers -------------------------------------------------------------------

    def _pause(self, reason: str) -> None:
        if not self._paused:
            self.io.pause_reading()
        self._paused.add(reason)

    def _resume(self, reason: str) -> None:
        if reason == "stream":
            self.last_activity = time.monotonic()
        if reason in self._paused:
            self._paused.discard(reason)
            if not self._paused and not self._finished:
                self.io.resume_reading()

    def _done(self) -> bool:
        """The session is over (a method, so that type checkers do not assume
        it unchanged across an ``await``)."""
        return self._finished

    def _finish(self, abort: bool = False) -> None:
        if self._finished:
            return
        self._finished = True
        out = self.conn.data_to_send()
        if out and not abort:
            self.io.write(out)
        if abort:
            self.io.abort()
        if self._stream is not None:
            self._stream.abort("connection_lost")
            self._stream = None
        self._wake()


class _AwaitingData:
    """What blocks the pump while ``on_data`` has yet to return for a
    complete message; the ``on_data`` task answers ``event`` itself."""

    __slots__ = ("event",)

    def __init__(self, event: Event) -> None:
        self.event = event
