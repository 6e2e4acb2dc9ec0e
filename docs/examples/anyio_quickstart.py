"""The first server: print every message it receives.

Run it (it listens on 127.0.0.1:2525), then send it a message with
``anyio_send.py``::

    python docs/examples/anyio_quickstart.py
    python docs/examples/anyio_quickstart.py --backend trio --port 2526

It prints ``listening on HOST:PORT`` once it accepts connections, then each
message; Ctrl+C stops it.
"""

from __future__ import annotations

import argparse

import anyio

from smtp_anyio import MessageStream, Session, SMTPServer


async def on_data(stream: MessageStream, session: Session) -> None:
    """Called for every message; returning normally accepts it (250)."""
    message = await stream.read()
    envelope = session.envelope
    sender = envelope.mail_from.address if envelope.mail_from else ""
    recipients = ", ".join(rcpt.address for rcpt in envelope.rcpt_to)
    print(f"message from <{sender}> to <{recipients}>: {len(message)} bytes", flush=True)
    print(message.decode("utf-8", errors="replace"), flush=True)


async def main(port: int = 2525) -> None:
    server = SMTPServer(on_data=on_data, auth_optional=True)
    async with server:
        host, bound = await server.listen(port)
        print(f"listening on {host}:{bound}", flush=True)
        await server.serve_forever()


def run(port: int = 2525, backend: str = "asyncio") -> None:
    if backend == "trio":
        anyio.run(main, port, backend="trio")
    elif backend == "uvloop":
        anyio.run(main, port, backend="asyncio", backend_options={"use_uvloop": True})
    else:
        anyio.run(main, port)  # asyncio is anyio's default


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print every message received.")
    parser.add_argument("--port", type=int, default=2525, help="0 picks a free port")
    parser.add_argument("--backend", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    args = parser.parse_args()
    try:
        run(args.port, args.backend)
    except* KeyboardInterrupt:  # Ctrl+C; trio may wrap it in an exception group
        pass
