"""``SMTPServer`` for threaded code: blocking sockets, one thread per client.

Threads are bounded: by ``max_clients``, or else by
:data:`DEFAULT_MAX_CONNECTIONS`; a client over the bound gets 421 from the
accept loop at once. Accept loops never block on a client: TLS handshakes,
PROXY headers and reverse DNS all happen in the client's own thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import os
import select
import socket
import threading
import time
from types import TracebackType
from typing import Unpack

from smtp_proto import AuthAttempt, MailFrom, RcptTo, ServerConnection, Session, TLSInfo
from smtp_server import (
    AcceptBackoff,
    BlockingMessageStream,
    ServerBase,
    ServerOptions,
    UnixSocketFile,
    bind_unix,
    listener_name,
    set_reuse_port,
)

from ._connection import SyncConnection

__all__ = ["DEFAULT_MAX_CONNECTIONS", "SMTPServer"]

DEFAULT_MAX_CONNECTIONS = 1000
_SIGNAL_CHECK = 0.5  # seconds: how late serve_forever() may run a signal handler
"""Concurrent clients (hence threads) when ``max_clients`` is not set."""
_BACKLOG = 1024
_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)

Address = tuple[str, int]


class SMTPServer(ServerBase):
    """The threaded SMTP/LMTP server; the same options and handler names as
    :class:`smtp_anyio.SMTPServer`, with plain-function handlers::

        def on_data(stream, session):
            store(stream.read())

        server = SMTPServer(on_data=on_data, auth_optional=True)
        server.listen(2525)
        server.serve_forever()          # or: with server: ... (background)
    """

    def __init__(self, **options: Unpack[ServerOptions]) -> None:
        super().__init__(SMTPServer, options, "smtp_sync")
        for name in ("connect", "secure", "auth", "mail_from", "rcpt_to", "data", "close"):
            handler = getattr(self.handlers, name)
            if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
                    type(handler).__call__):
                # Calling it would only make a coroutine object, which looks
                # like success: an async on_auth would let anyone in.
                raise TypeError(f"on_{name} is a coroutine function; smtp_sync calls "
                                "plain functions (use smtp_anyio for coroutines)")
        if inspect.iscoroutinefunction(self.options.resolver):
            raise TypeError("resolver is a coroutine function; smtp_sync needs a plain one")
        self.connections: set[SyncConnection] = set()
        self._lock = threading.Lock()
        self._listeners: list[tuple[socket.socket, bool]] = []
        self._unix_files: list[UnixSocketFile] = []
        self._threads: list[threading.Thread] = []
        self._serving = False
        self._closer: int | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._idle = threading.Condition(self._lock)
        self._stopped = threading.Event()
        self._resolver_pool: concurrent.futures.ThreadPoolExecutor | None = None

    # -- handlers: override in a subclass or pass as keyword arguments ------

    def on_connect(self, session: Session) -> None:
        """A client connected (before the greeting); raise SMTPError to refuse."""

    def on_secure(self, tls: TLSInfo, session: Session) -> None:
        """A TLS handshake finished; raise SMTPError to refuse the client."""

    def on_auth(self, auth: AuthAttempt, session: Session) -> object:
        """Return the user object to accept; None or SMTPError to refuse."""
        return None

    def on_mail_from(self, address: MailFrom, session: Session) -> None:
        """Raise SMTPError to refuse the sender."""

    def on_rcpt_to(self, address: RcptTo, session: Session) -> None:
        """Raise SMTPError to refuse the recipient."""

    def on_data(self, stream: BlockingMessageStream, session: Session) -> object:
        """Read the message; return None, a reply text, or (LMTP) a list."""
        return None

    def on_close(self, session: Session) -> None:
        """The connection is gone."""

    # -- listening -----------------------------------------------------------------

    @property
    def wakeup_fd(self) -> int:
        """Readable once the server starts closing (every blocked thread wakes)."""
        return self._wake_r.fileno()

    def listen(self, port: int = 0, host: str = "127.0.0.1", *, secure: bool | None = None,
               reuse_port: bool = False) -> Address:
        """Bind and listen now (port 0 picks a free one); accepting starts
        with :meth:`serve_forever` or the ``with`` block. ``reuse_port``:
        set ``SO_REUSEPORT``, so that several processes can listen on the
        same port (``OSError`` where the platform has none)."""
        implicit = self.implicit_tls(secure)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                set_reuse_port(sock)
            sock.bind((host, port))
            sock.listen(_BACKLOG)
        except OSError:
            sock.close()
            raise
        name = sock.getsockname()
        address = (str(name[0]), int(name[1]))
        self.addresses.append(address)
        self._add_listener(sock, implicit, "{}:{}".format(*address))
        return address

    def listen_socket(self, sock: socket.socket, *, secure: bool | None = None) -> Address:
        """Accept on ``sock``, a TCP socket already bound and listening
        (inherited from a supervisor process, or passed by a service
        manager); returns its address. The server closes it in
        :meth:`close`. It is made non-blocking: other processes may accept
        on it too, and one must never wait in ``accept()`` for a client
        another took."""
        implicit = self.implicit_tls(secure)
        sock.setblocking(False)
        name = sock.getsockname()
        address = (str(name[0]), int(name[1]))
        self.addresses.append(address)
        self._add_listener(sock, implicit, "{}:{}".format(*address))
        return address

    def listen_unix(self, path: str | os.PathLike[str], *, secure: bool | None = None,
                    mode: int | None = None) -> str:
        """Bind and listen on a Unix socket at ``path`` now (what Postfix's
        ``lmtp:unix:`` and Dovecot connect to); returns the path. A socket
        file left by a crashed server is replaced; a live one raises
        ``OSError`` (``EADDRINUSE``), any other file ``FileExistsError``
        (and stays). ``mode`` (e.g. ``0o660``) is the socket file's
        permissions: who may connect. The file is removed by
        :meth:`close`. Sessions on it have no client address (``None``)."""
        implicit = self.implicit_tls(secure)
        sock, created = bind_unix(path, mode=mode, backlog=_BACKLOG)
        self._unix_files.append(created)
        bound = str(sock.getsockname())  # the path as given
        self.unix_paths.append(bound)
        self._add_listener(sock, implicit, f"unix:{bound}")
        return bound

    def _add_listener(self, sock: socket.socket, implicit: bool, name: str) -> None:
        self._listeners.append((sock, implicit))
        self.logger.info("listening on %s%s", name, " (implicit TLS)" if implicit else "")
        with self._lock:
            if self._serving and not self.closing:  # already serving: this one too
                self._start_accepting(sock, implicit)

    def serve_forever(self) -> None:
        """Accept clients until :meth:`close` (from another thread or a
        signal handler) has finished. Without a listener, listens on
        127.0.0.1:2525."""
        if not self._listeners:
            self.listen(2525)
        self._serve()
        # In slices: a signal (SIGTERM -> close()) may be delivered to any of
        # the process's threads, and then its Python handler runs only when
        # the main thread next runs bytecode; a wait without a timeout would
        # keep it from ever running.
        while not self._stopped.wait(_SIGNAL_CHECK):
            pass

    def _serve(self) -> None:
        """Start an accept thread per listener, once; never after close()."""
        with self._lock:
            if self._serving or self.closing:
                return
            self._serving = True
            for sock, implicit in self._listeners:
                self._start_accepting(sock, implicit)

    def _start_accepting(self, sock: socket.socket, implicit: bool) -> None:
        """(Under the lock.) One thread per listener; see _accept_loop."""
        thread = threading.Thread(
            target=self._accept_loop, args=(sock, implicit),
            name=f"smtp_sync accept {sock.getsockname()}", daemon=True,
        )
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self, listener: socket.socket, implicit: bool) -> None:
        poller = select.poll()
        poller.register(listener.fileno(), select.POLLIN)
        poller.register(self._wake_r.fileno(), select.POLLIN)
        pause = select.poll()  # while backing off: only close() wakes us
        pause.register(self._wake_r.fileno(), select.POLLIN)
        backoff = AcceptBackoff(self.logger, listener_name(listener))
        while not self.closing:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r.fileno() in ready or self.closing:
                return
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                continue  # a shared listener (listen_socket): another process took it
            except OSError as exc:
                # Out of descriptors the listener stays readable: retrying at
                # once would spin. (See smtp_server.AcceptBackoff.)
                delay = backoff.failed(exc)
                if delay and pause.poll(delay * 1000):
                    return
                continue
            backoff.succeeded()
            self._admit(sock, implicit)

    def _admit(self, sock: socket.socket, implicit: bool) -> None:
        if sock.family in _TCP_FAMILIES:  # not on a Unix socket: no such option
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            active = len(self.connections) + 1
            limit = self.options.max_clients or DEFAULT_MAX_CONNECTIONS
            if self.closing or active > limit:
                refuse = True
            else:
                refuse = False
                connection = SyncConnection(self, sock, handshake=implicit)
                self.connections.add(connection)
        if refuse:
            self._refuse(sock, implicit)
            return
        threading.Thread(target=self._run_connection, args=(connection,),
                         name=f"smtp_sync {connection.session.id}", daemon=True).start()

    def _run_connection(self, connection: SyncConnection) -> None:
        try:
            connection.run()
        finally:
            self.forget(connection)

    def _refuse(self, sock: socket.socket, implicit: bool) -> None:
        """421 without blocking the accept loop (no reply on an implicit-TLS
        port: it could only be plaintext)."""
        try:
            if not implicit:
                conn = ServerConnection(self.protocol_config)
                conn.shutdown("Too many connected clients, try again in a moment")
                sock.setblocking(False)
                sock.send(conn.data_to_send())
        except OSError:
            pass
        finally:
            sock.close()

    def forget(self, connection: SyncConnection) -> None:
        with self._lock:
            self.connections.discard(connection)
            if not self.connections:
                self._idle.notify_all()

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting, 421 idle sessions, let messages in flight finish,
        cut whatever is left after ``close_timeout`` seconds."""
        with self._lock:
            if self.closing:
                already = True
            else:
                already = False
                self.closing = True
                self._closer = threading.get_ident()
        if already:
            # Wait for the close in progress, unless it is this very thread's
            # (a signal handler interrupting it): that wait would never end.
            if self._closer != threading.get_ident():
                self._stopped.wait()
            return
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")  # wakes every poll(): accept loops, handshakes
        with self._lock:
            waiting = list(self.connections)
        for connection in waiting:
            connection.wake()  # and the clients between two transactions
        deadline = time.monotonic() + self.options.close_timeout
        with self._lock:
            while self.connections and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
            leftovers = list(self.connections)
        for connection in leftovers:
            connection.cut()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)
        for created in self._unix_files:
            created.remove()  # (if still ours: see UnixSocketFile)
        for sock, _ in self._listeners:
            sock.close()
        if self._resolver_pool is not None:
            self._resolver_pool.shutdown(wait=False)
        with self._lock:
            # Once no accept loop and no connection is left, nobody polls the
            # wake-up pair: give its descriptors back. (A thread that outlived
            # its join or its cut keeps them open, rather than poll a closed
            # or reused descriptor.)
            unused = not self.connections and not any(t.is_alive() for t in threads)
        if unused:
            self._wake_r.close()
            self._wake_w.close()
        self._stopped.set()

    def __enter__(self) -> SMTPServer:
        """Serve (in the accept threads) for the duration of the block;
        ``listen()`` before or inside it."""
        self._serve()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reverse DNS -------------------------------------------------------------------

    def reverse_lookup(self, address: str) -> str | None:
        with self._lock:
            if self._resolver_pool is None:
                self._resolver_pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=16, thread_name_prefix="smtp_sync dns")
            pool = self._resolver_pool
        future = pool.submit(self.resolve_blocking, address)
        try:
            return future.result(timeout=self.options.reverse_lookup_timeout)
        except concurrent.futures.TimeoutError:
            return None
