"""``python -m smtp_anyio``: an SMTP (or LMTP) server that stores every
accepted message in a Maildir and prints one line per message."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Unpack

import anyio

from smtp_proto import AuthAttempt, Session
from smtp_server import ServerOptions, SMTPError

from ._maildir import MaildirStore, check_credentials, describe, load_auth_file
from ._server import SMTPServer
from ._stream import MessageStream

__all__ = ["main"]

log = logging.getLogger("smtp_anyio.cli")


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m smtp_anyio",
        description="An SMTP server that stores every message it accepts in a Maildir.",
    )
    parser.add_argument("--listen", action="append", type=_address, metavar="HOST:PORT",
                        help="plain/STARTTLS listener (repeatable; default 127.0.0.1:2525)")
    parser.add_argument("--implicit-tls", action="append", type=_address, default=[],
                        metavar="HOST:PORT", help="implicit-TLS listener (repeatable)")
    parser.add_argument("--maildir", default="maildir", help="Maildir to deliver into")
    parser.add_argument("--tls-cert", help="certificate chain (PEM file)")
    parser.add_argument("--tls-key", help="private key (PEM file)")
    parser.add_argument("--tls-self-signed", action="store_true",
                        help="make a throw-away self-signed certificate for localhost")
    parser.add_argument("--auth-file", help="user:password lines; without it AUTH is optional")
    parser.add_argument("--lmtp", action="store_true", help="speak LMTP instead of SMTP")
    parser.add_argument("--size", type=int, default=None, help="maximum message size in bytes")
    parser.add_argument("--name", default=None, help="server name in the greeting")
    parser.add_argument("--backend", choices=("asyncio", "uvloop", "trio"), default=None,
                        help="event loop (default: uvloop when installed, else asyncio)")
    parser.add_argument("--allow-insecure-auth", action="store_true",
                        help="allow AUTH before TLS (with --auth-file)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every session")
    return parser


def self_signed(directory: Path) -> tuple[str, str]:
    """A localhost certificate and key, made with ``cryptography`` if it is
    installed, else with the ``openssl`` command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        _self_signed_cryptography(cert, key)
    except ImportError:
        pass
    else:
        return str(cert), str(key)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


def _self_signed_cryptography(cert_path: Path, key_path: Path) -> None:
    import datetime  # noqa: PLC0415 - only for --tls-self-signed
    import ipaddress  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


class MaildirServer(SMTPServer):
    """The server behind the command line: deliver to a Maildir, print a line."""

    def __init__(self, store: MaildirStore, users: dict[str, str] | None,
                 **options: Unpack[ServerOptions]) -> None:
        super().__init__(**options)
        self.store = store
        self.users = users

    async def on_auth(self, auth: AuthAttempt, session: Session) -> object:
        if self.users is not None and check_credentials(self.users, auth):
            return auth.username
        raise SMTPError(535, "Error: authentication credentials invalid", enhanced="5.7.8")

    async def on_data(self, stream: MessageStream, session: Session) -> object:
        body = await stream.read()
        key = await anyio.to_thread.run_sync(self.store.deliver, body)
        print(f"{key} {describe(session, len(body))}", flush=True)
        return f"OK: queued as {key.split('.')[0]}"


async def run(args: argparse.Namespace, ready: anyio.Event | None = None) -> None:
    options: ServerOptions = {"lmtp": args.lmtp, "size": args.size}
    if args.name:
        options["name"] = args.name
    users = load_auth_file(args.auth_file) if args.auth_file else None
    options["auth_optional"] = users is None
    options["allow_insecure_auth"] = args.allow_insecure_auth
    # Without users there is nobody to log in: AUTH is not offered at all.
    options["auth_methods"] = ("PLAIN", "LOGIN", "CRAM-MD5") if users is not None else ()
    tmp = None
    if args.tls_self_signed and not args.tls_cert:
        tmp = tempfile.TemporaryDirectory(prefix="smtp-anyio-")
        args.tls_cert, args.tls_key = self_signed(Path(tmp.name))
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise SystemExit("--tls-cert and --tls-key go together")
        options["cert"], options["key"] = args.tls_cert, args.tls_key
    if args.implicit_tls and "cert" not in options:
        raise SystemExit("--implicit-tls needs --tls-cert/--tls-key or --tls-self-signed")
    store = MaildirStore(args.maildir)
    server = MaildirServer(store, users, **options)
    try:
        async with server:
            plain = args.listen or ([] if args.implicit_tls else [("127.0.0.1", 2525)])
            for host, port in plain:
                bound = await server.listen(port, host)
                print(f"listening on {bound[0]}:{bound[1]}", flush=True)
            for host, port in args.implicit_tls:
                bound = await server.listen(port, host, secure=True)
                print(f"listening on {bound[0]}:{bound[1]} (implicit TLS)", flush=True)
            print(f"delivering to {os.path.abspath(args.maildir)}", flush=True)
            if ready is not None:
                ready.set()
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    print(f"{signal.Signals(signum).name}: shutting down", flush=True)
                    break
            await server.close()
    finally:
        if tmp is not None:
            tmp.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    backend = args.backend
    if backend is None:
        try:
            import uvloop  # noqa: F401, PLC0415
        except ImportError:
            backend = "asyncio"
        else:
            backend = "uvloop"
    status = 0
    try:
        if backend == "uvloop":
            anyio.run(run, args, backend="asyncio", backend_options={"use_uvloop": True})
        else:
            anyio.run(run, args, backend=backend)
    except* KeyboardInterrupt:
        pass
    except* OSError as group:  # e.g. address in use, from inside the task group
        for exc in group.exceptions:
            print(f"error: {exc}", file=sys.stderr)
        status = 1
    return status
