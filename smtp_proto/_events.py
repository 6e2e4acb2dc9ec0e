"""Events: small frozen records of what the client did.

Some events are *decisions*: after ``next_event()`` returns one, the core
waits (``next_event()`` returns ``PAUSED``) until the application answers it
with ``accept()`` or ``reject()``. Those are marked "decision" below; the
others are information the core has already acted on.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

__all__ = [
    "DECISION_EVENTS",
    "NEED_DATA",
    "PAUSED",
    "AuthAttempt",
    "ConnectionClosed",
    "DataChunk",
    "Event",
    "Hello",
    "MailFrom",
    "MessageAborted",
    "MessageComplete",
    "MessageStart",
    "ProxyHeader",
    "Quit",
    "RcptTo",
    "Reset",
    "Sentinel",
    "StartTLS",
    "TLSInfo",
    "XClient",
    "XForward",
]


class Sentinel(enum.Enum):
    """The two non-event answers of ``next_event()``."""

    NEED_DATA = "NEED_DATA"
    """Feed more bytes with ``receive_data()`` (after flushing ``data_to_send()``)."""
    PAUSED = "PAUSED"
    """The core waits for the application: a decision, a greeting or a TLS handshake."""

    def __repr__(self) -> str:
        return self.value


NEED_DATA = Sentinel.NEED_DATA
PAUSED = Sentinel.PAUSED


def _rebuild(cls: type[Any], values: dict[str, Any]) -> Any:
    return cls(**values)


class FrozenRecord:
    """Base of the core's frozen dataclasses: copies and pickles are rebuilt
    through ``__init__``. The dataclass default sets the fields with
    ``object.__setattr__``, which the compiled build's classes refuse; this
    way both builds copy and pickle alike."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        record: Any = self  # every subclass is a dataclass
        return (_rebuild, (type(self), {f.name: getattr(self, f.name) for f in fields(record)}))


class Event(FrozenRecord):
    """Base class of every event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class TLSInfo(FrozenRecord):
    """What the backend learnt from a finished TLS handshake.

    The core only stores it (on ``Session.tls``); backends fill it from their
    TLS object. ``peer_certificate`` is ``ssl.SSLSocket.getpeercert()``'s dict.
    """

    version: str | None = None
    cipher: str | None = None
    standard_name: str | None = None
    bits: int | None = None
    servername: str | None = None
    peer_certificate: Mapping[str, object] | None = None
    peer_certificate_der: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ProxyHeader(Event):
    """A HAProxy PROXY protocol header (v1 text or v2 binary) was read.

    ``command`` is ``"LOCAL"`` for v2 health checks (the addresses are then
    those of the real connection and stay unchanged) and ``"PROXY"`` otherwise.
    ``protocol`` is ``TCP4``, ``TCP6``, ``UDP4``, ``UDP6``, ``UNIX`` or ``UNKNOWN``.
    """

    version: int
    command: Literal["PROXY", "LOCAL"]
    protocol: str
    source_address: str | None = None
    source_port: int | None = None
    dest_address: str | None = None
    dest_port: int | None = None
    tlvs: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Hello(Event):
    """Decision: the client sent HELO, EHLO or LHLO.

    Accepting sends the greeting line (and for EHLO/LHLO the extension list)
    and resets the transaction, as RFC 5321 section 4.1.4 requires.
    """

    command: Literal["HELO", "EHLO", "LHLO"]
    hostname: str


@dataclass(frozen=True, slots=True)
class StartTLS(Event):
    """The 220 to STARTTLS is queued: flush it, then run the TLS handshake
    and call ``tls_established()``. Everything the client pipelined behind
    the command has been discarded (RFC 3207 section 4.2)."""


@dataclass(frozen=True, slots=True)
class AuthAttempt(Event):
    """Decision: decoded SASL credentials (or an XCLIENT LOGIN).

    ``mechanism`` is PLAIN, LOGIN, CRAM-MD5, XOAUTH2 or XCLIENT. Fields that
    the mechanism does not carry are ``None``. For CRAM-MD5 the password is
    never sent; check a candidate with :meth:`validate_password`.
    """

    mechanism: str
    username: str
    password: str | None = field(default=None, repr=False)
    authzid: str | None = None
    access_token: str | None = field(default=None, repr=False)
    challenge: str | None = None
    response: str | None = field(default=None, repr=False)

    @property
    def method(self) -> str:
        """smtp-server's name for :attr:`mechanism`."""
        return self.mechanism

    def validate_password(self, password: str | bytes) -> bool:
        """CRAM-MD5: does ``password`` produce the client's response?"""
        if self.challenge is None or self.response is None:
            return False
        key = password.encode() if isinstance(password, str) else password
        digest = hmac.new(key, self.challenge.encode(), hashlib.md5).hexdigest()
        # Compare bytes: the response comes from the client and may be any text.
        response = self.response.lower().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(digest.encode(), response)


