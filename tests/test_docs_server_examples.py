"""The server guide's examples (docs/examples/anyio_*.py), run for real.

Every program and module the pages under docs/server/ include is exercised
here against 127.0.0.1: servers bind port 0 and run either in a thread (the
guide's own ``ServerThread``, anyio's blocking portal) or as a subprocess
whose output names its port; clients are smtplib, raw sockets and the
``openssl`` command. Shell commands and inline snippets are read from the
pages themselves, so what the reader copies is what ran. Nothing sleeps to
wait for readiness: a listening socket is ready, and output lines are read
as they come.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trustme

from smtp_anyio import SMTPError, SMTPServer

from .example_programs import (
    EXAMPLES,
    ROOT,
    TIMEOUT,
    Program,
    Raw,
    child_env,
    example,
    without_trace,
)

PAGES = ROOT / "docs" / "server"


# -- loading the examples ------------------------------------------------------


def load(name: str) -> ModuleType:
    """Import docs/examples/<name>.py under a private module name."""
    module_name = f"docs_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ServerThread = load("anyio_embedded").ServerThread


def _backends() -> list[str]:
    names = ["asyncio", "uvloop", "trio"]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        names.remove("uvloop")
    return names


BACKENDS = _backends()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# STARTTLS on trio loses a race: the handshake may start while the reader
# task is still sending the 220, and trio refuses two concurrent senders
# (BusyResourceError, about one connection in five). Until StreamIO.start_tls
# waits for that send, the STARTTLS examples run on the asyncio loops only.
STARTTLS_BACKENDS = [name for name in BACKENDS if name != "trio"]


@pytest.fixture(params=STARTTLS_BACKENDS)
def starttls_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def serving(server: SMTPServer, backend: str = "asyncio") -> Iterator[Any]:
    """``server`` in a background thread on 127.0.0.1:<free port>."""
    if backend == "uvloop":
        thread = ServerThread(server, backend="asyncio", backend_options={"use_uvloop": True})
    else:
        thread = ServerThread(server, backend=backend)
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


def port_of(thread: Any) -> int:
    return int(thread.address[1])


# -- TLS material ----------------------------------------------------------------


class Certificates:
    """A CA that clients trust, and certificates it issues, as PEM files."""

    def __init__(self) -> None:
        self.ca = trustme.CA(organization_name="docs test CA")
        self.relay_ca = trustme.CA(organization_name="relay CA")
        self.other_ca = trustme.CA(organization_name="stranger CA")

    def issue(self, *names: str, common_name: str | None = None) -> trustme.LeafCert:
        return self.ca.issue_cert(*names, common_name=common_name)

    @staticmethod
    def write(leaf: trustme.LeafCert, cert_path: Path, key_path: Path) -> None:
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        cert_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key_path.write_bytes(leaf.private_key_pem.bytes())

    def client_context(self, *, client: trustme.LeafCert | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if client is not None:
            client.configure_cert(context)
        return context


@pytest.fixture(scope="session")
def certs() -> Certificates:
    return Certificates()


def common_name(sock: ssl.SSLSocket | dict[str, Any]) -> str:
    subject = (sock if isinstance(sock, dict) else sock.getpeercert())["subject"]
    return next(value for rdn in subject for key, value in rdn if key == "commonName")


def insecure_peer(sock: ssl.SSLSocket) -> dict[str, Any]:
    """The peer certificate of an unverified connection, decoded."""
    der = sock.getpeercert(binary_form=True)
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    certificate = x509.load_der_x509_certificate(der)
    [cn] = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return {"subject": ((("commonName", cn.value),),)}


def server_name(server: SMTPServer) -> str:
    """The name in the server's greeting and 421s (by default the host's FQDN)."""
    return server.protocol_config.name


@pytest.fixture
def cert_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certs: Certificates) -> Path:
    """A working directory with cert/cert.pem and cert/key.pem (for
    localhost), as the TLS page's examples expect."""
    certs.write(certs.issue("localhost", "127.0.0.1", common_name="localhost"),
                tmp_path / "cert" / "cert.pem", tmp_path / "cert" / "key.pem")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cert"


def starttls(port: int, context: ssl.SSLContext, servername: str | None = "localhost",
             ) -> tuple[Raw, ssl.SSLSocket, list[str]]:
    """EHLO, STARTTLS and the handshake by hand, so that the SNI name is
    ours to choose; returns the client, its TLS socket and the reply to its
    second EHLO."""
    raw = Raw(port)
    assert raw.reply()[0].startswith("220")
    raw.command("EHLO client.example")
    assert raw.command("STARTTLS")[0].startswith("220")
    raw.file.close()
    tls = context.wrap_socket(raw.sock, server_hostname=servername)
    secure = Raw(port, sock=tls)
    return secure, tls, secure.command("EHLO client.example")


# -- reading the pages -----------------------------------------------------------


def code_blocks(page: str, language: str) -> list[str]:
    """The ``.. code-block:: <language>`` contents of docs/server/<page>.rst."""
    lines = (PAGES / f"{page}.rst").read_text(encoding="utf-8").splitlines()
    blocks = []
    for number, line in enumerate(lines):
        found = re.fullmatch(r"(\s*)\.\. code-block:: (\S+)\s*", line)
        if not found or found.group(2) != language:
            continue
        base = len(found.group(1))
        body: list[str] = []
        for following in lines[number + 1:]:
            indent = len(following) - len(following.lstrip())
            if following.strip() and indent <= base:
                break
            body.append(following)
        content = [line for line in body if not re.fullmatch(r"\s*:\w[\w-]*:.*", line)]
        text = textwrap.dedent("\n".join(content)).strip("\n")
        blocks.append(text + "\n")
    return blocks


