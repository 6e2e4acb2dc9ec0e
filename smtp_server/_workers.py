"""Worker processes: one server per core, all accepting on the same ports.

:func:`run_supervisor` is the backend-neutral part of ``run_workers()`` in
:mod:`smtp_anyio` and :mod:`smtp_sync`. The calling process becomes the
*supervisor*:

1. It resolves the listeners: for each ``(host, port)`` it binds a
   placeholder socket with ``SO_REUSEPORT`` (bound, never listening), so
   port 0 becomes a concrete port that stays reserved while it runs.
2. It forks ``workers`` processes. Each calls the backend's
   ``run_worker(index, listeners)``, which makes a server, listens on every
   listener with ``reuse_port=True`` and serves; the kernel spreads new
   connections over the workers' listening sockets.
3. It waits for child exits and signals (``signal.set_wakeup_fd`` and
   ``select``: no polling). A worker that exits while the supervisor is not
   stopping is logged and restarted after a back-off: :data:`RESTART_DELAY`
   doubling up to :data:`MAX_RESTART_DELAY`, back to the start once a
   worker has lived :data:`STABLE_AFTER` seconds. SIGTERM or SIGINT:
   SIGTERM to every worker (each closes its server gracefully, within its
   ``close_timeout``), wait for all of them, return 0. SIGHUP: SIGHUP to
   every worker (each reloads its certificates).

It forks: call it from the main thread of a process that has started no
other thread and no event loop (``os.fork()`` copies only the calling
thread, and a loop's state must not be shared between processes). A worker
that exits before any worker was ever ready is a start-up failure
(a bad certificate path, an address in use): the supervisor stops the
others and returns 1 instead of restarting them forever.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._worker_child import READY, WORKER_SIGNALS, WorkerListener, enter_worker, exit_worker

__all__ = [
    "MAX_RESTART_DELAY",
    "RESTART_DELAY",
    "STABLE_AFTER",
    "ListenerSpec",
    "OnReady",
    "RunWorker",
    "parse_listeners",
    "run_supervisor",
    "worker_count",
]

log = logging.getLogger("smtp_server.workers")

RESTART_DELAY = 0.5
"""Seconds before a worker that died is restarted, the first time."""
MAX_RESTART_DELAY = 30.0
"""The back-off doubles at each death of the same worker, up to this."""
STABLE_AFTER = 60.0
"""A worker that lived this long before dying is restarted after
:data:`RESTART_DELAY` again."""

ListenerSpec = tuple[str, int] | tuple[str, int, bool | None]
"""``(host, port)`` or ``(host, port, secure)``, as ``listen()`` takes them."""
RunWorker = Callable[[int, Sequence[WorkerListener]], int]
"""``run_worker(index, listeners) -> exit status``, called in each worker."""
OnReady = Callable[[Sequence[WorkerListener]], None]
"""``on_ready(listeners)``, called in the supervisor once all workers listen."""

_BACKLOG = 1024  # as the servers' own listeners
_PORT_ATTEMPTS = 10  # port 0 on a host of several addresses: a port free on all
_STOP = frozenset({signal.SIGTERM, signal.SIGINT})


def worker_count(workers: int | str) -> int:
    """``workers`` validated: an int >= 1, or ``"auto"``, the CPUs this
    process may run on (``os.sched_getaffinity`` where there is one, else
    ``os.cpu_count()``)."""
    if workers == "auto":
        if hasattr(os, "sched_getaffinity"):
            return max(1, len(os.sched_getaffinity(0)))
        return os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(f"workers must be an int >= 1 or 'auto', not {workers!r}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    return workers


def parse_listeners(listeners: Sequence[ListenerSpec]) -> list[WorkerListener]:
    """``(host, port)`` and ``(host, port, secure)`` tuples, checked."""
    if not listeners:
        raise ValueError("run_workers() needs at least one (host, port) listener")
    parsed = []
    for spec in listeners:
        if not isinstance(spec, tuple) or len(spec) not in (2, 3):
            raise ValueError(f"a listener is (host, port) or (host, port, secure), not {spec!r}")
        host, port = spec[0], spec[1]
        secure = spec[2] if len(spec) == 3 else None
        if not isinstance(host, str):
            raise TypeError(f"listener host must be a str, not {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"listener port must be an int in 0-65535, not {port!r}")
        if secure is not None and not isinstance(secure, bool):
            raise TypeError(f"listener secure must be a bool or None, not {secure!r}")
        parsed.append(WorkerListener(host, port, secure))
    return parsed


def _reserve(host: str, port: int, share: str) -> tuple[list[socket.socket], int]:
    """Placeholders on every address ``host`` resolves to (as the servers
    bind them: one socket per address family), all on one port; with
    ``share="inherit"`` the listening sockets themselves."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address[0]) in seen:
                continue
            seen.add((family, address[0]))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if share == "reuse_port":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]  # port 0: the others on the same port
            if share == "inherit":
                sock.listen(_BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets, port


def reserve_ports(
    listeners: Sequence[WorkerListener], share: str = "reuse_port",
) -> tuple[list[WorkerListener], list[socket.socket]]:
    """The listeners with concrete ports, and the sockets holding them:
    placeholders (``reuse_port``), or the listening sockets the workers
    inherit (``inherit``)."""
    resolved: list[WorkerListener] = []
    held: list[socket.socket] = []
    try:
        for listener in listeners:
            for attempt in range(_PORT_ATTEMPTS):
                try:
                    sockets, port = _reserve(listener.host, listener.port, share)
                except OSError as exc:
                    if (listener.port == 0 and exc.errno == errno.EADDRINUSE
                            and attempt + 1 < _PORT_ATTEMPTS):
                        continue
                    raise
                break
            held.extend(sockets)
            inherited = tuple(sockets) if share == "inherit" else ()
            resolved.append(WorkerListener(listener.host, port, listener.secure, inherited))
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return resolved, held


def _address(listener: WorkerListener) -> str:
    host = listener.host or "*"
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{listener.port}" + (" (implicit TLS)" if listener.secure else "")


def describe_status(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


@dataclass(slots=True)
class _Slot:
    """One worker's place: its process, if any, and its restart back-off."""

    index: int
    pid: int | None = None
    started: float = 0.0
    ready: bool = False
    delay: float = RESTART_DELAY
    restart_at: float | None = None


class Supervisor:
    """Forks, watches and restarts the workers; see the module docstring."""

    def __init__(self, run_worker: RunWorker, listeners: list[WorkerListener],
                 placeholders: list[socket.socket], count: int,
                 on_ready: OnReady | None = None) -> None:
        self._run_worker = run_worker
        self._on_ready = on_ready
        self._listeners = tuple(listeners)
        self._placeholders = placeholders
        self._slots = [_Slot(index) for index in range(count)]
        self._signals: collections.deque[int] = collections.deque()
        self._stopping = False
        self._status = 0
        self._any_ready = False
        self._announced = False
        self._pending = b""
        self._wake_r, self._wake_w = os.pipe()
        self._ready_r, self._ready_w = os.pipe()
        # Never written: its end of file tells the workers the supervisor is gone.
        self._alive_r, self._alive_w = os.pipe()
        for fd in (self._wake_r, self._wake_w, self._ready_r):
            os.set_blocking(fd, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._selector.register(self._ready_r, selectors.EVENT_READ)

    def _fds(self) -> list[int]:
        return [self._wake_r, self._wake_w, self._ready_r, self._ready_w,
                self._alive_r, self._alive_w]

    def run(self) -> int:
        handled = (*sorted(WORKER_SIGNALS), signal.SIGCHLD)
        previous = {signum: signal.getsignal(signum) for signum in handled}
        old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        try:
            for signum in handled:
                signal.signal(signum, self._on_signal)
            return self._loop()
        finally:
            self._abandon()
            self._selector.close()
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            for fd in self._fds():
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)  # the wake-up descriptor ends the select()

    def _loop(self) -> int:
        addresses = ", ".join(_address(listener) for listener in self._listeners)
        log.info("starting %d workers on %s (supervisor pid %d)",
                 len(self._slots), addresses, os.getpid())
        for slot in self._slots:
            self._spawn(slot)
        while True:
            self._take_signals()
            self._read_ready()  # before reaping: a worker says "ready" before it exits
            self._reap()
            alive = [slot for slot in self._slots if slot.pid is not None]
            if self._stopping and not alive:
                log.info("all workers have exited")
                return self._status
            now = time.monotonic()
            waits = []
            for slot in self._slots:
                if self._stopping or slot.restart_at is None:
                    continue
                if slot.restart_at <= now:
                    self._spawn(slot)
                else:
                    waits.append(slot.restart_at - now)
            self._selector.select(min(waits) if waits else None)
            with contextlib.suppress(OSError):
                while os.read(self._wake_r, 512):
                    pass

    def _take_signals(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            name = signal.Signals(signum).name
            if signum in _STOP:
                if not self._stopping:
                    log.info("%s: stopping %d workers", name, self._alive_count())
                self._stop()
            elif signum == signal.SIGHUP and not self._stopping:
                log.info("SIGHUP: reloading certificates in %d workers", self._alive_count())
                self._send(signal.SIGHUP)

    def _alive_count(self) -> int:
        return sum(slot.pid is not None for slot in self._slots)

    def _stop(self) -> None:
        self._stopping = True
        for slot in self._slots:
            slot.restart_at = None
        self._send(signal.SIGTERM)

    def _send(self, signum: int) -> None:
        for slot in self._slots:
            if slot.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signum)

    def _read_ready(self) -> None:
        data = self._pending
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._ready_r, 4096):
                data += chunk
        usable = len(data) - len(data) % READY.size
        self._pending = data[usable:]
        for (pid,) in READY.iter_unpack(data[:usable]):
            slot = next((s for s in self._slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.ready = True
            self._any_ready = True
            log.info("worker %d (pid %d) ready", slot.index, pid)
            if not self._announced and all(s.ready for s in self._slots):
                self._announced = True
                log.info("all %d workers ready", len(self._slots))
                if self._on_ready is not None:
                    self._on_ready(self._listeners)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self._slots if s.pid == pid), None)
            if slot is None:
                continue  # not a worker of ours
            self._exited(slot, status)

    def _exited(self, slot: _Slot, status: int) -> None:
        pid, how = slot.pid, describe_status(status)
        slot.pid = None
        if self._stopping:
            level = logging.INFO if os.waitstatus_to_exitcode(status) == 0 else logging.WARNING
            log.log(level, "worker %d (pid %s) %s", slot.index, pid, how)
            return
        if not slot.ready and not self._any_ready:
            log.error("worker %d (pid %s) %s before it was ready: the workers cannot "
                      "start; stopping", slot.index, pid, how)
            self._status = 1
            self._stop()
            return
        now = time.monotonic()
        if now - slot.started >= STABLE_AFTER:
            slot.delay = RESTART_DELAY
        log.warning("worker %d (pid %s) %s; restarting it in %.1f s",
                    slot.index, pid, how, slot.delay)
        slot.restart_at = now + slot.delay
        slot.delay = min(slot.delay * 2, MAX_RESTART_DELAY)

    def _spawn(self, slot: _Slot) -> None:
        slot.restart_at = None
        for stream in (sys.stdout, sys.stderr):  # or the child writes it out again
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.flush()
        # Blocked across the fork: the child keeps them blocked until its
        # server is ready for them (see worker_ready).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS | {signal.SIGCHLD})
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            log.error("worker %d: fork failed (%s); retrying in %.1f s",
                      slot.index, exc, slot.delay)
            slot.restart_at = time.monotonic() + slot.delay
            slot.delay = min(slot.delay * 2, MAX_RESTART_DELAY)
            return
        if pid == 0:
            self._child(slot.index)  # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        slot.pid, slot.started, slot.ready = pid, time.monotonic(), False
        log.info("worker %d started (pid %d)", slot.index, pid)

    def _child(self, index: int) -> None:
        status = 1
        try:
            close = [fd for fd in self._fds() if fd not in (self._ready_w, self._alive_r)]
            self._selector.close()  # (an epoll descriptor is not the parent's to share)
            inherited = {id(s) for listener in self._listeners for s in listener.sockets}
            for sock in self._placeholders:
                if id(sock) not in inherited:
                    sock.close()
            enter_worker(index, self._ready_w, self._alive_r, close)
            status = self._run_worker(index, self._listeners)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            log.exception("worker %d (pid %d) failed", index, os.getpid())
        exit_worker(status)

    def _abandon(self) -> None:
        """Leaving by an exception (a bug of ours): no orphans. The workers
        are stopped gracefully and waited for."""
        live = [slot.pid for slot in self._slots if slot.pid is not None]
        for pid in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in live:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def run_supervisor(run_worker: RunWorker, listeners: Sequence[ListenerSpec], *,
                   workers: int | str = "auto", on_ready: OnReady | None = None,
                   share: str = "auto") -> int:
    """Run ``workers`` processes of ``run_worker`` on ``listeners`` until
    SIGTERM or SIGINT; see the module docstring. ``on_ready(listeners)`` is
    called in the supervisor once every worker listens, with the concrete
    ports. ``share``: how the workers share a port: ``"reuse_port"`` (each
    binds its own socket with ``SO_REUSEPORT``, the kernel balances),
    ``"inherit"`` (the supervisor listens, the workers inherit its socket
    and take turns accepting), ``"auto"`` (the first where the OS has
    ``SO_REUSEPORT``). Returns the supervisor's exit status: 0 after a
    stop, 1 when the workers could not start."""
    count = worker_count(workers)
    parsed = parse_listeners(listeners)
    if not hasattr(os, "fork"):
        raise RuntimeError("worker processes need os.fork() (POSIX)")
    if share == "auto":
        share = "reuse_port" if hasattr(socket, "SO_REUSEPORT") else "inherit"
    if share not in ("reuse_port", "inherit"):
        raise ValueError(f"share must be 'auto', 'reuse_port' or 'inherit', not {share!r}")
    if share == "reuse_port" and not hasattr(socket, "SO_REUSEPORT"):
        raise RuntimeError("share='reuse_port' needs SO_REUSEPORT, which this system lacks")
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("run_workers() must be called from the main thread")
    if threading.active_count() > 1:
        log.warning("run_workers(): %d threads are running; a forked worker gets "
                    "none of them but may inherit their locks held",
                    threading.active_count())
    resolved, placeholders = reserve_ports(parsed, share)
    try:
        return Supervisor(run_worker, resolved, placeholders, count, on_ready).run()
    finally:
        for sock in placeholders:
            sock.close()
