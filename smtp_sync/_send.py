"""Sending a reply without letting go of the GIL.

Every socket call in CPython releases the GIL and takes it back afterwards.
With many busy client threads, taking it back means queueing for it: each
hand-over is a few futex calls and context switches, and they, not the
protocol work, end up as most of the server's CPU time. A reply is small
and the socket's send buffer nearly always has room for it, so a
non-blocking ``send()`` through :class:`ctypes.PyDLL` (which keeps the GIL
during the call) costs one short system call and no hand-over. What does
not fit at once goes through ``sendall()`` as before.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import sys

__all__ = ["send_holding_gil"]

_AGAIN = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR}
_FLAGS = getattr(socket, "MSG_DONTWAIT", 0) | getattr(socket, "MSG_NOSIGNAL", 0)


def _libc_send() -> ctypes._NamedFuncPointer | None:
    if not sys.platform.startswith("linux") or not hasattr(socket, "MSG_DONTWAIT"):
        return None
    try:
        send = ctypes.PyDLL(None, use_errno=True).send
    except (OSError, AttributeError):
        return None
    send.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
    send.restype = ctypes.c_ssize_t
    return send


_send = _libc_send()


def send_holding_gil(sock: socket.socket, data: bytes) -> None:
    """``sock.sendall(data)`` for a plain (not TLS) socket, trying first
    to send it all without blocking and without releasing the GIL."""
    if _send is not None:
        sent = _send(sock.fileno(), data, len(data), _FLAGS)
        if sent == len(data):
            return
        if sent < 0:
            code = ctypes.get_errno()
            if code not in _AGAIN:
                raise OSError(code, os.strerror(code))
            sent = 0
        data = data[sent:]
    sock.sendall(data)
