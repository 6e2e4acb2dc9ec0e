"""Sink on ``smtp_sync`` (one thread per client): reads every message to the
end and discards it.

    python bench/servers/sync_sink.py [--port N] [--tls-cert C --tls-key K [--secure]]
        [--workers N]

No reverse DNS; ``on_data`` iterates the blocking stream. See ``_sinkutil``
for the readiness line and SIGTERM.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from _sinkutil import HOST, Stats, our_options, parse_args, ready

from smtp_sync import SMTPServer, run_workers


def main(args: Any) -> None:
    stats = Stats()

    def on_data(stream: Any, session: Any) -> None:
        for _chunk in stream:
            pass
        stats.count(stream.byte_length)

    options = our_options(args, on_data)
    options["max_clients"] = 4000  # W5 holds 1,000 idle clients (the default bound)
    # SIGTERM is blocked in every thread and taken by one that waits for it:
    # a Python handler would need the main thread to wake up, and the kernel
    # may deliver the signal to any thread (it does under py-spy).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=lambda: (signal.sigwait({signal.SIGTERM}),
                                     stats.report_and_exit()), daemon=True).start()
    server = SMTPServer(**options)
    _, port = server.listen(args.port, HOST, secure=args.secure)
    ready(port)
    server.serve_forever()


def main_workers(args: Any) -> None:
    """``--workers N``: ``run_workers``; READY (with the supervisor's pid)
    once every worker listens, a STATS line per worker on SIGTERM."""

    class CountingServer(SMTPServer):
        def serve_forever(self) -> None:
            # Reported here, in the worker's main thread, before it exits:
            # close() runs in another thread, which the exit would cut short.
            super().serve_forever()
            stats.report()

    stats = Stats()

    def on_data(stream: Any, session: Any) -> None:
        for _chunk in stream:
            pass
        stats.count(stream.byte_length)

    def make_server() -> SMTPServer:
        options = our_options(args, on_data)
        options["max_clients"] = 4000
        return CountingServer(**options)

    run_workers(make_server, [(HOST, args.port, args.secure)], workers=args.workers,
                on_ready=lambda bound: ready(bound[0].port))


if __name__ == "__main__":
    arguments = parse_args(__doc__ or "")
    if arguments.workers > 1:
        main_workers(arguments)
    else:
        main(arguments)
