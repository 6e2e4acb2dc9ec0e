"""Delivery into a Maildir and a password file for AUTH: the building blocks
of the command-line server, usable on their own.

A message is written to ``tmp/`` as it arrives (:class:`Delivery`), then
fsynced, linked into ``new/`` and the ``new/`` directory fsynced: only then
is it delivered, and only then may the server answer 250. Everything here
blocks (file I/O); the command-line server calls it in worker threads.
"""

from __future__ import annotations

import datetime
import errno
import hmac
import itertools
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from smtp_proto import AuthAttempt, Session

__all__ = ["Delivery", "MaildirStore", "check_credentials"]

SUBFOLDERS = ("tmp", "new", "cur")

# One counter per process, shared by every store: the Q part of a queue id.
# next() on itertools.count is atomic under the GIL, so threads may share it.
_counter = itertools.count(1)


def _host_part() -> str:
    """The host name as the Maildir convention writes it in file names: "/"
    and ":" would make a path or end the unique part, so they are escaped."""
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072")


def new_queue_id() -> str:
    """``<seconds>.M<microseconds>P<pid>Q<counter>R<random>``: unique per
    message. The counter separates the messages of one process, the process
    id those of processes running side by side on one host, and 32 random
    bits what those cannot: a process id reused within the microsecond, or
    the same process id in two containers writing into one Maildir."""
    now = time.time_ns() // 1000
    return (f"{now // 1_000_000}.M{now % 1_000_000}P{os.getpid()}Q{next(_counter)}"
            f"R{os.urandom(4).hex()}")


