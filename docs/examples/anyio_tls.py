"""A submission server with STARTTLS (port 587) and implicit TLS (port 465).

    python docs/examples/anyio_tls.py --cert cert/cert.pem --key cert/key.pem
    python docs/examples/anyio_tls.py --cert cert/cert.pem --key cert/key.pem \\
        --port 0 --implicit-port 0          # any free ports

It prints one ``... on HOST:PORT`` line per listener, then a line per message.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac

import anyio

from smtp_anyio import AuthAttempt, MessageStream, Session, SMTPServer

USERS = {"user": "pass"}


async def on_auth(auth: AuthAttempt, session: Session) -> str | None:
    # Only reached over TLS: before it, AUTH got 538 5.7.11.
    password = USERS.get(auth.username)
    if password is None or not hmac.compare_digest(password, auth.password or ""):
        return None  # 535 5.7.8 Error: authentication credentials invalid
    return auth.username  # becomes session.user


async def on_data(stream: MessageStream, session: Session) -> None:
    body = await stream.read()
    assert session.tls is not None
    print(f"{session.user} sent {len(body)} bytes over {session.tls.version}", flush=True)


def build_server(cert_file: str, key_file: str) -> SMTPServer:
    return SMTPServer(
        key=key_file,
        cert=cert_file,
        needs_upgrade=True,  # refuse MAIL and AUTH until STARTTLS (530 5.7.0)
        on_auth=on_auth,
        on_data=on_data,
    )


async def main(cert_file: str, key_file: str, port: int = 587, implicit_port: int = 465) -> None:
    server = build_server(cert_file, key_file)
    async with server:
        host, bound = await server.listen(port)  # plain text, STARTTLS offered
        print(f"STARTTLS on {host}:{bound}", flush=True)
        host, bound = await server.listen(implicit_port, secure=True)  # TLS from the first byte
        print(f"implicit TLS on {host}:{bound}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="STARTTLS and implicit TLS.")
    parser.add_argument("--cert", required=True, help="certificate chain (PEM file)")
    parser.add_argument("--key", required=True, help="private key (PEM file)")
    parser.add_argument("--port", type=int, default=587)
    parser.add_argument("--implicit-port", type=int, default=465)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(main, args.cert, args.key, args.port, args.implicit_port)
