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
virtual CRLF in front of the body (``DotBody.__init__``); the first chunk
returned drops it again.
"""

from __future__ import annotations

__all__ = ["DotBody", "has_bare_line_ending"]

_END = b"\r\n.\r\n"
_TAILS = (_END[:4], _END[:3], _END[:2], _END[:1])
_DOT_LINE = _END[:3]
_CRLF = _END[:2]
# Look for the end marker among the pieces in Python while dot lines are
# at most one per this many bytes; above, bytes.find() is cheaper.
_SPARSE = 256


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

    def read(self, buf: bytearray) -> tuple[bytes, bool]:
        """Consume what can be decided from ``buf``.

        Returns ``(data, finished)``: ``data`` is unstuffed message bytes and
        ``finished`` says the end marker was consumed. Unless finished, what
        stays in ``buf`` is at most a four-byte start of an end marker.
        """
        size = cut = len(buf)
        for tail in _TAILS:
            if buf.endswith(tail):
                # Keep back a possible start of the end marker, unless a whole
                # marker ends inside it (``CRLF . CRLF .``, ``... CRLF`` at the end).
                if not buf.endswith(_END, 0, size - len(tail) + 2):
                    cut = size - len(tail)
                break
        if cut == 0:
            return b"", False
        if cut == size:
            raw = bytes(buf)
        else:
            with memoryview(buf) as view:
                raw = view[:cut].tobytes()
        # One search pass: every CRLF "." starts a dot-stuffed line or the end
        # marker. Without one, ``pieces`` is ``[raw]`` and nothing is copied.
        pieces = raw.split(_DOT_LINE)
        last = len(pieces) - 1
        end = 0  # index of the piece that follows the end marker
        if last * _SPARSE <= cut:
            for i in range(1, last + 1):
                piece = pieces[i]
                if piece.startswith(_CRLF) or (not piece and i < last):
                    end = i
                    break
        else:  # many dot lines: cheaper to look for the marker in C
            at = raw.find(_END)
            if at >= 0:
                end = raw.count(_DOT_LINE, 0, at) + 1
        if end:
            del pieces[end:]
            pieces.append(b"")
            data = _CRLF.join(pieces)
            del buf[: len(data) + end + 2]
        else:
            data = _CRLF.join(pieces)
            del buf[:cut]
        if self._virtual and data:
            self._virtual = False
            data = data[2:]
        return data, bool(end)
