"""``ServerConnection``: the sans-IO SMTP/LMTP server, one per TCP connection.

::

    conn = ServerConnection(config, remote_address="192.0.2.1")
    conn.send_greeting()
    while True:
        sock.sendall(conn.data_to_send())
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, MailFrom):
            conn.accept()
        ...

The core never touches a socket, a clock, a thread or randomness; given the
same bytes in any split it produces the same events and the same replies.
"""

from __future__ import annotations

from collections.abc import Callable

from ._config import ServerConfig
from ._data import has_bare_line_ending
from ._decisions import _Decisions
from ._envelope import Envelope
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import (
    NEED_DATA,
    PAUSED,
    AuthAttempt,
    DataChunk,
    Event,
    Hello,
    MailFrom,
    MessageComplete,
    RcptTo,
    Sentinel,
    TLSInfo,
)
from ._proxy import parse_proxy_header
from ._replies import check_enhanced, check_reply_code
from ._session import Session
from ._state import State

__all__ = ["ServerConnection"]

_SASL_LINE = 12288 + 2  # RFC 4954 section 4
# Room the extensions add to a MAIL/RCPT line: SIZE (RFC 1870) 26, DSN
# (RFC 3461) 100 and 500, AUTH= (RFC 4954) 500, BODY, SMTPUTF8, REQUIRETLS.
_MAIL_EXTRA = 26 + 100 + 500 + 16 + 9 + 11
_RCPT_EXTRA = 500
_TOO_LONG = object()
_DECISIONS = (Hello, AuthAttempt, MailFrom, RcptTo, MessageComplete)


