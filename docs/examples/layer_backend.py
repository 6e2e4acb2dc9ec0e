"""A third backend, from the two lower floors alone: one client at a time on
a blocking socket, with the options, handlers and replies of the real servers.

``smtp_proto`` parses and answers; ``smtp_server`` validates the options,
resolves the handlers and turns what a handler did into the core's decision
(``SMTPError(550, ...)`` becomes a 550 with its enhanced code, a crash a
logged 451). What is left to write is I/O: accept, read, write.

    python docs/examples/layer_backend.py --port 2525 --clients 1
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable
from typing import Any

from smtp_proto import (
    NEED_DATA,
    AuthAttempt,
    ConnectionClosed,
    DataChunk,
    Event,
    Hello,
    MailFrom,
    MessageComplete,
    MessageStart,
    RcptTo,
    RemoteProtocolError,
    ServerConnection,
    Session,
)
from smtp_server import (
    BlockingMessageStream,
    ServerBase,
    SMTPError,
    answer,
    default_decision,
    failed,
    new_session_id,
    normalise_address,
    succeeded,
)


class OneAtATime(ServerBase):
    """Takes the options and handlers of ``smtp_sync.SMTPServer``."""

    def __init__(self, **options: Any) -> None:
        super().__init__(OneAtATime, options, "one_at_a_time")

    def serve(self, listener: socket.socket, clients: int) -> None:
        for _ in range(clients):
            sock, _ = listener.accept()
            with sock:
                self.session(sock)

    def session(self, sock: socket.socket) -> None:
        host, port = normalise_address(sock.getpeername()) or (None, None)
        conn = ServerConnection(self.protocol_config, remote_address=host, remote_port=port,
                                session_id=new_session_id())
        conn.send_greeting()
        handlers = self.handlers
        # The whole body in memory: fine for a sketch. smtp_sync lets on_data
        # pull it from the socket instead, so memory stays bounded.
        stream = BlockingMessageStream(pull=lambda: None)
        while True:
            sock.sendall(conn.data_to_send())
            try:
                event = conn.next_event()
            except RemoteProtocolError:  # the core queued its last reply
                sock.sendall(conn.data_to_send())
                return
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, Hello):
                conn.accept()
            elif isinstance(event, AuthAttempt):
                self.decide(conn, event, handlers.auth, event)
            elif isinstance(event, MailFrom):
                self.decide(conn, event, handlers.mail_from, event)
            elif isinstance(event, RcptTo):
                self.decide(conn, event, handlers.rcpt_to, event)
            elif isinstance(event, MessageStart):
                stream = BlockingMessageStream(pull=lambda: None)
            elif isinstance(event, DataChunk):
                stream.feed(event.data)
            elif isinstance(event, MessageComplete):
                stream.end()
                self.decide(conn, event, handlers.data, stream)
            elif isinstance(event, ConnectionClosed):
                sock.sendall(conn.data_to_send())
                return

    def decide(self, conn: ServerConnection, event: Event,
               handler: Callable[..., object] | None, *args: object) -> None:
        """The layer's dispatch: no handler means the default answer."""
        if handler is None:
            default_decision(conn, event)
            return
        try:
            outcome = succeeded(handler(*args, conn.session))
        except Exception as exc:
            outcome = failed(exc)
        answer(conn, event, outcome, self.logger)


def on_rcpt_to(address: RcptTo, session: Session) -> None:
    if address.address.startswith("nobody@"):
        raise SMTPError(550, "No such user here", enhanced="5.1.1")


def on_data(stream: BlockingMessageStream, session: Session) -> str:
    body = stream.read()
    recipients = ", ".join(r.address for r in session.envelope.rcpt_to)
    print(f"message of {len(body)} bytes for {recipients}", flush=True)
    return "Stored"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--clients", type=int, default=1, help="serve this many, then exit")
    args = parser.parse_args()
    server = OneAtATime(name="mx.example.org", auth_optional=True, size=1_000_000,
                        on_rcpt_to=on_rcpt_to, on_data=on_data)
    with socket.create_server(("127.0.0.1", args.port)) as listener:
        print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
        server.serve(listener, args.clients)


if __name__ == "__main__":
    main()
