"""Unix-domain socket listeners (``listen_unix()``), on every backend, with
real sockets: SMTP and LMTP over them, sessions without addresses, implicit
TLS, PROXY, and the socket file's life (a stale one replaced, a live one or
any other file refused, ours removed at close, its mode).

Socket paths live in a short directory: ``sun_path`` holds about 107 bytes,
and pytest's ``tmp_path`` can be longer than that.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import smtplib
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from smtp_server import UnixSocketFile, bind_unix, received_header

from .conftest import Inbox, TLSMaterial
from .harness import RunningServer, run_server
from .raw_smtp import Recorder
from .test_session_log import Lines

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")

TIMEOUT = 10.0
MAX_PATH = 100  # AF_UNIX's sun_path: 108 bytes on Linux, 104 on the BSDs


@pytest.fixture
def socket_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory whose socket paths fit in ``sun_path``."""
    if len(str(tmp_path / "a-socket-name.sock")) <= MAX_PATH:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="smtp-unix-", dir="/tmp"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)


def connect(path: str | Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.connect(str(path))
    return sock


def smtp_client(sock: socket.socket) -> smtplib.SMTP:
    """smtplib on an already connected socket (Unix, or TLS over one)."""
    client = smtplib.SMTP(timeout=TIMEOUT)
    client.sock = sock
    code, _ = client.getreply()
    assert code == 220
    return client


def listen_unix(running: RunningServer, path: str | Path, **kwargs: Any) -> str:
    return str(running.call(running.server.listen_unix, path, **kwargs))


Sessions = Recorder  # what handlers saw of their sessions


def addresses(session: Any) -> tuple[Any, ...]:
    return (session.remote_address, session.remote_port,
            session.local_address, session.local_port)


# -- SMTP and LMTP over a Unix socket ----------------------------------------------


def test_smtp_over_a_unix_socket(start_server: Any, inbox: Inbox, socket_dir: Path) -> None:
    running = start_server(on_data=inbox.on_data, auth_optional=True)
    path = socket_dir / "smtp.sock"
    assert listen_unix(running, path) == str(path)
    assert running.server.unix_paths == [str(path)]
    assert str(path) not in [host for host, _ in running.server.addresses]
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    with smtp_client(connect(path)) as client:
        client.ehlo("client.example")
        client.sendmail("a@example.org", ["b@example.com", "c@example.com"],
                        b"Subject: over a socket file\r\n\r\nhello\r\n")
    [message] = inbox.wait_for(1)
    assert message.sender == "a@example.org"
    assert message.recipients == ["b@example.com", "c@example.com"]
    assert message.body == b"Subject: over a socket file\r\n\r\nhello\r\n"
    # The TCP listener still serves.
    with smtplib.SMTP(*running.address, timeout=TIMEOUT) as client:
        client.sendmail("a@example.org", ["d@example.com"], b"Subject: tcp\r\n\r\nhi\r\n")
    assert inbox.wait_for(2)[1].recipients == ["d@example.com"]


def test_aiosmtplib_over_a_unix_socket(
    start_server: Any, inbox: Inbox, socket_dir: Path,
) -> None:
    running = start_server(on_data=inbox.on_data, auth_optional=True)
    path = listen_unix(running, socket_dir / "aiosmtplib.sock")

    async def send() -> None:
        client = aiosmtplib.SMTP(socket_path=path, timeout=TIMEOUT, start_tls=False)
        async with client:
            _errors, reply = await client.sendmail(
                "a@example.org", ["b@example.com"], b"Subject: async\r\n\r\nhi\r\n")
        assert reply.startswith("2.0.0 OK")

    asyncio.run(send())
    assert inbox.wait_for(1)[0].body == b"Subject: async\r\n\r\nhi\r\n"


def test_lmtp_over_a_unix_socket(start_server: Any, inbox: Inbox, socket_dir: Path) -> None:
    running = start_server(on_data=inbox.on_data, auth_optional=True, lmtp=True)
    path = listen_unix(running, socket_dir / "lmtp.sock")
    with smtplib.LMTP(path, timeout=TIMEOUT) as client:  # a path: smtplib connects AF_UNIX
        assert client.ehlo("client.example")[0] == 250  # LHLO: smtplib.LMTP's ehlo
        assert client.mail("a@example.org")[0] == 250
        assert client.rcpt("b@example.com")[0] == 250
        assert client.rcpt("c@example.com")[0] == 250
        # LMTP: a reply per recipient (smtplib reads the first one only).
        assert client.data(b"Subject: lmtp\r\n\r\nhello\r\n")[0] == 250
        assert client.getreply()[0] == 250
    [message] = inbox.wait_for(1)
    assert message.recipients == ["b@example.com", "c@example.com"]
    assert message.body == b"Subject: lmtp\r\n\r\nhello\r\n"


def test_sessions_on_a_unix_socket_have_no_addresses(
    start_server: Any, backend: str, socket_dir: Path,
) -> None:
    """``on_connect`` sees ``None`` addresses; reverse lookup is skipped,
    per-client limits do not count ``None``, the session log says ``-``, and
    the ``Received`` header has no address part."""
    seen = Sessions()
    looked_up = Sessions()
    headers = Sessions()
    logger = logging.getLogger(f"test.unix_sockets.{backend}")
    logger.setLevel(logging.INFO)
    lines = Lines()
    logger.addHandler(lines)

    def on_data(stream: Any, session: Any) -> None:
        stream.read()
        headers.add(received_header(session, by="mx.example.org"))

    def resolver(address: str) -> str:
        looked_up.add(address)
        return "never.example"

    try:
        running = start_server(
            auth_optional=True, logger=logger, on_data=on_data,
            on_connect=lambda session: seen.add(addresses(session)),
            disable_reverse_lookup=False, resolver=resolver,
            max_connections_per_client=1, client_limit_exceptions=[])
        path = listen_unix(running, socket_dir / "smtp.sock")
        # Two at once, with one connection allowed per client: a Unix socket
        # peer has no address, and no address is no client to count.
        with smtp_client(connect(path)) as first, smtp_client(connect(path)) as second:
            assert first.noop()[0] == 250
            assert second.ehlo("client.example")[0] == 250
            second.sendmail("a@example.org", ["b@example.com"], b"Subject: x\r\n\r\nhi\r\n")
        assert seen.wait_for(2) == [(None, None, None, None)] * 2
        [header] = headers.wait_for(1)
        assert header.startswith("Received: from client.example\r\n\tby mx.example.org")
        assert "[" not in header
        lines.wait_for(r"^\[\w+\] connection from -$")
        lines.wait_for(r"^\[\w+\] closed: peer=- tls=no user=- messages=1 ")
        assert not looked_up.items
        assert not [line for line in lines.lines if "too many connections" in line]
    finally:
        logger.removeHandler(lines)


# -- TLS and PROXY ---------------------------------------------------------------------


def test_implicit_tls_over_a_unix_socket(
    start_server: Any, inbox: Inbox, tls: TLSMaterial, socket_dir: Path,
) -> None:
    secured = Sessions()
    running = start_server(on_data=inbox.on_data, auth_optional=True,
                           on_secure=lambda info, session: secured.add(info.version),
                           **tls.server_options)
    path = listen_unix(running, socket_dir / "smtps.sock", secure=True)
    sock = tls.client_context().wrap_socket(connect(path), server_hostname="localhost")
    version = sock.version()
    assert version is not None
    with smtp_client(sock) as client:
        client.ehlo("client.example")
        assert not client.has_extn("starttls")  # already secure
        client.sendmail("a@example.org", ["b@example.com"], b"Subject: tls\r\n\r\nhi\r\n")
    assert inbox.wait_for(1)[0].body == b"Subject: tls\r\n\r\nhi\r\n"
    assert secured.wait_for(1) == [version]


def test_proxy_header_over_a_unix_socket(start_server: Any, socket_dir: Path) -> None:
    """HAProxy connects to a Unix socket too: its PROXY header names the
    client, whose address the session then shows."""
    seen = Sessions()
    running = start_server(use_proxy=True, auth_optional=True,
                           on_connect=lambda session: seen.add(addresses(session)))
    path = listen_unix(running, socket_dir / "proxied.sock")
    sock = connect(path)
    sock.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.10 40000 25\r\n")
    with smtp_client(sock) as client:
        code, text = client.ehlo("client.example")
        assert code == 250
        assert text.splitlines()[0].endswith(b"[203.0.113.7]")
    assert seen.wait_for(1) == [("203.0.113.7", 40000, "192.0.2.10", 25)]


def test_proxy_header_then_implicit_tls_over_a_unix_socket(
    start_server: Any, tls: TLSMaterial, socket_dir: Path,
) -> None:
    seen = Sessions()
    running = start_server(use_proxy=True, auth_optional=True,
                           on_connect=lambda session: seen.add(
                               (*addresses(session), session.tls is not None)),
                           **tls.server_options)
    path = listen_unix(running, socket_dir / "proxied-tls.sock", secure=True)
    raw = connect(path)
    raw.sendall(b"PROXY TCP6 2001:db8::7 2001:db8::1 40001 465\r\n")
    sock = tls.client_context().wrap_socket(raw, server_hostname="localhost")
    with smtp_client(sock) as client:
        assert client.noop()[0] == 250
    assert seen.wait_for(1) == [("2001:db8::7", 40001, "2001:db8::1", 465, True)]


# -- the socket file -------------------------------------------------------------------


def test_a_stale_socket_file_is_replaced(start_server: Any, socket_dir: Path) -> None:
    path = socket_dir / "stale.sock"
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(path))  # and never listens again: what a crash leaves
    crashed.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    running = start_server(auth_optional=True)
    listen_unix(running, path)
    with smtp_client(connect(path)) as client:
        assert client.noop()[0] == 250


