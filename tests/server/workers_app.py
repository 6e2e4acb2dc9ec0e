"""Worker processes under test: ``run_workers()`` of either server.

    python tests/server/workers_app.py BACKEND [--workers N]
        [--cert FILE --key FILE] [--fail] [--share auto|reuse_port|inherit]

BACKEND: asyncio, uvloop, trio or sync. One plain listener on 127.0.0.1
port 0, and with ``--cert``/``--key`` an implicit-TLS one too. Each
worker's greeting names its pid (``220 pid1234.example ESMTP``). The
supervisor's log (logger ``smtp_server.workers``, INFO) goes to standard
output, one line a record: ``starting 2 workers on 127.0.0.1:PORT, ...``,
``worker 0 (pid N) ready``, ``all 2 workers ready``, and so on.
``--fail``: ``make_server()`` raises in every worker.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any


def options(args: argparse.Namespace) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": f"pid{os.getpid()}.example",  # called in the worker: its pid
        "auth_optional": True,
        "disable_reverse_lookup": True,
        "close_timeout": 20.0,
    }
    if args.cert:
        found.update(cert=args.cert, key=args.key)
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("backend", choices=("asyncio", "uvloop", "trio", "sync"))
    parser.add_argument("--workers", default="2")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--share", default="auto", choices=("auto", "reuse_port", "inherit"))
    args = parser.parse_args()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    workers_log = logging.getLogger("smtp_server.workers")
    workers_log.addHandler(handler)
    workers_log.setLevel(logging.INFO)
    workers_log.propagate = False
    logging.basicConfig(level=logging.WARNING)  # the servers' own warnings: stderr
    count: int | str = args.workers if args.workers == "auto" else int(args.workers)
    listeners: list[tuple[str, int] | tuple[str, int, bool | None]] = [("127.0.0.1", 0)]
    if args.cert:
        listeners.append(("127.0.0.1", 0, True))

    if args.backend == "sync":
        import smtp_sync

        def make_sync() -> smtp_sync.SMTPServer:
            if args.fail:
                raise RuntimeError("this worker cannot start")
            return smtp_sync.SMTPServer(**options(args))

        return smtp_sync.run_workers(make_sync, listeners, workers=count, share=args.share)

    import smtp_anyio

    def make_async() -> smtp_anyio.SMTPServer:
        if args.fail:
            raise RuntimeError("this worker cannot start")
        return smtp_anyio.SMTPServer(**options(args))

    if args.backend == "uvloop":
        return smtp_anyio.run_workers(make_async, listeners, workers=count,
                                      backend_options={"use_uvloop": True}, share=args.share)
    return smtp_anyio.run_workers(make_async, listeners, workers=count, backend=args.backend,
                                  share=args.share)


if __name__ == "__main__":
    sys.exit(main())
