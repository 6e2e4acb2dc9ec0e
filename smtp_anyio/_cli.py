"""``python -m smtp_anyio``: an SMTP (or LMTP) server that stores every
accepted message in a Maildir and prints one line per message."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio

import smtp_proto
from smtp_server import ListenerSpec, ServerOptions, WorkerListener

from ._cli_checks import (
    BadInput,
    OneLineParser,
    UnixPath,
    check_tls,
    endpoint,
    load_users,
    resolvable,
    server_name,
)
from ._cli_output import LineWriter, WriterHandler, close_all
from ._cli_servers import CliServer, MaildirServer, _print_line
from ._workers import run_workers

__all__ = ["main"]

log = logging.getLogger("smtp_anyio.cli")

DEFAULT_SIZE = 25 * 1024 * 1024
"""``--size`` unless given: a message is written to disk as it arrives, but
a server without any limit accepts a disk-filling one."""

EXIT_WAIT = 5.0
"""Seconds the server waits at exit for its last output lines to be read."""

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JSONFormatter(logging.Formatter):
    """``--log-json``: one JSON object per record, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _size(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of bytes, got {text!r}")
    return int(text)


def _workers(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes or auto, got {text!r}")
    return int(text)


def version_line() -> str:
    """E.g. ``smtp_anyio 0.1.0, core compiled with mypyc, CPython 3.11.2``."""
    return (f"smtp_anyio {smtp_proto.__version__}, core {smtp_proto.BUILD}, "
            f"{platform.python_implementation()} {platform.python_version()}")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m smtp_anyio",
        description="An SMTP server that stores every message it accepts in a Maildir.",
    )
    parser.add_argument("--version", action="version", version=version_line(),
                        help="print the version and which build of the core runs, and exit")
    parser.add_argument("--listen", action="append", type=endpoint,
                        metavar="HOST:PORT|unix:PATH",
                        help="plain/STARTTLS listener (repeatable; default 127.0.0.1:2525)")
    parser.add_argument("--implicit-tls", action="append", type=endpoint, default=[],
                        metavar="HOST:PORT|unix:PATH", help="implicit-TLS listener (repeatable)")
    parser.add_argument("--maildir", default="maildir", help="Maildir to deliver into")
    parser.add_argument("--maildir-per-recipient", action="store_true",
                        help="a Maildir per recipient's local part under --maildir "
                             "(the layout Dovecot reads)")
    parser.add_argument("--relay", type=endpoint, metavar="HOST:PORT|unix:PATH",
                        help="forward every message to this MTA (instead of storing it) and "
                             "answer as it does; asyncio/uvloop only")
    parser.add_argument("--tls-cert", help="certificate chain (PEM file)")
    parser.add_argument("--tls-key", help="private key (PEM file)")
    parser.add_argument("--tls-self-signed", action="store_true",
                        help="make a throw-away self-signed certificate for localhost")
    parser.add_argument("--auth-file", help="user:password lines; without it AUTH is optional")
    parser.add_argument("--lmtp", action="store_true", help="speak LMTP instead of SMTP")
    parser.add_argument("--size", type=_size, default=DEFAULT_SIZE, metavar="BYTES",
                        help=f"maximum message size in bytes, 0 for none (default {DEFAULT_SIZE})")
    parser.add_argument("--name", default=None, type=server_name,
                        help="server name in the greeting")
    parser.add_argument("--backend", choices=("asyncio", "uvloop", "trio"), default=None,
                        help="event loop (default: uvloop when installed, else asyncio)")
    parser.add_argument("--allow-insecure-auth", action="store_true",
                        help="allow AUTH before TLS (with --auth-file)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: a log line per connection and event (INFO); -vv: DEBUG too")
    parser.add_argument("--workers", type=_workers, default=1, metavar="N|auto",
                        help="serve from N processes on the same ports (auto: one per CPU)")
    parser.add_argument("--log-json", action="store_true",
                        help="log records as JSON lines (time, level, logger, message)")
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
         "-addext", "basicConstraints=critical,CA:FALSE",
         "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
         "-addext", "extendedKeyUsage=serverAuth",
         "-addext", "subjectKeyIdentifier=hash",
         "-addext", "authorityKeyIdentifier=keyid:always",
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
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    # The extensions strict validators (RFC 5280 profile checks: Python's
    # VERIFY_X509_STRICT, Go, rustls) insist on, a server certificate's.
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False)
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def build_server(args: argparse.Namespace, say: Callable[[str], None]
                 ) -> tuple[CliServer, str]:
    """The server the arguments describe, and the line saying where its
    messages go. ``say`` writes a line of output and must not block (see
    :class:`CliServer`)."""
    # --size 0: no limit (the core's "size": None).
    options: ServerOptions = {"lmtp": args.lmtp, "size": args.size or None}
    if args.name:
        options["name"] = args.name
    users = load_users(args.auth_file) if args.auth_file else None
    options["auth_optional"] = users is None
    options["allow_insecure_auth"] = args.allow_insecure_auth
    # Without users there is nobody to log in: AUTH is not offered at all.
    options["auth_methods"] = ("PLAIN", "LOGIN", "CRAM-MD5") if users is not None else ()
    if args.tls_cert:
        options["cert"], options["key"] = args.tls_cert, args.tls_key
    if args.relay is not None:
        from ._relay import RelayServer, RelayTarget  # noqa: PLC0415 - needs aiosmtplib

        relay = args.relay
        target = (RelayTarget(path=str(relay)) if isinstance(relay, UnixPath)
                  else RelayTarget(host=relay[0], port=relay[1]))
        return RelayServer(target, users, say=say, **options), destination_line(args)
    server = MaildirServer(args.maildir, users, say=say,
                           per_recipient=args.maildir_per_recipient, **options)
    return server, destination_line(args)


