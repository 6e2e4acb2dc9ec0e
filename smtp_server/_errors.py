"""``SMTPError``: how a handler refuses something."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["MessageAbortedError", "SMTPError"]


class SMTPError(Exception):
    """Raise from a handler to answer with ``code message``.

    ``enhanced`` overrides the RFC 3463 code the server would pick;
    ``challenge`` (``on_auth`` with XOAUTH2 only) is sent as the 334 error
    challenge before the rejection, e.g. ``{"status": "401", "schemes":
    "bearer"}``, which is JSON-encoded.
    """

    def __init__(
        self,
        code: int = 550,
        message: str = "",
        *,
        enhanced: str | None = None,
        challenge: str | bytes | Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message or f"Error {code}")
        self.code = code
        self.message = message
        self.enhanced = enhanced
        self.challenge = challenge

    @property
    def response_code(self) -> int:
        """smtp-server's name for :attr:`code`."""
        return self.code


class MessageAbortedError(Exception):
    """Raised by a message stream whose message will not be delivered.

    ``reason`` is that of :class:`smtp_proto.MessageAborted`:
    ``size_exceeded``, ``bare_line_ending``, ``connection_lost``, ``reset``,
    ``shutdown`` or ``quit``. The server has already answered
    the client (or lost it); the handler should drop what it has so far.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"message aborted: {reason}")
        self.reason = reason
