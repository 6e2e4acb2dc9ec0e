"""An SMTP listener inside a larger threaded service.

``MailService`` runs a ``smtp_sync.SMTPServer`` next to a pool of worker
threads: ``on_data`` reads each message in its client's thread and queues it
for the pool, which does the slow work (here: parse it and call ``handle``).
``start()`` returns once the server listens; ``stop()`` closes the server
first -- messages in flight are finished and answered -- and then lets the
pool work through its queue::

    with MailService(handle, auth_optional=True) as (host, port):
        ...  # the rest of the application

Run as a program, it prints a line per message, reloads its certificate on
SIGHUP and stops gracefully on SIGTERM or Ctrl+C::

    python docs/examples/sync_embedded.py --port 2525
    python docs/examples/sync_embedded.py --port 2525 --cert cert/cert.pem --key cert/key.pem
"""

from __future__ import annotations

import argparse
import email
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from email import policy
from email.message import Message
from typing import Any

from smtp_sync import MessageStream, Session, SMTPServer

log = logging.getLogger("mail service")


@dataclass(frozen=True)
class Job:
    """One accepted message, as the workers get it."""

    queue_id: str
    sender: str
    recipients: tuple[str, ...]
    data: bytes

    def parse(self) -> Message:
        return email.message_from_bytes(self.data, policy=policy.default)


class MailService:
    """An SMTP server feeding a pool of ``workers`` threads that call
    ``handle(job)`` for every message accepted."""

    def __init__(
        self, handle: Callable[[Job], None], *, workers: int = 4,
        host: str = "127.0.0.1", port: int = 0, **options: Any,
    ) -> None:
        self.handle = handle
        self.host, self.port = host, port
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="mail worker")
        self.server = SMTPServer(on_data=self.on_data, **options)
        self.address: tuple[str, int] | None = None
        self._stack: ExitStack | None = None

    def on_data(self, stream: MessageStream, session: Session) -> str:
        # In the client's own thread: the client waits for its reply while
        # we read; queueing the job takes no time.
        envelope = session.envelope
        job = Job(
            queue_id=f"{session.id}.{session.transaction}",
            sender=envelope.mail_from.address if envelope.mail_from else "",
            recipients=tuple(rcpt.address for rcpt in envelope.rcpt_to),
            data=stream.read(),  # in memory: keep the size option small
        )
        self.pool.submit(self.work, job)
        return f"OK: queued as {job.queue_id}"

    def work(self, job: Job) -> None:
        # In a worker thread. An exception would vanish into the Future that
        # nobody looks at: log it.
        try:
            self.handle(job)
        except Exception:
            log.exception("job %s failed", job.queue_id)

    def start(self) -> tuple[str, int]:
        """Listen and serve in the background; returns the bound address."""
        with ExitStack() as stack:
            stack.enter_context(self.pool)  # on stop: shutdown(wait=True)
            self.address = self.server.listen(self.port, self.host)
            stack.enter_context(self.server)  # "with server:": accepting from now on
            self._stack = stack.pop_all()
        return self.address

    def stop(self) -> None:
        """Close the server (gracefully, as ``server.close()``), then finish
        the jobs it queued: the reverse order of ``start()``."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> tuple[str, int]:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- the program -----------------------------------------------------------------


def print_job(job: Job) -> None:
    message = job.parse()
    print(f"{job.queue_id}: <{job.sender}> to {', '.join(job.recipients)}: "
          f"{message['subject']}", flush=True)


def reload_certificate(server: SMTPServer, cert: str, key: str) -> None:
    try:
        server.update_secure_context(cert=cert, key=key)  # from any thread
    except (OSError, ValueError) as exc:  # a missing file, a key that does not match
        print(f"keeping the old certificate: {exc}", flush=True)
    else:
        print("certificate reloaded", flush=True)


def main(port: int, cert: str | None = None, key: str | None = None) -> None:
    # Block the signals before any thread starts (threads inherit the mask),
    # then take them one at a time in this thread: nothing is interrupted.
    signals = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    tls: dict[str, Any] = {"cert": cert, "key": key} if cert and key else {}
    service = MailService(print_job, port=port, auth_optional=True, size=10 * 1024 * 1024,
                          **tls)
    with service as (host, bound):
        print(f"listening on {host}:{bound}", flush=True)
        while (signum := signal.sigwait(signals)) == signal.SIGHUP:
            if cert and key:
                reload_certificate(service.server, cert, key)
        print(f"{signal.Signals(signum).name}: stopping", flush=True)
    print("stopped", flush=True)  # every message answered, every job done


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A mail service with a worker pool.")
    parser.add_argument("--port", type=int, default=2525, help="0 picks a free port")
    parser.add_argument("--cert", help="certificate chain (PEM), for STARTTLS")
    parser.add_argument("--key", help="private key (PEM)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    main(args.port, args.cert, args.key)