@dataclass(frozen=True, slots=True)
class MailFrom(Event):
    """Decision: MAIL FROM with its parsed parameters.

    ``address`` is ``""`` for the null reverse-path ``<>``. ``params`` holds
    every ESMTP parameter as sent (keys upper-cased, ``None`` for a flag);
    the typed fields are the validated, decoded values of the known ones.
    """

    address: str
    params: Mapping[str, str | None] = field(default_factory=dict)
    size: int | None = None
    body: Literal["7BIT", "8BITMIME", "BINARYMIME"] | None = None
    smtputf8: bool = False
    requiretls: bool = False
    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None
    auth: str | None = None

    @property
    def args(self) -> Mapping[str, str | None]:
        """smtp-server's name for :attr:`params`."""
        return self.params


@dataclass(frozen=True, slots=True)
class RcptTo(Event):
    """Decision: RCPT TO with its parsed DSN parameters (RFC 3461)."""

    address: str
    params: Mapping[str, str | None] = field(default_factory=dict)
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None

    @property
    def args(self) -> Mapping[str, str | None]:
        """smtp-server's name for :attr:`params`."""
        return self.params


@dataclass(frozen=True, slots=True)
class MessageStart(Event):
    """A message body begins: after DATA's 354, or with the first BDAT chunk.

    Exactly one ``MessageComplete`` or ``MessageAborted`` follows it.
    """

    mechanism: Literal["DATA", "BDAT"]


@dataclass(frozen=True, slots=True)
class DataChunk(Event):
    """Message bytes, dot-unstuffed (DATA) or as sent (BDAT).

    How the body is cut into chunks depends on how the bytes arrived; only
    their concatenation is meaningful.
    """

    data: bytes


@dataclass(frozen=True, slots=True)
class MessageComplete(Event):
    """Decision: the whole message arrived within the size limit.

    Accept to answer 250 (in LMTP one reply per recipient, or different
    answers per recipient with ``answer_recipients()``), or reject.
    """

    mechanism: Literal["DATA", "BDAT"]
    size: int


@dataclass(frozen=True, slots=True)
class MessageAborted(Event):
    """The message started by ``MessageStart`` will not complete.

    ``reason`` is one of ``"size_exceeded"``, ``"bare_line_ending"``,
    ``"reset"``, ``"connection_lost"``, ``"shutdown"`` or ``"quit"``. When
    the core itself refused the message (the first two) it has already
    queued the error reply. The bytes seen so far must be
    discarded: a message is delivered only on ``MessageComplete``.
    """

    reason: str
    size: int = 0


@dataclass(frozen=True, slots=True)
class Reset(Event):
    """RSET: the transaction was dropped (the 250 is queued)."""


@dataclass(frozen=True, slots=True)
class Quit(Event):
    """QUIT: the 221 is queued; flush it and close."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The session is over: the peer closed, QUIT, or the core/backend shut it.

    Flush ``data_to_send()`` and close the socket. Returned again on every
    later ``next_event()`` call.
    """

    reason: str = "closed"


@dataclass(frozen=True, slots=True)
class XClient(Event):
    """A trusted XCLIENT command changed the session's view of the client.

    ``attributes`` maps NAME, ADDR, PORT, PROTO, HELO, LOGIN to their decoded
    values (``None`` for ``[UNAVAILABLE]``/``[TEMPUNAVAIL]``).
    """

    attributes: Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class XForward(Event):
    """A trusted XFORWARD command supplied original-client attributes."""

    attributes: Mapping[str, str | None]


DECISION_EVENTS: frozenset[type[Event]] = frozenset(
    {Hello, AuthAttempt, MailFrom, RcptTo, MessageComplete}
)
"""Event types that must be answered with ``accept()`` or ``reject()``."""
