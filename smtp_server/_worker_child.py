"""What runs in a worker process, between ``os.fork()`` and its exit.

The supervisor (:mod:`smtp_server._workers`) forks with the stop and reload
signals blocked; :func:`enter_worker` resets what the child inherited of the
supervisor (its signal handlers, its wake-up descriptor, its pipes, its
placeholder sockets), and the backend's ``run_worker`` calls
:func:`worker_ready` once its server listens and its own signal handlers
are in place: only then are SIGTERM, SIGINT and SIGHUP unblocked, so a
signal sent to a worker that is still starting waits for it to be ready
instead of killing it half-way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import ssl
import struct
import sys
import threading
from dataclasses import dataclass

from ._base import ServerBase

__all__ = [
    "WORKER_SIGNALS",
    "WorkerListener",
    "enter_worker",
    "exit_worker",
    "reload_worker_certificates",
    "worker_ready",
]

log = logging.getLogger("smtp_server.workers")

WORKER_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
"""The signals a worker handles: SIGTERM and SIGINT close its server,
SIGHUP reloads its certificates."""

READY = struct.Struct("!i")
"""A worker's readiness message on the supervisor's pipe: its pid."""


@dataclass(frozen=True, slots=True)
class WorkerListener:
    """One listener as a worker sees it: the port is the concrete one the
    supervisor reserved (never 0), to be bound with ``reuse_port=True``, or
    the listening sockets themselves (:attr:`sockets`)."""

    host: str
    port: int
    secure: bool | None = None
    """The ``secure=`` of ``listen()``: ``None`` follows the server's option."""
    sockets: tuple[socket.socket, ...] = ()
    """Where the OS has no ``SO_REUSEPORT`` (or ``share="inherit"``): the
    supervisor's listening sockets, inherited through the fork, which the
    worker accepts on (``listen_socket()``) instead of binding its own."""


@dataclass(slots=True)
class _Worker:
    index: int
    ready_fd: int


_worker: _Worker | None = None  # set in a worker process only


def enter_worker(index: int, ready_fd: int, alive_fd: int, close_fds: list[int]) -> None:
    """In the child, right after the fork (signals still blocked): drop
    the supervisor's handlers and descriptors, and stop when it is gone."""
    global _worker
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    for fd in close_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _worker = _Worker(index, ready_fd)
    # Started while the signals are blocked, this thread keeps them blocked:
    # they go to the main thread, where the server's handlers run.
    threading.Thread(target=_watch_supervisor, args=(index, alive_fd),
                     name="smtp_server supervisor watch", daemon=True).start()


def _watch_supervisor(index: int, alive_fd: int) -> None:
    """The supervisor holds the write end of this pipe and never writes:
    end of file means it is gone (even killed with SIGKILL). The worker then
    stops as on SIGTERM, draining its sessions, rather than serve on
    unsupervised."""
    with contextlib.suppress(OSError):
        while os.read(alive_fd, 1):
            pass
    log.warning("worker %d (pid %d): the supervisor is gone; stopping", index, os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)


def worker_ready() -> None:
    """Tell the supervisor this worker serves, and let the stop and reload
    signals in. A backend's ``run_worker`` calls it once its server listens
    and its handlers for :data:`WORKER_SIGNALS` are installed. Outside a
    worker process it does nothing."""
    worker = _worker
    if worker is None:
        return
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)
    if worker.ready_fd >= 0:
        fd, worker.ready_fd = worker.ready_fd, -1
        with contextlib.suppress(OSError):
            os.write(fd, READY.pack(os.getpid()))  # atomic: under PIPE_BUF
            os.close(fd)


def exit_worker(status: int) -> None:
    """End the worker process with ``status``: no ``atexit``, no unwinding
    into the code that called the supervisor (that is the parent's)."""
    for sig in WORKER_SIGNALS:  # a late signal must not change the status
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_IGN)
    for handler in logging.getLogger().handlers + log.handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    os._exit(status if 0 <= status <= 255 else 1)


def reload_worker_certificates(server: ServerBase, index: int) -> None:
    """SIGHUP in a worker: :meth:`ServerBase.reload_certificates`, logged;
    a pair that does not load (e.g. a renewal half-written) keeps the old."""
    pid = os.getpid()
    try:
        reloaded = server.reload_certificates()
    except (OSError, ssl.SSLError, ValueError) as exc:
        log.warning("worker %d (pid %d): keeping the old certificates: %s", index, pid, exc)
        return
    if reloaded:
        log.info("worker %d (pid %d): certificates reloaded", index, pid)
    else:
        log.info("worker %d (pid %d): SIGHUP, but no TLS is configured", index, pid)