def shell_block(page: str, marker: str) -> str:
    """The one shell block of ``page`` that contains ``marker``."""
    found = [block for block in code_blocks(page, "sh") if marker in block]
    assert len(found) == 1, f"{len(found)} sh blocks of {page}.rst contain {marker!r}"
    return found[0]


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a shell block (continuation lines joined, comments dropped)."""
    joined = block.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(words)
    return commands


def with_python(words: list[str]) -> list[str]:
    return [sys.executable, *words[1:]] if words[0] in ("python", "python3") else words


def any_port(words: list[str]) -> list[str]:
    """``HOST:PORT`` arguments with port 0: let the system pick (not the
    address of a relay, which is somebody else's)."""
    return [w if i and words[i - 1] == "--relay"
            else re.sub(r"^(127\.0\.0\.1|localhost):\d+$", r"127.0.0.1:0", w)
            for i, w in enumerate(words)]


# ==============================================================================
# Getting started
# ==============================================================================


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_quickstart_prints_the_message_sent_by_anyio_send(backend_name: str) -> None:
    with Program(example("anyio_quickstart", "--port", "0", "--backend", backend_name)) as server:
        port = server.port()
        sender = subprocess.run(example("anyio_send", str(port)), env=child_env(), check=False,
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert sender.returncode == 0, sender.stderr
        summary = server.wait_for(r"^message from <(.*)> to <(.*)>: (\d+) bytes$")
        assert summary.groups()[:2] == ("alice@example.org", "bob@example.com")
        server.wait_for(r"^Subject: Hello from smtplib")
        server.wait_for(r"^It works!")


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_quickstart_stops_on_ctrl_c(backend_name: str) -> None:
    with Program(example("anyio_quickstart", "--port", "0", "--backend", backend_name)) as server:
        server.port()
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(TIMEOUT) == 0, server.stderr


def test_server_thread_as_in_its_docstring(backend: str) -> None:
    received: list[bytes] = []

    async def on_data(stream: Any, session: Any) -> None:
        received.append(await stream.read())

    server = SMTPServer(on_data=on_data, auth_optional=True)
    with serving(server, backend) as thread:
        host, port = thread.address
        with smtplib.SMTP(host, port, timeout=TIMEOUT) as client:
            client.sendmail("a@example.org", ["b@example.com"], b"Subject: hi\r\n\r\nhi\r\n")
        assert thread.call(lambda: server.listening) == (thread.address,)
    assert received == [b"Subject: hi\r\n\r\nhi\r\n"]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_lmtp_on_a_unix_socket_example(backend_name: str) -> None:
    socket_dir = Path(tempfile.mkdtemp(prefix="docs-", dir="/tmp"))  # short: AF_UNIX paths
    path = socket_dir / "lmtp.sock"
    path.touch()  # a file that is no socket: refused, and left alone
    argv = example("anyio_unix_socket", "--socket", str(path), "--mode", "600",
                   "--backend", backend_name)
    try:
        with Program(argv) as refused:
            assert refused.exit_status() != 0
        assert "not a socket" in refused.stderr
        assert path.is_file()
        path.unlink()
        with Program(argv) as server:
            assert server.wait_for(r"^listening on unix:(.*)$").group(1) == str(path)
            assert path.is_socket() and path.stat().st_mode & 0o777 == 0o600
            with smtplib.LMTP(str(path), timeout=TIMEOUT) as client:
                client.ehlo("mx.example.org")
                client.mail("a@example.org")
                client.rcpt("bob@example.com")
                assert client.data(b"Subject: x\r\n\r\nhi\r\n") == (
                    250, b"2.0.0 OK: delivered to bob@example.com")
            server.wait_for(r"^\d+ bytes for bob@example\.com from a local client$")
            server.proc.send_signal(signal.SIGTERM)
            server.wait_for(r"^SIGTERM: closing$")
            assert server.exit_status() == 0, server.stderr
        assert not path.exists()  # removed at close
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


# ==============================================================================
# TLS
# ==============================================================================


def test_starttls_and_implicit_tls_program(cert_dir: Path, certs: Certificates) -> None:
    context = certs.client_context()
    argv = example("anyio_tls", "--cert", "cert/cert.pem", "--key", "cert/key.pem",
                   "--port", "0", "--implicit-port", "0")
    with Program(argv, cwd=cert_dir.parent) as program:
        starttls_port = program.port(r"STARTTLS on 127\.0\.0\.1:(\d+)")
        implicit_port = program.port(r"implicit TLS on 127\.0\.0\.1:(\d+)")
        with smtplib.SMTP("localhost", starttls_port, timeout=TIMEOUT) as client:
            client.ehlo()
            assert client.has_extn("starttls")
            # needs_upgrade: nothing before STARTTLS
            assert client.mail("someone@example.org") == (
                530, b"5.7.0 Error: must issue a STARTTLS command first")
            client.rset()
            client.starttls(context=context)
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                client.login("user", "wrong")
            assert refused.value.smtp_code == 535
            client.login("user", "pass")
            client.sendmail("user@example.org", ["bob@example.com"], b"Subject: 1\r\n\r\none\r\n")
        program.wait_for(r"^user sent 19 bytes over TLSv1\.[23]$")
        with smtplib.SMTP_SSL("localhost", implicit_port, context=context,
                              timeout=TIMEOUT) as client:
            client.login("user", "pass")
            client.sendmail("user@example.org", ["bob@example.com"], b"Subject: 2\r\n\r\ntwo\r\n")
        program.wait_for(r"^user sent 19 bytes over TLSv1\.[23]$")


def check_certificate(server: SMTPServer, context: ssl.SSLContext, expected_cn: str) -> None:
    with serving(server) as thread, \
            smtplib.SMTP("localhost", port_of(thread), timeout=TIMEOUT) as client:
        client.starttls(context=context)
        assert common_name(client.sock) == expected_cn
        assert client.noop()[0] == 250


def test_certificates_from_files_pem_text_and_passphrase(
    cert_dir: Path, certs: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives import serialization

    tls = load("anyio_tls_options")
    context = certs.client_context()
    check_certificate(tls.from_files(), context, "localhost")

    leaf = certs.issue("localhost", common_name="from-environment")
    monkeypatch.setenv("SMTP_TLS_KEY", leaf.private_key_pem.bytes().decode())
    monkeypatch.setenv("SMTP_TLS_CERT", leaf.cert_chain_pems[0].bytes().decode())
    check_certificate(tls.from_pem_text(), context, "from-environment")

    key = serialization.load_pem_private_key((cert_dir / "key.pem").read_bytes(), None)
    (cert_dir / "key-encrypted.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"open sesame")))
    monkeypatch.setenv("SMTP_TLS_PASSPHRASE", "open sesame")
    check_certificate(tls.with_passphrase(), context, "localhost")


def test_lets_encrypt_layout(tmp_path: Path, certs: Certificates) -> None:
    tls = load("anyio_tls_options")
    live = tmp_path / "live"
    leaf = certs.issue("localhost", "mail.example.org", common_name="mail.example.org")
    folder = live / "mail.example.org"
    certs.write(leaf, folder / "fullchain.pem", folder / "privkey.pem")
    server = tls.lets_encrypt("mail.example.org", live=live)
    check_certificate(server, certs.client_context(), "mail.example.org")
    with serving(server) as thread, Raw(port_of(thread)) as raw:
        assert raw.reply() == ["220 mail.example.org ESMTP"]


def test_sni_picks_the_certificate_by_name(
    cert_dir: Path, certs: Certificates, starttls_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for prefix, name in (("default", "localhost"), ("example", "mail.example.com"),
                         ("another", "smtp.example.net")):
        certs.write(certs.issue(name, common_name=name),
                    cert_dir / f"{prefix}-cert.pem", cert_dir / f"{prefix}-key.pem")
    server = load("anyio_tls_options").with_sni()
    context = certs.client_context()
    with serving(server, starttls_backend) as thread:
        for servername in ("mail.example.com", "smtp.example.net", "localhost"):
            client, sock, ehlo = starttls(port_of(thread), context, servername)
            with client:
                assert common_name(sock) == servername
                assert ehlo[-1].startswith("250 ")
        # no SNI at all: the default certificate
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        client, sock, ehlo = starttls(port_of(thread), insecure, servername=None)
        with client:
            assert ehlo[-1].startswith("250 ")
            assert common_name(insecure_peer(sock)) == "localhost"
    logged = capsys.readouterr().out
    for servername in ("mail.example.com", "smtp.example.net", "localhost", "None"):
        assert re.search(rf"\] TLSv1\.[23] \S+ SNI={re.escape(servername)}$", logged, re.M)


def test_min_version(cert_dir: Path, certs: Certificates) -> None:
    server = load("anyio_tls_options").tls13_only()
    with serving(server) as thread:
        old = certs.client_context()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        client = smtplib.SMTP("localhost", port_of(thread), timeout=TIMEOUT)
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, OSError)):
            client.starttls(context=old)
        client.close()
        with smtplib.SMTP("localhost", port_of(thread), timeout=TIMEOUT) as client:
            client.starttls(context=certs.client_context())
            assert client.sock.version() == "TLSv1.3"


def test_ssl_context_with_ciphers_and_key_log(
    cert_dir: Path, certs: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    keylog = cert_dir / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    server = load("anyio_tls_options").from_ssl_context()
    context = certs.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with serving(server) as thread, \
            smtplib.SMTP("localhost", port_of(thread), timeout=TIMEOUT) as client:
        client.starttls(context=context)
        cipher = client.sock.cipher()[0]
        assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher)
        assert client.noop()[0] == 250
    assert "CLIENT_RANDOM" in keylog.read_text()


@pytest.fixture
def relay_certs(cert_dir: Path, certs: Certificates) -> dict[str, trustme.LeafCert]:
    (cert_dir / "relay-ca.pem").write_bytes(certs.relay_ca.cert_pem.bytes())
    return {
        "relay": certs.relay_ca.issue_cert("relay1.example.net"),
        "stranger": certs.relay_ca.issue_cert("stranger.example.net"),
        "other CA": certs.other_ca.issue_cert("relay1.example.net"),
    }


def test_client_certificates_required(
    relay_certs: dict[str, trustme.LeafCert], certs: Certificates, starttls_backend: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = load("anyio_tls_client_certs").relay_server()
    with serving(server, starttls_backend) as thread:
        port = port_of(thread)
        with smtplib.SMTP("localhost", port, timeout=TIMEOUT) as client:
            assert "auth" not in client.ehlo()[1].decode().lower()
            client.starttls(context=certs.client_context(client=relay_certs["relay"]))
            client.sendmail("a@example.net", ["b@example.org"], b"Subject: x\r\n\r\nrelay\r\n")
        # without a certificate, or with one of another CA: no handshake
        for client_cert in (None, relay_certs["other CA"]):
            client = smtplib.SMTP("localhost", port, timeout=TIMEOUT)
            with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, OSError)):
                client.starttls(context=certs.client_context(client=client_cert))
                client.noop()
            client.close()
        # a valid certificate of someone who may not relay: on_secure says 554
        with smtplib.SMTP("localhost", port, timeout=TIMEOUT) as client:
            client.starttls(context=certs.client_context(client=relay_certs["stranger"]))
            assert client.getreply() == (
                554, f"5.7.1 {server_name(server)} Error: this certificate may not relay".encode())
    assert "21 bytes relayed by relay1.example.net" in capsys.readouterr().out


def test_client_certificates_optional(
    relay_certs: dict[str, trustme.LeafCert], certs: Certificates,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = load("anyio_tls_client_certs").optional_certificate_server()
    with serving(server) as thread:
        port = port_of(thread)
        for client_cert in (None, relay_certs["relay"]):
            with smtplib.SMTP("localhost", port, timeout=TIMEOUT) as client:
                client.starttls(context=certs.client_context(client=client_cert))
                client.sendmail("a@example.net", ["b@example.org"], b"x\r\n")
        # Python's ssl still refuses a certificate it cannot verify
        client = smtplib.SMTP("localhost", port, timeout=TIMEOUT)
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, OSError)):
            client.starttls(context=certs.client_context(client=relay_certs["other CA"]))
            client.noop()
        client.close()
    out = capsys.readouterr().out
    assert "3 bytes relayed by None" in out
    assert "3 bytes relayed by relay1.example.net" in out


def test_certificate_reload(tmp_path: Path, certs: Certificates) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    certs.write(certs.issue("localhost", common_name="old"), cert, key)
    context = certs.client_context()
    argv = example("anyio_tls_reload", "--cert", str(cert), "--key", str(key),
                   "--port", "0", "--interval", "0.05")
    with Program(argv) as program:
        port = program.port()
        first = smtplib.SMTP_SSL("localhost", port, context=context, timeout=TIMEOUT)
        assert common_name(first.sock) == "old"
        # a renewal writes the certificate first: a mismatching pair is not loaded
        new = certs.issue("localhost", common_name="new")
        (tmp_path / "cert.new").write_bytes(b"".join(b.bytes() for b in new.cert_chain_pems))
        os.replace(tmp_path / "cert.new", cert)
        program.wait_for(r"^keeping the old certificate: ")
        with smtplib.SMTP_SSL("localhost", port, context=context, timeout=TIMEOUT) as meanwhile:
            assert common_name(meanwhile.sock) == "old"
        (tmp_path / "key.new").write_bytes(new.private_key_pem.bytes())
        os.replace(tmp_path / "key.new", key)
        program.wait_for(r"^TLS certificates reloaded$")
        with smtplib.SMTP_SSL("localhost", port, context=context, timeout=TIMEOUT) as second:
            assert common_name(second.sock) == "new"
        # the connection opened before goes on with its certificate
        assert first.sendmail("a@example.org", ["b@example.com"], b"still here\r\n") == {}
        assert common_name(first.sock) == "old"
        first.quit()


def test_openssl_commands_of_the_tls_page(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    block = shell_block("tls", "openssl req")
    subprocess.run(["sh", "-ec", block], cwd=tmp_path, check=True, capture_output=True,
                   timeout=120)
    cert, key = tmp_path / "cert" / "cert.pem", tmp_path / "cert" / "key.pem"
    context = ssl.create_default_context(cafile=str(cert))  # trust the self-signed cert
    server = SMTPServer(key=str(key), cert=str(cert), auth_optional=True)
    # On asyncio, a command that arrives in the same read as the client's
    # TLS 1.3 Finished is lost (start_tls delivers it before the handshake is
    # reported), and s_client sends its first line at once: the interactive
    # STARTTLS session runs against TLS 1.2 until that is fixed.
    tls12 = SMTPServer(key=str(key), cert=str(cert), max_version="TLSv1.2", auth_optional=True)
    implicit = SMTPServer(key=str(key), cert=str(cert), secure=True, auth_optional=True)
    with serving(server) as thread, serving(tls12) as thread12, serving(implicit) as thread465:
        with smtplib.SMTP("localhost", port_of(thread), timeout=TIMEOUT) as client:
            client.starttls(context=context)  # verifies the name "localhost"
            assert client.noop()[0] == 250

        def run(marker: str, port: int, stdin: str = "") -> subprocess.CompletedProcess[str]:
            command = re.sub(r"localhost:(587|465)", f"127.0.0.1:{port}",
                             shell_block("tls", marker))
            return subprocess.run(["sh", "-c", command], input=stdin, capture_output=True,
                                  text=True, timeout=TIMEOUT, cwd=tmp_path, check=False)

        brief = run("-brief", port_of(thread))
        assert "CONNECTION ESTABLISHED" in brief.stderr
        assert "Protocol version: TLSv1.3" in brief.stderr
        assert "CN = localhost" in brief.stderr
        chat = run("-starttls smtp -connect localhost:587 -crlf", port_of(thread12),
                   "EHLO client.example\nQUIT\n")
        assert "250 AUTH PLAIN LOGIN" in chat.stdout
        assert "STARTTLS" not in chat.stdout  # already secure: not offered again
        assert "221 2.0.0 Bye" in chat.stdout
        direct = run("-connect localhost:465", port_of(thread465), "EHLO client.example\nQUIT\n")
        assert direct.stdout.startswith("220 localhost ESMTP")
        assert "221 2.0.0 Bye" in direct.stdout


# ==============================================================================
# Authentication
# ==============================================================================


@pytest.fixture
def submission(cert_dir: Path, certs: Certificates, starttls_backend: str) -> Iterator[int]:
    server = load("anyio_auth").build_server("cert/cert.pem", "cert/key.pem")
    with serving(server, starttls_backend) as thread:
        yield port_of(thread)


def secure_client(port: int, certs: Certificates) -> smtplib.SMTP:
    client = smtplib.SMTP("localhost", port, timeout=TIMEOUT)
    client.starttls(context=certs.client_context())
    client.ehlo()
    return client


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_auth_mechanisms(
    submission: int, certs: Certificates, mechanism: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with secure_client(submission, certs) as client:
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "CRAM-MD5"]
        client.user, client.password = "alice", "wonderland"
        method = {"PLAIN": client.auth_plain, "LOGIN": client.auth_login,
                  "CRAM-MD5": client.auth_cram_md5}[mechanism]
        assert client.auth(mechanism, method, initial_response_ok=False) == (
            235, b"2.7.0 Authentication successful")
        refused = client.sendmail("alice@example.org", ["bob@example.com"], b"hi\r\n")
        assert refused == {}
        # session.user is the User object: on_mail_from checks its addresses
        assert client.mail("bob@example.org") == (
            553, b"5.7.1 Error: alice may not send as <bob@example.org>")
    assert "alice sent 4 bytes (ESMTPSA)" in capsys.readouterr().out


def test_auth_refusals(submission: int, certs: Certificates) -> None:
    with smtplib.SMTP("localhost", submission, timeout=TIMEOUT) as client:
        client.ehlo()
        assert "PLAIN" in client.esmtp_features["auth"]  # advertised before TLS...
        code, text = client.docmd("AUTH", "PLAIN " + base64.b64encode(
            b"\0alice\0wonderland").decode())
        assert (code, text) == (538, b"5.7.11 Error: must issue a STARTTLS command first")
        assert client.mail("alice@example.org") == (
            530, b"5.7.0 Error: log in first, see https://example.org/help")
    with secure_client(submission, certs) as client:

        def plain(user: str, password: str) -> tuple[int, bytes]:
            client.user, client.password = user, password
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                client.auth("PLAIN", client.auth_plain)
            return refused.value.smtp_code, refused.value.smtp_error

        assert plain("alice", "rabbit") == (
            535, b"5.7.8 Error: authentication credentials invalid")
        assert plain("mallory", "secret") == (
            535, b"5.7.8 Error: account disabled, see https://example.org/help")
        assert plain("nobody", "x")[0] == 535
        # max_auth_failures=3: the 4th failure closes the connection
        assert plain("nobody", "x")[0] == 535
        code, text = client.getreply()
        assert code == 421
        assert text.endswith(b" Error: too many failed authentication attempts")


def test_auth_on_plain_text_for_development(capsys: pytest.CaptureFixture[str]) -> None:
    server = load("anyio_auth").development_server()
    with serving(server) as thread, \
            smtplib.SMTP("127.0.0.1", port_of(thread), timeout=TIMEOUT) as client:
        client.login("alice", "wonderland")
        client.sendmail("alice@example.org", ["bob@example.com"], b"hello\r\n")
    assert "alice sent 7 bytes (ESMTPA)" in capsys.readouterr().out


def test_xoauth2(cert_dir: Path, certs: Certificates, starttls_backend: str) -> None:
    server = load("anyio_auth_xoauth2").build_server("cert/cert.pem", "cert/key.pem")
    challenges: list[bytes] = []

    def xoauth2(user: str, token: str) -> Callable[[bytes | None], str]:
        def respond(challenge: bytes | None = None) -> str:
            if challenge is None:
                return f"user={user}\x01auth=Bearer {token}\x01\x01"
            challenges.append(challenge)  # the error challenge: answer with nothing
            return ""
        return respond

    with serving(server, starttls_backend) as thread, \
            secure_client(port_of(thread), certs) as client:
        assert client.esmtp_features["auth"].strip() == "XOAUTH2"
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.auth("XOAUTH2", xoauth2("alice@example.org", "expired"))
        assert refused.value.smtp_code == 535
        assert refused.value.smtp_error == b"5.7.8 Error: invalid or expired token"
        assert json.loads(challenges[0]) == {
            "status": "401", "schemes": "bearer", "scope": "https://mail.example.org/"}
        accepted = client.auth("XOAUTH2", xoauth2("alice@example.org", "ya29.a0-valid-token"))
        assert accepted == (235, b"2.7.0 Authentication successful")


def test_xclient_login(capsys: pytest.CaptureFixture[str]) -> None:
    server = load("anyio_auth_xclient").backend_server()
    with serving(server) as thread, Raw(port_of(thread)) as raw:
        raw.reply()
        assert raw.command("EHLO proxy.example")[-1].startswith("250 XCLIENT ")
        assert raw.command("MAIL FROM:<alice@example.org>")[0].startswith("530 5.7.0")
        assert raw.command("XCLIENT ADDR=203.0.113.7 LOGIN=alice")[0].startswith("220 ")
        raw.command("EHLO client.example")
        for line in ("MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.com>"):
            assert raw.command(line)[0].startswith("250 ")
        assert raw.command("DATA")[0].startswith("354")
        assert raw.command("hello\r\n.")[0].startswith("250 ")
    out = capsys.readouterr().out
    assert "from alice at 203.0.113.7 (proxy said {" in out
    assert "'LOGIN': 'alice'" in out


# ==============================================================================
# Configuration
# ==============================================================================


def documented_options() -> dict[str, str]:
    """Option name -> its default cell, from the tables of configuration.rst."""
    text = (PAGES / "configuration.rst").read_text(encoding="utf-8")
    rows = re.findall(r"^\s*\* - ``(\w+)``\n\s*- (.*)$", text, re.M)
    return dict(rows)


def test_every_option_is_documented_with_its_default() -> None:
    from dataclasses import MISSING, fields

    from smtp_anyio import ServerConfig, TLSConfig
    from smtp_server import BackendOptions

    documented = documented_options()
    actual = {}
    for cls in (ServerConfig, TLSConfig, BackendOptions):
        for field in fields(cls):
            if field.init:  # the derived flags of ServerConfig are no options
                actual[field.name] = field.default
    assert sorted(documented) == sorted(actual)
    for name, cell in documented.items():
        literal = re.fullmatch(r"``(.+)``", cell.strip())
        if literal is None or actual[name] is MISSING:
            continue
        default = actual[name]
        expected = ast.literal_eval(literal.group(1))
        if isinstance(default, frozenset | tuple):
            default = type(expected)(default)
        assert default == expected, name


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unknown SMTPServer options: sze"):
        SMTPServer(sze=1000)


def test_mx_and_submission_configurations(cert_dir: Path, certs: Certificates) -> None:
    config = load("anyio_configuration")
    with serving(config.mx_server("cert/cert.pem", "cert/key.pem")) as thread:
        port = port_of(thread)
        with smtplib.SMTP("localhost", port, timeout=TIMEOUT) as client:
            assert client.ehlo()[0] == 250
            assert client.esmtp_features["size"] == "26214400"
            assert "auth" not in client.esmtp_features
            assert client.has_extn("starttls")
            client.mail("a@example.net")
            for n in range(100):
                assert client.rcpt(f"user{n}@example.org")[0] == 250
            assert client.rcpt("one-too-many@example.org") == (
                452, b"4.5.3 Error: too many recipients")
        with Raw(port) as raw:  # talks before the greeting
            raw.send("EHLO early.example\r\n")
            assert raw.reply() == ["421 4.7.0 mx.example.org You talk too soon"]
    with serving(config.submission_server("cert/cert.pem", "cert/key.pem")) as thread, \
            smtplib.SMTP("localhost", port_of(thread), timeout=TIMEOUT) as client:
        assert client.ehlo()[0] == 250
        assert client.mail("a@example.org") == (
            530, b"5.7.0 Error: must issue a STARTTLS command first")
    with serving(config.submission_server("cert/cert.pem", "cert/key.pem")) as thread, \
            Raw(port_of(thread)) as raw:
        assert raw.reply() == [
            "220 smtp.example.org ESMTP Submission only, see https://example.org/help"]


def test_hardened_mx_configuration(cert_dir: Path, certs: Certificates) -> None:
    """The security page's configuration, limiting loopback too for the test."""
    config = load("anyio_configuration")
    server = config.hardened_mx("cert/cert.pem", "cert/key.pem", trusted=())
    with serving(server) as thread, contextlib.ExitStack() as stack:
        port = port_of(thread)
        clients = [stack.enter_context(Raw(port)) for _ in range(20)]
        assert all(client.reply()[0].startswith("220 ") for client in clients)
        with Raw(port) as one_too_many:
            assert one_too_many.reply() == [
                "421 4.7.0 mx.example.org Too many connections from your address"]
        bot = clients[0]
        bot.send("EHLO bot.example\r\nMAIL FROM:<a@example.net>\r\n"
                 "RCPT TO:<b@example.org>\r\nDATA\r\nSubject: spam\r\n\r\nx\r\n.\r\n")
        replies = [bot.reply() for _ in range(4)]
        assert replies[-1] == ["554 5.5.0 Error: SMTP protocol synchronization"]
        assert bot.reply() == ["<closed>"]


# ==============================================================================
# Handlers
# ==============================================================================


def test_inbound_server_handlers(
    cert_dir: Path, certs: Certificates, starttls_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    handlers = load("anyio_handlers")
    server = handlers.InboundServer(["bob@example.com"], key="cert/key.pem",
                                    cert="cert/cert.pem")
    with serving(server, starttls_backend) as thread, \
            smtplib.SMTP("localhost", port_of(thread), timeout=TIMEOUT) as client:
        client.starttls(context=certs.client_context())
        client.ehlo("client.example")
        assert client.mail("x@spam.example") == (550, b"5.7.1 Error: sender refused")
        client.rset()
        assert client.mail("alice@example.org")[0] == 250
        assert client.rcpt("bob@example.com") == (250, b"2.1.5 OK: <bob@example.com> is local")
        assert client.rcpt("carol@example.com") == (550, b"5.1.1 Error: no such mailbox here")
        code, text = client.data(b"Subject: hi\r\n\r\nhello\r\n")
        assert code == 250 and text.startswith(b"2.0.0 OK: queued as ")
    [stored] = server.stored
    assert (stored.sender, stored.recipients) == ("alice@example.org", ["bob@example.com"])
    assert stored.body == b"Subject: hi\r\n\r\nhello\r\n"
    assert text.decode().endswith(stored.queue_id)
    out = capsys.readouterr().out
    assert re.search(r"^\[\w+\] TLSv1\.[23] \S+$", out, re.M)
    assert re.search(r"^\[\w+\] closed after 1 transaction\(s\)$", out, re.M)

    blocked = handlers.InboundServer(["bob@example.com"], blocked=["127.0.0.0/8"])
    with serving(blocked, starttls_backend) as thread, Raw(port_of(thread)) as raw:
        assert raw.reply() == [
            f"554 5.7.1 {server_name(blocked)} Error: your network is blocked"]
        assert raw.reply() == ["<closed>"]


def test_plain_function_handlers(tmp_path: Path, backend: str) -> None:
    server = load("anyio_handlers_plain").build_server(tmp_path)
    body = b"Subject: spooled\r\n\r\n" + b"x" * 300_000 + b"\r\n"
    with serving(server, backend) as thread:
        with smtplib.SMTP("127.0.0.1", port_of(thread), timeout=TIMEOUT) as client:
            refused = client.sendmail("a@example.org", ["b@example.com", "c@elsewhere.test"],
                                      body)
            assert refused == {"c@elsewhere.test": (550, b"5.7.1 Error: relay access denied")}
        with Raw(port_of(thread)) as raw:  # a message cut short
            raw.reply()
            for line in ("EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>"):
                raw.command(line)
            assert raw.command("DATA")[0].startswith("354")
            raw.send(b"Subject: never finished\r\n" + b"y" * 100_000)
    # stop() has waited for every connection, and so for every on_data
    [spooled] = tmp_path.iterdir()
    assert spooled.read_bytes() == body


def test_unexpected_exception_is_451(backend: str, caplog: pytest.LogCaptureFixture) -> None:
    def on_rcpt_to(address: Any, session: Any) -> None:
        raise KeyError(address.address)  # a bug, not a refusal

    server = SMTPServer(on_rcpt_to=on_rcpt_to, auth_optional=True)
    with serving(server, backend) as thread, \
            smtplib.SMTP("127.0.0.1", port_of(thread), timeout=TIMEOUT) as client:
        client.ehlo()
        client.mail("a@example.org")
        assert client.rcpt("b@example.com") == (451, b"4.3.0 Error: local error in processing")
        assert client.noop()[0] == 250  # the session goes on
    assert "on_rcpt_to failed" in caplog.text
    assert "KeyError" in caplog.text


def test_smtp_error_codes(backend: str) -> None:
    async def on_mail_from(address: Any, session: Any) -> None:
        if address.address.startswith("temp"):
            raise SMTPError(451, "Error: try again later")
        if address.address.startswith("default"):
            raise SMTPError()
        raise SMTPError(250, "not an error code")

    server = SMTPServer(on_mail_from=on_mail_from, auth_optional=True)
    with serving(server, backend) as thread, \
            smtplib.SMTP("127.0.0.1", port_of(thread), timeout=TIMEOUT) as client:
        assert client.ehlo()
        assert client.mail("temp@example.org") == (451, b"4.3.0 Error: try again later")
        assert client.mail("default@example.org") == (550, b"5.1.0 Error 550")
        assert client.mail("odd@example.org") == (451, b"4.3.0 Error: local error in processing")


def test_stream_to_file(tmp_path: Path, backend: str) -> None:
    streaming = load("anyio_stream")
    server = streaming.build_server(tmp_path)
    body = b"Subject: big\r\n\r\n" + b"z" * 2_000_000 + b"\r\n"
    with serving(server, backend) as thread, \
            smtplib.SMTP("127.0.0.1", port_of(thread), timeout=TIMEOUT) as client:
        client.ehlo()
        client.mail("a@example.org")
        client.rcpt("b@example.com")
        code, text = client.data(body)
        assert code == 250
        assert text.startswith(f"2.0.0 OK: {len(body)} bytes queued as ".encode())
    [stored] = (tmp_path / "new").iterdir()
    assert stored.read_bytes() == body
    assert list((tmp_path / "tmp").iterdir()) == []


def test_aborted_messages_leave_no_file(tmp_path: Path, backend: str) -> None:
    streaming = load("anyio_stream")
    for folder in ("tmp", "new"):
        (tmp_path / folder).mkdir()
    server = streaming.SpoolServer(tmp_path, size=1000, auth_optional=True)
    with serving(server, backend) as thread:
        port = port_of(thread)
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            client.ehlo()
            client.mail("a@example.org")  # no SIZE=, which would be refused at once
            client.rcpt("b@example.com")
            assert client.data(b"w" * 5000 + b"\r\n") == (
                552, b"5.3.4 Error: message exceeds fixed maximum message size 1000")
        with Raw(port) as raw:  # BDAT, then RSET: aborted with reason "reset"
            raw.reply()
            for line in ("EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.com>"):
                raw.command(line)
            raw.send("BDAT 5\r\nhello")
            assert raw.reply() == ["250 2.0.0 5 octets received"]
            assert raw.command("RSET")[0] == "250 2.0.0 Flushed"
        with Raw(port) as raw:  # the connection lost in the middle of DATA
            raw.reply()
            for line in ("EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<b@example.com>"):
                raw.command(line)
            assert raw.command("DATA")[0].startswith("354")
            raw.send(b"part of a message\r\n")
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "new").iterdir()) == []


def test_lmtp_reply_per_recipient(tmp_path: Path, backend: str) -> None:
    import mailbox

    lmtp = load("anyio_lmtp")
    for user in ("alice", "carol"):
        mailbox.Maildir(tmp_path / user, create=True)
    mailbox.Maildir(tmp_path / "carol").add(b"x" * 900)  # nearly full
    server = lmtp.DeliveryServer(tmp_path, quota=1000)
    with serving(server, backend) as thread, Raw(port_of(thread)) as raw:
        assert raw.reply() == [f"220 {server_name(server)} LMTP"]
        assert raw.command("LHLO mx.example.org")[0].startswith("250-")
        raw.command("MAIL FROM:<sender@example.net>")
        assert raw.command("RCPT TO:<alice@example.org>") == ["250 2.1.5 Accepted"]
        assert raw.command("RCPT TO:<carol@example.org>") == ["250 2.1.5 Accepted"]
        assert raw.command("RCPT TO:<nobody@example.org>") == ["550 5.1.1 Error: no such user"]
        assert raw.command("DATA")[0].startswith("354")
        raw.send(b"Subject: hi\r\n\r\n" + b"m" * 200 + b"\r\n.\r\n")
        first, second = raw.reply(), raw.reply()
        assert first[0].startswith("250 2.0.0 OK: delivered to alice as ")
        assert second == ["452 4.2.2 Error: mailbox carol is full"]
    [delivered] = (tmp_path / "alice" / "new").iterdir()
    assert delivered.read_bytes().startswith(b"Subject: hi")
    assert len(list((tmp_path / "carol" / "new").iterdir())) == 1


# ==============================================================================
# Session
# ==============================================================================


def test_received_header_and_transmission_types(
    cert_dir: Path, certs: Certificates, starttls_backend: str
) -> None:
    session = load("anyio_session")

    async def on_auth(auth: Any, session: Any) -> str:
        return str(auth.username)

    server = session.TracingServer(
        "mx.example.org", disable_reverse_lookup=True, auth_optional=True,
        allow_insecure_auth=True, on_auth=on_auth, key="cert/key.pem", cert="cert/cert.pem")
    with serving(server, starttls_backend) as thread:
        port = port_of(thread)
        with smtplib.SMTP("localhost", port, timeout=TIMEOUT) as client:
            client.helo("old.example")
            client.sendmail("a@example.org", ["b@example.com"], b"1\r\n")
            client.ehlo("client.example")
            client.sendmail("a@example.org", ["b@example.com", "c@example.com"], b"2\r\n")
            client.login("alice", "x")
            client.sendmail("a@example.org", ["b@example.com"], b"3\r\n")
        with smtplib.SMTP("localhost", port, timeout=TIMEOUT) as client:
            client.starttls(context=certs.client_context())
            client.ehlo("client.example")
            client.sendmail("a@example.org", ["b@example.com"], b"4\r\n")
    headers = [message.decode() for _, message in server.queue]
    assert headers[0].startswith(
        "Received: from old.example (unknown [127.0.0.1])\r\n\tby mx.example.org\r\n"
        "\twith SMTP id ")
    assert "\r\n\tfor <b@example.com>; " in headers[0]
    assert "\twith ESMTP id " in headers[1] and "\tfor <" not in headers[1]
    assert "\twith ESMTPA id " in headers[2]
    assert re.search(r"by mx\.example\.org \(using TLSv1\.3 with cipher \S+\)\r\n"
                     r"\twith ESMTPS id \w+-1\r\n", headers[3])
    records = [json.loads(record) for record, _ in server.queue]
    assert [r["client"]["protocol"] for r in records] == ["SMTP", "ESMTP", "ESMTPA", "ESMTPS"]
    assert records[2]["client"]["user"] == "alice"
    assert [r["client"]["helo"] for r in records] == [
        "old.example", "client.example", "client.example", "client.example"]


def test_queue_record_keeps_dsn_parameters(backend: str) -> None:
    session = load("anyio_session")
    server = session.TracingServer("mx.example.org", hide_dsn=False, auth_optional=True)
    with serving(server, backend) as thread, \
            smtplib.SMTP("127.0.0.1", port_of(thread), timeout=TIMEOUT) as client:
        client.ehlo("client.example")
        assert client.has_extn("dsn")
        client.sendmail(
            "alice@example.org", ["bob@example.com"],
            "Subject: caf\u00e9\r\n\r\n\u00e9\r\n".encode(),
            mail_options=["RET=HDRS", "ENVID=QQ314159", "BODY=8BITMIME", "SMTPUTF8"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@example.com"],
        )
    [(record, _)] = server.queue
    assert json.loads(record) == {
        "sender": "alice@example.org",
        "body": "8bitmime",
        "smtputf8": True,
        "dsn": {"ret": "HDRS", "envid": "QQ314159"},
        "recipients": [{"address": "bob@example.com", "notify": ["SUCCESS", "FAILURE"],
                        "orcpt": "rfc822;bob@example.com"}],
        "client": {"address": "127.0.0.1", "helo": "client.example",
                   "user": None, "protocol": "UTF8SMTP"},  # RFC 6531 3.7.3
    }


# ==============================================================================
# The command-line server
# ==============================================================================


class CLI(Program):
    """``python -m smtp_anyio ...`` as the CLI page shows it, on free ports."""

    def __init__(self, words: list[str], cwd: Path) -> None:
        super().__init__(any_port(with_python(words)), cwd=cwd)
        self.ports: list[int] = []
        self.implicit: list[int] = []
        self.unix: list[str] = []
        while True:
            line = self.line()
            if line.startswith("delivering to "):
                self.maildir = Path(line.removeprefix("delivering to ").split(" (")[0])
                break
            if line.startswith("relaying to "):
                break
            if line.startswith("listening on unix:"):
                self.unix.append(line.removeprefix("listening on unix:"))
                continue
            found = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)( \(implicit TLS\))?", line)
            assert found, line
            (self.implicit if found.group(2) else self.ports).append(int(found.group(1)))

    def delivered(self) -> list[Path]:
        return sorted((self.maildir / "new").iterdir())


def cli_command(marker: str) -> list[str]:
    [words] = [w for w in shell_commands(shell_block("cli", marker)) if w[:3] == [
        "python", "-m", "smtp_anyio"]]
    return words


def test_cli_default_command_delivers_to_a_maildir(tmp_path: Path) -> None:
    with CLI(cli_command("--maildir mail"), tmp_path) as cli:
        assert cli.maildir.resolve() == (tmp_path / "mail").resolve()
        body = b"Subject: cli\r\n\r\nhello\r\n"
        with smtplib.SMTP("127.0.0.1", cli.ports[0], timeout=TIMEOUT) as client:
            reply = client.sendmail("a@example.org", ["b@example.com", "c@example.com"], body)
            assert reply == {}
        line = cli.wait_for(r"^(\S+) from=<a@example\.org> to=<b@example\.com,c@example\.com> "
                            rf"size={len(body)} client=127\.0\.0\.1 "
                            r"session=\w+ tls=\S+ user=\S+ time=\S+Z$")
        [message] = cli.delivered()
        assert message.name == line.group(1)
        stored = message.read_bytes()
        assert without_trace(stored) == b"Subject: cli\r\n\r\nhello\r\n"
        assert stored.startswith(b"Return-Path: <a@example.org>\r\nReceived: from ")
        assert sorted(p.name for p in cli.maildir.iterdir()) == ["cur", "new", "tmp"]


def test_cli_auth_file_and_tls(tmp_path: Path, certs: Certificates) -> None:
    shutil.copy(EXAMPLES / "anyio_cli_users.txt", tmp_path / "users.txt")
    certs.write(certs.issue("localhost", common_name="localhost"),
                tmp_path / "cert" / "cert.pem", tmp_path / "cert" / "key.pem")
    with CLI(cli_command("--auth-file users.txt"), tmp_path) as cli:
        with smtplib.SMTP("localhost", cli.ports[0], timeout=TIMEOUT) as client:
            client.ehlo()
            assert client.mail("a@example.org")[0] == 530  # AUTH is required
            client.starttls(context=certs.client_context())
            client.login("bob", "correct horse battery staple")
            client.sendmail("bob@example.org", ["alice@example.org"], b"hi\r\n")
        with smtplib.SMTP("localhost", cli.ports[0], timeout=TIMEOUT) as client:
            client.starttls(context=certs.client_context())
            client.ehlo()
            client.user, client.password = "alice", "wonderland"
            assert client.auth("CRAM-MD5", client.auth_cram_md5)[0] == 235
        with smtplib.SMTP("localhost", cli.ports[0], timeout=TIMEOUT) as client:
            client.starttls(context=certs.client_context())
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("alice", "wrong")
        cli.wait_for(r" from=<bob@example\.org> to=<alice@example\.org> size=4 ")


def test_cli_self_signed_certificate(tmp_path: Path) -> None:
    with CLI(cli_command("--tls-self-signed"), tmp_path) as cli:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # self-signed: nothing to verify against
        with smtplib.SMTP_SSL("127.0.0.1", cli.implicit[0], context=context,
                              timeout=TIMEOUT) as client:
            assert common_name(insecure_peer(client.sock)) == "localhost"
            client.sendmail("a@example.org", ["b@example.com"], b"secret\r\n")
        cli.wait_for(r" size=8 client=127\.0\.0\.1 session=\w+ tls=\S+ user=\S+ time=\S+Z$")
        with smtplib.SMTP("127.0.0.1", cli.ports[0], timeout=TIMEOUT) as client:
            client.starttls(context=context)
            client.sendmail("a@example.org", ["b@example.com"], b"also secret\r\n")
        cli.wait_for(r" size=13 client=127\.0\.0\.1 session=\w+ tls=\S+ user=\S+ time=\S+Z$")
        assert cli.maildir.name == "tls-mail"


def test_cli_lmtp_with_size_limit(tmp_path: Path) -> None:
    with CLI(cli_command("lmtp-mail"), tmp_path) as cli, Raw(cli.ports[0]) as raw:
        assert raw.reply() == ["220 mail.example.org LMTP"]
        assert "SIZE 10485760" in [line[4:] for line in raw.command("LHLO mx.example.org")]
        raw.command("MAIL FROM:<a@example.org>")
        raw.command("RCPT TO:<b@example.org>")
        raw.command("RCPT TO:<c@example.org>")
        raw.command("DATA")
        raw.send("hello\r\n.\r\n")
        first, second = raw.reply(), raw.reply()
        # A copy per recipient, each with its own reply and Delivered-To.
        assert first[0].startswith("250 2.0.0 OK: queued as ")
        assert second[0].startswith("250 2.0.0 OK: queued as ")
        assert first != second
        copies = sorted(path.read_bytes() for path in cli.delivered())
        assert [copy.split(b"\r\n")[1] for copy in copies] == [
            b"Delivered-To: b@example.org", b"Delivered-To: c@example.org"]
        assert all(without_trace(copy) == b"hello\r\n" for copy in copies)


def test_cli_lmtp_on_a_unix_socket_into_a_maildir_per_recipient(tmp_path: Path) -> None:
    socket_dir = Path(tempfile.mkdtemp(prefix="cli-", dir="/tmp"))  # short: AF_UNIX paths
    words = [{"unix:/run/smtp-anyio/lmtp.sock": f"unix:{socket_dir}/lmtp.sock",
              "/var/mail/vhosts": str(tmp_path / "vhosts")}.get(w, w)
             for w in cli_command("--maildir-per-recipient")]
    try:
        with CLI(words, tmp_path) as cli:
            assert cli.unix == [f"{socket_dir}/lmtp.sock"]
            with smtplib.LMTP(cli.unix[0], timeout=TIMEOUT) as client:
                client.sendmail("a@example.org", ["Bob@example.com"], b"Subject: x\r\n\r\nhi\r\n")
            cli.wait_for(r"^bob/\S+ from=<a@example\.org> to=<Bob@example\.com> ")
            [stored] = (tmp_path / "vhosts" / "bob" / "new").iterdir()
            assert stored.read_bytes().startswith(
                b"Return-Path: <a@example.org>\r\nDelivered-To: Bob@example.com\r\n")
        assert not (socket_dir / "lmtp.sock").exists()  # removed at exit
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_cli_workers_deliver_into_one_maildir(tmp_path: Path) -> None:
    with CLI(cli_command("--workers 2"), tmp_path) as cli:
        for number in range(6):
            with smtplib.SMTP("127.0.0.1", cli.ports[0], timeout=TIMEOUT) as client:
                client.sendmail("a@example.org", ["b@example.com"], f"{number}\r\n".encode())
        assert len(cli.delivered()) == 6
        assert cli.maildir == tmp_path / "shared-mail"
        cli.proc.send_signal(signal.SIGTERM)
        assert cli.exit_status() == 0


def test_cli_relay_passes_messages_on(tmp_path: Path) -> None:
    from smtp_anyio.testing import Controller, MessageLog

    log = MessageLog()
    with Controller(on_data=log, auth_optional=True) as target:
        words = [w.replace("127.0.0.1:10025", f"127.0.0.1:{target.port}")
                 for w in cli_command("--relay")]
        with CLI(words, tmp_path) as cli, \
                smtplib.SMTP("127.0.0.1", cli.ports[0], timeout=TIMEOUT) as client:
            client.sendmail("a@example.org", ["b@example.com"], b"Subject: x\r\n\r\nhi\r\n")
        [message] = log.wait_for(1)
    assert message.data.startswith(b"Received: from ")
    assert message.data.endswith(b"Subject: x\r\n\r\nhi\r\n")
    assert not (tmp_path / "maildir").exists()  # nothing stored


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_stops_on_signals(tmp_path: Path, signum: signal.Signals) -> None:
    with CLI(cli_command("--maildir mail"), tmp_path) as cli:
        with smtplib.SMTP("127.0.0.1", cli.ports[0], timeout=TIMEOUT) as client:
            client.noop()
            cli.proc.send_signal(signum)
            cli.wait_for(rf"^{signum.name}: shutting down$")
            # an idle session is told and closed
            code, text = client.getreply()
            assert code == 421 and text.endswith(b" Service shutting down")
        assert cli.proc.wait(TIMEOUT) == 0


def test_cli_page_documents_every_flag() -> None:
    from smtp_anyio._cli import build_parser

    text = (PAGES / "cli.rst").read_text(encoding="utf-8")
    for action in build_parser()._actions:
        for option in action.option_strings:
            assert f"``{option}" in text, option
    defaults = build_parser().parse_args([])
    assert defaults.listen is None and defaults.maildir == "maildir"


# ==============================================================================
# Running at scale
# ==============================================================================


@pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"),
                    reason="worker processes need fork() and SO_REUSEPORT")
