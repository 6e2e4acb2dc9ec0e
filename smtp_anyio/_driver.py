"""The connection driver: feeds bytes to the core, runs handlers, keeps time.

It is push-driven: the transport calls :meth:`Connection.feed` with whatever
arrived, and everything that needs no waiting (the core's own replies, plain
function handlers, the default handlers) happens right there, inside that
call, with one write per read. Only coroutine handlers, TLS handshakes and
``on_data`` run as tasks; while one decides, reading pauses, so replies stay
in order (RFC 2920) and buffers stay bounded.

The class is layered: state and helpers in ``_driver_base``, messages in
``_driver_data``, and here input, the pump, decisions, TLS and the session
task.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

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
    StartTLS,
    State,
    TLSInfo,
    XClient,
)
from smtp_server import (
    Outcome,
    SMTPError,
    default_decision,
    failed,
    log_closed,
    log_opened,
    refuse,
    succeeded,
)

from ._driver_base import AsyncHost, ConnectionBase
from ._driver_data import MessageFlow

__all__ = ["AsyncHost", "Connection", "ConnectionBase"]

_PRE_GREETING_LIMIT = 64 * 1024
_FINAL_FLUSH = 5.0


class Connection(MessageFlow):
    """One client: a :class:`ServerConnection` plus its handlers and timers."""

    __slots__ = ()

    # -- input, from the transport ------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._finished:
            return
        self.last_activity = now = time.monotonic()
        self._deadline.fed(now, len(data))
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
            elif isinstance(event, XClient):  # another client now: count it
                self._slot.admit(conn, self.log, " (XCLIENT)")
            elif isinstance(event, ConnectionClosed):
                self._finish()
                break
        self._deadline.settled(conn.receiving)
        out = conn.data_to_send()
        if out:
            self.io.write(out)

    def _decide(self, event: Event, handler: Callable[..., Any] | None) -> None:
        conn = self.conn
        if handler is None:
            default_decision(conn, event)
            return
        if isinstance(event, AuthAttempt) and self._slot.refuse_auth(
                conn, self.log, time.monotonic()):
            return
        try:
            result = handler(event, self.session)
        except Exception as exc:
            outcome = failed(exc)
        else:
            if inspect.isawaitable(result):
                self._run(self._await_decision(event, result))
                return
            outcome = succeeded(result)
        delay = self._auth_pause(event, outcome)
        if delay:
            self._run(self._answer_after(event, outcome, delay))
        else:
            self._answer(event, outcome)

    def _auth_pause(self, event: Event, outcome: Outcome) -> float:
        """Seconds to hold the reply to a failed AUTH (0 for anything else)."""
        return self._slot.auth_pause(event, outcome, time.monotonic(),
                                     self.server.options.auth_failure_delay)

    async def _answer_after(self, event: Event, outcome: Outcome, delay: float) -> None:
        await anyio.sleep(delay)
        self._answer(event, outcome)

    async def _await_decision(self, event: Event, result: Awaitable[object]) -> None:
        try:
            outcome = succeeded(await result)
        except Exception as exc:
            outcome = failed(exc)
        delay = self._auth_pause(event, outcome)
        if delay:
            await anyio.sleep(delay)
        self._answer(event, outcome)

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
        """The connection's task: set up, then watch for the end or idleness.
        The server forgets the connection when this returns."""
        server = self.server
        opened = time.monotonic()
        log_opened(self.log, self.session)
        try:
            if self.implicit_tls and self.conn.state is not State.PROXY:
                self._pause("tls")
            await self.io.run_tasks(self, self._session)
        finally:
            self._finished = True
            self._slot.release()
            if self._stream is not None:
                self._stream.abort("connection_lost")
            close = server.handlers.close if self.admitted else None
            if not self.io.close_now() or close is not None:
                with anyio.CancelScope(shield=True):
                    await self.io.aclose()
                    if close is not None:
                        await self._call(close, self.session)
            log_closed(self.log, self.session, time.monotonic() - opened)

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
                if self._data_active and not self._cut:
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
        if not self._slot.admit(conn, self.log):
            # (After PROXY and TLS: the real client, and a reply it can read.)
            self.admitted = False  # refused before on_connect: no on_close either
            return self._flush_and_stop()
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
            now = time.monotonic()
            idle = now - self.last_activity
            wait = timeout - idle
            # Not idle: a handler is deciding, or on_data is behind and we
            # stopped reading (the client waits for us, not we for it).
            if self._busy is None and "stream" not in self._paused:
                expires = self._deadline.expires()
                if idle >= timeout or (expires is not None and now >= expires):
                    self.log.info("[%s] %s timeout", self.session.id,
                                  "idle" if idle >= timeout else "command")
                    self.conn.idle_timeout()
                    self._pump()
                    self._flush_and_stop()
                    return
                # A command that starts while we sleep ends no earlier than
                # command_timeout from now: waking then is soon enough.
                limit = self._deadline.timeout
                wait = min(wait, expires - now if expires is not None else limit or wait)
            await self._sleep_until_woken(max(wait, 0.05))

    def _refuse(self, error: SMTPError) -> bool:
        refuse(self.conn, error)
        return self._flush_and_stop()

    def _flush_and_stop(self) -> bool:
        out = self.conn.data_to_send()
        if out:
            self.io.write(out)
        self._finish()
        return False