def destination_line(args: argparse.Namespace) -> str:
    """Where the messages go, as the output says it."""
    if args.relay is not None:
        relay = args.relay
        where = f"unix:{relay}" if isinstance(relay, UnixPath) else f"{relay[0]}:{relay[1]}"
        return f"relaying to {where}"
    return f"delivering to {os.path.abspath(args.maildir)}" + (
        " (a Maildir per recipient)" if args.maildir_per_recipient else "")


def plain_listeners(args: argparse.Namespace) -> list[tuple[str, int] | UnixPath]:
    """``--listen``, or 127.0.0.1:2525 unless there are implicit-TLS ones."""
    return args.listen or ([] if args.implicit_tls else [("127.0.0.1", 2525)])


async def run(args: argparse.Namespace, ready: anyio.Event | None = None,
              say: Callable[[str], None] = _print_line) -> None:
    """Serve until SIGINT or SIGTERM (SIGHUP: reload the certificates)."""
    server, destination = build_server(args, say)
    async with server:
        for secure, listeners in ((False, plain_listeners(args)), (True, args.implicit_tls)):
            for where in listeners:
                say(f"listening on {await _listen(server, where, secure)}"
                    + (" (implicit TLS)" if secure else ""))
        say(destination)
        if ready is not None:
            ready.set()
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM,
                                        signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    reload_certificates(server, say)
                    continue
                say(f"{signal.Signals(signum).name}: shutting down")
                break
        await server.close()


def reload_certificates(server: CliServer, say: Callable[[str], None]) -> None:
    """SIGHUP: the certificate files read again (renewed by certbot, say);
    new connections get them, a file that does not load changes nothing."""
    try:
        if server.reload_certificates():
            say("SIGHUP: certificates reloaded")
    except (OSError, ValueError) as exc:
        log.error("SIGHUP: certificates not reloaded: %s", exc)


async def _listen(server: CliServer, where: tuple[str, int] | UnixPath, secure: bool) -> str:
    """Start one listener; what it is bound to, as the output line says it."""
    if isinstance(where, UnixPath):
        return "unix:" + await server.listen_unix(where, secure=secure)
    host, port = await server.listen(where[1], where[0], secure=secure)
    return f"{host}:{port}"


def check_arguments(args: argparse.Namespace) -> None:
    """What argparse cannot see: files, certificates, host names. Raises
    :class:`BadInput` naming the option (and file and line)."""
    if args.auth_file:
        load_users(args.auth_file)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise BadInput("--tls-cert and --tls-key go together")
    if args.tls_cert:
        check_tls(args.tls_cert, args.tls_key)
    if args.implicit_tls and not (args.tls_cert or args.tls_self_signed):
        raise BadInput("--implicit-tls needs --tls-cert/--tls-key or --tls-self-signed")
    for option, listeners in (("--listen", args.listen or ()),
                              ("--implicit-tls", args.implicit_tls)):
        for where in listeners:
            if not isinstance(where, UnixPath):
                resolvable(option, *where)
    if args.relay is not None:
        check_relay(args)
    if args.workers != 1 and any(isinstance(where, UnixPath) for where in
                                 [*(args.listen or ()), *args.implicit_tls]):
        raise BadInput("--workers: a Unix socket cannot be shared by worker processes "
                       "(SO_REUSEPORT is TCP's); listen on TCP, or run one process")


