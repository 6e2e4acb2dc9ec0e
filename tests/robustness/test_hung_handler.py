"""A plain ``on_data`` that never returns must not keep the server from
stopping: ``close()`` gives up on it after ``close_timeout`` and the process
exits (its thread is a daemon; what it was doing is abandoned)."""

from __future__ import annotations

import smtplib
import threading
import time

import pytest

from .support import BACKENDS, ServerProcess

CLOSE_TIMEOUT = 2.0
SLACK = 3.0  # past close_timeout: the interpreter's own exit, a loaded machine


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_ends_the_process_despite_a_hung_on_data(backend: str) -> None:
    options = {"close_timeout": CLOSE_TIMEOUT, "socket_timeout": 30}
    with ServerProcess(backend, options=options, handlers="hang") as server:
        replies: list[object] = []

        def send() -> None:
            try:
                with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
                    replies.append(client.sendmail("a@example.org", ["b@example.com"],
                                                   b"Subject: x\r\n\r\nbody\r\n"))
            except (smtplib.SMTPException, OSError) as exc:
                replies.append(exc)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        server.wait_for(r"^on_data hangs$")
        started = time.monotonic()
        server.terminate()
        status = server.exit_status()
        took = time.monotonic() - started
        assert status == 0, server.stderr
        assert took < CLOSE_TIMEOUT + SLACK, f"{backend}: exited {took:.1f} s after SIGTERM"
        sender.join(10)
        # The message was never answered 250: the client saw the connection go.
        assert replies and isinstance(replies[0], smtplib.SMTPException | OSError), replies
