"""asyncio transports as a :class:`~smtp_anyio._io.ConnectionIO`.

Used when the running loop is asyncio or uvloop: the protocol callbacks feed
the driver directly, so a pipelined read costs one callback and one write,
with no task switch unless a coroutine handler has to run.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from smtp_proto import TLSInfo
from smtp_server import normalise_address, tls_info

if TYPE_CHECKING:
    from ._io import Feeder

__all__ = ["AsyncioIO", "FutureWaiter"]

_CLOSE_WAIT = 5.0


class FutureWaiter:
    """A one-shot wake-up on a bare asyncio future: what anyio.Event does on
    asyncio, without the backend lookup and the lock of asyncio.Event (this
    is on the path of every message)."""

    __slots__ = ("_future", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # The loop is passed in: asyncio.get_running_loop() costs a getpid()
        # system call (fork detection), several per connection otherwise.
        self._loop = loop
        self._future: asyncio.Future[None] = loop.create_future()

    def set(self) -> None:
        if not self._future.done():
            self._future.set_result(None)

    async def wait(self, timeout: float | None = None) -> None:
        if timeout is None:
            await self._future
            return
        # A timer handle rather than a cancel scope: smaller and cheaper, and
        # idle connections each hold one.
        timer = self._loop.call_later(timeout, self.set)
        try:
            await self._future
        finally:
            timer.cancel()


class AsyncioIO(asyncio.Protocol):
    """One accepted connection. ``on_made`` builds the driver for it."""

    __slots__ = (
        "_children",
        "_closed",
        "_drain",
        "_driver",
        "_held",
        "_lost",
        "_on_made",
        "_read_paused",
        "_transport",
        "_write_paused",
        "local",
        "loop",
        "remote",
        "schedule",
        "tls",
    )

    feeds_from_task = False  # from the loop's callbacks

    def __init__(
        self, on_made: Callable[[AsyncioIO], Feeder], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._on_made = on_made
        self.loop = loop
        self.schedule: Callable[[Callable[[], None]], object] = loop.call_soon_threadsafe
        self._transport: asyncio.Transport | None = None
        self._driver: Feeder | None = None
        self._write_paused = False
        self._read_paused = False  # by the driver (see pause_reading)
        self._drain: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._closed = False
        self.remote: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self.tls: TLSInfo | None = None  # implicit TLS: known before the driver exists
        self._held: list[bytes] | None = None
        self._children: set[asyncio.Task[None]] | None = None

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self.remote = normalise_address(transport.get_extra_info("peername"))
        self.local = normalise_address(transport.get_extra_info("sockname"))
        ssl_object = transport.get_extra_info("ssl_object")
        self.tls = tls_info(ssl_object) if ssl_object is not None else None
        self._driver = self._on_made(self)

    def data_received(self, data: bytes) -> None:
        if self._held is not None:
            # Decrypted bytes that came with the client's TLS Finished, before
            # the driver learnt that TLS is up: replayed on resume_reading().
            self._held.append(data)
        elif self._driver is not None:
            self._driver.feed(data)

    def eof_received(self) -> bool:
        if self._driver is not None:
            self._driver.feed_eof()
        # Keep the write side open to send the last reply, which asyncio only
        # allows on plain transports.
        return self.tls is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if self._driver is not None:
            self._driver.feed_eof()

    def pause_writing(self) -> None:
        # The client does not read its replies: stop reading its commands
        # too, or a pipelining client that never reads makes the transport's
        # write buffer grow without bound (each command queues a reply).
        # Timers go on: the idle timeout still ends a client that stays so.
        self._write_paused = True
        if not self._closed and self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self._read_paused and not self._closed and self._transport is not None:
            self._transport.resume_reading()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- ConnectionIO ----------------------------------------------------------

    # Child tasks are plain asyncio tasks, not an anyio task group: a group,
    # its cancel scope and anyio's bookkeeping per task cost more time and
    # memory than the rest of a short session (see docs/server/performance).
    # The loop already calls data_received: no reader task.

    async def run_tasks(self, driver: Feeder, session: Callable[[], Awaitable[bool]]) -> None:
        cancel = True
        try:
            cancel = await session()
        finally:
            children = self._children
            if children and cancel:
                for task in children:
                    task.cancel()
                await asyncio.wait(children)
        for task in children or ():
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                raise error

    def spawn(self, func: Callable[..., Coroutine[Any, Any, None]], *args: object) -> None:
        children = self._children
        if children is None:
            children = self._children = set()
        task = self.loop.create_task(func(*args))
        children.add(task)
        task.add_done_callback(self._child_done)

    def _child_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            if self._children is not None:
                self._children.discard(task)
        else:
            # A bug, not a handler's error (those are answered): end the
            # session, whose task then raises it (see run_tasks).
            self.abort()

    def waiter(self) -> FutureWaiter:
        return FutureWaiter(self.loop)

    def write(self, data: bytes) -> None:
        if not self._closed and self._transport is not None:
            self._transport.write(data)

    def needs_flush(self) -> bool:
        return self._write_paused and not self._closed

    async def flush(self) -> None:
        while self._write_paused and not self._closed:
            self._drain = self.loop.create_future()
            await self._drain

    def pause_reading(self) -> None:
        self._read_paused = True
        if not self._closed and self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._read_paused = False
        if not self._write_paused and not self._closed and self._transport is not None:
            self._transport.resume_reading()
        held, self._held = self._held, None
        if held and self._driver is not None:
            for data in held:
                self._driver.feed(data)

    async def start_tls(
        self, context: ssl.SSLContext, timeout: float, prefix: bytes = b""
    ) -> TLSInfo:
        if prefix:
            raise RuntimeError("asyncio transports cannot replay handshake bytes")
        await self.flush()
        if self._closed or self._transport is None:
            raise ConnectionError("connection closed before the TLS handshake")
        loop = asyncio.get_running_loop()
        raw = self._transport
        self._held = []
        try:
            transport = await loop.start_tls(
                raw, self, context, server_side=True, ssl_handshake_timeout=timeout
            )
            if transport is None:
                raise ConnectionError("TLS handshake failed")
        except BaseException:
            # asyncio closes the socket without telling the protocol.
            self._closed = True
            self._held = None
            raw.abort()
            raise
        self._transport = transport
        self.tls = tls_info(transport.get_extra_info("ssl_object"))
        return self.tls

    def close_now(self) -> bool:
        transport = self._transport
        if transport is None or self._closed:
            return True
        if transport.get_write_buffer_size():
            return False
        # Nothing left to send: the loop closes the socket on its next turn.
        self._closed = True
        transport.close()
        return True

    async def aclose(self) -> None:
        transport = self._transport
        if self.close_now():
            return
        assert transport is not None
        lost = self._lost = self.loop.create_future()
        transport.close()  # flushes what is buffered first
        timer = self.loop.call_later(_CLOSE_WAIT, transport.abort)
        try:
            await lost
        except asyncio.CancelledError:
            transport.abort()
            raise
        finally:
            timer.cancel()

    def abort(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.abort()
