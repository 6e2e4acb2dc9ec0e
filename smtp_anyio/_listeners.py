"""Listening sockets and their accept loops, one per kind of event loop.

uvloop: ``loop.create_server``; libuv accepts in C and, when descriptors
run out, closes what it cannot serve instead of spinning.

Plain asyncio: an accept loop of our own on a reader callback. asyncio's
own (3.11) logs a traceback per failed ``accept()``, up to the backlog's
length per readiness event, and schedules as many restarts: thousands of
tracebacks a second at full CPU once descriptors run out. Ours follows
:class:`smtp_server.AcceptBackoff`. Each accepted socket becomes a
transport through ``loop.connect_accepted_socket``: the same task per
connection that asyncio's own accept path creates.

trio (and anyio streams anywhere): ``listener.accept()`` in a loop with the
same backoff, instead of ``listener.serve()``, which ends the server at
the first EMFILE.

Unix sockets (bound by :func:`smtp_server.bind_unix`) go the same ways,
except that uvloop too runs our accept loop on them: on the asyncio loops
``AsyncioAcceptor``, on trio ``SocketListener.from_socket`` and
:func:`accept_streams`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import SocketListener, SocketStream, TaskGroup

from smtp_server import AcceptBackoff, set_reuse_port

__all__ = ["Address", "AsyncioAcceptor", "accept_streams", "bind_sockets", "is_uvloop"]

Address = tuple[str, int]
BACKLOG = 1024
_BATCH = 64  # accepts per readiness event: others' callbacks get their turn


def is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    return type(loop).__module__.startswith("uvloop")


async def bind_sockets(host: str, port: int, *, reuse_port: bool = False
                       ) -> list[socket.socket]:
    """Listening sockets for ``host`` (one per address family it resolves
    to, as ``loop.create_server`` binds them), non-blocking; with
    ``SO_REUSEPORT`` if ``reuse_port``."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                set_reuse_port(sock)
            if family == socket.AF_INET6:
                # Each family gets its own socket, as asyncio does it.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            if port == 0:
                port = sock.getsockname()[1]  # the others on the same port
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class AsyncioAcceptor:
    """Accepts on one listening socket in a plain asyncio loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
        factory: Callable[[], asyncio.Protocol], *, context: ssl.SSLContext | None,
        handshake_timeout: float, backoff: AcceptBackoff,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = factory
        self._context = context
        self._handshake_timeout = handshake_timeout if context is not None else None
        self._backoff = backoff
        self._timer: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        self._closed = False
        loop.add_reader(sock.fileno(), self._ready)

    def _ready(self) -> None:
        for _ in range(_BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                delay = self._backoff.failed(exc)
                if delay:
                    self._loop.remove_reader(self._sock.fileno())
                    self._timer = self._loop.call_later(delay, self._resume)
                    return
                continue  # e.g. ECONNABORTED: that client is gone, take the next
            self._backoff.succeeded()
            conn.setblocking(False)
            task = self._loop.create_task(self._connect(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _resume(self) -> None:
        self._timer = None
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._ready)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._factory, conn, ssl=self._context,
                ssl_handshake_timeout=self._handshake_timeout)
        except Exception:  # a failed implicit-TLS handshake, a reset: that client only
            conn.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        else:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


async def accept_streams(
    listener: SocketListener, task_group: TaskGroup,
    handle: Callable[[SocketStream], Coroutine[Any, Any, None]], backoff: AcceptBackoff,
) -> None:
    """``listener.serve(handle)`` that survives running out of descriptors."""
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except (OSError, anyio.BrokenResourceError) as exc:
                # anyio on trio reports the OSError as the cause of a
                # BrokenResourceError; the listening socket is still fine.
                error = exc if isinstance(exc, OSError) else exc.__cause__
                if not isinstance(error, OSError):
                    raise
                delay = backoff.failed(error)
                if delay:
                    await anyio.sleep(delay)
                continue
            backoff.succeeded()
            task_group.start_soon(handle, stream)