def test_worker_processes_example(cert_dir: Path, certs: Certificates) -> None:
    context = certs.client_context()
    argv = example("anyio_workers", "--port", "0", "--workers", "2",
                   "--cert", "cert/cert.pem", "--key", "cert/key.pem")
    with Program(argv, cwd=cert_dir.parent) as program:
        port = program.port(r"starting 2 workers on 127\.0\.0\.1:(\d+)")
        program.wait_for(r"all 2 workers ready$")

        def workers_met(expected_cn: str) -> set[str]:
            """Messages until both workers have answered, each over STARTTLS
            with the certificate named ``expected_cn``."""
            pids: set[str] = set()
            for _ in range(200):
                with smtplib.SMTP("localhost", port, timeout=TIMEOUT) as client:
                    client.starttls(context=context)
                    assert common_name(client.sock) == expected_cn
                    client.ehlo()
                    client.mail("alice@example.org")
                    client.rcpt("bob@example.com")
                    code, text = client.data(b"Subject: hi\r\n\r\nhi\r\n")
                assert code == 250
                found = re.fullmatch(rb"2\.0\.0 OK: queued by worker (\d+)", text)
                assert found, text
                pids.add(found.group(1).decode())
                program.wait_for(rf"^worker {found.group(1).decode()}: a message of \d+ bytes$")
                if len(pids) == 2:
                    return pids
            pytest.fail(f"200 messages met only the workers {pids}")

        pids = workers_met("localhost")
        certs.write(certs.issue("localhost", common_name="renewed"),
                    cert_dir / "cert.pem", cert_dir / "key.pem")
        program.proc.send_signal(signal.SIGHUP)
        reloaded = {program.wait_for(r"worker \d \(pid (\d+)\): certificates reloaded$")
                    .group(1) for _ in range(2)}
        assert reloaded == pids
        assert workers_met("renewed") == pids
        program.proc.send_signal(signal.SIGTERM)
        program.wait_for(r"all workers have exited$")
        assert program.exit_status() == 0, program.stderr


