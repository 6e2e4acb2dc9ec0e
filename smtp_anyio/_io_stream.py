"""anyio byte streams as a :class:`~smtp_anyio._io.ConnectionIO`.

Used on trio (and on asyncio when implicit TLS sits behind a PROXY header,
where handshake bytes already read must be replayed). A reader task feeds the
driver; writes are queued and sent by whoever flushes, one sender at a time.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream

from smtp_proto import TLSInfo
from smtp_server import normalise_address, tls_info

from ._io import EventWaiter
from ._threads import Schedule, threadsafe_scheduler

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._io import Feeder

__all__ = ["StreamIO"]

_READ_SIZE = 65536
_CLOSE_WAIT = 5.0
_CLOSE_NOTIFY_WAIT = 1.0
_GONE = (
    anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError,
    ssl.SSLError, OSError,
)


class _TLSTransport(ByteStream):
    """What a TLS stream runs over: the raw stream, with the bytes read
    before the handshake replayed first, and one send at a time.

    ``TLSStream`` sends not only from ``send()`` but from inside
    ``receive()`` as well: an alert refusing a renegotiation, the answer to
    a TLS 1.3 KeyUpdate, session tickets. Such a send can come while a
    flush is sending on the same socket, which trio refuses with
    ``BusyResourceError``; here the second send waits for the first.
    (A flag and an event rather than an anyio.Lock: uncontended, nearly
    always, it costs no scheduler round trip.)"""

    def __init__(self, inner: ByteStream, prefix: bytes = b"") -> None:
        self._inner = inner
        self._prefix = prefix
        self._sending = False
        self._sent: anyio.Event | None = None

    async def receive(self, max_bytes: int = _READ_SIZE) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            return data
        return await self._inner.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        while self._sending:
            if self._sent is None:
                self._sent = anyio.Event()
            await self._sent.wait()
        self._sending = True
        try:
            await self._inner.send(item)
        finally:
            self._sending = False
            sent, self._sent = self._sent, None
            if sent is not None:
                sent.set()

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def aclose(self) -> None:
        await self._inner.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._inner.extra_attributes


class StreamIO:
    """One connection over an anyio ``ByteStream``."""

    feeds_from_task = True

    def __init__(self, stream: ByteStream, schedule: Schedule | None = None) -> None:
        """``schedule``: the running loop's (see ``_threads``); looked up
        here, in the loop, when not given."""
        self._stream: ByteStream = stream
        self._tg: TaskGroup | None = None
        self._out: list[bytes] = []
        self._sending = False
        self._send_done: anyio.Event | None = None
        self._reading = True
        self._resumed: anyio.Event | None = None
        self._broken = False
        self._aborted = False
        self.remote = normalise_address(stream.extra(SocketAttribute.remote_address, None))
        self.local = normalise_address(stream.extra(SocketAttribute.local_address, None))
        self.schedule: Schedule = schedule or threadsafe_scheduler()

    async def run_tasks(self, driver: Feeder, session: Callable[[], Awaitable[bool]]) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._reader, driver)
            await session()
            tg.cancel_scope.cancel()  # the reader at least

    def spawn(self, func: Callable[..., Coroutine[Any, Any, None]], *args: object) -> None:
        assert self._tg is not None
        self._tg.start_soon(func, *args)

    def waiter(self) -> EventWaiter:
        return EventWaiter()

    async def _reader(self, driver: Feeder) -> None:
        while not self._broken:
            while not self._reading:
                self._resumed = anyio.Event()
                await self._resumed.wait()
            try:
                data = await self._stream.receive(_READ_SIZE)
            except _GONE:
                driver.feed_eof()
                return
            driver.feed(data)
            await driver.settle()
            await self.flush()

    def write(self, data: bytes) -> None:
        if not self._broken:
            self._out.append(data)

    async def flush(self) -> None:
        """Send what is queued. "Flushed" includes a send another task has
        under way, so wait for that first, even with nothing queued."""
        await self._acquire()
        try:
            while self._out and not self._broken:
                data = b"".join(self._out)
                self._out.clear()
                try:
                    await self._stream.send(data)
                except _GONE:
                    self._broken = True
            self._out.clear()
        finally:
            self._release()

    async def _acquire(self) -> None:
        """Exclusive use of the stream for sending (or a TLS handshake).

        A flag rather than an anyio.Lock: uncontended, which is nearly always,
        it costs no scheduler round trip (a Lock checkpoints twice, on every
        flush)."""
        while self._sending:
            done = self._send_done
            if done is None:
                done = self._send_done = anyio.Event()
            await done.wait()
        self._sending = True

    def _release(self) -> None:
        self._sending = False
        done, self._send_done = self._send_done, None
        if done is not None:
            done.set()

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        self._reading = True
        if self._resumed is not None:
            self._resumed.set()
            self._resumed = None

    async def start_tls(
        self, context: ssl.SSLContext, timeout: float, prefix: bytes = b""
    ) -> TLSInfo:
        await self.flush()
        raw = _TLSTransport(self._stream, prefix)
        # Hold the stream through the handshake: nobody else may write to it
        # while TLS records are being exchanged on it.
        await self._acquire()
        try:
            with anyio.fail_after(timeout):
                stream = await TLSStream.wrap(
                    raw, server_side=True, ssl_context=context, standard_compatible=False
                )
            self._stream = stream
        finally:
            self._release()
        return tls_info(stream.extra(TLSAttribute.ssl_object))

    def needs_flush(self) -> bool:
        return (bool(self._out) or self._sending) and not self._broken

    def close_now(self) -> bool:
        return False  # closing a stream is a coroutine

    async def aclose(self) -> None:
        if not self._aborted:
            with anyio.move_on_after(_CLOSE_WAIT):
                await self.flush()
            stream = self._stream
            if isinstance(stream, TLSStream) and not self._broken:
                # Say close_notify: OpenSSL drops a session from its cache
                # when the connection ends without one, so a client could
                # never resume it by session ID (tickets work either way).
                # The peer's answer is waited for briefly, if at all.
                with anyio.move_on_after(_CLOSE_NOTIFY_WAIT), contextlib.suppress(*_GONE):
                    await stream.unwrap()
        self._broken = True
        await anyio.aclose_forcefully(self._stream)

    def abort(self) -> None:
        self._aborted = True
        self._broken = True
        self._out.clear()

