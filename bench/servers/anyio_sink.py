"""Sink on ``smtp_anyio``: reads every message to the end and discards it.

    python bench/servers/anyio_sink.py --backend asyncio|uvloop|trio [--port N]
        [--tls-cert C --tls-key K [--secure]]

No reverse DNS; ``on_data`` is a coroutine that iterates the stream.
See ``_sinkutil`` for the readiness line and SIGTERM.
"""

from __future__ import annotations

import signal
from typing import Any

import anyio
from _sinkutil import HOST, Stats, our_options, parse_args, ready

from smtp_anyio import SMTPServer


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


if __name__ == "__main__":
    arguments = parse_args(__doc__ or "", ("asyncio", "uvloop", "trio"))
    backend = "trio" if arguments.backend == "trio" else "asyncio"
    backend_options = {"use_uvloop": True} if arguments.backend == "uvloop" else {}
    anyio.run(main, arguments, backend=backend, backend_options=backend_options)
