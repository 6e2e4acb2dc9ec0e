"""Run a real server in a background thread, whatever the backend.

The conformance tests are written once, as plain synchronous code driving
real clients (smtplib, aiosmtplib in its own loop, openssl s_client), and run
against every backend through the ``start_server`` fixture. Handlers given to
it are plain functions, which every backend accepts: ``smtp_anyio`` calls
them in its loop (``on_data`` in a worker thread, with a blocking stream),
``smtp_sync`` in the connection's thread.

The servers run in the library's own test helpers, the ``Controller`` of
``smtp_anyio.testing`` and ``smtp_sync.testing``: what users test with is
what the suite runs on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

BACKENDS = ("asyncio", "uvloop", "trio")
"""The anyio backends' names, as ``smtp_anyio.testing.Controller`` takes them."""


def available_backends() -> list[str]:
    names = list(BACKENDS)
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


def controller(backend: str, server: Any = None, **options: Any) -> Any:
    """The backend's ``Controller`` (not started) for ``server`` or for a
    server built from ``options``."""
    given = {"server": server} if server is not None else options
    if backend == "sync":
        from smtp_sync.testing import Controller as SyncController

        return SyncController(**given)
    from smtp_anyio.testing import Controller

    assert backend in BACKENDS, backend
    return Controller(backend=backend, **given)


@contextlib.contextmanager
def run_server(
    backend: str, listeners: dict[str, dict[str, Any]] | None = None, **options: Any
) -> Iterator[RunningServer]:
    """Start a server with ``options``; ``listeners`` maps a name to the
    keyword arguments of ``listen()`` (default: one plain listener)."""
    options.setdefault("disable_reverse_lookup", True)
    listeners = listeners or {"plain": {}}
    with controller(backend, **options) as running:
        server = running.server
        ports: dict[str, int] = {}
        for key, kwargs in listeners.items():
            if not kwargs and running.port not in ports.values():
                ports[key] = running.port  # the Controller's own listener
            else:
                _host, ports[key] = running.call(server.listen, 0, "127.0.0.1", **kwargs)
        yield RunningServer(backend, server, ports, call=running.call)