def test_a_live_socket_is_address_in_use(backend: str, socket_dir: Path) -> None:
    path = socket_dir / "live.sock"
    with run_server(backend, auth_optional=True) as first, \
            run_server(backend, auth_optional=True) as second:
        listen_unix(first, path)
        with pytest.raises(OSError) as raised:
            listen_unix(second, path)
        assert raised.value.errno == errno.EADDRINUSE
        assert second.server.unix_paths == []
        # The first server's socket is untouched and still serves.
        with smtp_client(connect(path)) as client:
            assert client.noop()[0] == 250
    assert not path.exists()


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_other_files_are_never_clobbered(
    start_server: Any, socket_dir: Path, kind: str,
) -> None:
    path = socket_dir / "not-a-socket"
    if kind == "file":
        path.write_text("precious\n")
    else:
        path.mkdir()
        (path / "inside").write_text("precious\n")
    running = start_server(auth_optional=True)
    with pytest.raises(FileExistsError):
        listen_unix(running, path)
    assert running.server.unix_paths == []
    if kind == "file":
        assert path.read_text() == "precious\n"
    else:
        assert (path / "inside").read_text() == "precious\n"


def test_the_socket_file_is_removed_on_close(backend: str, socket_dir: Path) -> None:
    path = socket_dir / "closing.sock"
    with run_server(backend, auth_optional=True) as running:
        listen_unix(running, path)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert not path.exists()


