"""Sink on aiosmtpd (asyncio or uvloop): ``handle_DATA`` receives the whole
message, which aiosmtpd has read line by line, and drops it.

    python bench/servers/aiosmtpd_sink.py --backend asyncio|uvloop [--port N]
        [--tls-cert C --tls-key K [--secure]]

No size limit; STARTTLS offered only when a certificate is given. See
``_sinkutil`` for the readiness line and SIGTERM.
"""

from __future__ import annotations

import asyncio
from typing import Any

from _sinkutil import NAME, Stats, parse_args, run_asyncio, serve_protocol, server_context
from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.stats.count(len(envelope.original_content or b""))
        return "250 OK"


async def main(args: Any) -> None:
    stats = Stats()
    handler = Sink(stats)
    context = server_context(args)  # STARTTLS (offered when not --secure)
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        return SMTP(
            handler, hostname=NAME, data_size_limit=None, enable_SMTPUTF8=True,
            tls_context=None if args.secure else context, loop=loop,
        )

    await serve_protocol(factory, args, stats)


if __name__ == "__main__":
    run_asyncio(main, parse_args(__doc__ or "", ("asyncio", "uvloop")))