class ServerConnection(_Decisions):
    """The protocol state of one SMTP or LMTP server connection.

    ``remote_address`` & co. seed the :class:`Session`; ``tls`` marks an
    implicit-TLS connection; ``expect_proxy`` overrides the config's
    ``use_proxy`` decision for this peer.

    ``transcript`` (also an attribute, settable later) is called as
    ``transcript("C", line)`` for each command line the core reads and
    ``transcript("S", reply)`` for each reply it queues: the dialogue as a
    log wants it, with credentials redacted (``AUTH PLAIN ***``, SASL
    responses ``***``) and a message body as ``<message body: N bytes>``.
    The core calls nothing else; what the callback does is the backend's.
    """

    __slots__ = ()

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        remote_address: str | None = None,
        remote_port: int | None = None,
        local_address: str | None = None,
        local_port: int | None = None,
        client_hostname: str | None = None,
        session_id: str = "",
        tls: TLSInfo | None = None,
        expect_proxy: bool | None = None,
        transcript: Callable[[str, str], None] | None = None,
    ) -> None:
        cfg = config if config is not None else ServerConfig()
        self.config = cfg
        self.session = Session(
            id=session_id, remote_address=remote_address, remote_port=remote_port,
            local_address=local_address, local_port=local_port,
            client_hostname=client_hostname or (f"[{remote_address}]" if remote_address else None),
            secure=tls is not None, tls=tls, lmtp=cfg.lmtp,
        )
        if expect_proxy is None:
            expect_proxy = cfg.expects_proxy(remote_address)
        self._state = State.PROXY if expect_proxy else State.GREETING
        self._buf = bytearray()
        self._eof = False
        self._out = []
        self._events = []  # a handful at most: a list is smaller than a deque
        self._pending = None
        self._fatal = None
        self._closed_reason = ""
        self._sasl = None
        self._sasl_final = None
        self._body = None
        self._msg_open = False
        self._msg_mechanism = "DATA"
        self._msg_size = 0
        self._exceeded = False
        self._bare = False
        self._bdat_remaining = self._bdat_size = 0
        self._bdat_last = False
        self._bdat_error = None
        self._invalid = 0
        self._overshoot = 0
        self._unauthenticated = 0
        self._skipping = False
        self.transcript = transcript

    # -- read-only views -------------------------------------------------------

    @property
    def state(self) -> State:
        """Where the connection is (see the state diagram)."""
        return self._state

    @property
    def pending(self) -> Event | None:
        """The decision event waiting for ``accept()``/``reject()``, if any."""
        return self._pending

    @property
    def size_exceeded(self) -> bool:
        """The current message has grown past ``config.size``."""
        return self._exceeded

    @property
    def message_size(self) -> int:
        """Bytes of the current (or last) message body received so far."""
        return self._msg_size

    @property
    def closed(self) -> bool:
        """No more input will be processed; flush and close the socket."""
        return self._state in (State.CLOSED, State.ERROR)

    @property
    def receiving(self) -> bool:
        """The peer is part-way through sending something: a command line,
        SASL response or PROXY header of which some bytes are buffered (or
        an overlong line being skipped), or a message body (DATA, or a BDAT
        chunk). What a backend's per-command deadline times; the core keeps
        no clock."""
        state = self._state
        if state is State.DATA or state is State.BDAT:
            return True
        if state is State.COMMAND or state is State.SASL or state is State.PROXY:
            return bool(self._buf) or self._skipping
        return False

    # -- bytes in and out ------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means it closed its side."""
        if self._eof:
            raise LocalProtocolError("receive_data() after end of input")
        if not data:
            self._eof = True
            return
        state = self._state
        if state in (State.TLS_HANDSHAKE, State.CLOSED, State.ERROR):
            return  # STARTTLS injection, or input after the end: dropped
        if state is State.GREETING:
            self.session.early_talker = True
        self._buf += data

    def data_to_send(self) -> bytes:
        """Replies queued since the last call, as one buffer (one write)."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def take_buffered_data(self) -> bytes:
        """Remove and return unprocessed input.

        For implicit TLS behind a PROXY header: after ``ProxyHeader`` the
        bytes that followed it are the TLS handshake, not SMTP.
        """
        data = bytes(self._buf)
        self._buf.clear()
        if self._state is State.GREETING:
            self.session.early_talker = False
        return data

    # -- events ----------------------------------------------------------------

    def next_event(self) -> Event | Sentinel:
        """The next event, or ``NEED_DATA`` / ``PAUSED``.

        Raises :class:`RemoteProtocolError` once the peer has broken the
        session fatally (the 421 is already in ``data_to_send()``).
        """
        if self._pending is not None:
            return PAUSED
        events = self._events
        while not events:
            if self._fatal is not None:
                raise RemoteProtocolError(self._fatal)
            result = self._step()
            if result is not None:
                return result
        event = events.pop(0)
        if isinstance(event, _DECISIONS):
            self._pending = event
        return event

    def _step(self) -> Event | Sentinel | None:
        """Make progress on the input; ``None`` means "call me again"."""
        state = self._state
        if state is State.COMMAND or state is State.SASL:
            line = self._read_line()
            if line is None:
                return self._starved()
            if self.transcript is not None:
                self.transcript("C", _redacted(line, state))
            if line is _TOO_LONG:
                if state is State.SASL and self._sasl_final is None:
                    self._state = State.COMMAND
                    self._sasl = None
                    self._error(500, "5.5.6", "Error: authentication exchange line is too long")
                elif state is State.SASL:
                    self._sasl_line("")
                else:
                    self._error(500, "5.5.2", "Error: line too long")
            elif state is State.COMMAND:
                self._process_command(line)  # type: ignore[arg-type]
            else:
                self._sasl_line(line)  # type: ignore[arg-type]
            return None
        if state is State.DATA:
            return self._step_data()
        if state is State.BDAT:
            return self._step_bdat()
        if state is State.PROXY:
            return self._step_proxy()
        if state is State.CLOSED:
            return self._close_event()
        if state is State.ERROR:  # pragma: no cover - _fatal is raised first
            raise RemoteProtocolError(self._fatal or "protocol error")
        # GREETING, TLS_HANDSHAKE: waiting for the backend.
        if self._eof:
            self._close("connection lost", "connection_lost")
            return None
        return PAUSED

    def _starved(self) -> Sentinel | None:
        if self._eof:
            self._close("connection lost", "connection_lost")
            return None
        return NEED_DATA

    def _line_limit(self) -> int:
        base = self.config.max_command_length
        if self._state is State.SASL:
            return max(base, _SASL_LINE)
        head = bytes(self._buf[:5]).upper()
        if head.startswith(b"AUTH "):
            return max(base, _SASL_LINE + 32)
        if head.startswith(b"MAIL"):
            return base + _MAIL_EXTRA
        if head.startswith(b"RCPT"):
            return base + _RCPT_EXTRA
        return base

    def _read_line(self) -> str | object | None:
        buf = self._buf
        end = buf.find(b"\n")
        if self._skipping:
            # Inside an over-long line: drop it up to its end.
            if end < 0:
                buf.clear()
                return None
            del buf[: end + 1]
            self._skipping = False
            return _TOO_LONG
        # _line_limit() is never below max_command_length: skip it for short lines.
        base = self.config.max_command_length
        if end < 0:
            if len(buf) > base and len(buf) > self._line_limit():
                buf.clear()
                self._skipping = True
            return None
        if end + 1 > base and end + 1 > self._line_limit():
            del buf[: end + 1]
            return _TOO_LONG
        stop = end - 1 if end and buf[end - 1] == 0x0D else end
        line = buf[:stop].decode("utf-8", "surrogateescape")
        del buf[: end + 1]
        return line

    def _step_proxy(self) -> Event | Sentinel | None:
        try:
            parsed = parse_proxy_header(self._buf)
        except ValueError as exc:
            self._state = State.ERROR
            self._fatal = f"invalid PROXY header: {exc}"
            self._buf.clear()
            return None
        if parsed is None:
            return self._starved()
        header, used = parsed
        del self._buf[:used]
        self._state = State.GREETING
        self.session.early_talker = bool(self._buf)
        session = self.session
        session.proxy = header
        if header.command == "PROXY" and header.source_address is not None:
            session.remote_address = header.source_address
            session.remote_port = header.source_port
            session.local_address = header.dest_address
            session.local_port = header.dest_port
            session.client_hostname = f"[{header.source_address}]"
        return header

    def _step_data(self) -> Sentinel | None:
        body = self._body
        assert body is not None
        data, finished = body.read(self._buf)
        if data:
            if (self.config.bare_line_endings == "reject" and not self._bare
                    and has_bare_line_ending(data)):
                self._bare = True
            self._count_body(data)
        if finished:
            self._state = State.COMMAND
            self._body = None
            self._finish_message()
            return None
        if data:
            return None
        return self._starved()

    def _count_body(self, data: bytes) -> None:
        # Which bytes go out as DataChunks must not depend on how the input
        # was split: so exactly the first ``size`` bytes, and with
        # bare_line_endings="reject" everything (the verdict comes at the end).
        if not data:
            return
        before = self._msg_size
        self._msg_size = before + len(data)
        limit = self.config.size
        if limit is not None and self._msg_size > limit:
            self._exceeded = True
            if before >= limit:
                return
            data = data[: limit - before]
        if self._msg_open:
            self._events.append(DataChunk(data))

    def _step_bdat(self) -> Sentinel | None:
        if self._bdat_remaining:
            buf = self._buf
            if not buf:
                return self._starved()
            take = min(self._bdat_remaining, len(buf))
            if take == len(buf):
                chunk = bytes(buf)
                buf.clear()
            else:
                chunk = bytes(buf[:take])
                del buf[:take]
            self._bdat_remaining -= take
            if self._bdat_error is None:
                self._count_body(chunk)
            if self._bdat_remaining:
                return None
        self._state = State.COMMAND
        envelope = self.session.envelope
        if (self._bdat_error is not None and self.config.lmtp and self._bdat_last
                and envelope.mail_from is not None and not envelope.rcpt_to):
            # RFC 2033 section 4.3: with no successful RCPT, BDAT LAST gets
            # zero replies (one per accepted recipient, and there are none).
            self._bdat_error = None
            self._end_transaction()
        elif self._bdat_error is not None:
            code, enhanced, text = self._bdat_error
            self._bdat_error = None
            self._error(code, enhanced, text)
        elif self._exceeded or self._bdat_last:
            self._finish_message(final=self._bdat_last)
        else:
            self._reply(250, f"{self._bdat_size} octets received", "2.0.0")
        return None

    def _finish_message(self, final: bool = True) -> None:
        if self._exceeded:
            self._refuse_message(
                552, "5.3.4",
                f"Error: message exceeds fixed maximum message size {self.config.size}",
                "size_exceeded", final,
            )
        elif self._bare:
            self._refuse_message(
                554, "5.6.0", "Error: bare CR or LF in message; lines must end with CRLF",
                "bare_line_ending", final,
            )
        else:
            # The body is complete: from now on the message can only be
            # answered, never aborted (exactly one end per MessageStart).
            self._msg_open = False
            self._events.append(
                MessageComplete(self._msg_mechanism, self._msg_size)  # type: ignore[arg-type]
            )
        if self.transcript is not None:
            self.transcript("C", f"<message body: {self._msg_size} bytes>")

    # -- the backend's actions ---------------------------------------------------

    def send_greeting(self) -> None:
        """Queue the 220 greeting (or, for an early talker when configured, 421)."""
        if self._state is not State.GREETING:
            raise LocalProtocolError(f"send_greeting() in state {self._state.value}")
        if self.config.reject_early_talkers and self.session.early_talker:
            self._reply(421, f"{self.config.name} You talk too soon", "4.7.0")
            return
        self._state = State.COMMAND
        self._reply(220, self._greeting_text())

    def tls_established(self, info: TLSInfo) -> None:
        """The TLS handshake succeeded (after ``StartTLS``, or implicit TLS).

        After STARTTLS the session forgets everything the client told it
        (RFC 3207 section 4.2) and the client must EHLO again.
        """
        session = self.session
        if self._state is State.TLS_HANDSHAKE:
            self._state = State.COMMAND
            session.opening_command = session.host_name_appears_as = None
            session.user = session.auth_mechanism = None
            session.envelope = Envelope()
        elif self._state not in (State.GREETING, State.PROXY):
            raise LocalProtocolError(f"tls_established() in state {self._state.value}")
        session.secure = True
        session.tls = info

    def shutdown(
        self, text: str = "Service shutting down", code: int = 421, enhanced: str | None = None
    ) -> None:
        """End the session from our side: queue ``code text`` and close.

        Used for server shutdown, a refused connection (``on_connect``) or
        ``max_clients`` (421 or 554). Does nothing once closed.
        """
        if self.closed:
            return
        check_reply_code(code, "45")
        check_enhanced(code, enhanced)
        # x.3.2: "system not accepting network messages" (RFC 3463)
        self._send(code, f"{self.config.name} {text}", enhanced or f"{code // 100}.3.2")
        self._close("shutdown")

    def idle_timeout(self) -> None:
        """The client was idle too long: 421 4.4.2 and close."""
        self.shutdown("Timeout - closing connection", 421, "4.4.2")


def _redacted(line: object, state: State) -> str:
    """A command line for the transcript: SASL responses and AUTH's initial
    response (credentials, base64 or not) replaced by ``***``."""
    if line is _TOO_LONG:
        return "<line too long>"
    assert isinstance(line, str)
    if state is State.SASL:
        return "***"
    if line[:5].upper() == "AUTH ":
        words = line.split(None, 2)
        return " ".join(words[:2]) + (" ***" if len(words) > 2 else "")
    return line
