"""``SMTPServer``: listeners, connections, handlers and graceful shutdown."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Unpack

import anyio
from anyio.abc import SocketListener, SocketStream, TaskGroup

from smtp_proto import AuthAttempt, MailFrom, RcptTo, Session, TLSInfo
from smtp_server import (
    AcceptBackoff,
    ServerBase,
    ServerOptions,
    bind_unix,
    check_reuse_port,
    listener_name,
)

from ._driver import Connection
from ._io import EventWaiter
from ._io_asyncio import AsyncioIO
from ._io_stream import StreamIO
from ._listeners import BACKLOG, AsyncioAcceptor, accept_streams, bind_sockets, is_uvloop
from ._stream import MessageStream
from ._threads import (
    DaemonPool,
    Schedule,
    call_in_thread,
    running_asyncio_loop,
    threadsafe_scheduler,
)

__all__ = ["SMTPServer"]

Address = tuple[str, int]


class SMTPServer(ServerBase):
    """An SMTP/LMTP server on anyio: asyncio, uvloop or trio.

    Options are keyword arguments (see the configuration reference);
    handlers are keyword arguments too, or methods of a subclass::

        async def on_data(stream, session):
            body = await stream.read()

        server = SMTPServer(on_data=on_data, auth_optional=True)
        async with server:
            await server.listen(2525)
            await server.serve_forever()
    """

    def __init__(self, **options: Unpack[ServerOptions]) -> None:
        super().__init__(SMTPServer, options, "smtp_anyio")
        self.connections: set[Connection] = set()
        self._tg: TaskGroup | None = None
        self._listeners: list[Callable[[], None]] = []
        self._idle: anyio.Event | None = None
        self._closed: anyio.Event | None = None
        # Session tasks of asyncio connections: plain asyncio tasks, cheaper
        # than anyio's (see _adopt); __aexit__ waits for them.
        self._sessions: dict[asyncio.Task[None], Connection] = {}
        self._threads = DaemonPool("smtp_anyio worker")
        self._schedule: Schedule  # the loop's, set by ``async with server:``

    @property
    def worker_threads(self) -> DaemonPool:
        """The daemon threads plain ``on_data`` handlers and blocking
        resolvers run in (they never keep the process from exiting)."""
        return self._threads

    # -- handlers: override in a subclass or pass as keyword arguments ------

    async def on_connect(self, session: Session) -> None:
        """A client connected (before the greeting); raise SMTPError to refuse."""

    async def on_secure(self, tls: TLSInfo, session: Session) -> None:
        """A TLS handshake finished; raise SMTPError to refuse the client."""

    async def on_auth(self, auth: AuthAttempt, session: Session) -> object:
        """Return the user object to accept; None or SMTPError to refuse."""
        return None

    async def on_mail_from(self, address: MailFrom, session: Session) -> None:
        """Raise SMTPError to refuse the sender."""

    async def on_rcpt_to(self, address: RcptTo, session: Session) -> None:
        """Raise SMTPError to refuse the recipient."""

    async def on_data(self, stream: MessageStream, session: Session) -> object:
        """Read the message; return None, a reply text, or (LMTP) a list."""
        return None

    async def on_close(self, session: Session) -> None:
        """The connection is gone."""

    # -- running ---------------------------------------------------------------

    async def __aenter__(self) -> SMTPServer:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._closed = anyio.Event()
        # Looked up once, in the loop (on asyncio each lookup costs a getpid()).
        self._schedule = threadsafe_scheduler()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        try:
            if not self.closing:
                if exc_type is None:
                    await self.close()
                else:  # cancelled or failing: no grace period, but no leaks
                    self._abort_all()
                    self._cancel_sessions()
            await self._join_sessions()
        except BaseException:
            self._abort_all()
            self._cancel_sessions()
            with anyio.CancelScope(shield=True):
                await self._join_sessions()
            await self._tg.__aexit__(*sys.exc_info())
            raise
        return await self._tg.__aexit__(exc_type, exc, tb)

    def _cancel_sessions(self) -> None:
        """What cancelling the task group did to session tasks in it: their
        handlers are cancelled; ``on_close`` still runs (shielded)."""
        for task in self._sessions:
            task.cancel()

    async def _join_sessions(self) -> None:
        """Wait for the asyncio session tasks, which end soon once their
        connections are closed or aborted (within the final flush's 5 s)."""
        while self._sessions:
            await asyncio.wait(list(self._sessions))

    def _abort_all(self) -> None:
        if self.closing and not self.connections:
            return
        self.closing = True
        for stop in self._listeners:
            stop()
        self._listeners.clear()
        for connection in list(self.connections):
            connection.abort()
        if self._closed is not None:
            self._closed.set()

    async def listen(
        self, port: int = 0, host: str = "127.0.0.1", *, secure: bool | None = None,
        reuse_port: bool = False,
    ) -> Address:
        """Start accepting on ``host:port`` (port 0 picks a free one); returns
        the bound address. ``secure`` overrides the server-wide implicit TLS
        option for this listener. ``reuse_port``: set ``SO_REUSEPORT``, so
        that several processes can listen on the same port (``OSError``
        where the platform has none). Call inside ``async with server:``."""
        if self._tg is None:
            raise RuntimeError("use `async with server:` before listen()")
        implicit = self.implicit_tls(secure)
        if reuse_port:
            check_reuse_port()
        if self._native(implicit):
            address = await self._listen_asyncio(host, port, implicit, reuse_port)
        else:
            address = await self._listen_stream(host, port, implicit, reuse_port)
        self.addresses.append(address)
        self.logger.info("listening on %s:%d%s", *address, " (implicit TLS)" if implicit else "")
        return address

    async def listen_socket(self, sock: socket.socket, *, secure: bool | None = None
                            ) -> Address:
        """Start accepting on ``sock``, a TCP socket already bound and
        listening (inherited from a supervisor process, or passed by a
        service manager); returns its address. The server closes it when it
        closes. Call inside ``async with server:``."""
        if self._tg is None:
            raise RuntimeError("use `async with server:` before listen_socket()")
        implicit = self.implicit_tls(secure)
        sock.setblocking(False)
        if self._native(implicit):
            self._accept_asyncio(sock, implicit)
        else:
            await self._accept_streams([await SocketListener.from_socket(sock)],
                                       implicit, listener_name(sock))
        name = sock.getsockname()
        address = (str(name[0]), int(name[1]))
        self.addresses.append(address)
        self.logger.info("listening on %s:%d%s", *address, " (implicit TLS)" if implicit else "")
        return address

    async def listen_unix(
        self, path: str | os.PathLike[str], *, secure: bool | None = None,
        mode: int | None = None,
    ) -> str:
        """Start accepting on a Unix socket at ``path`` (what Postfix's
        ``lmtp:unix:`` and Dovecot connect to); returns the path. A socket
        file left by a crashed server is replaced; a live one raises
        ``OSError`` (``EADDRINUSE``), any other file ``FileExistsError``
        (and stays). ``mode`` (e.g. ``0o660``) is the socket file's
        permissions: who may connect. The file is removed when the server
        closes. Sessions on it have no client address (``None``).
        Call inside ``async with server:``."""
        if self._tg is None:
            raise RuntimeError("use `async with server:` before listen_unix()")
        implicit = self.implicit_tls(secure)
        sock, created = bind_unix(path, mode=mode, backlog=BACKLOG)
        bound = str(sock.getsockname())  # the path as given
        sock.setblocking(False)
        try:
            if self._native(implicit):
                self._accept_asyncio(sock, implicit)
            else:
                await self._accept_streams([await SocketListener.from_socket(sock)],
                                           implicit, f"unix:{bound}")
        except BaseException:
            sock.close()
            created.remove()
            raise

        def unlink() -> None:
            # (Only if it is still ours: a server started since at the same
            # path keeps its socket file.)
            created.remove()

        self._listeners.append(unlink)
        self.unix_paths.append(bound)
        self.logger.info("listening on unix:%s%s", bound, " (implicit TLS)" if implicit else "")
        return bound

    def _native(self, implicit: bool) -> bool:
        """Accept on asyncio's own transports (asyncio and uvloop): all but
        a PROXY header before implicit TLS, which only streams can read."""
        return running_asyncio_loop() is not None and not (
            implicit and self._config.use_proxy)

    def _protocol_factory(self) -> Callable[[], AsyncioIO]:
        loop = asyncio.get_running_loop()

        def made(io: AsyncioIO) -> Connection:
            return self._adopt(Connection(self, io, tls=io.tls))

        def factory() -> AsyncioIO:
            return AsyncioIO(made, loop)

        return factory

    def _accept_asyncio(self, sock: socket.socket, implicit: bool) -> None:
        """Our accept loop on one non-blocking listening socket."""
        # Implicit TLS: the loop does the handshake with the stable front
        # context, which follows update_secure_context() (see TLSContexts).
        acceptor = AsyncioAcceptor(
            asyncio.get_running_loop(), sock, self._protocol_factory(),
            context=self.tls.context if implicit else None,
            handshake_timeout=self.options.socket_timeout,
            backoff=AcceptBackoff(self.logger, listener_name(sock)))
        self._listeners.append(acceptor.close)

    async def _listen_asyncio(self, host: str, port: int, implicit: bool,
                              reuse_port: bool) -> Address:
        loop = asyncio.get_running_loop()
        if is_uvloop(loop):
            timeout = self.options.socket_timeout
            server = await loop.create_server(
                self._protocol_factory(), host, port, reuse_address=True,
                reuse_port=reuse_port, backlog=BACKLOG,
                ssl=self.tls.context if implicit else None,
                ssl_handshake_timeout=timeout if implicit else None,
            )
            self._listeners.append(server.close)
            sockname = server.sockets[0].getsockname()
            return str(sockname[0]), int(sockname[1])
        sockets = await bind_sockets(host, port, reuse_port=reuse_port)
        for sock in sockets:
            self._accept_asyncio(sock, implicit)
        sockname = sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def _listen_stream(self, host: str, port: int, implicit: bool,
                             reuse_port: bool) -> Address:
        listener = await anyio.create_tcp_listener(
            local_host=host, local_port=port, reuse_port=reuse_port, backlog=BACKLOG
        )
        sockname = listener.extra(anyio.abc.SocketAttribute.local_address)
        listeners: list[SocketListener] = []
        for one in listener.listeners:  # one per address family of the host
            assert isinstance(one, SocketListener)
            listeners.append(one)
        await self._accept_streams(listeners, implicit, f"{sockname[0]}:{sockname[1]}")
        return str(sockname[0]), int(sockname[1])

    async def _accept_streams(self, listeners: list[SocketListener], implicit: bool,
                              name: str) -> None:
        """An accept loop per listener (one per address family of a host),
        each connection a task in the server's task group."""
        scope = anyio.CancelScope()

        async def handle(stream: SocketStream) -> None:
            io = StreamIO(stream, self._schedule)
            connection = self._adopt(Connection(self, io, handshake=implicit))
            try:
                await connection.run()
            except Exception:
                # A bug in one connection (ours, a library's) ends that
                # connection only: never the accept loop's task group, and
                # with it the server and every other session.
                self.logger.exception("[%s] connection failed", connection.session.id)
            finally:
                self.forget(connection)

        backoff = AcceptBackoff(self.logger, name)
        tg = self._tg
        assert tg is not None

        async def accept_loop(one: SocketListener) -> None:
            with scope:
                await accept_streams(one, tg, handle, backoff)

        for one in listeners:
            tg.start_soon(accept_loop, one)
        self._listeners.append(scope.cancel)

    def _adopt(self, connection: Connection) -> Connection:
        self.connections.add(connection)
        if isinstance(connection.io, AsyncioIO):
            # A plain asyncio task, not one in the server's task group: anyio
            # adds a handle, an event, a wrapper coroutine and a done callback
            # to every task, which is most of what an idle connection costs.
            task = connection.io.loop.create_task(connection.run())
            # (The task maps to its connection: a closure per connection
            # to carry it to the callback would cost memory.)
            self._sessions[task] = connection
            task.add_done_callback(self._session_done)
        return connection

    def _session_done(self, task: asyncio.Task[None]) -> None:
        connection = self._sessions.pop(task, None)
        if connection is not None:
            self.forget(connection)
        if not task.cancelled() and task.exception() is not None:
            self.logger.error("connection task failed", exc_info=task.exception())

    def forget(self, connection: Connection) -> None:
        self.connections.discard(connection)
        if not self.connections and self._idle is not None:
            self._idle.set()

    def over_capacity(self) -> bool:
        return self.at_capacity(len(self.connections))

    async def serve_forever(self) -> None:
        """Wait until :meth:`close` has finished."""
        assert self._closed is not None
        await self._closed.wait()

    async def serve(self, *addresses: Address | int) -> None:
        """Listen on each ``(host, port)`` (or port) and serve until closed."""
        async with self:
            for address in addresses or (2525,):
                if isinstance(address, int):
                    await self.listen(address)
                else:
                    await self.listen(address[1], address[0])
            await self.serve_forever()

    async def close(self) -> None:
        """Stop accepting, 421 idle sessions, let messages in flight finish,
        and cut whatever is left after ``close_timeout`` seconds."""
        if self.closing:
            if self._closed is not None:
                await self._closed.wait()
            return
        self.closing = True
        for stop in self._listeners:
            stop()
        self._listeners.clear()
        if self.connections:
            self._idle = anyio.Event()
            for connection in list(self.connections):
                connection.shutdown()
            with anyio.move_on_after(self.options.close_timeout):
                await self._idle.wait()
            for connection in list(self.connections):
                connection.conn.shutdown()
                connection.abort()
        if self._closed is not None:
            self._closed.set()

    # -- reverse DNS -----------------------------------------------------------

    async def reverse_lookup(self, address: str) -> str | None:
        """The client's host name, or None after ``reverse_lookup_timeout``."""
        resolver = self.options.resolver
        with anyio.move_on_after(self.options.reverse_lookup_timeout):
            if resolver is not None and inspect.iscoroutinefunction(resolver):
                try:
                    result = await resolver(address)
                except Exception:
                    self.logger.exception("resolver failed for %s", address)
                    return None
                return str(result) if result else None
            # Lookups and plain resolvers block: a daemon thread, abandoned
            # when the timeout expires (and never in the way of exiting).
            result = await call_in_thread(self._threads, self._schedule, EventWaiter(),
                                          self.resolve_blocking, address)
            return result if isinstance(result, str) else None
        return None
