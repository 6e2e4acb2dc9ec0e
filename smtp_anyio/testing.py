"""Test helpers: a server in a background thread, and a log of the messages
it received.

:class:`Controller` runs an :class:`~smtp_anyio.SMTPServer` in an event
loop of its own (asyncio, uvloop or trio) in a background thread, so that
plain synchronous code -- a test, a script -- can start it, send it mail and
stop it::

    log = MessageLog()
    with Controller(on_data=log, auth_optional=True) as controller:
        with smtplib.SMTP(controller.host, controller.port) as client:
            client.sendmail("a@example.org", ["b@example.com"], b"Subject: hi\\r\\n\\r\\nhi\\r\\n")
    assert log.messages[0].rcpt_to == ("b@example.com",)

The ``smtp_server`` pytest fixture (:mod:`smtp_anyio.pytest_plugin`) is
these two together.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import Any, Literal, ParamSpec, TypeVar, Unpack, overload

from anyio.from_thread import BlockingPortal, start_blocking_portal

from smtp_proto import Session
from smtp_server import (
    ControllerBase,
    MessageLogBase,
    ReceivedMessage,
    ServerFixtureBase,
    ServerOptions,
)

from ._server import SMTPServer
from ._stream import MessageStream

__all__ = ["Backend", "Controller", "MessageLog", "ReceivedMessage", "ServerFixture"]

Backend = Literal["asyncio", "uvloop", "trio"]
"""The event loops a :class:`Controller` runs: anyio's asyncio (uvloop: with
uvloop's loop) and trio backends."""

_RUN: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}

_P = ParamSpec("_P")
_T = TypeVar("_T")


class MessageLog(MessageLogBase):
    """An ``on_data`` handler that accepts every message and records it as a
    :class:`ReceivedMessage`, in :attr:`messages`. A coroutine function: it
    reads the message in the event loop. Thread-safe; :meth:`wait_for`
    blocks (the calling thread, never the loop) until messages arrive."""

    async def __call__(self, stream: MessageStream, session: Session) -> None:
        """``on_data``: read the message, record it, accept it (``250``)."""
        self.record(await stream.read(), session)


class Controller(ControllerBase[SMTPServer]):
    """An :class:`~smtp_anyio.SMTPServer` served from a background thread,
    in an event loop of its own.

    Give it the server's options and handlers (coroutine functions or plain
    ones, as to :class:`~smtp_anyio.SMTPServer`), or a server built already
    as ``server=`` (an instance of a subclass, say), not both. ``backend``
    picks the event loop; ``host`` and ``port`` the address to listen on
    (port ``0``: a free one, which :attr:`port` tells once started).
    Implicit TLS is the server's ``secure`` option, with ``key`` and
    ``cert``.

    ``with Controller(...) as controller:`` starts and stops it, as
    :meth:`start` and :meth:`stop` do.
    """

    _server_type = SMTPServer

    @overload
    def __init__(
        self, *, backend: Backend = "asyncio", host: str = "127.0.0.1", port: int = 0,
        **options: Unpack[ServerOptions],
    ) -> None: ...

    @overload
    def __init__(
        self, *, server: SMTPServer, backend: Backend = "asyncio", host: str = "127.0.0.1",
        port: int = 0,
    ) -> None: ...

    def __init__(
        self, *, backend: Backend = "asyncio", host: str = "127.0.0.1", port: int = 0,
        server: SMTPServer | None = None, **options: Any,
    ) -> None:
        if backend not in _RUN:
            raise ValueError(f"backend must be one of {', '.join(_RUN)}, not {backend!r}")
        self.backend: Backend = backend
        self._label = backend
        super().__init__(host, port, server, options)
        self._portal: BlockingPortal | None = None
        self._stack: ExitStack | None = None

    @property
    def running(self) -> bool:
        """Between :meth:`start` and :meth:`stop`."""
        return self._stack is not None

    def start(self) -> tuple[str, int]:
        """Start the event loop's thread and the server in it; returns the
        address once the server listens, so that clients can connect at
        once. What fails (the port is taken, say) is raised here, and
        nothing is left running; a bad option or certificate is raised by
        the constructor already, as by ``SMTPServer(...)``.

        A controller that builds its server from options builds a new one
        each time it starts again after :meth:`stop` (with a new port, if
        ``port`` is 0); one given ``server=`` cannot: a server serves once.
        :exc:`RuntimeError` if it runs already."""
        with self._lock:
            server = self._server_to_start()
            library, options = _RUN[self.backend]
            stack = ExitStack()
            try:
                portal = stack.enter_context(start_blocking_portal(library, options))
                stack.enter_context(portal.wrap_async_context_manager(server))
                address = portal.call(functools.partial(server.listen, self._port, self._host))
            except BaseException:
                # Unwound without the error: the server closes normally,
                # and the caller sees the error itself, not a group of it.
                stack.close()
                raise
            self._portal, self._stack, self._address = portal, stack, address
            return address

    def stop(self) -> None:
        """Close the server gracefully (:meth:`SMTPServer.close
        <smtp_anyio.SMTPServer.close>`: idle clients get 421, messages in
        flight finish, up to ``close_timeout``), then end the event loop and
        its thread. Does nothing if not running."""
        with self._lock:
            stack, portal = self._stack, self._portal
            if stack is None or portal is None:
                return
            self._stack = self._portal = None
            try:
                portal.call(self._server.close)
            finally:
                stack.close()

    @overload
    def call(self, func: Callable[_P, Awaitable[_T]], /,
             *args: _P.args, **kwargs: _P.kwargs) -> _T: ...

    @overload
    def call(self, func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T: ...

    def call(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``func(*args, **kwargs)`` in the server's event loop and return
        its result (a coroutine function is awaited there): where the
        server's methods belong, such as
        :meth:`~smtp_anyio.SMTPServer.update_secure_context`."""
        portal = self._portal
        if portal is None:
            raise RuntimeError("the controller is not running")
        return portal.call(functools.partial(func, *args, **kwargs))


class ServerFixture(ServerFixtureBase[Controller]):
    """What the ``smtp_server`` pytest fixture gives a test: the running
    server's :class:`Controller`, its address and the messages it received.
    """

    @property
    def server(self) -> SMTPServer:
        """The running server (the :class:`Controller`'s)."""
        return self.controller.server
