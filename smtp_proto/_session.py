"""What a session knows: the state both backends expose to handlers.

The core owns these objects and updates them as the conversation goes on;
applications read them (and may set ``user`` and their own attributes on the
backends' subclasses). One ``Session`` per connection, one ``Envelope`` per
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._envelope import Envelope
from ._events import ProxyHeader, TLSInfo

__all__ = ["Envelope", "Session"]


@dataclass(eq=False)
class Session:
    """Connection-wide state, readable at any time from ``conn.session``.

    Not slotted on purpose: applications attach their own attributes to the
    session, as smtp-server users do.
    """

    id: str = ""
    remote_address: str | None = None
    remote_port: int | None = None
    local_address: str | None = None
    local_port: int | None = None
    client_hostname: str | None = None
    """Reverse-DNS name of the client (set by the backend), else ``[address]``."""
    opening_command: str | None = None
    """``HELO``, ``EHLO`` or ``LHLO`` once the client has greeted."""
    host_name_appears_as: str | None = None
    """The argument of HELO/EHLO/LHLO."""
    secure: bool = False
    tls: TLSInfo | None = None
    user: object = None
    """Whatever the application accepted AUTH with; ``None`` if anonymous."""
    auth_mechanism: str | None = None
    auth_failures: int = 0
    envelope: Envelope = field(default_factory=Envelope)
    transaction: int = 1
    """Number of the current transaction (1 for the first message)."""
    xclient: dict[str, str | None] = field(default_factory=dict)
    xforward: dict[str, str | None] = field(default_factory=dict)
    proxy: ProxyHeader | None = None
    early_talker: bool = False
    """The client sent bytes before the greeting."""
    lmtp: bool = False

    @property
    def tls_info(self) -> TLSInfo | None:
        """smtp-server's ``tlsOptions``: the same object as :attr:`tls`."""
        return self.tls

    @property
    def servername(self) -> str | None:
        """The SNI host name the client asked for, if any."""
        return self.tls.servername if self.tls else None

    @property
    def transmission_type(self) -> str:
        """RFC 3848 / RFC 6531 protocol name: SMTP, ESMTP, ESMTPS, ESMTPSA,
        LMTP, LMTPSA, UTF8SMTPS..."""
        return self.transmission_type_for(self.envelope)

    def transmission_type_for(self, envelope: Envelope) -> str:
        """:attr:`transmission_type` for a transaction of this session that
        is not (or no longer) :attr:`envelope`: whether it used SMTPUTF8."""
        kind = "LMTP" if self.lmtp else "SMTP"
        if envelope.smtputf8:
            kind = "UTF8" + kind  # RFC 6531 section 3.7.3: UTF8SMTP, UTF8LMTPSA...
        elif self.opening_command == "EHLO":
            kind = "E" + kind
        if self.secure:
            kind += "S"
        if self.user is not None:
            kind += "A"
        return kind
