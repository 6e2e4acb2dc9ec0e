"""The connection driver's state and the small moves every part of it makes:
pausing and resuming reads, running a decision as a task, waking the
session task, ending the connection.

The driver is one class in three layers, each a module of its own:
:class:`ConnectionBase` (this one: state, helpers), ``_driver_data``
(``on_data`` and the message stream) and ``_driver`` (input, the pump,
decisions, TLS, the session task). A connection sees its server only
through :class:`AsyncHost`, never the server's module.

Everything here runs in the event loop; on asyncio ``feed`` is called from
protocol callbacks, outside any task, so it must not call anyio functions
that need to detect the running library (``anyio.Event()``, clocks).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from smtp_proto import Event, ServerConnection, Session, TLSInfo
from smtp_server import (
    BlockingMessageStream,
    ClientSlot,
    CommandDeadline,
    Outcome,
    ServerHost,
    SMTPError,
    answer,
    handler_error,
    new_session_id,
    session_transcript,
)

from ._stream import MessageStream
from ._threads import DaemonPool, call_in_thread

if TYPE_CHECKING:
    from ._io import ConnectionIO, Waiter

__all__ = ["AsyncHost", "ConnectionBase"]


class AsyncHost(ServerHost, Protocol):
    """What a connection asks of its ``smtp_anyio`` server."""

    def over_capacity(self) -> bool:
        """More connections are open than ``max_clients`` allows."""
        ...

    async def reverse_lookup(self, address: str) -> str | None:
        """The client's host name, or None (within ``reverse_lookup_timeout``)."""
        ...

    @property
    def worker_threads(self) -> DaemonPool:
        """Where plain ``on_data`` handlers run."""
        ...


class ConnectionBase:
    """One client: a :class:`ServerConnection` plus its handlers and timers."""

    # Slots, not a __dict__: one of these per open connection.
    __slots__ = (
        "_busy",
        "_cut",
        "_data_active",
        "_data_done",
        "_data_idle",
        "_data_outcome",
        "_data_wakeup",
        "_data_worker",
        "_deadline",
        "_fed_before_greeting",
        "_finished",
        "_handover_due",
        "_in_feed",
        "_jobs",
        "_paused",
        "_proxied",
        "_queued_stream",
        "_slot",
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
        self, server: AsyncHost, io: ConnectionIO, *,
        handshake: bool = False, tls: TLSInfo | None = None,
    ) -> None:
        """``handshake``: implicit TLS still to negotiate; ``tls``: already done."""
        self.server = server
        self.io = io
        self.implicit_tls = handshake
        remote = io.remote or (None, None)
        local = io.local or (None, None)
        session_id = new_session_id()
        self.conn = ServerConnection(
            server.protocol_config,
            remote_address=remote[0], remote_port=remote[1],
            local_address=local[0], local_port=local[1],
            session_id=session_id, tls=tls,
            transcript=session_transcript(server.logger, session_id),
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
        self._cut = False                # the server gave up on us (close_timeout)
        options = server.options
        self._deadline = CommandDeadline(options.command_timeout, options.min_data_rate)
        self._slot = ClientSlot(server.client_limits)  # this client's connection count
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

    # -- decisions as tasks ---------------------------------------------------------

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
        self.last_activity = now = time.monotonic()
        self._deadline.restart(now)  # the handler's time is not the client's
        self._resume("busy")
        if self.server.closing:
            self._wake()

    def _pump(self) -> None:
        """Drain the core's events until it needs bytes or a decision (the
        driver's own; see ``_driver.Connection``)."""
        raise NotImplementedError

    # -- the session task's wake-ups -------------------------------------------------

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

    # -- server shutdown -----------------------------------------------------------

    def shutdown(self) -> None:
        """Server closing: the session task says 421 as soon as no message
        or decision is in flight."""
        self._wake()

    def abort(self) -> None:
        """The server gives up on this connection (``close_timeout`` ran
        out): drop it, and wait for nothing of it, a running ``on_data``
        included (a plain one runs on in its daemon thread, unobserved)."""
        self._cut = True
        self._finish(abort=True)
        if self._data_idle is not None:
            self._data_idle.set()

    async def _in_thread(self, func: Callable[..., object], *args: object) -> object:
        """``func(*args)`` in one of the server's daemon threads; cancelling
        the caller abandons the thread (see ``_threads``)."""
        return await call_in_thread(self.server.worker_threads, self.io.schedule,
                                    self.io.waiter(), func, *args)

    # -- helpers -------------------------------------------------------------------

    def _pause(self, reason: str) -> None:
        if not self._paused:
            self.io.pause_reading()
        self._paused.add(reason)

    def _resume(self, reason: str) -> None:
        if reason == "stream":
            self.last_activity = now = time.monotonic()
            self._deadline.restart(now)  # on_data's slowness is not the client's
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
