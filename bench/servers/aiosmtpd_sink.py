"""Sink on aiosmtpd (asyncio or uvloop): ``handle_DATA`` receives the whole
message, which aiosmtpd has read line by line, and drops it.

    python bench/servers/aiosmtpd_sink.py --backend asyncio|uvloop [--port N]
        [--tls-cert C --tls-key K [--secure]]

No size limit; STARTTLS offered only when a certificate is given. See
``_sinkutil`` for the readiness line and SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from _sinkutil import HOST, NAME, Stats, parse_args, ready, server_context
from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.stats.messages += 1
        self.stats.bytes += len(envelope.original_content or b"")
        return "250 OK"


async def main(args: Any) -> None:
    stats = Stats()
    handler = Sink(stats)
    context = server_context(args)
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        return SMTP(
            handler, hostname=NAME, data_size_limit=None, enable_SMTPUTF8=True,
            tls_context=None if args.secure else context, loop=loop,
        )

    server = await loop.create_server(
        factory, HOST, args.port, reuse_address=True, backlog=1024,
        ssl=context if args.secure else None,
    )
    loop.add_signal_handler(signal.SIGTERM, stats.report_and_exit)
    ready(server.sockets[0].getsockname()[1])
    await server.serve_forever()


if __name__ == "__main__":
    arguments = parse_args(__doc__ or "", ("asyncio", "uvloop"))
    if arguments.backend == "uvloop":
        import uvloop

        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))
