"""aiosmtpd's ExampleHandler, ported (see migrating.rst for the original)."""

from __future__ import annotations

import contextlib
import sys

import anyio

from smtp_anyio import MessageStream, RcptTo, Session, SMTPError, SMTPServer


class ExampleServer(SMTPServer):
    async def on_rcpt_to(self, address: RcptTo, session: Session) -> None:
        if not address.address.endswith("@example.com"):
            raise SMTPError(550, "not relaying to that domain")
        # no envelope.rcpt_tos.append(): accepted recipients are recorded
        # in session.envelope.rcpt_to by the server

    async def on_data(self, stream: MessageStream, session: Session) -> str:
        content = await stream.read()  # envelope.content
        envelope = session.envelope
        assert envelope.mail_from is not None
        print(f"Message from {envelope.mail_from.address}", flush=True)
        print(f"Message for {[rcpt.address for rcpt in envelope.rcpt_to]}", flush=True)
        print(content.decode("utf8", errors="replace"), flush=True)
        return "Message accepted for delivery"  # the text; the 250 is added


async def main(port: int = 8025) -> None:
    server = ExampleServer(auth_methods=())  # aiosmtpd offers no AUTH by default
    async with server:
        host, bound = await server.listen(port, "127.0.0.1")
        print(f"listening on {host}:{bound}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8025)
