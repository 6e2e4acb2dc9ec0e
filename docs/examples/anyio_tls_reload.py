"""Reload the certificate when its files change, without a restart.

    python docs/examples/anyio_tls_reload.py --cert cert/cert.pem --key cert/key.pem

New connections get the new certificate at once; open ones keep theirs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import ssl

import anyio

from smtp_anyio import SMTPServer


def stamp(*paths: str) -> tuple[tuple[int, int, int], ...]:
    """What changes when a file is rewritten or replaced."""
    stats = [os.stat(path) for path in paths]
    return tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in stats)


async def watch_certificates(
    server: SMTPServer, cert_file: str, key_file: str, interval: float = 60.0
) -> None:
    last = stamp(cert_file, key_file)
    while True:
        await anyio.sleep(interval)
        current = stamp(cert_file, key_file)
        if current == last:
            continue
        try:
            server.update_secure_context(cert=cert_file, key=key_file)
        except (OSError, ssl.SSLError) as exc:
            # e.g. the new certificate is written but not yet its key: keep
            # the old pair and try again at the next tick
            print(f"keeping the old certificate: {exc}", flush=True)
            continue
        last = current
        print("TLS certificates reloaded", flush=True)


async def main(cert_file: str, key_file: str, port: int, interval: float) -> None:
    server = SMTPServer(key=key_file, cert=cert_file, auth_optional=True)
    async with server, anyio.create_task_group() as tasks:
        host, bound = await server.listen(port, secure=True)
        print(f"listening on {host}:{bound}", flush=True)
        tasks.start_soon(watch_certificates, server, cert_file, key_file, interval)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Implicit TLS with certificate reload.")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, default=465)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between checks")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(main, args.cert, args.key, args.port, args.interval)
