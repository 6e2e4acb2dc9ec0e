"""How bytes reach a connection: the interface both transports implement.

The connection driver (``_driver.Connection``) is written once against
:class:`ConnectionIO`. Two implementations exist: asyncio's own transports
(``_io_asyncio``, used on asyncio and uvloop because it is several times
faster than stream objects) and anyio byte streams (``_io_stream``, used on
trio and wherever the first one cannot be).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import anyio

from smtp_proto import TLSInfo

__all__ = ["ConnectionIO", "EventWaiter", "Feeder", "Waiter"]


class Waiter(Protocol):
    """A one-shot wake-up, like ``anyio.Event``; ``wait(timeout)`` also
    returns when ``timeout`` seconds have passed."""

    def set(self) -> None: ...

    async def wait(self, timeout: float | None = None) -> None: ...


class EventWaiter:
    """A :class:`~smtp_anyio._io.Waiter` on an anyio Event."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None = None) -> None:
        if timeout is None:  # no cancel scope to make (the on_data task's wait)
            await self._event.wait()
            return
        with anyio.move_on_after(timeout):
            await self._event.wait()


class Feeder(Protocol):
    """What a transport calls on the connection driver."""

    def feed(self, data: bytes) -> None: ...

    def feed_eof(self) -> None: ...

    async def settle(self) -> None:
        """After ``feed``, from a reader task (``ConnectionIO.feeds_from_task``)."""


class ConnectionIO(Protocol):
    """A connected socket as the driver sees it. Not thread-safe; all calls
    come from the event loop."""

    remote: tuple[str, int] | None
    local: tuple[str, int] | None
    feeds_from_task: bool
    """``feed`` is called from a reader task, which awaits ``settle`` after it."""
    schedule: Callable[[Callable[[], None]], object]
    """Calls a function in the event loop's thread, from any thread (set
    once :meth:`run_tasks` runs)."""

    async def run_tasks(self, driver: Feeder, session: Callable[[], Awaitable[bool]]) -> None:
        """Deliver bytes to ``driver.feed`` (and EOF to ``feed_eof``) while
        ``session()`` runs; when it returns, end the tasks :meth:`spawn`
        started: cancelled if it returned True, else left to finish."""

    def spawn(self, func: Callable[..., Coroutine[Any, Any, None]], *args: object) -> None:
        """Run ``func(*args)`` as a task of this connection (inside
        :meth:`run_tasks`)."""

    def waiter(self) -> Waiter:
        """A fresh one-shot wake-up (call from a task)."""
        ...

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer; never blocks."""

    async def flush(self) -> None:
        """Wait until queued bytes are handed to the OS (or the peer is gone)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    async def start_tls(
        self, context: ssl.SSLContext, timeout: float, prefix: bytes = b""
    ) -> TLSInfo:
        """Flush, then run the server side of a TLS handshake; ``prefix`` are
        handshake bytes already read. Reading must be paused by the caller."""
        ...

    def needs_flush(self) -> bool:
        """Whether :meth:`flush` would have anything to wait for."""
        ...

    def close_now(self) -> bool:
        """Close if that needs no waiting (nothing left to send); True if done,
        else :meth:`aclose` must be awaited."""
        ...

    async def aclose(self) -> None:
        """Flush what is queued (briefly) and close."""

    def abort(self) -> None:
        """Close at once, dropping queued bytes."""
