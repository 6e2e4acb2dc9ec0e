"""Every core of the box: one server per worker process, all on one port.

    python docs/examples/anyio_workers.py --port 2525 --workers auto
    python docs/examples/anyio_workers.py --cert cert/cert.pem --key cert/key.pem

This process becomes the supervisor: it logs ``starting N workers on
HOST:PORT`` and ``all N workers ready``, restarts a worker that dies, stops
them all on SIGTERM or Ctrl+C and makes each reload its certificate files
(STARTTLS, with ``--cert`` and ``--key``) on SIGHUP. Each worker prints a
line per message, with its pid, and says it in its 250 reply.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from smtp_anyio import MessageStream, Session, SMTPServer, run_workers


async def on_data(stream: MessageStream, session: Session) -> str:
    message = await stream.read()
    print(f"worker {os.getpid()}: a message of {len(message)} bytes", flush=True)
    return f"OK: queued by worker {os.getpid()}"


def main() -> int:
    parser = argparse.ArgumentParser(description="An SMTP server on every core.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525, help="0 picks a free port")
    parser.add_argument("--workers", default="auto", help='a number, or "auto": one per CPU')
    parser.add_argument("--cert", help="certificate chain (PEM file) for STARTTLS")
    parser.add_argument("--key", help="its private key (PEM file)")
    args = parser.parse_args()
    workers = args.workers if args.workers == "auto" else int(args.workers)
    tls: dict[str, Any] = {"cert": args.cert, "key": args.key} if args.cert else {}

    def make_server() -> SMTPServer:
        # Called in each worker process, after the fork: whatever a server
        # needs of its own (a database connection, a thread) is made here.
        return SMTPServer(on_data=on_data, auth_optional=True, max_clients=1000, **tls)

    # The supervisor's log: workers started, ready, restarted, stopped.
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    logging.getLogger("smtp_server.workers").setLevel(logging.INFO)
    return run_workers(make_server, [(args.host, args.port)], workers=workers)


if __name__ == "__main__":
    sys.exit(main())
