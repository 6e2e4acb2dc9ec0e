"""A submission server: users log in with PLAIN, LOGIN or CRAM-MD5 and may
only send from their own addresses."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smtp_anyio import AuthAttempt, MailFrom, MessageStream, Session, SMTPError, SMTPServer


@dataclass(frozen=True)
class User:
    name: str
    addresses: frozenset[str]


@dataclass(frozen=True)
class Account:
    password: str  # CRAM-MD5 needs the password itself, not a hash of it
    user: User
    disabled: bool = False


class SubmissionServer(SMTPServer):
    def __init__(self, accounts: Mapping[str, Account], **options: Any) -> None:
        super().__init__(auth_methods=["PLAIN", "LOGIN", "CRAM-MD5"], **options)
        self.accounts = accounts

    async def on_auth(self, auth: AuthAttempt, session: Session) -> User | None:
        account = self.accounts.get(auth.username)
        if account is None:
            return None  # 535 5.7.8 Error: authentication credentials invalid
        if auth.mechanism == "CRAM-MD5":
            valid = auth.validate_password(account.password)
        else:  # PLAIN, LOGIN
            valid = hmac.compare_digest(account.password.encode(), (auth.password or "").encode())
        if not valid:
            return None
        if account.disabled:
            raise SMTPError(535, "Error: account disabled, see https://example.org/help",
                            enhanced="5.7.8")
        return account.user  # stored as session.user

    async def on_mail_from(self, address: MailFrom, session: Session) -> None:
        user: User = session.user  # what on_auth returned
        if address.address.lower() not in user.addresses:
            raise SMTPError(553, f"Error: {user.name} may not send as <{address.address}>",
                            enhanced="5.7.1")

    async def on_data(self, stream: MessageStream, session: Session) -> str:
        body = await stream.read()
        print(f"{session.user.name} sent {len(body)} bytes ({session.transmission_type})",
              flush=True)
        return "OK: submitted"


ACCOUNTS = {
    "alice": Account("wonderland", User("alice", frozenset({"alice@example.org"}))),
    "mallory": Account("secret", User("mallory", frozenset()), disabled=True),
}


def build_server(cert_file: str, key_file: str) -> SubmissionServer:
    return SubmissionServer(
        ACCOUNTS,
        key=key_file,
        cert=cert_file,
        auth_required_message="Error: log in first, see https://example.org/help",
        max_auth_failures=3,
    )


def development_server() -> SubmissionServer:
    # on 127.0.0.1 only: passwords travel in clear text
    return SubmissionServer(ACCOUNTS, allow_insecure_auth=True)
