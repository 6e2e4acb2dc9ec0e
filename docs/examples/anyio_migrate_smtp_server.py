"""An smtp-server / bun-smtp application, ported (see migrating.rst for the
JavaScript it comes from)."""

from __future__ import annotations

import secrets
from typing import Any

import anyio

from smtp_anyio import AuthAttempt, MessageStream, RcptTo, Session, SMTPError, SMTPServer


async def deliver(message: bytes) -> str:
    await anyio.lowlevel.checkpoint()  # stands in for your queue or database
    return secrets.token_hex(5)


async def on_auth(auth: AuthAttempt, session: Session) -> dict[str, Any]:
    if auth.username != "user" or auth.password != "pass":
        raise SMTPError(535, "Invalid username or password")  # callback(err)
    return {"name": auth.username}  # callback(null, {user: ...})


async def on_rcpt_to(address: RcptTo, session: Session) -> None:
    if not address.address.endswith("@example.com"):
        raise SMTPError(554, "Relay access denied", enhanced="5.7.1")  # responseCode
    # returning is callback()


async def on_data(stream: MessageStream, session: Session) -> str:
    chunks = [chunk async for chunk in stream]  # stream.on("data") ... on("end")
    # no sizeExceeded check: an oversize message never gets here (552 5.3.4)
    queue_id = await deliver(b"".join(chunks))
    return f"Queued as {queue_id}"  # callback(null, message)


def build_server(cert_file: str, key_file: str) -> SMTPServer:
    return SMTPServer(
        secure=False,
        needs_upgrade=True,
        size=10 * 1024 * 1024,
        auth_methods=["PLAIN", "LOGIN"],
        key=key_file,
        cert=cert_file,
        on_auth=on_auth,
        on_rcpt_to=on_rcpt_to,
        on_data=on_data,
    )


async def main(cert_file: str, key_file: str, port: int = 587) -> None:
    server = build_server(cert_file, key_file)
    async with server:
        await server.listen(port)  # server.listen(587)
        await server.serve_forever()
