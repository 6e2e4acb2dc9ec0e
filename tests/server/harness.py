"""Run a real server in a background thread, whatever the backend.

The conformance tests are written once, as plain synchronous code driving
real clients (smtplib, aiosmtplib in its own loop, openssl s_client), and run
against every backend through the ``start_server`` fixture. Handlers given to
it are plain functions, which every backend accepts: ``smtp_anyio`` calls
them in its loop (``on_data`` in a worker thread, with a blocking stream),
``smtp_sync`` in the connection's thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread

ASYNC_BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}


def available_backends() -> list[str]:
    names = list(ASYNC_BACKENDS)
    try:
        import uvloop  # noqa: F401
    except ImportError:
        names.remove("uvloop")
    try:
        import smtp_sync

        if hasattr(smtp_sync, "SMTPServer"):
            names.append("sync")
    except ImportError:
        pass
    return names


@dataclass
class Received:
    """What a collecting ``on_data`` stored: one entry per delivered message."""

    sender: str
    recipients: list[str]
    body: bytes
    session_id: str


@dataclass
class RunningServer:
    backend: str
    server: Any
    ports: dict[str, int]
    host: str = "127.0.0.1"
    call: Callable[..., Any] = field(repr=False, default=print)
    """``call(fn, *args)``: run ``fn`` in the server's own thread/loop (async
    functions are awaited) and return its result."""

    @property
    def port(self) -> int:
        return self.ports["plain"]

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


@contextlib.contextmanager
def run_server(
    backend: str, listeners: dict[str, dict[str, Any]] | None = None, **options: Any
) -> Iterator[RunningServer]:
    """Start a server with ``options``; ``listeners`` maps a name to the
    keyword arguments of ``listen()`` (default: one plain listener)."""
    options.setdefault("disable_reverse_lookup", True)
    listeners = listeners or {"plain": {}}
    if backend == "sync":
        with _run_sync(listeners, options) as running:
            yield running
        return
    name, backend_options = ASYNC_BACKENDS[backend]
    from smtp_anyio import SMTPServer

    with anyio.from_thread.start_blocking_portal(name, backend_options) as portal:
        server = SMTPServer(**options)

        def call(fn: Callable[..., Any], *args: Any) -> Any:
            async def run() -> Any:
                result = fn(*args)
                if hasattr(result, "__await__"):
                    result = await result
                return result

            return portal.call(run)

        with portal.wrap_async_context_manager(server):
            ports = {}
            for key, kwargs in listeners.items():
                _host, port = portal.call(lambda kw=kwargs: server.listen(0, "127.0.0.1", **kw))
                ports[key] = port
            try:
                yield RunningServer(backend, server, ports, call=call)
            finally:
                portal.call(server.close)


@contextlib.contextmanager
def _run_sync(
    listeners: dict[str, dict[str, Any]], options: dict[str, Any]
) -> Iterator[RunningServer]:
    from smtp_sync import SMTPServer

    server = SMTPServer(**options)
    ports = {}
    for key, kwargs in listeners.items():
        _host, port = server.listen(0, "127.0.0.1", **kwargs)
        ports[key] = port
    lock = threading.Lock()

    def call(fn: Callable[..., Any], *args: Any) -> Any:
        with lock:
            return fn(*args)

    with server:
        try:
            yield RunningServer("sync", server, ports, call=call)
        finally:
            server.close()
