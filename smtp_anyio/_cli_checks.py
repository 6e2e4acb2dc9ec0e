"""The command line's input, checked before anything starts: each mistake
is one line on standard error that names the option (and the file and
line, for a file) and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
from typing import NoReturn

from smtp_proto import ServerConfig

__all__ = [
    "BadInput", "OneLineParser", "UnixPath", "address", "check_tls", "endpoint", "load_users",
    "resolvable", "server_name",
]

UNIX_PATH_MAX = 107
"""Bytes a Unix socket's path may have (``sun_path`` less its NUL, Linux)."""


class BadInput(Exception):
    """A command-line mistake; its text is the whole message."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (argparse adds the usage)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too); the port within 0..65535."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    number = int(port)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"port {number} out of range 0-65535 in {text!r}")
    return host.strip("[]") or "127.0.0.1", number


class UnixPath(str):
    """A ``unix:PATH`` listener or relay: the socket's absolute path."""

    __slots__ = ()


def endpoint(text: str) -> tuple[str, int] | UnixPath:
    """``HOST:PORT`` or ``unix:PATH`` (a Unix socket; Postfix and Dovecot
    speak LMTP over them)."""
    if not text.startswith("unix:"):
        return address(text)
    path = text.removeprefix("unix:")
    if not path:
        raise argparse.ArgumentTypeError(f"expected unix:PATH, got {text!r}")
    absolute = os.path.abspath(path)
    if len(os.fsencode(absolute)) > UNIX_PATH_MAX:
        raise argparse.ArgumentTypeError(
            f"{absolute!r}: too long for a Unix socket (at most {UNIX_PATH_MAX} bytes)")
    return UnixPath(absolute)


def server_name(text: str) -> str:
    """A name the greeting can carry, checked as the server would."""
    try:
        ServerConfig(name=text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return text


def load_users(path: str) -> dict[str, str]:
    """``user:password`` lines (``#`` comments, blank lines), UTF-8."""
    try:
        data = open(path, "rb").read()  # noqa: SIM115 - read at once
    except OSError as exc:
        raise BadInput(f"--auth-file {path}: {exc.strerror or exc}") from None
    users: dict[str, str] = {}
    for number, raw in enumerate(data.splitlines(), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise BadInput(f"--auth-file {path}, line {number}: not UTF-8") from None
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user:
            raise BadInput(f"--auth-file {path}, line {number}: expected user:password")
        users[user] = password
    return users


def check_tls(cert: str, key: str) -> None:
    """Both files readable, the certificate PEM, the key its key."""
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not os.path.isfile(path):
            raise BadInput(f"{option} {path}: no such file")
        if not os.access(path, os.R_OK):
            raise BadInput(f"{option} {path}: not readable")
    try:
        with open(cert, encoding="ascii") as fh:
            ssl.PEM_cert_to_DER_cert(fh.read())
    except (ValueError, UnicodeDecodeError):
        raise BadInput(f"--tls-cert {cert}: not a PEM certificate") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise BadInput(
            f"--tls-key {key}: not a private key for --tls-cert {cert} ({exc.reason})"
        ) from None


def resolvable(option: str, host: str, port: int) -> None:
    """The host of a listener resolves (else the server would start and fail)."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BadInput(f"{option} {host}:{port}: unknown host ({exc.strerror})") from None
