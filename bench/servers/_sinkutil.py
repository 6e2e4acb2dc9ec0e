"""What every Python sink shares: the command line, the readiness line and
the counters printed on SIGTERM.

Every sink, whatever server it runs, behaves the same for ``bench/run.py``:

* ``--port N`` (0: any free port), always on 127.0.0.1; ``--tls-cert`` and
  ``--tls-key`` (PEM files) with ``--secure`` for an implicit-TLS listener;
* once listening it prints ``READY port=<port> pid=<pid>`` on stdout;
* it serves until SIGTERM, then prints ``STATS messages=<n> bytes=<n>``
  (messages read to the end, body bytes) and exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import ssl
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

HOST = "127.0.0.1"
NAME = "bench.localhost"


def parse_args(description: str, choices: tuple[str, ...] = ()) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    if choices:
        parser.add_argument("--backend", choices=choices, default=choices[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--secure", action="store_true", help="implicit TLS")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (run_workers); READY once all listen")
    args = parser.parse_args()
    if args.secure and not (args.tls_cert and args.tls_key):
        parser.error("--secure needs --tls-cert and --tls-key")
    raise_nofile()
    settle_malloc()
    return args


def raise_nofile() -> None:
    """Allow as many sockets as the hard limit permits (W5 holds 1,000)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def settle_malloc() -> None:
    """Free one 1 MiB block, which raises glibc's dynamic mmap threshold above
    asyncio's 256 KiB read buffer. Left alone, whether every read costs an
    mmap, an mremap and a munmap depends on what the process happened to
    allocate and free before (after our imports it had; after the ceiling's
    few imports it had not, which cost the asyncio ceiling a third of its
    rate). The same start for every Python sink."""
    block = bytearray(1 << 20)
    del block


def server_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


def ready(port: int) -> None:
    print(f"READY port={port} pid={os.getpid()}", flush=True)


class Stats:
    """Counters a sink's handler updates; printed on SIGTERM."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self._lock = threading.Lock()  # += on an attribute can lose updates across threads

    def count(self, size: int) -> None:
        """One message of ``size`` body bytes, read to its end."""
        with self._lock:
            self.messages += 1
            self.bytes += size

    def report(self) -> None:
        """The STATS line, without exiting (a worker process: its supervisor
        waits for it; ``bench/run.py`` adds up the workers' lines)."""
        sys.stdout.write(f"STATS messages={self.messages} bytes={self.bytes}\n")
        sys.stdout.flush()

    def report_and_exit(self) -> None:
        try:
            sys.stdout.write(f"STATS messages={self.messages} bytes={self.bytes}\n")
            sys.stdout.flush()
        finally:  # exit even when nobody reads stdout any more
            os._exit(0)


def our_options(args: argparse.Namespace, on_data: Callable[..., Any]) -> dict[str, Any]:
    """The options both of our sinks (smtp_anyio, smtp_sync) run with."""
    options: dict[str, Any] = {
        "on_data": on_data,
        "name": NAME,
        "auth_optional": True,
        "disable_reverse_lookup": True,
        "max_recipients": None,
    }
    if args.tls_cert:
        options.update(key=args.tls_key, cert=args.tls_cert)
    return options


async def serve_protocol(factory: Callable[[], asyncio.BaseProtocol],
                         args: argparse.Namespace, stats: Stats) -> None:
    """Serve an asyncio protocol on ``--port`` (implicit TLS with
    ``--secure``) until SIGTERM."""
    context = server_context(args)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory, HOST, args.port, reuse_address=True, backlog=1024,
        ssl=context if args.secure else None,
    )
    loop.add_signal_handler(signal.SIGTERM, stats.report_and_exit)
    ready(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def run_asyncio(main: Callable[[argparse.Namespace], Coroutine[Any, Any, None]],
                args: argparse.Namespace) -> None:
    """``main(args)`` on asyncio, or on uvloop with ``--backend uvloop``."""
    if args.backend == "uvloop":
        import uvloop

        uvloop.run(main(args))
    else:
        asyncio.run(main(args))
