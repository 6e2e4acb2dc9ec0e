"""Run a server in a background thread: for tests, scripts and threaded apps.

``ServerThread`` starts an event loop in a new thread (anyio's blocking
portal), runs the server there and stops it gracefully on exit -- what
aiosmtpd's ``Controller`` does::

    server = SMTPServer(on_data=on_data, auth_optional=True)
    with ServerThread(server) as (host, port):
        with smtplib.SMTP(host, port) as client:
            client.sendmail("a@example.org", ["b@example.com"], b"Subject: hi\\r\\n\\r\\nhi\\r\\n")
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from smtp_anyio import SMTPServer


class ServerThread:
    """Serve ``server`` on ``host:port`` (0: any free port) from a thread."""

    def __init__(
        self, server: SMTPServer, host: str = "127.0.0.1", port: int = 0, *,
        backend: str = "asyncio", backend_options: dict[str, Any] | None = None,
    ) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.backend = backend
        self.backend_options = backend_options
        self.address: tuple[str, int] | None = None
        self._portal: BlockingPortal | None = None
        self._stack: ExitStack | None = None

    def start(self) -> tuple[str, int]:
        """Start the loop and the server; returns the bound address once the
        server accepts connections."""
        with ExitStack() as stack:
            portal = stack.enter_context(
                start_blocking_portal(self.backend, self.backend_options))
            stack.enter_context(portal.wrap_async_context_manager(self.server))
            self.address = portal.call(
                functools.partial(self.server.listen, self.port, self.host))
            self._portal, self._stack = portal, stack.pop_all()
        return self.address

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``func`` (a function or a coroutine function) in the server's
        event loop and return its result."""
        assert self._portal is not None, "call start() first"
        return self._portal.call(functools.partial(func, *args, **kwargs))

    def stop(self) -> None:
        """Close the server gracefully (as ``server.close()``), end the loop."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> tuple[str, int]:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
