"""An LMTP server on a Unix socket, where Postfix's ``lmtp:unix:``
transport and Dovecot's proxies hand mail over: no TCP port at all.

    python docs/examples/anyio_unix_socket.py --socket /tmp/lmtp.sock
    python docs/examples/anyio_unix_socket.py --socket /tmp/lmtp.sock --mode 600 --backend trio

It prints ``listening on unix:PATH`` once clients can connect, then a line
per message. SIGTERM or Ctrl+C closes it gracefully, which removes the
socket file; a file left by a server that crashed is replaced at start.
"""

from __future__ import annotations

import argparse
import signal

import anyio

from smtp_anyio import MessageStream, Session, SMTPServer


async def on_data(stream: MessageStream, session: Session) -> list[str]:
    message = await stream.read()
    recipients = [rcpt.address for rcpt in session.envelope.rcpt_to]
    # A Unix socket has no client address: remote_address is None.
    print(f"{len(message)} bytes for {', '.join(recipients)} "
          f"from {session.remote_address or 'a local client'}", flush=True)
    return [f"OK: delivered to {address}" for address in recipients]  # LMTP: one each


async def main(path: str, mode: int) -> None:
    server = SMTPServer(lmtp=True, auth_methods=(), on_data=on_data)
    async with server:
        # mode: who may connect (here the owner and the group, e.g. postfix's).
        bound = await server.listen_unix(path, mode=mode)
        print(f"listening on unix:{bound}", flush=True)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                print(f"{signal.Signals(signum).name}: closing", flush=True)
                break
    # Leaving ``async with`` closed the server and removed the socket file.


def run(path: str, mode: int, backend: str = "asyncio") -> None:
    if backend == "uvloop":
        anyio.run(main, path, mode, backend="asyncio", backend_options={"use_uvloop": True})
    else:
        anyio.run(main, path, mode, backend=backend)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="LMTP on a Unix socket.")
    parser.add_argument("--socket", default="lmtp.sock", help="the socket file's path")
    parser.add_argument("--mode", type=lambda text: int(text, 8), default=0o660,
                        help="the socket file's permissions, in octal (default 660)")
    parser.add_argument("--backend", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    args = parser.parse_args()
    run(args.socket, args.mode, args.backend)
