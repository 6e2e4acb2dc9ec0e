"""Test helpers for the threaded server: the API of :mod:`smtp_anyio.testing`
(without an event loop to choose), and a log of the messages received.

:class:`Controller` starts an :class:`~smtp_sync.SMTPServer` serving in its
threads, tells its address and stops it::

    log = MessageLog()
    with Controller(on_data=log, auth_optional=True) as controller:
        with smtplib.SMTP(controller.host, controller.port) as client:
            client.sendmail("a@example.org", ["b@example.com"], b"Subject: hi\\r\\n\\r\\nhi\\r\\n")
    assert log.messages[0].rcpt_to == ("b@example.com",)

The ``smtp_sync_server`` pytest fixture (:mod:`smtp_sync.pytest_plugin`) is
these two together. Nothing here loads anyio or asyncio.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, Unpack, overload

from smtp_proto import Session
from smtp_server import (
    BlockingMessageStream,
    ControllerBase,
    MessageLogBase,
    ReceivedMessage,
    ServerFixtureBase,
    ServerOptions,
)

from ._server import SMTPServer

__all__ = ["Controller", "MessageLog", "ReceivedMessage", "ServerFixture"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class MessageLog(MessageLogBase):
    """An ``on_data`` handler that accepts every message and records it as a
    :class:`ReceivedMessage`, in :attr:`messages`. A plain function, called
    in the client's thread. Thread-safe; :meth:`wait_for` blocks until
    messages arrive."""

    def __call__(self, stream: BlockingMessageStream, session: Session) -> None:
        """``on_data``: read the message, record it, accept it (``250``)."""
        self.record(stream.read(), session)


class Controller(ControllerBase[SMTPServer]):
    """An :class:`~smtp_sync.SMTPServer` serving in its threads, with the API
    of :class:`smtp_anyio.testing.Controller`.

    Give it the server's options and plain-function handlers, or a server
    built already as ``server=``, not both; ``host`` and ``port`` are the
    address to listen on (port ``0``: a free one, which :attr:`port` tells
    once started). ``with Controller(...) as controller:`` starts and stops
    it.
    """

    _server_type = SMTPServer
    _label = "sync"

    @overload
    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, **options: Unpack[ServerOptions],
    ) -> None: ...

    @overload
    def __init__(self, *, server: SMTPServer, host: str = "127.0.0.1", port: int = 0) -> None: ...

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, server: SMTPServer | None = None,
        **options: Any,
    ) -> None:
        super().__init__(host, port, server, options)
        self._running = False
        self._calls = threading.Lock()

    @property
    def running(self) -> bool:
        """Between :meth:`start` and :meth:`stop`."""
        return self._running

    def start(self) -> tuple[str, int]:
        """Listen and serve (in the server's accept threads); returns the
        address, where clients can connect at once. What fails (the port is
        taken, say) is raised here, and nothing is left running; a bad
        option or certificate is raised by the constructor already.

        A controller that builds its server from options builds a new one
        each time it starts again after :meth:`stop`; one given ``server=``
        cannot: a server serves once. :exc:`RuntimeError` if it runs
        already."""
        with self._lock:
            server = self._server_to_start()
            try:
                address = server.listen(self._port, self._host)
            except BaseException:
                server.close()
                raise
            server.__enter__()  # serves from now on, in its own threads
            self._address, self._running = address, True
            return address

    def stop(self) -> None:
        """Close the server gracefully (:meth:`SMTPServer.close
        <smtp_sync.SMTPServer.close>`: idle clients get 421, messages in
        flight finish, up to ``close_timeout``); returns when it is closed.
        Does nothing if not running."""
        with self._lock:
            if not self._running:
                return
            self._running = False
            self._server.close()

    def call(self, func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``func(*args, **kwargs)`` and return its result, one call at a
        time, as :meth:`smtp_anyio.testing.Controller.call` runs them in the
        event loop. (The threaded server's methods may be called from any
        thread anyway: this is for code written for both servers.)"""
        if not self._running:
            raise RuntimeError("the controller is not running")
        with self._calls:
            return func(*args, **kwargs)


class ServerFixture(ServerFixtureBase[Controller]):
    """What the ``smtp_sync_server`` pytest fixture gives a test: the running
    server's :class:`Controller`, its address and the messages it received.
    """

    @property
    def server(self) -> SMTPServer:
        """The running server (the :class:`Controller`'s)."""
        return self.controller.server
