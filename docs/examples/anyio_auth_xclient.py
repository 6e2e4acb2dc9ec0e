"""Behind a trusted proxy that authenticates users itself (nginx's mail
proxy, Postfix) and passes the user name on with XCLIENT LOGIN=."""

from __future__ import annotations

from smtp_anyio import AuthAttempt, MessageStream, Session, SMTPServer


async def on_auth(auth: AuthAttempt, session: Session) -> str | None:
    if auth.mechanism == "XCLIENT":
        return auth.username  # the proxy checked the password; no password here
    return None  # no direct logins on this listener


async def on_data(stream: MessageStream, session: Session) -> None:
    await stream.read()
    print(f"from {session.user} at {session.remote_address} "
          f"(proxy said {session.xclient})", flush=True)


def backend_server() -> SMTPServer:
    # Every client of this server may claim any identity: listen where
    # only the proxy can connect.
    return SMTPServer(use_xclient=True, on_auth=on_auth, on_data=on_data)
