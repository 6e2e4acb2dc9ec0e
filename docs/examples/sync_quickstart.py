"""The first threaded server: print every message it receives.

Run it (it listens on 127.0.0.1:2525), then send it a message with
``anyio_send.py`` (any SMTP client will do)::

    python docs/examples/sync_quickstart.py
    python docs/examples/sync_quickstart.py --port 2526

It prints ``listening on HOST:PORT`` once it accepts connections, then each
message; Ctrl+C or SIGTERM closes it gracefully.
"""

from __future__ import annotations

import argparse
import signal
import threading

from smtp_sync import MessageStream, Session, SMTPServer


def on_data(stream: MessageStream, session: Session) -> None:
    """Called in the client's own thread; returning normally accepts (250)."""
    message = stream.read()
    envelope = session.envelope
    sender = envelope.mail_from.address if envelope.mail_from else ""
    recipients = ", ".join(rcpt.address for rcpt in envelope.rcpt_to)
    print(f"message from <{sender}> to <{recipients}>: {len(message)} bytes", flush=True)
    print(message.decode("utf-8", errors="replace"), flush=True)


def main(port: int = 2525) -> None:
    server = SMTPServer(on_data=on_data, auth_optional=True)
    host, bound = server.listen(port)

    def stop(signum: int, frame: object) -> None:
        # close() waits for the messages in flight: let it wait in a thread
        # of its own rather than in the middle of whatever the main thread
        # was doing when the signal came.
        threading.Thread(target=server.close, name="smtp close").start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"listening on {host}:{bound}", flush=True)
    server.serve_forever()  # returns once close() has finished
    print("closed", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print every message received.")
    parser.add_argument("--port", type=int, default=2525, help="0 picks a free port")
    main(parser.parse_args().port)
