"""One client on a blocking socket, in its own thread.

Pull-driven: the loop flushes replies, asks the core for the next event and
reads the socket only when the core needs bytes. ``on_data`` runs in the same
thread and reads the message through a stream that pulls from the socket, so
a slow handler slows the client and memory stays bounded with no extra
thread. The decisions themselves go through the same translation as the
async server (``smtp_server``'s dispatch).
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import time
from typing import Any, Protocol

from smtp_proto import (
    NEED_DATA,
    PAUSED,
    PROXY_V1_MAX_LENGTH,
    PROXY_V2_SIGNATURE,
    AuthAttempt,
    ConnectionClosed,
    DataChunk,
    Event,
    Hello,
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
    XClient,
)
from smtp_server import (
    BlockingMessageStream,
    ClientSlot,
    CommandDeadline,
    MessageAbortedError,
    Outcome,
    ServerHost,
    SMTPError,
    answer,
    default_decision,
    failed,
    handler_error,
    log_closed,
    log_opened,
    new_session_id,
    normalise_address,
    refuse,
    session_transcript,
    succeeded,
    tls_info,
)

from ._send import send_holding_gil

__all__ = ["SyncConnection", "SyncHost"]

_READ_SIZE = 65536
_CLOSE_NOTIFY_WAIT = 1.0


class _Closed(Exception):
    """The peer is gone or the session ended: unwind to the connection's end."""


class SyncHost(ServerHost, Protocol):
    """What a connection asks of its ``smtp_sync`` server (never its module)."""

    @property
    def wakeup_fd(self) -> int:
        """Readable once the server starts closing."""
        ...

    def reverse_lookup(self, address: str) -> str | None:
        """The client's host name, or None (within ``reverse_lookup_timeout``)."""
        ...


