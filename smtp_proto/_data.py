"""Streaming DATA body scanning: end detection and dot-unstuffing.

RFC 5321 section 4.5.2: the body ends with ``CRLF . CRLF``; a line that
begins with a dot has that dot removed. Only that exact sequence ends a
message: ``LF . LF``, ``CR . CR``, ``LF . CRLF`` and friends are message
bytes (or, by policy, a reason to refuse the message), never an end. That is
the whole defence against SMTP smuggling, so it lives in one place.

The scanner works on the connection's receive buffer and never keeps more
than the four bytes that could be the start of an end marker, so memory is
bounded by one network read whatever the message or line size.

To make the first line behave like every other one, the connection puts a
virtual CRLF in front of the body (``begin_dot_body``); the first chunk
returned drops it again.
"""

from __future__ import annotations

__all__ = ["DotBody", "has_bare_line_ending"]

_END = b"\r\n.\r\n"
_TAILS = (_END[:4], _END[:3], _END[:2], _END[:1])


def has_bare_line_ending(raw: bytes) -> bool:
    """Does ``raw`` hold a CR not followed by LF, or an LF not preceded by CR?

    ``raw`` must not end inside a CRLF pair, which ``DotBody`` guarantees.
    """
    pairs = raw.count(b"\r\n")
    return raw.count(b"\r") != pairs or raw.count(b"\n") != pairs


class DotBody:
    """The state of one DATA body being read."""

    __slots__ = ("_virtual",)

    def __init__(self, buf: bytearray) -> None:
        buf[0:0] = b"\r\n"
        self._virtual = True

    def take(self, buf: bytearray) -> tuple[bytes, bool]:
        """Consume what can be decided from ``buf``.

        Returns ``(raw, finished)``: ``raw`` is still dot-stuffed (pass it to
        :meth:`unstuff`) and ``finished`` says the end marker was consumed.
        """
        end = buf.find(_END)
        if end >= 0:
            raw = bytes(buf[: end + 2])
            del buf[: end + 5]
            finished = True
        else:
            cut = len(buf)
            for tail in _TAILS:
                if buf.endswith(tail):
                    cut -= len(tail)
                    break
            if cut == 0:
                return b"", False
            raw = bytes(buf[:cut])
            del buf[:cut]
            finished = False
        return raw, finished

    def unstuff(self, raw: bytes) -> bytes:
        """Remove the leading dot of every line, and the virtual first CRLF."""
        data = raw.replace(b"\r\n.", b"\r\n")
        if self._virtual and data:
            self._virtual = False
            return data[2:]
        return data
