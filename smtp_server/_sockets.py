"""Listening sockets both servers open the same way: Unix-domain sockets
(with their socket file's life: a stale one replaced, ours removed at the
end) and ``SO_REUSEPORT``.

A Unix socket is how Postfix (``lmtp:unix:``) and Dovecot hand mail to a
local server. :func:`bind_unix` binds one, after checking what is already
at the path: nothing, or a socket file left behind by a server that crashed
(nobody accepts on it: ``connect()`` is refused), which is removed. A socket
a server still listens on is ``EADDRINUSE``; anything else (a regular file,
a directory) is an error and is never deleted. The file's mode is set
between ``bind()`` and ``listen()``, before any client can connect.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass

__all__ = [
    "UnixSocketFile", "bind_unix", "check_reuse_port", "listener_name", "set_reuse_port",
]


def check_reuse_port() -> None:
    """Raise ``OSError`` (``ENOPROTOOPT``) where the platform has no
    ``SO_REUSEPORT``: a ``reuse_port=True`` listener cannot be had there."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError(errno.ENOPROTOOPT,
                      "reuse_port: SO_REUSEPORT is not available on this platform")


def set_reuse_port(sock: socket.socket) -> None:
    """``SO_REUSEPORT`` on ``sock``, before its ``bind()``: several
    processes (or servers) can then listen on one port, and the kernel
    spreads new connections over them. Raises as :func:`check_reuse_port`."""
    check_reuse_port()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def listener_name(sock: socket.socket) -> str:
    """How logs name a listening socket: ``host:port`` or ``unix:path``."""
    name = sock.getsockname()
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    if isinstance(name, bytes):
        name = name.decode("utf-8", "backslashreplace")
    return f"unix:{name}"


@dataclass(frozen=True, slots=True)
class UnixSocketFile:
    """The socket file a Unix listener created: its absolute path (the
    working directory may change before it is removed), and the device and
    inode that tell it from a file someone else put there since."""

    path: str
    device: int
    inode: int

    def is_ours(self) -> bool:
        try:
            found = os.lstat(self.path)
        except OSError:
            return False
        return (found.st_dev, found.st_ino) == (self.device, self.inode)

    def remove(self) -> bool:
        """Delete the file if it is still ours; True if it was deleted."""
        if not self.is_ours():
            return False  # gone, or another server's socket now: not ours to delete
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        return True


def _clear_stale(path: str) -> None:
    """Remove a socket file nobody listens on; refuse anything else."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(found.st_mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket (left untouched)",
                              path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a listener with a full backlog: EAGAIN, not a wait
    try:
        probe.connect(path)
    except ConnectionRefusedError:  # nobody accepts: left by a crashed server
        # (Unless a server has replaced it since the probe: then it stays,
        # and our bind() fails with EADDRINUSE.)
        UnixSocketFile(path, found.st_dev, found.st_ino).remove()
        return
    except FileNotFoundError:
        return
    except BlockingIOError:
        pass  # a listener whose backlog is full: it is alive
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "a server is listening on this socket", path)


def bind_unix(path: str | os.PathLike[str], *, mode: int | None = None,
              backlog: int = 1024) -> tuple[socket.socket, UnixSocketFile]:
    """A listening Unix stream socket at ``path`` (blocking; the caller
    makes it non-blocking if it needs to) and the file it created; the
    socket's ``getsockname()`` is ``path`` as given.

    A stale socket file at ``path`` is replaced; a live one raises
    ``OSError`` with ``EADDRINUSE``; another kind of file raises
    ``FileExistsError`` and stays. ``mode`` (e.g. ``0o660``): the socket
    file's permissions, which decide who may connect; ``None`` leaves what
    the umask gave."""
    if not hasattr(socket, "AF_UNIX"):
        raise OSError(errno.EAFNOSUPPORT, "Unix sockets are not available on this platform")
    where = os.fspath(path)
    if not isinstance(where, str) or not where or where.startswith("\0"):
        raise ValueError(f"a Unix socket needs a file system path, not {path!r}")
    _clear_stale(where)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    created: UnixSocketFile | None = None
    try:
        sock.bind(where)  # as given: an absolute path may be too long for sun_path
        found = os.lstat(where)
        created = UnixSocketFile(os.path.abspath(where), found.st_dev, found.st_ino)
        if mode is not None:
            os.chmod(where, mode)  # before listen(): no client gets in before
        sock.listen(backlog)
    except BaseException:
        sock.close()
        if created is not None:
            created.remove()
        raise
    return sock, created
