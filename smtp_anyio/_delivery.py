"""Final delivery of one message into one or more Maildirs: the trace
headers a delivery agent adds (RFC 5321 section 4.4), the mailbox a
recipient's local part names, and the copies of a message written side by
side (:class:`Fanout`).

Everything here that touches the disk blocks; the command-line server calls
it in worker threads, one call at a time per message.
"""

from __future__ import annotations

import errno
import logging
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smtp_proto import Session
from smtp_server import SMTPError, received_header

from ._maildir import Delivery, MaildirStore

__all__ = ["Copy", "Fanout", "MailboxError", "mailbox_name", "trace_headers"]

log = logging.getLogger("smtp_anyio.cli")

MAX_LOCAL_PART = 64
"""RFC 5321 section 4.5.3.1.1: the longest local part, in octets."""

MAX_NEW_MAILBOXES = 1000
"""Mailboxes one process delivers into at most with
``--maildir-per-recipient``: every new local part costs directories on
disk (and an entry in the server's table of open Maildirs), and the local
parts are the client's choice."""

# Characters a directory name must not hold, or that would let a local part
# name another place ("/", "\\") or read badly in a shell ('"').
_FORBIDDEN = frozenset('/\\"')


class MailboxError(SMTPError):
    """The recipient's local part cannot name a mailbox."""


def mailbox_name(address: str) -> str:
    """The Maildir a recipient's mail goes to under ``--maildir-per-recipient``:
    the local part (``postmaster`` for the bare ``<Postmaster>``), lowercased
    and NFC-normalised, as Postfix's local delivery folds it. Raises
    :class:`MailboxError` (553 5.1.3) for one that cannot be a directory name:
    empty, over 64 octets, starting with ".", or holding "/", "\\", a quote
    or a control character."""
    local = address.rpartition("@")[0] if "@" in address else address
    name = unicodedata.normalize("NFC", local).lower()
    if (not name or name.startswith(".") or len(name.encode("utf-8", "surrogatepass"))
            > MAX_LOCAL_PART
            or any(c in _FORBIDDEN or c < " " or "\x7f" <= c <= "\x9f" for c in name)):
        raise MailboxError(553, "Error: mailbox name not allowed", enhanced="5.1.3")
    return name


def trace_headers(session: Session, *, by: str, delivered_to: str | None,
                  relay: bool = False) -> bytes:
    """The header lines put in front of a message: ``Return-Path`` (only at
    final delivery, RFC 5321 section 4.4), ``Delivered-To`` for a copy made
    for one recipient, and our ``Received`` line (every hop adds one)."""
    envelope = session.envelope
    lines: list[str] = []
    if not relay:
        sender = envelope.mail_from.address if envelope.mail_from else ""
        lines.append(f"Return-Path: <{sender}>\r\n")
        if delivered_to is not None:
            lines.append(f"Delivered-To: {delivered_to}\r\n")
    lines.append(received_header(session, by=by,
                                 for_recipient=True if delivered_to is None else delivered_to))
    # UTF-8 only with SMTPUTF8 (the core refuses non-ASCII paths otherwise);
    # surrogateescape keeps whatever bytes the header helper let through.
    return "".join(lines).encode("utf-8", "surrogateescape")


def usable_name(name: str) -> str:
    """``name`` if ``received_header`` takes it as the ``by`` domain (a host
    name such as ``my_box`` is not one), else ``localhost``."""
    try:
        received_header(Session(), by=name)
    except ValueError:
        return "localhost"
    return name


@dataclass
class Copy:
    """One copy of the message: its Maildir, the recipients (indexes into
    the envelope) it is for, and how its delivery went."""

    path: Path
    recipients: list[int]
    headers: bytes
    label: str = ""
    """How the console line names it: "" for the single Maildir, else the
    mailbox's directory name."""
    delivery: Delivery | None = None
    error: SMTPError | None = None
    name: str = ""
    size: int = 0
    """The message's size as received (without the trace headers)."""
    published: bool = field(default=False, repr=False)


def storage_error(exc: OSError) -> SMTPError:
    """The reply for a copy the disk refused: temporary, so the client tries
    again (and nothing of the copy stays on disk)."""
    if exc.errno == errno.ENOSPC:
        return SMTPError(452, "Error: insufficient system storage", enhanced="4.3.1")
    if exc.errno == errno.EDQUOT:
        return SMTPError(452, "Error: mailbox full", enhanced="4.2.2")
    return SMTPError(451, "Error: local error in processing", enhanced="4.3.0")


