"""Sink on ``smtp_anyio``: reads every message to the end and discards it.

    python bench/servers/anyio_sink.py --backend asyncio|uvloop|trio [--port N]
        [--tls-cert C --tls-key K [--secure]] [--workers N]

No reverse DNS; ``on_data`` is a coroutine that iterates the stream.
See ``_sinkutil`` for the readiness line and SIGTERM.
"""

from __future__ import annotations

import signal
from typing import Any

import anyio
from _sinkutil import HOST, Stats, our_options, parse_args, ready

from smtp_anyio import SMTPServer, run_workers


async def main(args: Any) -> None:
    stats = Stats()

    async def on_data(stream: Any, session: Any) -> None:
        async for _chunk in stream:
            pass
        stats.count(stream.byte_length)

    server = SMTPServer(**our_options(args, on_data))
    async with server:
        _, port = await server.listen(args.port, HOST, secure=args.secure)
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            ready(port)
            async for _ in signals:
                stats.report_and_exit()


def main_workers(args: Any, backend: str, backend_options: dict[str, Any]) -> None:
    """``--workers N``: ``run_workers``; READY (with the supervisor's pid)
    once every worker listens, a STATS line per worker on SIGTERM."""

    class CountingServer(SMTPServer):
        async def close(self) -> None:
            await super().close()
            stats.report()

    stats = Stats()  # one per worker: each has its copy after the fork

    async def on_data(stream: Any, session: Any) -> None:
        async for _chunk in stream:
            pass
        stats.count(stream.byte_length)

    run_workers(lambda: CountingServer(**our_options(args, on_data)),
                [(HOST, args.port, args.secure)], workers=args.workers, backend=backend,
                backend_options=backend_options, on_ready=lambda bound: ready(bound[0].port))


if __name__ == "__main__":
    arguments = parse_args(__doc__ or "", ("asyncio", "uvloop", "trio"))
    backend = "trio" if arguments.backend == "trio" else "asyncio"
    backend_options = {"use_uvloop": True} if arguments.backend == "uvloop" else {}
    if arguments.workers > 1:
        main_workers(arguments, backend, backend_options)
    else:
        anyio.run(main, arguments, backend=backend, backend_options=backend_options)
