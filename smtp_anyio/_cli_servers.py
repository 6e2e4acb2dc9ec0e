"""The servers behind ``python -m smtp_anyio``: a delivery agent into
Maildirs (:class:`MaildirServer`); the relay is in ``_relay``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Unpack

import anyio

from smtp_proto import AuthAttempt, RcptTo, Session
from smtp_server import HIGH_WATER, ServerOptions, SMTPError

from ._delivery import MAX_NEW_MAILBOXES, Copy, Fanout, mailbox_name, plan_copies, usable_name
from ._maildir import MaildirStore, check_credentials, describe
from ._server import SMTPServer
from ._stream import MessageStream

__all__ = ["BATCH", "CliServer", "MaildirServer"]

BATCH = HIGH_WATER
"""Bytes of a message gathered in the loop before a worker thread writes
them: a message up to this size costs one trip to a thread (which writes,
fsyncs and delivers it), a bigger one a trip per batch. As it is the
stream's high-water mark, the connection goes on reading while a batch is
written, and a message holds at most about twice this in memory."""

_SIZE_EXCEEDED = SMTPError(552, "Error: message exceeds fixed maximum message size",
                           enhanced="5.3.4")


def _print_line(line: str) -> None:
    print(line, flush=True)


class CliServer(SMTPServer):
    """What every server of the command line shares: users from the auth
    file, the output line callback (``say``, called in the event loop: it
    must not block) and the name the trace headers give as ``by``."""

    def __init__(self, users: dict[str, str] | None, *,
                 say: Callable[[str], None] = _print_line,
                 **options: Unpack[ServerOptions]) -> None:
        super().__init__(**options)
        self.users = users
        self.say = say
        self.by = usable_name(self.protocol_config.name)
        self.on_closed: Callable[[], None] | None = None
        """Called (in a worker thread) once :meth:`close` is done: a worker
        process's output writers are drained there."""

    async def close(self) -> None:
        await super().close()
        if self.on_closed is not None:
            await anyio.to_thread.run_sync(self.on_closed)

    async def on_auth(self, auth: AuthAttempt, session: Session) -> object:
        if self.users is not None and check_credentials(self.users, auth):
            return auth.username
        raise SMTPError(535, "Error: authentication credentials invalid", enhanced="5.7.8")


class MaildirServer(CliServer):
    """Final delivery: each accepted message, with ``Return-Path`` and
    ``Received`` (and ``Delivered-To`` on a copy for one recipient) in front,
    into the Maildir ``root``; with ``per_recipient`` into ``root/<local
    part>``, a Maildir per mailbox (the layout Dovecot's ``maildir:%n``
    reads). In LMTP each recipient gets its own copy and its own reply, so
    one failing mailbox does not fail the others."""

    def __init__(self, root: str | Path, users: dict[str, str] | None, *,
                 per_recipient: bool = False, say: Callable[[str], None] = _print_line,
                 **options: Unpack[ServerOptions]) -> None:
        super().__init__(users, say=say, **options)
        self.root = Path(root)
        self.per_recipient = per_recipient
        self.stores: dict[Path, MaildirStore] = {}
        if not per_recipient:
            self.stores[self.root] = MaildirStore(self.root)
        else:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def on_rcpt_to(self, address: RcptTo, session: Session) -> None:
        if not self.per_recipient:
            return
        path = self.root / mailbox_name(address.address)  # 553 5.1.3 if it can't be one
        if path not in self.stores and len(self.stores) >= MAX_NEW_MAILBOXES:
            raise SMTPError(452, "Error: too many mailboxes, try again later", enhanced="4.3.1")

    async def on_data(self, stream: MessageStream, session: Session) -> object:
        """Write the copies into ``tmp/`` as the message arrives, a batch at
        a time in a worker thread; deliver them into ``new/`` durably, then
        answer (a reply per recipient in LMTP)."""
        lmtp = self.protocol_config.lmtp
        fanout = Fanout(plan_copies(session, self.root, by=self.by,
                                    per_recipient=self.per_recipient, lmtp=lmtp), self.stores)
        pending: list[bytes] = []
        pending_size = 0
        try:
            async for chunk in stream:
                if stream.size_exceeded:
                    # Refused whatever happens (552), and the core passes
                    # nothing beyond the limit: free the disk now rather
                    # than when the client has sent all it announced.
                    pending.clear()
                    if fanout.started:
                        await anyio.to_thread.run_sync(fanout.discard)
                    continue
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= BATCH:
                    batch, pending, pending_size = pending, [], 0
                    await anyio.to_thread.run_sync(fanout.write, batch)
            if stream.size_exceeded:  # the stream raises first; never deliver it anyway
                raise _SIZE_EXCEEDED
            # Shielded: once in new/, the message is reported (its line, its
            # 250 if the connection still stands), not cancelled half-way.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(
                    lambda: fanout.commit(pending, all_or_nothing=not lmtp))
        except BaseException:
            # Aborted (too big, connection lost, RSET), cancelled or failed:
            # nothing of it may stay in tmp/.
            if fanout.started:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(fanout.discard)
            raise
        return self._replies(fanout.copies, session, lmtp)

    def _replies(self, copies: list[Copy], session: Session, lmtp: bool) -> object:
        recipients = session.envelope.rcpt_to
        for copy in copies:
            if copy.error is None:
                name = f"{copy.label}/{copy.name}" if copy.label else copy.name
                to = [recipients[i].address for i in copy.recipients]
                self.say(f"{name} {describe(session, copy.size, to)}")
        if not lmtp:
            if copies[0].error is not None:
                raise copies[0].error
            return f"OK: queued as {_queue_id(copies[0])}"
        replies: list[object] = [None] * len(recipients)
        for copy in copies:
            for index in copy.recipients:
                replies[index] = (copy.error if copy.error is not None
                                  else f"OK: queued as {_queue_id(copy)}")
        return replies


def _queue_id(copy: Copy) -> str:
    assert copy.delivery is not None
    return copy.delivery.queue_id
