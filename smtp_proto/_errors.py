"""The two error families of the core, in the manner of h11.

``RemoteProtocolError`` means the peer broke the protocol so badly that the
connection cannot go on; the core has already queued whatever reply is due
(``data_to_send()`` still returns it) and the backend should flush and close.
``LocalProtocolError`` means the code driving the core misused it.
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Base class of both error families."""


class LocalProtocolError(ProtocolError):
    """The application used the core wrongly (e.g. answered a decision twice)."""


class RemoteProtocolError(ProtocolError):
    """The peer misbehaved fatally; the connection must be closed.

    Ordinary client mistakes (a bad command, a bad address) are *not* raised:
    the core answers them itself. This is raised only when the session has to
    end: an invalid PROXY header, an HTTP request, or too many errors.
    """