def _fsync_directory(path: Path) -> None:
    """Make the directory's entries (a file linked into it) durable."""
    if not hasattr(os, "O_DIRECTORY"):
        return  # Windows cannot open a directory to fsync it
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class MaildirStore:
    """A Maildir: ``tmp/``, ``new/`` and ``cur/`` under ``path``.

    The folder is created if missing, and so are its three subfolders if
    any is missing (an existing empty folder becomes a Maildir). Each
    message becomes one file of ``new/``, byte for byte.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.host = _host_part()
        created = False
        try:
            self.path.mkdir(mode=0o700)
        except FileExistsError:
            if not self.path.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a directory",
                                         str(self.path)) from None
        else:
            created = True
            _fsync_directory(self.path.absolute().parent)
        for name in SUBFOLDERS:
            try:
                (self.path / name).mkdir(mode=0o700)
            except FileExistsError:
                pass
            else:
                created = True
        if created:
            # new/ must survive a crash for the messages linked into it to.
            _fsync_directory(self.path)

    def begin(self) -> Delivery:
        """A new message; nothing is written before its first bytes."""
        return Delivery(self)

    def deliver(self, message: bytes) -> str:
        """Store ``message`` durably; returns its file name under ``new/``."""
        return self.begin().commit([message])


class Delivery:
    """One message on its way into the Maildir.

    :meth:`write` appends to its ``tmp/`` file (created by the first call),
    :meth:`commit` makes it durable and moves it into ``new/``,
    :meth:`discard` removes whatever was written. Calls block: make them one
    at a time, from a worker thread when in an event loop.
    """

    def __init__(self, store: MaildirStore) -> None:
        self.store = store
        self.queue_id = new_queue_id()
        self.name = f"{self.queue_id}.{store.host}"
        self.size = 0
        self._fd: int | None = None
        self._tmp: Path | None = None
        self._finished = False  # committed or discarded: no more writes

    @property
    def started(self) -> bool:
        """A ``tmp/`` file exists (``discard`` has something to remove)."""
        return self._tmp is not None

    def write(self, chunks: Iterable[bytes]) -> None:
        """Append ``chunks`` to the ``tmp/`` file."""
        if self._finished:
            raise ValueError("delivery already committed or discarded")
        data = b"".join(chunks)
        if self._fd is None:
            tmp = self.store.path / "tmp" / self.name
            # O_EXCL: never write into another delivery's file.
            self._fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0),
                               0o600)
            self._tmp = tmp
        _write_all(self._fd, data)
        self.size += len(data)

    def commit(self, chunks: Iterable[bytes] = ()) -> str:
        """Write the last ``chunks``, fsync the file, link it into ``new/``
        and fsync ``new/``: once this returns, the message survives a crash.
        Returns its file name under ``new/``. On failure nothing is left in
        ``tmp/`` or ``new/``, and the exception propagates."""
        self.prepare(chunks)
        return self.publish()

    def prepare(self, chunks: Iterable[bytes] = ()) -> None:
        """The first half of :meth:`commit`: the last ``chunks`` written and
        the file fsynced in ``tmp/``. Delivering one message into several
        Maildirs prepares every copy before publishing any, so that a
        failing disk stops them all before any is delivered. On failure the
        ``tmp/`` file is removed and the exception propagates."""
        try:
            self.write(chunks)
            fd = self._fd
            assert fd is not None
            self._fd = None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            self.discard()
            raise

    def publish(self) -> str:
        """The second half of :meth:`commit`: link the prepared file into
        ``new/`` and fsync ``new/``. Returns the file name under ``new/``; on
        failure nothing is left in ``tmp/`` or ``new/``."""
        tmp = self._tmp
        if tmp is None or self._fd is not None or self._finished:
            raise ValueError("publish() needs a prepared delivery")
        target = self.store.path / "new" / self.name
        linked = False
        try:
            try:
                # link() fails if the name exists, where rename() would
                # silently replace another message.
                os.link(tmp, target)
            except (AttributeError, PermissionError, NotImplementedError):
                # A file system without hard links (some FUSE, vfat): the
                # name is unique anyway.
                os.rename(tmp, target)
            linked = True
            _fsync_directory(target.parent)
        except BaseException:
            if linked:
                # Not known to be durable: the client is told to try again,
                # so it must not be delivered as well (it would be twice).
                _unlink(target)
            self.discard()
            raise
        self._finished = True
        self._tmp = None
        # Delivered: a tmp/ file left behind by a failing unlink is only
        # litter (readers clean tmp/ up), and must not turn the 250 into an
        # error that makes the client send the message again.
        _unlink(tmp, quiet=True)
        return self.name

    def withdraw(self) -> None:
        """Take a published message back out of ``new/`` (a copy of a message
        whose other copies could not be delivered, before the client is told
        to send it again). Gone already (a reader moved it): nothing to do."""
        _unlink(self.store.path / "new" / self.name, quiet=True)

    def discard(self) -> None:
        """Remove the ``tmp/`` file, if any; safe to call more than once,
        and after :meth:`commit` (then it leaves the message alone)."""
        self._finished = True
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            _unlink(tmp)


def _unlink(path: Path, *, quiet: bool = False) -> None:
    """Remove ``path`` if it is there; ``quiet``: ignore any error."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        if not quiet:
            raise


def check_credentials(users: Mapping[str, str], auth: AuthAttempt) -> bool:
    """Does ``auth`` prove knowledge of the user's password?"""
    known = users.get(auth.username)
    if known is None:
        return False
    if auth.mechanism == "CRAM-MD5":
        return auth.validate_password(known)
    if auth.password is None:
        return False
    return hmac.compare_digest(known.encode(), auth.password.encode())


def describe(session: Session, size: int, to: Sequence[str] | None = None) -> str:
    """One log line for a delivered message (after its file name); ``to``:
    the recipients of this copy (default: the envelope's)."""
    envelope = session.envelope
    sender = envelope.mail_from.address if envelope.mail_from else ""
    recipients = ",".join(to if to is not None else (r.address for r in envelope.rcpt_to))
    tls = session.tls.version if session.tls is not None else "no"
    user = session.user if isinstance(session.user, str) else (
        "-" if session.user is None else type(session.user).__name__)
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    # ascii(): a client's address text cannot break the line or the terminal.
    return (f"from=<{ascii(sender)[1:-1]}> to=<{ascii(recipients)[1:-1]}> size={size} "
            f"client={session.remote_address or '-'} session={session.id} tls={tls} "
            f"user={ascii(user)[1:-1]} time={when.replace('+00:00', 'Z')}")
