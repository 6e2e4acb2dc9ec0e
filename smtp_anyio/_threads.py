"""Daemon worker threads for the blocking work of the async server: plain
``on_data`` handlers and blocking reverse-DNS resolvers.

Not anyio's worker threads: those are not daemon threads, so a handler
stuck for good (a hung NFS write, a lost lock) kept the interpreter from
exiting after ``close()`` had given up on it (asyncio joins them at
exit; trio's ``async with`` waited for them). A thread here is a daemon:
when the server stops waiting for it, nothing else does either. The work it
was doing runs on, unobserved, until the process exits.

Threads are reused (an idle one waits ``IDLE_SECONDS`` for more work, then
ends) and there is one per piece of work in flight, which the server bounds
by its connections: a connection runs at most one ``on_data`` at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._io import Waiter

__all__ = [
    "IDLE_SECONDS", "DaemonPool", "Schedule", "call_in_thread", "running_asyncio_loop",
    "threadsafe_scheduler",
]

IDLE_SECONDS = 10.0

Schedule = Callable[[Callable[[], None]], object]
"""Calls a function in the event loop's thread, from any thread (asyncio's
``loop.call_soon_threadsafe``, trio's ``TrioToken.run_sync_soon``)."""

_Job = tuple[Callable[..., Any], tuple[Any, ...], Callable[[Any, BaseException | None], None]]


class DaemonPool:
    """Runs functions in daemon threads; results come back by callback."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, func: Callable[..., Any], args: tuple[Any, ...],
               done: Callable[[Any, BaseException | None], None]) -> None:
        """Run ``func(*args)``; then ``done(result, None)`` or ``done(None,
        error)`` in the worker thread (``done`` must hand over to the loop)."""
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1  # this job is that idle thread's
            self._jobs.put((func, args, done))
        if start:
            threading.Thread(target=self._work, name=self._name, daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                func, args, done = self._jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0 and self._jobs.empty():
                        self._idle -= 1
                        return
                continue  # a job was promised to an idle thread: take it
            try:
                result: Any = func(*args)
            except BaseException as exc:  # handed to the waiting task
                done(None, exc)
            else:
                done(result, None)
            del func, args, done  # drop the job's references while idle
            with self._lock:
                self._idle += 1


async def call_in_thread(pool: DaemonPool, schedule: Schedule, waiter: Waiter,
                         func: Callable[..., Any], *args: Any) -> Any:
    """``func(*args)`` in one of ``pool``'s threads, awaited through
    ``waiter`` (set from the thread by ``schedule``). Cancelling the caller
    abandons the thread: its result, when it comes, goes nowhere."""
    outcome: list[tuple[Any, BaseException | None]] = []

    def done(result: Any, error: BaseException | None) -> None:
        outcome.append((result, error))
        with contextlib.suppress(RuntimeError):  # the loop has ended: nobody waits
            schedule(waiter.set)

    pool.submit(func, args, done)
    await waiter.wait()
    result, error = outcome[0]
    if error is not None:
        raise error
    return result


def running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio (or uvloop) loop running this task; None under trio.
    (anyio no longer brings sniffio along; this needs no dependency.)"""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def threadsafe_scheduler() -> Schedule:
    """The running loop's "call this soon", callable from any thread."""
    loop = running_asyncio_loop()
    if loop is not None:
        return loop.call_soon_threadsafe
    import trio  # noqa: PLC0415 - only where trio runs

    return trio.lowlevel.current_trio_token().run_sync_soon
