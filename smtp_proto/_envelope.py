"""The current mail transaction (``session.envelope``).

Its own module so that it can be compiled (see ``hatch_build.py``): the core
makes one per message and reads it on every command, while ``Session``, which
applications extend with their own attributes, stays interpreted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._events import MailFrom, RcptTo

__all__ = ["Envelope"]


@dataclass(slots=True)
class Envelope:
    """The current mail transaction: reverse path, recipients, parameters."""

    mail_from: MailFrom | None = None
    rcpt_to: list[RcptTo] = field(default_factory=list)

    @property
    def body_type(self) -> str:
        """``7bit``, ``8bitmime`` or ``binarymime`` (RFC 6152 / RFC 3030)."""
        body = self.mail_from.body if self.mail_from else None
        return (body or "7BIT").lower()

    @property
    def smtputf8(self) -> bool:
        return bool(self.mail_from and self.mail_from.smtputf8)

    @property
    def requiretls(self) -> bool:
        return bool(self.mail_from and self.mail_from.requiretls)

    @property
    def dsn_ret(self) -> str | None:
        return self.mail_from.ret if self.mail_from else None

    @property
    def dsn_envid(self) -> str | None:
        return self.mail_from.envid if self.mail_from else None

    @property
    def dsn(self) -> dict[str, str | None]:
        """smtp-server's ``envelope.dsn``: ``{"ret": ..., "envid": ...}``."""
        return {"ret": self.dsn_ret, "envid": self.dsn_envid}