class SyncConnection:
    """Drives one :class:`ServerConnection` over a blocking socket."""

    def __init__(self, server: SyncHost, sock: socket.socket, *, handshake: bool) -> None:
        self.server = server
        self.sock: socket.socket = sock
        self.implicit_tls = handshake
        remote = normalise_address(_peer(sock)) or (None, None)
        local = normalise_address(sock.getsockname()) or (None, None)
        session_id = new_session_id()
        self.conn = ServerConnection(
            server.protocol_config,
            remote_address=remote[0], remote_port=remote[1],
            local_address=local[0], local_port=local[1],
            session_id=session_id,
            transcript=session_transcript(server.logger, session_id),
        )
        self.session: Session = self.conn.session
        self.log = server.logger
        self.in_message = False
        self._idle = False       # blocked in recv() between transactions
        self._woken = False      # close() has shut our read side
        self._stream: BlockingMessageStream | None = None
        self._message_end: Event | None = None
        self._poll = select.poll()
        self._poll.register(server.wakeup_fd, select.POLLIN)
        self._watching_wakeup = True
        options = server.options
        self._deadline = CommandDeadline(options.command_timeout, options.min_data_rate)
        self._slot = ClientSlot(server.client_limits)
        self._short_timeout = False  # SO_RCVTIMEO lowered for a command's deadline
        self._handed: float | None = None  # when _pull last handed on_data a chunk
        self._refused_client = False

    # -- the thread ------------------------------------------------------------

    def run(self) -> None:
        """The connection's thread, to the end of ``on_close`` (the server
        forgets the connection when this returns)."""
        opened = time.monotonic()
        log_opened(self.log, self.session)
        try:
            _kernel_timeouts(self.sock, self.server.options.socket_timeout)
            if self._setup():
                self._serve()
        except _Closed:
            pass
        except RemoteProtocolError as exc:  # an invalid PROXY header
            self.log.info("[%s] closing: %s", self.session.id, exc)
        except (OSError, ssl.SSLError) as exc:
            self.log.info("[%s] connection error: %r", self.session.id, exc)
        except Exception:
            self.log.exception("[%s] connection failed", self.session.id)
        finally:
            self._abort_stream("connection_lost")
            self._close_socket()
            self._slot.release()
            handler = self.server.handlers.close
            if handler is not None and not self._refused_client:
                self._call(handler, self.session)
            log_closed(self.log, self.session, time.monotonic() - opened)

    def _setup(self) -> bool:
        conn = self.conn
        server = self.server
        if conn.state is State.PROXY:
            self._read_proxy_header()
        if self.implicit_tls:
            self._start_tls()
        if not self._slot.admit(conn, self.log):
            # (After PROXY and TLS: the real client, and a reply it can read.)
            self._refused_client = True  # refused before on_connect: no on_close either
            self._flush()
            return False
        if not server.options.disable_reverse_lookup and self.session.remote_address:
            name = server.reverse_lookup(self.session.remote_address)
            if name:
                self.session.client_hostname = name
        handler = server.handlers.connect
        if handler is not None and not self._allowed(handler, self.session):
            return False
        secure = server.handlers.secure
        if self.session.tls is not None and secure is not None and not self._allowed(
                secure, self.session.tls, self.session):
            return False
        if server.early_talker_delay > 0 and self._readable(server.early_talker_delay):
            conn.receive_data(self._recv_some())
        conn.send_greeting()
        return True

    def _serve(self) -> None:
        conn = self.conn
        handlers = self.server.handlers
        while True:
            self._flush()
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self.log.info("[%s] closing: %s", self.session.id, exc)
                self._flush()
                return
            if event is NEED_DATA:
                self._read()
            elif isinstance(event, MessageStart):
                self._message()
            elif isinstance(event, RcptTo):
                self._decide(event, handlers.rcpt_to)
            elif isinstance(event, MailFrom):
                self._decide(event, handlers.mail_from)
            elif isinstance(event, Hello):
                conn.accept()
            elif isinstance(event, AuthAttempt):
                self._decide(event, handlers.auth)
            elif isinstance(event, StartTLS):
                self._flush()
                self._start_tls()
                if handlers.secure is not None and self.session.tls is not None and not \
                        self._allowed(handlers.secure, self.session.tls, self.session):
                    return
            elif isinstance(event, XClient):  # another client now: count it
                self._slot.admit(conn, self.log, " (XCLIENT)")
            elif isinstance(event, ConnectionClosed):
                self._flush()
                return

    # -- decisions ---------------------------------------------------------------

    def _decide(self, event: Event, handler: Any) -> None:
        if handler is None:
            default_decision(self.conn, event)
            return
        if isinstance(event, AuthAttempt) and self._slot.refuse_auth(
                self.conn, self.log, time.monotonic()):
            return
        outcome = self._outcome(handler, event, self.session)
        delay = self._slot.auth_pause(event, outcome, time.monotonic(),
                                      self.server.options.auth_failure_delay)
        if delay:
            time.sleep(delay)  # this client's thread only
        answer(self.conn, event, outcome, self.log)
        self._deadline.restart(time.monotonic())  # the handler's time is not the client's

    @staticmethod
    def _outcome(handler: Any, *args: object) -> Outcome:
        try:
            return succeeded(handler(*args))
        except Exception as exc:
            return failed(exc)

    # -- messages ----------------------------------------------------------------

    def _message(self) -> None:
        """From MessageStart to the answer: ``on_data`` reads while we pull."""
        self.in_message = True
        self._message_end = None
        self._handed = None
        handler = self.server.handlers.data
        outcome: Outcome | None = succeeded()
        if handler is not None:
            stream = self._stream = BlockingMessageStream(pull=self._pull)
            try:
                outcome = succeeded(handler(stream, self.session))
            except MessageAbortedError:
                outcome = None
            except Exception as exc:
                outcome = failed(exc)
            stream.discard()
            self._stream = None
        while (end := self._ended()) is None:
            self._pull()  # read the rest of a message the handler left
        self.in_message = False
        self._handed = None
        if isinstance(end, MessageComplete):
            answer(self.conn, end, outcome or succeeded(), self.log)
        elif isinstance(end, MessageAborted):
            self.log.info("[%s] message aborted: %s", self.session.id, end.reason)
        if self.server.closing:
            self.conn.shutdown()

    def _ended(self) -> Event | None:
        return self._message_end

    def _pull(self) -> None:
        """Advance the core until a chunk, or the end of the message, arrives."""
        handed = self._handed
        if handed is not None:  # on_data's time since the last chunk is not the client's
            self._deadline.credit(time.monotonic() - handed)
        try:
            self._pull_chunk()
        finally:
            self._handed = time.monotonic()

    def _pull_chunk(self) -> None:
        conn = self.conn
        while True:
            self._flush()  # e.g. "250 octets received" between BDAT chunks
            try:
                event = conn.next_event()
            except RemoteProtocolError:
                self._end_message(MessageAborted("connection_lost"))
                return
            if event is NEED_DATA:
                self._read()
            elif isinstance(event, DataChunk):
                if self._stream is not None:
                    self._stream.size_exceeded = conn.size_exceeded
                    self._stream.feed(event.data)
                return
            elif isinstance(event, MessageComplete | MessageAborted):
                self._end_message(event)
                return
            elif isinstance(event, ConnectionClosed):
                self._end_message(MessageAborted("connection_lost"))
                return
            elif isinstance(event, Hello):
                # EHLO between BDAT chunks: accepting it aborts the message
                # (RFC 5321 4.1.4), which the next event reports.
                conn.accept()
            elif event is PAUSED:
                raise RuntimeError(f"unexpected decision during a message: {conn.pending!r}")

    def _end_message(self, event: Event) -> None:
        self._message_end = event
        if self._stream is not None:
            if isinstance(event, MessageAborted):
                self._stream.abort(event.reason)
            else:
                self._stream.end()

    def _abort_stream(self, reason: str) -> None:
        if self._stream is not None:
            self._stream.abort(reason)
            self._stream = None

    # -- I/O ---------------------------------------------------------------------

    def _read(self) -> None:
        """Feed the core what the client sends next (or the idle timeout).

        A plain blocking recv() with the socket's timeout, one system call:
        between transactions close() wakes it by shutting the socket's read
        side (see wake()); inside a message nothing interrupts it."""
        conn = self.conn
        server = self.server
        self._flush()  # the replies the core queued on its own, before blocking
        deadline = self._deadline
        deadline.settled(conn.receiving)
        expires = deadline.expires()
        if expires is not None and not self._before_deadline(expires):
            self.log.info("[%s] command timeout", self.session.id)
            conn.idle_timeout()
            return
        idle = not self.in_message
        if idle:
            self._idle = True
            if server.closing:  # after setting _idle: close() sees one or the other
                self._idle = False
                conn.shutdown()
                return
        try:
            data = self.sock.recv(_READ_SIZE)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_RCVTIMEO ran out
            data = None
        except (ConnectionError, ssl.SSLError):
            data = b""
        self._idle = False
        if self._short_timeout:
            self._recv_timeout(server.options.socket_timeout)
            self._short_timeout = False
        if idle and server.closing and (data is None or (not data and self._woken)):
            conn.shutdown()
        elif data is None:
            expired = expires is not None and time.monotonic() >= expires
            self.log.info("[%s] %s timeout", self.session.id, "command" if expired else "idle")
            conn.idle_timeout()
        else:
            if data:
                deadline.fed(time.monotonic(), len(data))
            conn.receive_data(data)

    def _before_deadline(self, expires: float) -> bool:
        """False if the command under way is out of time; else, when its
        deadline comes before the idle timeout, the next recv() waits only
        until then (the only case that costs a system call more)."""
        remaining = expires - time.monotonic()
        if remaining <= 0:
            return False
        if remaining < self.server.options.socket_timeout:
            self._recv_timeout(remaining)
            self._short_timeout = True
        return True

    def _recv_timeout(self, seconds: float) -> None:
        if isinstance(self.sock, ssl.SSLSocket):
            self.sock.settimeout(seconds)
        else:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))

    def _recv_some(self) -> bytes:
        try:
            return self.sock.recv(_READ_SIZE)
        except (ConnectionError, ssl.SSLError, TimeoutError, BlockingIOError):
            return b""

    def _readable(self, timeout: float, events: int = select.POLLIN) -> bool:
        """Wait for input (or ``events``); False on timeout or when the server
        is closing (unless a message is in flight, which is let finish)."""
        sock = self.sock
        if events == select.POLLIN and isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        if self._watching_wakeup and self.in_message:
            self._poll.unregister(self.server.wakeup_fd)
            self._watching_wakeup = False
        elif not self._watching_wakeup and not self.in_message:
            self._poll.register(self.server.wakeup_fd, select.POLLIN)
            self._watching_wakeup = True
        if self.server.closing and not self.in_message:
            return False
        self._poll.register(sock.fileno(), events)
        try:
            ready = self._poll.poll(timeout * 1000)
        finally:
            self._poll.unregister(sock.fileno())
        return any(fd == sock.fileno() for fd, _ in ready)

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            try:
                if not isinstance(self.sock, ssl.SSLSocket):
                    send_holding_gil(self.sock, data)
                else:
                    self.sock.sendall(data)
            except (OSError, ssl.SSLError) as exc:
                raise _Closed from exc

    def _start_tls(self) -> None:
        context = self.server.tls.context
        sock = context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        self.sock = sock
        timeout = self.server.options.socket_timeout
        deadline = time.monotonic() + timeout
        # Non-blocking, waiting in poll(): a server closing can wake us, and a
        # client that never finishes the handshake runs into socket_timeout.
        sock.setblocking(False)
        try:
            while True:
                try:
                    sock.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    events = select.POLLIN
                except ssl.SSLWantWriteError:
                    events = select.POLLOUT
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._readable(remaining, events):
                    raise TimeoutError("TLS handshake not finished")
        except (OSError, ssl.SSLError) as exc:
            self.log.info("[%s] TLS handshake failed: %r", self.session.id, exc)
            raise _Closed from exc
        finally:
            sock.settimeout(timeout)
        info = tls_info(sock)
        self.conn.tls_established(info)
        self.log.info("[%s] TLS established: %s %s", self.session.id, info.version, info.cipher)

    def _read_proxy_header(self) -> None:
        """Read exactly the PROXY header and not a byte more, so that a TLS
        handshake behind it stays in the socket for ``wrap_socket``: a v2
        header by its announced length, a v1 line a byte at a time (at most
        107). The whole header must arrive within ``socket_timeout``."""
        deadline = time.monotonic() + self.server.options.socket_timeout
        data = self._recv_exact(1, deadline)
        if data == PROXY_V2_SIGNATURE[:1]:
            data += self._recv_exact(15, deadline)
            if data.startswith(PROXY_V2_SIGNATURE):
                data += self._recv_exact(int.from_bytes(data[14:16], "big"), deadline)
        else:
            while not data.endswith(b"\n") and len(data) < PROXY_V1_MAX_LENGTH:
                data += self._recv_exact(1, deadline)
        self.conn.receive_data(data)
        if not isinstance(self.conn.next_event(), ProxyHeader):  # or RemoteProtocolError
            raise _Closed

    def _recv_exact(self, size: int, deadline: float) -> bytes:
        data = b""
        while len(data) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._readable(remaining):
                raise _Closed
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise _Closed
            data += chunk
        return data

    def _close_socket(self) -> None:
        with contextlib.suppress(_Closed):
            self._flush()
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket):
            # Say close_notify: OpenSSL drops a session from its cache when
            # the connection ends without one (no resumption by session ID).
            # The peer's answer is waited for briefly, if at all.
            with contextlib.suppress(OSError, ValueError):
                sock.settimeout(_CLOSE_NOTIFY_WAIT)
                sock.unwrap()
        with contextlib.suppress(OSError):
            sock.close()

    # -- handlers ------------------------------------------------------------------

    def _call(self, handler: Any, *args: object) -> SMTPError | None:
        try:
            handler(*args)
        except Exception as exc:
            return handler_error(exc, self.log, self.session.id, handler)
        return None

    def _allowed(self, handler: Any, *args: object) -> bool:
        error = self._call(handler, *args)
        if error is None:
            return True
        refuse(self.conn, error)
        self._flush()
        return False

    def wake(self) -> None:
        """From close()'s thread: a connection waiting for its next command
        stops waiting (its recv() returns at once) and says 421."""
        if self._idle and not self._woken:
            self._woken = True
            # On the descriptor itself: SSLSocket.shutdown() would drop the
            # TLS session needed to send the 421.
            raw = socket.socket(fileno=self.sock.fileno())
            try:
                with contextlib.suppress(OSError):
                    raw.shutdown(socket.SHUT_RD)
            finally:
                raw.detach()

    def cut(self) -> None:
        """From another thread at the end of ``close_timeout``: drop the client."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


def _kernel_timeouts(sock: socket.socket, timeout: float) -> None:
    """A blocking socket whose recv() and send() give up after ``timeout``
    (SO_RCVTIMEO, SO_SNDTIMEO, then EAGAIN). ``settimeout()`` would do the
    same with a poll() before every recv() and send(): twice the system
    calls, and twice the GIL hand-overs, which cost the most once many
    threads are busy. (A TLS socket gets ``settimeout()``, see _start_tls:
    the ssl module retries a blocking read on EAGAIN.)"""
    value = _timeval(timeout)
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


def _timeval(seconds: float) -> bytes:
    seconds = min(max(seconds, 0.001), 2**31 - 1)  # 0 would mean "no timeout"
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1e6))


def _peer(sock: socket.socket) -> object:
    try:
        return sock.getpeername()
    except OSError:
        return None