# ==============================================================================
# Migrating
# ==============================================================================


def test_migrated_smtp_server_application(cert_dir: Path, certs: Certificates) -> None:
    migrated = load("anyio_migrate_smtp_server")
    with serving(migrated.build_server("cert/cert.pem", "cert/key.pem")) as thread, \
            smtplib.SMTP("localhost", port_of(thread), timeout=TIMEOUT) as client:
        client.starttls(context=certs.client_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
            client.login("user", "nope")
        assert wrong.value.smtp_error == b"5.7.8 Invalid username or password"
        client.login("user", "pass")
        assert client.esmtp_features["size"] == "10485760"
        client.mail("user@example.org")
        assert client.rcpt("x@elsewhere.test") == (554, b"5.7.1 Relay access denied")
        assert client.rcpt("bob@example.com")[0] == 250
        code, text = client.data(b"Subject: ported\r\n\r\nhi\r\n")
        assert code == 250 and re.fullmatch(rb"2\.0\.0 Queued as [0-9a-f]{10}", text)


def test_migrated_aiosmtpd_handler(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    migrated = load("anyio_migrate_aiosmtpd")
    with serving(migrated.ExampleServer(auth_methods=()), backend) as thread, \
            smtplib.SMTP("127.0.0.1", port_of(thread), timeout=TIMEOUT) as client:
        client.ehlo()
        assert "auth" not in client.esmtp_features
        refused = client.sendmail("a@example.org", ["b@example.com", "c@example.org"],
                                  b"Subject: port\r\n\r\nported\r\n")
        assert refused == {"c@example.org": (550, b"5.1.1 not relaying to that domain")}
        client.mail("a@example.org")
        client.rcpt("b@example.com")
        assert client.data(b"x\r\n") == (250, b"2.0.0 Message accepted for delivery")
    out = capsys.readouterr().out
    assert "Message from a@example.org\nMessage for ['b@example.com']\n" in out


def test_migrated_aiosmtpd_program() -> None:
    with Program(example("anyio_migrate_aiosmtpd", "0")) as program:
        port = program.port()
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            client.sendmail("a@example.org", ["b@example.com"], b"Subject: x\r\n\r\nbody\r\n")
        program.wait_for(r"^Message for \['b@example\.com'\]$")


# ==============================================================================
# Inline snippets
# ==============================================================================


def python_snippets() -> list[tuple[str, str]]:
    snippets = []
    for page in sorted(PAGES.glob("*.rst")):
        for block in code_blocks(page.stem, "python"):
            snippets.append((page.stem, block))
    return snippets


@pytest.mark.parametrize(("page", "source"), python_snippets())
def test_python_snippets_compile(page: str, source: str) -> None:
    compile(source, f"docs/server/{page}.rst", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_server_docstring_example_compiles() -> None:
    doc = SMTPServer.__doc__ or ""
    example_code = doc.split("::", 1)[1]
    lines = [line[8:] for line in example_code.splitlines() if line.strip()]
    compile("\n".join(lines), "SMTPServer.__doc__", "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_javascript_snippets_parse(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node to check the JavaScript snippets")
    blocks = code_blocks("migrating", "javascript")
    assert blocks
    for number, block in enumerate(blocks):
        path = tmp_path / f"snippet{number}.mjs"
        path.write_text(block)
        checked = subprocess.run([node, "--check", str(path)], capture_output=True, text=True,
                                 timeout=TIMEOUT, check=False)
        assert checked.returncode == 0, (block, checked.stderr)


def test_partial_of_a_coroutine_function_is_awaited() -> None:
    # a partial of a coroutine function is still awaited in the loop
    async def on_data(prefix: str, stream: Any, session: Any) -> str:
        await stream.read()
        return prefix

    server = SMTPServer(on_data=functools.partial(on_data, "OK: partial"), auth_optional=True)
    with serving(server) as thread, \
            smtplib.SMTP("127.0.0.1", port_of(thread), timeout=TIMEOUT) as client:
        client.ehlo()
        client.mail("a@example.org")
        client.rcpt("b@example.com")
        assert client.data(b"x\r\n") == (250, b"2.0.0 OK: partial")
