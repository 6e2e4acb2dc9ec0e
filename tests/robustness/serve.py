"""A server in a process of its own, for what a test can only see from
outside: its memory, its descriptors, whether it exits.

    python tests/robustness/serve.py BACKEND [--options JSON] [--handlers NAME]
        [--store DIR] [--nofile N] [--implicit-tls]

BACKEND: asyncio, uvloop, trio or sync. Prints ``listening on HOST:PORT``
when it accepts (and, with ``--implicit-tls``, a second line ``implicit TLS
on HOST:PORT``; the options must then name ``key`` and ``cert``), ``closed``
when ``close()`` has returned; SIGTERM or SIGINT closes the server.
Handlers (``--handlers``):

``none``
   the defaults: every message accepted and dropped.
``hang``
   a plain ``on_data`` that reads the message and then never returns.
``refuse-auth``
   an ``on_auth`` that refuses every password.
``async-rcpt``
   a coroutine ``on_rcpt_to`` (anyio backends): its reply is sent from a
   task of its own, while the connection's reader may be receiving.
``store``
   a plain ``on_data`` that writes each message into ``--store DIR`` (tmp
   file, fsync, rename) before it returns, so a 250 means "on disk".
``store-peer``
   as ``store``, and the session's ``remote_address`` (the client's, from a
   PROXY header) in a sidecar file ``NAME.peer`` written before the message
   ``NAME``; the reply is ``250 stored as NAME for ADDRESS``. An
   ``on_connect`` prints ``connect from ADDRESS (PROXY v2 LOCAL)`` (or
   ``(no PROXY header)``) for every connection, health checks included.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import resource
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any


def handlers(name: str, store: str | None) -> dict[str, Any]:
    if name == "none":
        return {}
    if name == "async-rcpt":  # anyio backends only
        import anyio

        async def on_rcpt_to(address: Any, session: Any) -> None:
            await anyio.sleep(0)  # answered from the decision's own task

        return {"on_rcpt_to": on_rcpt_to}
    if name == "refuse-auth":
        def on_auth(auth: Any, session: Any) -> None:
            return None  # every password is wrong

        return {"on_auth": on_auth}
    if name == "hang":
        forever = threading.Event()

        def on_data_hang(stream: Any, session: Any) -> None:
            stream.read()
            print("on_data hangs", flush=True)
            forever.wait()

        return {"on_data": on_data_hang}
    if name == "store":
        assert store is not None
        directory = Path(store)

        def on_data_store(stream: Any, session: Any) -> str:
            body = stream.read()
            name = uuid.uuid4().hex
            tmp = directory / f".{name}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, directory / name)
            return f"stored as {name}"

        return {"on_data": on_data_store}
    if name == "store-peer":
        assert store is not None
        return store_peer_handlers(Path(store))
    raise SystemExit(f"unknown handlers {name!r}")


def store_durably(directory: Path, name: str, data: bytes) -> None:
    """``directory/name`` whole or not at all: tmp file, fsync, rename."""
    tmp = directory / f".{name}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, directory / name)


def store_peer_handlers(directory: Path) -> dict[str, Any]:
    """The ``store-peer`` preset: who each message came from, as the session
    saw it."""

    def on_connect_peer(session: Any) -> None:
        proxy = session.proxy
        via = f"PROXY v{proxy.version} {proxy.command}" if proxy else "no PROXY header"
        print(f"connect from {session.remote_address} ({via})", flush=True)

    def on_data_store_peer(stream: Any, session: Any) -> str:
        body = stream.read()
        name = uuid.uuid4().hex
        peer = str(session.remote_address)
        store_durably(directory, f"{name}.peer", peer.encode())  # first: a message has one
        store_durably(directory, name, body)
        return f"stored as {name} for {peer}"

    return {"on_connect": on_connect_peer, "on_data": on_data_store_peer}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("backend", choices=("asyncio", "uvloop", "trio", "sync"))
    parser.add_argument("--options", default="{}")
    parser.add_argument("--handlers", default="none")
    parser.add_argument("--store")
    parser.add_argument("--nofile", type=int, help="lower RLIMIT_NOFILE to this")
    parser.add_argument("--implicit-tls", action="store_true", help="a second, TLS listener")
    args = parser.parse_args()
    # A test that finds the server stuck asks for every thread's stack.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    options: dict[str, Any] = {"disable_reverse_lookup": True, "auth_optional": True}
    options.update(json.loads(args.options))
    options.update(handlers(args.handlers, args.store))
    if args.nofile:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    if args.backend == "sync":
        serve_sync(options, args.implicit_tls)
    else:
        serve_async(args.backend, options, args.implicit_tls)
    print("closed", flush=True)


def serve_sync(options: dict[str, Any], implicit_tls: bool) -> None:
    from smtp_sync import SMTPServer

    server = SMTPServer(**options)
    host, port = server.listen(0)
    if implicit_tls:
        tls_host, tls_port = server.listen(0, secure=True)

    def stop(signum: int, frame: object) -> None:
        # close() from another thread: a signal handler must not block the
        # main thread's serve_forever() (which returns once close() is done).
        threading.Thread(target=server.close, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on {host}:{port}", flush=True)
    if implicit_tls:
        print(f"implicit TLS on {tls_host}:{tls_port}", flush=True)
    server.serve_forever()


def serve_async(backend: str, options: dict[str, Any], implicit_tls: bool) -> None:
    import anyio

    from smtp_anyio import SMTPServer

    async def run() -> None:
        server = SMTPServer(**options)
        async with server:
            host, port = await server.listen(0)
            print(f"listening on {host}:{port}", flush=True)
            if implicit_tls:
                tls_host, tls_port = await server.listen(0, secure=True)
                print(f"implicit TLS on {tls_host}:{tls_port}", flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            await server.close()

    if backend == "uvloop":
        anyio.run(run, backend="asyncio", backend_options={"use_uvloop": True})
    else:
        anyio.run(run, backend=backend)


if __name__ == "__main__":
    sys.exit(main())