def check_relay(args: argparse.Namespace) -> None:
    """``--relay``: aiosmtplib is there, the loop is asyncio's, the target
    resolves, and no Maildir option says otherwise."""
    if args.maildir_per_recipient:
        raise BadInput("--relay and --maildir-per-recipient do not go together "
                       "(a relayed message is not stored)")
    if args.backend == "trio":
        raise BadInput("--relay needs asyncio or uvloop (its client, aiosmtplib, is asyncio's)")
    try:
        import aiosmtplib  # noqa: F401, PLC0415
    except ImportError:
        raise BadInput("--relay needs aiosmtplib: pip install 'smtp-server-py[relay]'") from None
    if not isinstance(args.relay, UnixPath):
        resolvable("--relay", *args.relay)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_arguments(args)
    except BadInput as exc:
        sys.stderr.write(f"{parser.prog}: error: {exc}\n")
        return 2
    backend = args.backend
    if backend is None:
        try:
            import uvloop  # noqa: F401, PLC0415
        except ImportError:
            backend = "asyncio"
        else:
            backend = "uvloop"
    formatter = JSONFormatter() if args.log_json else logging.Formatter(LOG_FORMAT)
    logging.getLogger().setLevel(
        {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG))
    tmp = None
    if args.tls_self_signed and not args.tls_cert:
        tmp = tempfile.TemporaryDirectory(prefix="smtp-anyio-")
        args.tls_cert, args.tls_key = self_signed(Path(tmp.name))
    try:
        if args.workers != 1:
            return _serve_workers(args, backend, formatter)
        return _serve(args, backend, formatter)
    finally:
        if tmp is not None:
            tmp.cleanup()


def writers(formatter: logging.Formatter) -> tuple[LineWriter, LineWriter, WriterHandler]:
    """Standard output and the log (standard error), written by threads of
    their own: the event loop must never wait for whoever reads them."""
    console = LineWriter(sys.stdout, name="stdout")
    errors = LineWriter(sys.stderr, name="stderr")
    handler = WriterHandler(errors)
    handler.setFormatter(formatter)
    logging.getLogger().addHandler(handler)
    return console, errors, handler


def _serve(args: argparse.Namespace, backend: str, formatter: logging.Formatter) -> int:
    """One process: the server in this one's event loop."""
    console, errors, handler = writers(formatter)
    status = 0
    try:
        if backend == "uvloop":
            anyio.run(run, args, None, console.put, backend="asyncio",
                      backend_options={"use_uvloop": True})
        else:
            anyio.run(run, args, None, console.put, backend=backend)
    except* KeyboardInterrupt:
        pass
    except* OSError as group:  # e.g. address in use, from inside the task group
        for error in group.exceptions:
            errors.put(f"error: {error}")
        status = 1
    finally:
        logging.getLogger().removeHandler(handler)
        # Drained, unless nobody reads them: then exit all the same.
        close_all([console, errors], EXIT_WAIT)
    return status


def _serve_workers(args: argparse.Namespace, backend: str, formatter: logging.Formatter) -> int:
    """``--workers N``: the same server in N processes on the same ports
    (:func:`smtp_anyio.run_workers`). This process supervises and prints
    the ``listening on`` lines once every worker listens; each worker writes
    its message lines (one ``write`` per line: whole lines even on a shared
    pipe) and its log from threads of its own, started after the fork."""
    root = logging.getLogger()
    # The supervisor runs no event loop: plain blocking writes will do.
    supervisor_log = logging.StreamHandler(sys.stderr)
    supervisor_log.setFormatter(formatter)
    root.addHandler(supervisor_log)
    destination = destination_line(args)
    # (No Unix socket here: check_arguments refused them with --workers.)
    listeners: list[ListenerSpec] = [
        (where[0], where[1], secure)
        for secure, group in ((False, plain_listeners(args)), (True, args.implicit_tls))
        for where in group if not isinstance(where, UnixPath)]

    def on_ready(bound: Sequence[WorkerListener]) -> None:
        for listener in bound:
            print(f"listening on {listener.host}:{listener.port}"
                  + (" (implicit TLS)" if listener.secure else ""), flush=True)
        print(destination, flush=True)

    def make_server() -> CliServer:
        # In the worker, in its event loop: the inherited handler would
        # block it, so the worker's own writer threads take over.
        root.removeHandler(supervisor_log)
        console, errors, _ = writers(formatter)
        server, _ = build_server(args, console.put)

        def drain() -> None:
            close_all([console, errors], EXIT_WAIT)

        server.on_closed = drain
        return server

    try:
        if backend == "uvloop":
            return run_workers(make_server, listeners, workers=args.workers, backend="asyncio",
                               backend_options={"use_uvloop": True}, on_ready=on_ready)
        return run_workers(make_server, listeners, workers=args.workers, backend=backend,
                           on_ready=on_ready)
    finally:
        root.removeHandler(supervisor_log)
