"""``run_workers()``: one ``SMTPServer`` per worker process, all on the
same ports (see :mod:`smtp_server._workers` for the supervisor)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio

from smtp_server import (
    ListenerSpec,
    OnReady,
    WorkerListener,
    reload_worker_certificates,
    run_supervisor,
    worker_ready,
)

from ._server import SMTPServer
from ._threads import running_asyncio_loop

__all__ = ["run_workers"]

log = logging.getLogger("smtp_server.workers")


def run_workers(
    make_server: Callable[[], SMTPServer], listeners: Sequence[ListenerSpec], *,
    workers: int | str = "auto", backend: str = "asyncio",
    backend_options: Mapping[str, Any] | None = None, on_ready: OnReady | None = None,
    share: str = "auto",
) -> int:
    """Serve ``listeners`` from ``workers`` processes until SIGTERM or SIGINT.

    ``make_server()`` is called in each worker process, after the fork and
    inside its event loop, and returns the :class:`SMTPServer` it runs;
    ``listeners`` are ``(host, port)`` or ``(host, port, secure)`` tuples
    (port 0 picks one free port for all the workers). ``workers`` is a
    number, or ``"auto"`` for one per CPU this process may use. Each worker
    runs its server with
    ``anyio.run(..., backend=backend, backend_options=backend_options)``
    (``backend_options={"use_uvloop": True}`` for uvloop).

    The calling process supervises: it restarts a worker that dies, passes
    SIGTERM and SIGINT on to every worker (each closes its server
    gracefully) and SIGHUP (each reloads its certificate files with
    :meth:`~SMTPServer.reload_certificates`). It forks, so call it from the
    main thread of a process that has started no thread and no event loop.
    ``share``: ``"reuse_port"`` (each worker binds the port with
    ``SO_REUSEPORT``; the kernel spreads connections), ``"inherit"`` (this
    process listens, the workers inherit the socket), ``"auto"`` (the
    first where the OS has ``SO_REUSEPORT``, else the second).
    ``on_ready(listeners)`` is called in the calling process once every
    worker listens, with the concrete ports (``WorkerListener`` objects).
    Returns 0 once stopped, 1 if the workers could not start.
    """
    if backend not in ("asyncio", "trio"):
        raise ValueError(f"backend must be 'asyncio' or 'trio', not {backend!r}")
    if _in_event_loop():
        raise RuntimeError("run_workers() forks: call it outside any event loop")
    options = dict(backend_options or {})

    def run_worker(index: int, bound: Sequence[WorkerListener]) -> int:
        return anyio.run(_serve, make_server, index, bound, backend=backend,
                         backend_options=options)

    return run_supervisor(run_worker, listeners, workers=workers, on_ready=on_ready,
                          share=share)


async def _serve(make_server: Callable[[], SMTPServer], index: int,
                 listeners: Sequence[WorkerListener]) -> int:
    server = make_server()
    async with server:
        # Open before worker_ready() lets the signals in, and until the
        # server is closed: a second SIGTERM (Ctrl+C sends SIGINT to the
        # whole process group, then the supervisor forwards SIGTERM) must not
        # kill a worker that is draining its sessions.
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            for listener in listeners:
                if listener.sockets:  # share="inherit": the supervisor's own
                    for sock in listener.sockets:
                        await server.listen_socket(sock, secure=listener.secure)
                else:
                    await server.listen(listener.port, listener.host, secure=listener.secure,
                                        reuse_port=True)
            worker_ready()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    reload_worker_certificates(server, index)
                    continue
                log.info("worker %d (pid %d): %s, closing", index, os.getpid(),
                         signal.Signals(signum).name)
                break
            await server.close()
            # Leaving the block restores the default handlers: a late SIGTERM
            # (the supervisor forwards one after Ctrl+C's SIGINT, systemd
            # signals every process of the group) would kill the worker on
            # its way out. Blocked, it stays pending until the exit.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    return 0


def _in_event_loop() -> bool:
    if running_asyncio_loop() is not None:
        return True
    trio = sys.modules.get("trio")  # only where trio was imported can it run
    if trio is None:
        return False
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True
