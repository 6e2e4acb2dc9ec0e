"""A small blocking SMTP server built on smtp_proto alone.

Run it::

    python docs/examples/blocking_server.py --port 2525
    python docs/examples/blocking_server.py --port 0 --save-dir /tmp/mail

It prints ``listening on HOST:PORT`` once it accepts connections, then a line
for every message it receives (and with ``--save-dir`` writes each message to
a file there), until it is killed. It accepts mail for the domains given with
``--domain`` (default: ``example.com``) and refuses other recipients.

From code, ``serve(sock, on_message, stop_event)`` serves a listening socket
until ``stop_event`` is set, calling ``on_message(message)`` for every
message accepted.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from smtp_proto import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    DataChunk,
    Hello,
    MailFrom,
    MessageAborted,
    MessageComplete,
    MessageStart,
    RcptTo,
    RemoteProtocolError,
    ServerConfig,
    ServerConnection,
)

IDLE_TIMEOUT = 300.0  # seconds a client may stay silent (RFC 5321 4.5.3.2.7)
ACCEPT_POLL = 0.2  # how often serve() looks at stop_event while idle

# No TLS and no AUTH in this example: turn both off, so that EHLO does not
# offer them and MAIL needs no authentication. Cap messages at 10 MiB: the
# body is kept in memory until it is complete.
CONFIG = ServerConfig(
    name="localhost",
    auth_methods=(),
    disabled_commands={"STARTTLS"},
    size=10 * 1024 * 1024,
)


@dataclass
class Message:
    """One accepted message: the envelope and the body, byte for byte."""

    mail_from: str
    rcpt_to: list[str]
    data: bytes
    peer: str


OnMessage = Callable[[Message], None]


def handle_connection(
    sock: socket.socket,
    peer: tuple[str, int],
    on_message: OnMessage,
    domains: Collection[str],
    config: ServerConfig = CONFIG,
) -> None:
    """Serve one SMTP session on a connected socket, then close it."""
    conn = ServerConnection(config, remote_address=peer[0], remote_port=peer[1])
    conn.send_greeting()
    body: bytearray | None = None
    sock.settimeout(IDLE_TIMEOUT)
    with sock:
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError:
                # The peer broke the protocol fatally; the 421 is queued.
                flush(sock, conn)
                return

            if event is NEED_DATA:
                # Send every reply queued so far in one write, then block.
                if not flush(sock, conn):
                    return
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    conn.idle_timeout()  # queues 421 4.4.2 and closes
                    continue
                except OSError:
                    data = b""  # reset by peer: same as a close
                conn.receive_data(data)

            elif event is PAUSED:
                # Only happens while a decision is unanswered, before the
                # greeting or during a STARTTLS handshake; none can happen
                # here, since every decision is answered at once below.
                raise RuntimeError("the core is waiting for an answer")

            elif isinstance(event, ConnectionClosed):
                flush(sock, conn)  # e.g. the 221 to QUIT
                return

            # -- decisions: answer each one at once -------------------------
            elif isinstance(event, (Hello, MailFrom)):
                conn.accept()

            elif isinstance(event, RcptTo):
                domain = event.address.rpartition("@")[2].lower()
                if domain in domains:
                    conn.accept()
                else:
                    conn.reject(550, f"Error: no mailbox here by the name <{event.address}>")

            elif isinstance(event, MessageComplete):
                envelope = conn.session.envelope
                assert envelope.mail_from is not None and body is not None
                message = Message(
                    mail_from=envelope.mail_from.address,
                    rcpt_to=[rcpt.address for rcpt in envelope.rcpt_to],
                    data=bytes(body),
                    peer=f"{peer[0]}:{peer[1]}",
                )
                body = None
                try:
                    on_message(message)
                except Exception:
                    conn.reject(451, "Error: could not store the message, try again later")
                else:
                    conn.accept(f"OK: message queued as #{conn.session.transaction}")

            # -- information: the body arrives between these two -----------
            elif isinstance(event, MessageStart):
                body = bytearray()
            elif isinstance(event, DataChunk):
                assert body is not None
                body += event.data
            elif isinstance(event, MessageAborted):
                body = None  # reset, size limit, lost connection: forget it

            # Reset, Quit and the other information events need nothing.


def flush(sock: socket.socket, conn: ServerConnection) -> bool:
    """Write the queued replies; False if the peer is gone."""
    out = conn.data_to_send()
    if not out:
        return True
    try:
        sock.sendall(out)
    except OSError:
        return False
    return True


def serve(
    sock: socket.socket,
    on_message: OnMessage,
    stop_event: threading.Event,
    domains: Collection[str] = ("example.com",),
    config: ServerConfig = CONFIG,
) -> None:
    """Accept connections on the listening ``sock`` until ``stop_event`` is
    set, one thread per connection. The caller owns (and closes) ``sock``."""
    wanted = frozenset(d.lower() for d in domains)
    sock.settimeout(ACCEPT_POLL)
    while not stop_event.is_set():
        try:
            client, peer = sock.accept()
        except TimeoutError:
            continue
        thread = threading.Thread(
            target=handle_connection,
            args=(client, peer[:2], on_message, wanted, config),
            daemon=True,
        )
        thread.start()


def print_message(message: Message) -> None:
    print(
        f"message from <{message.mail_from}> to "
        + ", ".join(f"<{rcpt}>" for rcpt in message.rcpt_to)
        + f": {len(message.data)} bytes (client {message.peer})",
        flush=True,
    )


def saver(directory: Path) -> OnMessage:
    """An ``on_message`` that also writes each message to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    counter = 0
    lock = threading.Lock()

    def save(message: Message) -> None:
        nonlocal counter
        with lock:
            counter += 1
            path = directory / f"{counter:06d}.eml"
        path.write_bytes(message.data)
        print_message(message)

    return save


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525, help="0 picks a free port")
    parser.add_argument(
        "--domain", action="append", dest="domains",
        help="accept recipients in this domain (repeatable; default example.com)",
    )
    parser.add_argument("--save-dir", type=Path, help="write each message to a file here")
    args = parser.parse_args(argv)

    on_message = saver(args.save_dir) if args.save_dir else print_message
    with socket.create_server((args.host, args.port)) as sock:
        host, port = sock.getsockname()[:2]
        print(f"listening on {host}:{port}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops the server
            serve(sock, on_message, threading.Event(), args.domains or ("example.com",))
    return 0


if __name__ == "__main__":
    sys.exit(main())
