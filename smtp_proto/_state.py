"""Connection states and the bookkeeping every command handler shares:
replies, error counting, closing, and the end of a transaction."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from ._config import ServerConfig
from ._data import DotBody
from ._envelope import Envelope
from ._events import ConnectionClosed, Event, FrozenRecord, MessageAborted
from ._replies import format_reply
from ._sasl import SaslExchange
from ._session import Session

__all__ = ["Reply", "State"]


class State(enum.Enum):
    """Where the connection is; ``conn.state``. See the state diagram in the docs."""

    PROXY = "PROXY"
    """Waiting for the PROXY protocol header."""
    GREETING = "GREETING"
    """Connected; the backend has not called ``send_greeting()`` yet."""
    COMMAND = "COMMAND"
    """Reading command lines."""
    SASL = "SASL"
    """Inside an AUTH exchange: lines are SASL responses."""
    DATA = "DATA"
    """Reading a dot-terminated message body."""
    BDAT = "BDAT"
    """Reading the octets of a BDAT chunk."""
    TLS_HANDSHAKE = "TLS_HANDSHAKE"
    """220 sent to STARTTLS; waiting for ``tls_established()``."""
    CLOSED = "CLOSED"
    """QUIT, EOF, or a shutdown: nothing more is read."""
    ERROR = "ERROR"
    """The peer broke the protocol fatally (``RemoteProtocolError``)."""


@dataclass(frozen=True, slots=True)
class Reply(FrozenRecord):
    """One reply for ``answer_recipients()`` (LMTP per-recipient results)."""

    code: int
    text: str
    enhanced: str | None = None


# Replies from the core that count towards ``max_invalid_commands``.
_INVALID_CODES = frozenset({500, 501, 502, 503, 504, 555})


class _Base:
    """State shared by the command handlers and the public connection."""

    # Slots, not a __dict__: a server keeps one of these per open connection.
    __slots__ = (
        "_bare", "_bdat_error", "_bdat_last", "_bdat_remaining", "_bdat_size", "_body",
        "_buf", "_closed_reason", "_eof", "_events", "_exceeded", "_fatal", "_invalid",
        "_msg_mechanism", "_msg_open", "_msg_size", "_out", "_overshoot", "_pending", "_sasl",
        "_sasl_final", "_skipping", "_state", "_unauthenticated", "config", "session",
        "transcript",
    )

    config: ServerConfig
    session: Session
    transcript: Callable[[str, str], None] | None
    _state: State
    _buf: bytearray
    _out: list[bytes]
    _events: list[Event]
    _pending: Event | None
    _fatal: str | None
    _closed_reason: str
    _sasl: SaslExchange | None
    _sasl_final: bytes | None
    _body: DotBody | None
    _msg_open: bool
    _msg_mechanism: str
    _msg_size: int
    _exceeded: bool
    _bare: bool
    _bdat_remaining: int
    _bdat_size: int
    _bdat_last: bool
    _bdat_error: tuple[int, str, str] | None
    _invalid: int
    _overshoot: int
    """Excess RCPTs (452, too many recipients) in the current transaction."""
    _unauthenticated: int

    # -- replies -------------------------------------------------------------

    def _send(self, code: int, text: str, enhanced: str | None = None) -> None:
        if not self.config.enhanced_status_codes:
            enhanced = None
        reply = format_reply(code, text, enhanced)
        self._out.append(reply)
        if self.transcript is not None:
            self.transcript("S", reply.decode("utf-8", "replace").rstrip("\r\n"))

    def _reply(self, code: int, text: str, enhanced: str | None = None) -> None:
        """Queue a reply; a 421 also closes the session (RFC 5321 3.8)."""
        self._send(code, text, enhanced)
        if code == 421:
            self._close("421 sent")

    def _error(self, code: int, enhanced: str | None, text: str) -> None:
        """A reply to a client mistake; counts towards ``max_invalid_commands``."""
        if code in _INVALID_CODES and self._count_invalid():
            return
        self._reply(code, text, enhanced)

    def _count_invalid(self) -> bool:
        """Count one client error; past ``max_invalid_commands`` send the 421
        in place of the error's reply and return True."""
        self._invalid += 1
        limit = self.config.max_invalid_commands
        if limit is not None and self._invalid > limit:
            self._fail("4.7.0", "Error: too many invalid commands", "too many invalid commands")
            return True
        return False

    def _greeting_text(self) -> str:
        cfg = self.config
        kind = "LMTP" if cfg.lmtp else "ESMTP"
        return f"{cfg.name} {kind} {cfg.banner}" if cfg.banner else f"{cfg.name} {kind}"

    # -- ending things ---------------------------------------------------------

    def _abort_message(self, reason: str) -> None:
        if self._msg_open:
            self._msg_open = False
            self._body = None
            self._events.append(MessageAborted(reason, self._msg_size))

    def _close(self, reason: str, abort_reason: str = "shutdown") -> None:
        """Stop reading; ``next_event()`` returns ``ConnectionClosed`` from now on."""
        if self._state in (State.CLOSED, State.ERROR):
            return
        self._abort_message(abort_reason)
        self._state = State.CLOSED
        self._closed_reason = reason
        self._pending = None
        self._buf.clear()

    def _fail(self, enhanced: str, text: str, reason: str, code: int = 421) -> None:
        """A fatal peer error: 421 (or ``code``), then ``RemoteProtocolError``
        from next_event."""
        self._send(code, f"{self.config.name} {text}" if code == 421 else text, enhanced)
        self._abort_message("connection_lost")
        self._state = State.ERROR
        self._fatal = reason
        self._pending = None
        self._buf.clear()

    def _end_transaction(self) -> None:
        """After a message got its final answer: count it, start afresh."""
        self._msg_open = False
        self._body = None
        self._bdat_error = None
        self.session.transaction += 1
        self.session.envelope = Envelope()

    def _per_recipient(self, code: int, text: str, enhanced: str | None) -> None:
        """The final reply to a message: once, or in LMTP once per recipient."""
        # A 421 ends the session: it is said once, not per recipient.
        count = len(self.session.envelope.rcpt_to) if self.config.lmtp and code != 421 else 1
        for _ in range(max(count, 1)):
            self._reply(code, text, enhanced)

    def _refuse_message(
        self, code: int, enhanced: str, text: str, reason: str, final: bool
    ) -> None:
        """The core refuses the message. ``final``: this is the answer to the
        end of the body (one per recipient in LMTP); a non-LAST BDAT chunk
        gets exactly one reply (RFC 3030 section 2, RFC 2033 section 4.2)."""
        size = self._msg_size
        if final:
            self._per_recipient(code, text, enhanced)
        else:
            self._reply(code, text, enhanced)
        self._msg_open = False
        self._events.append(MessageAborted(reason, size))
        self._end_transaction()

    def _close_event(self) -> ConnectionClosed:
        return ConnectionClosed(self._closed_reason)