class Fanout:
    """The copies of one message, written batch by batch side by side. A copy
    that fails is dropped (its error kept) while the others go on."""

    def __init__(self, copies: Sequence[Copy], stores: dict[Path, MaildirStore]) -> None:
        self.copies = list(copies)
        self._stores = stores  # shared by every message of the server
        self._started = False

    def _fail(self, copy: Copy, exc: BaseException) -> None:
        log.error("delivery into %s failed: %r", copy.path, exc)
        copy.error = (storage_error(exc) if isinstance(exc, OSError) else
                      SMTPError(451, "Error: local error in processing", enhanced="4.3.0"))
        if copy.delivery is not None:
            copy.delivery.discard()

    def live(self) -> list[Copy]:
        return [copy for copy in self.copies if copy.error is None]

    def _start(self) -> None:
        self._started = True
        for copy in self.copies:
            try:
                store = self._stores.get(copy.path)
                if store is None:
                    if len(self._stores) >= MAX_NEW_MAILBOXES:  # (RCPT checks it first)
                        raise OSError(errno.EMLINK, "too many mailboxes made by this process")
                    store = self._stores[copy.path] = MaildirStore(copy.path)
                copy.delivery = store.begin()
                copy.delivery.write([copy.headers])
            except Exception as exc:  # that copy fails, the others go on
                self._fail(copy, exc)

    def write(self, chunks: Iterable[bytes]) -> None:
        """Append ``chunks`` to every live copy (the first call writes the
        trace headers first)."""
        if not self._started:
            self._start()
        data = b"".join(chunks)
        for copy in self.live():
            assert copy.delivery is not None
            try:
                copy.delivery.write([data])
            except Exception as exc:
                self._fail(copy, exc)

    def commit(self, chunks: Iterable[bytes], *, all_or_nothing: bool) -> None:
        """Write the last ``chunks``, fsync every live copy, then publish
        them. ``all_or_nothing`` (one reply for the whole message, SMTP):
        if any copy fails, none stays delivered, and every copy carries the
        first error. Otherwise (LMTP: a reply per recipient) each copy
        stands or falls alone."""
        self.write(chunks)
        for copy in self.live():
            assert copy.delivery is not None
            try:
                copy.delivery.prepare()
            except Exception as exc:
                self._fail(copy, exc)
        if all_or_nothing and len(self.live()) < len(self.copies):
            self._fail_all()
            return
        for copy in self.live():
            assert copy.delivery is not None
            try:
                copy.name = copy.delivery.publish()
                copy.size = copy.delivery.size - len(copy.headers)  # as received
                copy.published = True
            except Exception as exc:
                self._fail(copy, exc)
        if all_or_nothing and len(self.live()) < len(self.copies):
            self._fail_all()

    def _fail_all(self) -> None:
        first = next(copy.error for copy in self.copies if copy.error is not None)
        for copy in self.copies:
            if copy.published and copy.delivery is not None:
                copy.delivery.withdraw()
                copy.published = False
            elif copy.delivery is not None:
                copy.delivery.discard()
            copy.error = first

    def discard(self) -> None:
        """The message was aborted: nothing of any copy stays."""
        for copy in self.copies:
            if copy.delivery is not None and not copy.published:
                copy.delivery.discard()

    @property
    def started(self) -> bool:
        return self._started


def plan_copies(session: Session, root: Path, *, by: str, per_recipient: bool,
                lmtp: bool) -> list[Copy]:
    """Which copies a message becomes: one in ``root`` (SMTP); one per
    recipient (LMTP: each has its own reply and its own ``Delivered-To``);
    with ``per_recipient`` each in the Maildir ``root/<local part>``, one
    copy per mailbox in SMTP (two recipients of one mailbox get it once)."""
    recipients = [r.address for r in session.envelope.rcpt_to]
    if not per_recipient and not lmtp:
        return [Copy(root, list(range(len(recipients))),
                     trace_headers(session, by=by, delivered_to=None))]
    copies: list[Copy] = []
    by_mailbox: dict[Path, Copy] = {}
    for index, address in enumerate(recipients):
        label = mailbox_name(address) if per_recipient else ""
        path = root / label if per_recipient else root
        if not lmtp and path in by_mailbox:
            by_mailbox[path].recipients.append(index)
            continue
        copy = Copy(path, [index], trace_headers(session, by=by, delivered_to=address),
                    label=label)
        by_mailbox[path] = copy
        copies.append(copy)
    return copies