def test_close_removes_only_its_own_socket_file(backend: str, socket_dir: Path) -> None:
    """Someone replaced the file while the server ran: closing leaves theirs."""
    path = socket_dir / "replaced.sock"
    with run_server(backend, auth_optional=True) as running:
        listen_unix(running, path)
        path.unlink()
        path.write_text("someone else's\n")
    assert path.read_text() == "someone else's\n"


def test_a_relative_path_is_removed_after_a_chdir(
    backend: str, socket_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(socket_dir)
    with run_server(backend, auth_optional=True) as running:
        assert listen_unix(running, "relative.sock") == "relative.sock"
        assert running.server.unix_paths == ["relative.sock"]
        monkeypatch.chdir("/")
        with smtp_client(connect(socket_dir / "relative.sock")) as client:
            assert client.noop()[0] == 250
    assert not (socket_dir / "relative.sock").exists()


@pytest.mark.parametrize("mode", [0o600, 0o660, 0o666])
def test_mode_is_applied(start_server: Any, socket_dir: Path, mode: int) -> None:
    running = start_server(auth_optional=True)
    path = listen_unix(running, socket_dir / "mode.sock", mode=mode)
    assert stat.S_IMODE(os.lstat(path).st_mode) == mode
    with smtp_client(connect(path)) as client:
        assert client.noop()[0] == 250


def test_without_a_mode_the_umask_decides(start_server: Any, socket_dir: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)  # (read, not changed)
    running = start_server(auth_optional=True)
    path = listen_unix(running, socket_dir / "umask.sock")
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o777 & ~umask


def test_implicit_tls_needs_a_certificate(start_server: Any, socket_dir: Path) -> None:
    running = start_server(auth_optional=True)
    path = socket_dir / "no-cert.sock"
    with pytest.raises(ValueError, match="implicit-TLS"):
        listen_unix(running, path, secure=True)
    assert not path.exists()


# -- the layer's helper alone ------------------------------------------------------------


def test_bind_unix_and_its_file(socket_dir: Path) -> None:
    path = socket_dir / "layer.sock"
    sock, created = bind_unix(path, mode=0o640)
    try:
        assert created == UnixSocketFile(str(path), os.lstat(path).st_dev, os.lstat(path).st_ino)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o640
        with connect(path):
            conn, _ = sock.accept()
            conn.close()
        with pytest.raises(OSError) as raised:
            bind_unix(path)
        assert raised.value.errno == errno.EADDRINUSE
    finally:
        sock.close()
    assert created.remove()
    assert not created.remove()  # gone already
    with pytest.raises(ValueError):
        bind_unix("")


def test_a_too_long_path_fails_cleanly(socket_dir: Path) -> None:
    path = socket_dir / ("x" * 200)
    with pytest.raises(OSError):
        bind_unix(path)
    assert not path.exists()
