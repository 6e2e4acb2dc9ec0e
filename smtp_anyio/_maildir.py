"""Delivery into a Maildir (``mailbox.Maildir``) and a password file for
AUTH: the building blocks of the command-line server, usable on their own."""

from __future__ import annotations

import hmac
import mailbox
import os
from collections.abc import Mapping
from pathlib import Path

from smtp_proto import AuthAttempt, Session

__all__ = ["MaildirStore", "check_credentials", "load_auth_file"]


class MaildirStore:
    """Writes each message, byte for byte, as one file of ``new/``.

    ``mailbox.Maildir`` writes to ``tmp/`` and renames into ``new/``, so a
    reader never sees half a message and a crash leaves none behind.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._box = mailbox.Maildir(self.path, factory=None, create=True)

    def deliver(self, message: bytes) -> str:
        """Store ``message``; returns its file name under ``new/``."""
        return self._box.add(message)


def load_auth_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """``user:password`` per line; blank lines and ``#`` comments ignored."""
    users: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user:
            raise ValueError(f"{path}:{number}: expected user:password")
        users[user] = password
    return users


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


def describe(session: Session, size: int) -> str:
    """One log line for a delivered message."""
    envelope = session.envelope
    sender = envelope.mail_from.address if envelope.mail_from else ""
    recipients = ",".join(r.address for r in envelope.rcpt_to)
    return f"from=<{sender}> to=<{recipients}> size={size} client={session.remote_address}"
