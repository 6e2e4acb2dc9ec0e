"""The ceiling: a raw asyncio ``Protocol`` with canned replies.

    python bench/servers/raw_sink.py --backend asyncio|uvloop [--port N]
        [--tls-cert C --tls-key K [--secure]]

No parsing beyond what the conversation needs: a reply per command line
(``220`` greeting, ``250`` to everything, ``354`` to DATA, ``221`` to QUIT),
pipelined replies batched in one write per read, and in DATA one
``bytes.find(b"\\r\\n.\\r\\n")`` per read (plus a 4-byte carry across reads).
No dot-unstuffing, no address checks, no handlers. What a real server does
on top of this is the price of being one: every real server should stay
well below it, and if one does not, the load generator is the limit.
"""

from __future__ import annotations

import asyncio
from typing import Any

from _sinkutil import Stats, parse_args, run_asyncio, serve_protocol

END = b"\r\n.\r\n"
EHLO = (b"250-bench.localhost\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
        b"250-SIZE 0\r\n250 ENHANCEDSTATUSCODES\r\n")
OK = b"250 2.0.0 OK\r\n"


class Canned(asyncio.Protocol):
    stats: Stats

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.in_data = False
        self.data_bytes = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(b"220 bench.localhost ESMTP raw ceiling\r\n")

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        out: list[bytes] = []
        pos = 0
        size = len(buffer)
        while pos < size:
            if self.in_data:
                end = buffer.find(END, pos)
                if end < 0:
                    # Keep the last 4 bytes: the marker may straddle reads.
                    keep = max(pos, size - 4)
                    self.data_bytes += keep - pos
                    pos = keep
                    break
                self.data_bytes += end - pos
                self.stats.count(self.data_bytes)
                self.data_bytes = 0
                self.in_data = False
                pos = end + len(END)
                out.append(OK)
                continue
            eol = buffer.find(b"\r\n", pos)
            if eol < 0:
                break
            verb = buffer[pos:pos + 4].upper()
            pos = eol + 2
            if verb == b"DATA":
                out.append(b"354 go ahead\r\n")
                self.in_data = True
                pos -= 2  # the CRLF that ends DATA may start the end marker
            elif verb == b"EHLO":
                out.append(EHLO)
            elif verb == b"QUIT":
                out.append(b"221 bye\r\n")
                assert self.transport is not None
                self.transport.write(b"".join(out))
                self.transport.close()
                self.buffer = b""
                return
            else:
                out.append(OK)
        self.buffer = buffer[pos:]
        if out:
            assert self.transport is not None
            self.transport.write(b"".join(out))


async def main(args: Any) -> None:
    Canned.stats = stats = Stats()
    await serve_protocol(Canned, args, stats)


if __name__ == "__main__":
    run_asyncio(main, parse_args(__doc__ or "", ("asyncio", "uvloop")))
