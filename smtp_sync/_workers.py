"""``run_workers()``: one threaded ``SMTPServer`` per worker process, all
on the same ports (see :mod:`smtp_server._workers` for the supervisor)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence

from smtp_server import (
    ListenerSpec,
    OnReady,
    WorkerListener,
    reload_worker_certificates,
    run_supervisor,
    worker_ready,
)

from ._server import SMTPServer

__all__ = ["run_workers"]

log = logging.getLogger("smtp_server.workers")


def run_workers(make_server: Callable[[], SMTPServer], listeners: Sequence[ListenerSpec], *,
                workers: int | str = "auto", on_ready: OnReady | None = None,
                share: str = "auto") -> int:
    """Serve ``listeners`` from ``workers`` processes until SIGTERM or SIGINT.

    ``make_server()`` is called in each worker process, after the fork, and
    returns the :class:`SMTPServer` it runs; ``listeners`` are ``(host,
    port)`` or ``(host, port, secure)`` tuples (port 0 picks one free port
    for all the workers). ``workers`` is a number, or ``"auto"`` for one per
    CPU this process may use.

    The calling process supervises: it restarts a worker that dies, passes
    SIGTERM and SIGINT on to every worker (each closes its server
    gracefully) and SIGHUP (each reloads its certificate files with
    :meth:`~SMTPServer.reload_certificates`). It forks, so call it from the
    main thread of a process that has started no thread. Returns 0 once
    stopped, 1 if the workers could not start. ``share``: as for
    :func:`smtp_anyio.run_workers` (``"auto"``, ``"reuse_port"``,
    ``"inherit"``). ``on_ready(listeners)`` is
    called in the calling process once every worker listens, with the
    concrete ports (``WorkerListener`` objects).
    """

    def run_worker(index: int, bound: Sequence[WorkerListener]) -> int:
        return _serve(make_server, index, bound)

    return run_supervisor(run_worker, listeners, workers=workers, on_ready=on_ready,
                          share=share)


def _serve(make_server: Callable[[], SMTPServer], index: int,
           listeners: Sequence[WorkerListener]) -> int:
    server = make_server()
    for listener in listeners:
        if listener.sockets:  # share="inherit": the supervisor's own
            for sock in listener.sockets:
                server.listen_socket(sock, secure=listener.secure)
        else:
            server.listen(listener.port, listener.host, secure=listener.secure, reuse_port=True)

    stopping: list[int] = []

    def stop(signum: int, frame: object) -> None:
        if stopping:  # Ctrl+C: SIGINT from the terminal, then SIGTERM from the supervisor
            return
        stopping.append(signum)
        log.info("worker %d (pid %d): %s, closing", index, os.getpid(),
                 signal.Signals(signum).name)
        # close() from another thread: the handler runs in the main thread,
        # whose serve_forever() returns once close() has finished.
        threading.Thread(target=server.close, name="smtp_sync close", daemon=True).start()

    def reload(signum: int, frame: object) -> None:
        reload_worker_certificates(server, index)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    worker_ready()
    server.serve_forever()
    return 0
