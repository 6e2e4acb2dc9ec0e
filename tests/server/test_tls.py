"""TLS end to end, on every backend: STARTTLS and implicit TLS with real
clients (smtplib, aiosmtplib, openssl s_client and a raw socket), STARTTLS
rules and command injection, SNI, certificate hot reload, client
certificates, protocol versions, ``tls_context``, ``on_secure`` refusals and
handshake failures.

Every server gets two listeners: ``plain`` (STARTTLS offered when a
certificate is configured) and ``tls`` (implicit TLS). Tests parametrised
with ``mode`` run over either one.

Two STARTTLS races have deterministic regression tests: on trio, the
handshake must wait for the 220 still being sent
(``test_stream_start_tls_waits_for_pending_send``); on asyncio, a command
arriving together with the client's Finished must be answered
(``test_starttls_command_with_client_finished``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import queue
import shutil
import smtplib
import socket
import ssl
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import trustme

from smtp_anyio import SMTPError

from .conftest import Inbox, TLSMaterial
from .harness import RunningServer

TIMEOUT = 10.0
LISTENERS: dict[str, dict[str, Any]] = {"plain": {}, "tls": {"secure": True}}
MODES = ["starttls", "implicit"]
BODY = b"Subject: tls\r\n\r\nsecret line\r\n"


# -- what handlers saw -----------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """A snapshot of a session, taken inside a handler."""

    secure: bool
    version: str | None
    cipher: str | None
    servername: str | None
    transmission_type: str
    peer_certificate: Mapping[str, Any] | None
    user: object
    sender: str | None


def snapshot(session: Any) -> Seen:
    info = session.tls
    mail_from = session.envelope.mail_from
    return Seen(
        secure=session.secure,
        version=info.version if info else None,
        cipher=info.cipher if info else None,
        servername=session.servername,
        transmission_type=session.transmission_type,
        peer_certificate=info.peer_certificate if info else None,
        user=session.user,
        sender=mail_from.address if mail_from else None,
    )


class Probe:
    """Handlers that record what they were shown (plain functions, so that
    every backend accepts them)."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.data: list[Seen] = []
        self.secure: list[tuple[Any, Seen]] = []
        self.auth: list[tuple[str, bool]] = []
        self.senders: list[str] = []

    def on_data(self, stream: Any, session: Any) -> None:
        self.data.append(snapshot(session))
        self.inbox.on_data(stream, session)

    def on_secure(self, info: Any, session: Any) -> None:
        self.secure.append((info, snapshot(session)))

    def on_mail_from(self, address: Any, session: Any) -> None:
        self.senders.append(address.address)

    def on_auth(self, auth: Any, session: Any) -> object:
        self.auth.append((auth.username, session.secure))
        if (auth.username, auth.password) == ("user", "secret"):
            return {"name": "user"}
        raise SMTPError(535, "Error: bad credentials", enhanced="5.7.8")

    def handlers(self) -> dict[str, Any]:
        return {
            "on_data": self.on_data, "on_secure": self.on_secure,
            "on_mail_from": self.on_mail_from, "on_auth": self.on_auth,
        }

    def wait(self, count: int) -> list[Seen]:
        self.inbox.wait_for(count)
        return list(self.data)


@pytest.fixture
def probe(inbox: Inbox) -> Probe:
    return Probe(inbox)


def start_tls_server(start_server: Any, tls: TLSMaterial, probe: Probe, **options: Any) -> Any:
    """Both listeners, the probe's handlers, mail without AUTH."""
    settings: dict[str, Any] = {"auth_optional": True, **probe.handlers(), **tls.server_options}
    settings.update(options)
    return start_server(listeners=LISTENERS, **settings)


def der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def leaf_options(cert: trustme.LeafCert) -> dict[str, bytes]:
    return {
        "key": cert.private_key_pem.bytes(),
        "cert": b"".join(blob.bytes() for blob in cert.cert_chain_pems),
    }


def subject(certificate: Mapping[str, Any]) -> dict[str, str]:
    return {key: value for rdn in certificate["subject"] for key, value in rdn}


def plain_b64(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


# -- a raw client ----------------------------------------------------------------------


class Client:
    """SMTP over a socket, line by line, every read bounded by TIMEOUT.

    Nothing is read ahead past a reply, so that the bytes before a TLS
    handshake are exactly known.
    """

    def __init__(self, host: str, port: int) -> None:
        self.sock: socket.socket = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buf = b""

    @classmethod
    def connect(
        cls, running: RunningServer, mode: str, context: ssl.SSLContext,
        server_hostname: str | None = "localhost",
    ) -> Client:
        """Connected and right after the TLS handshake: on the implicit port
        the greeting is still to be read; after STARTTLS nothing is pending."""
        client = cls(running.host, running.ports["plain" if mode == "starttls" else "tls"])
        try:
            if mode == "starttls":
                client.expect(220)
                code, lines = client.command("EHLO client.example")
                assert code == 250 and "STARTTLS" in lines, lines
                client.expect(220, "STARTTLS")
            client.wrap(context, server_hostname)
        except BaseException:
            client.close()
            raise
        return client

    @classmethod
    def open(
        cls, running: RunningServer, mode: str, context: ssl.SSLContext,
        server_hostname: str | None = "localhost",
    ) -> Client:
        """Connected, over TLS, greeted with EHLO."""
        client = cls.connect(running, mode, context, server_hostname)
        try:
            if mode == "implicit":
                client.expect(220)
            client.expect(250, "EHLO client.example")
        except BaseException:
            client.close()
            raise
        return client

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def wrap(self, context: ssl.SSLContext, server_hostname: str | None = "localhost") -> None:
        assert self.buf == b"", f"bytes before the TLS handshake: {self.buf!r}"
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self) -> str:
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"connection closed; pending {self.buf!r}")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def reply(self) -> tuple[int, list[str]]:
        lines = []
        while True:
            line = self.read_line()
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), lines

    def command(self, line: str) -> tuple[int, list[str]]:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def expect(self, code: int, line: str | None = None) -> list[str]:
        got, lines = self.command(line) if line is not None else self.reply()
        assert got == code, (line, got, lines)
        return lines

    def send_message(
        self, sender: str = "a@example.com", rcpt: str = "b@example.com", body: bytes = BODY
    ) -> tuple[int, list[str]]:
        self.expect(250, f"MAIL FROM:<{sender}>")
        self.expect(250, f"RCPT TO:<{rcpt}>")
        self.expect(354, "DATA")
        self.send(body + b".\r\n")
        return self.reply()

    def wait_closed(self) -> bytes:
        """Read until the server closes (a reset or a TLS alert counts too);
        a timeout fails the test."""
        data = self.buf
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            while chunk := self.sock.recv(65536):
                data += chunk
        return data

    def peer_der(self) -> bytes:
        assert isinstance(self.sock, ssl.SSLSocket)
        der_cert = self.sock.getpeercert(binary_form=True)
        assert der_cert is not None
        return der_cert

    def san(self) -> tuple[tuple[str, str], ...]:
        # getpeercert() is empty without verification: decode the DER instead.
        from cryptography import x509

        cert = x509.load_der_x509_certificate(self.peer_der())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return tuple(("DNS", name) for name in names.get_values_for_type(x509.DNSName))


REFUSED = (ssl.SSLError, ConnectionError, EOFError)
"""How a refused TLS client fails (a timeout is not among them: that is a hang)."""


def assert_refused(running: RunningServer, mode: str, context: ssl.SSLContext) -> None:
    """The handshake fails, or the server closes right after it (TLS 1.3
    checks the client certificate after the client has finished)."""
    with pytest.raises(REFUSED):
        client = Client.connect(running, mode, context)
        with client:
            if mode == "implicit":
                client.expect(220)
            client.expect(250, "EHLO client.example")


def smtplib_client(running: RunningServer, mode: str, context: ssl.SSLContext) -> smtplib.SMTP:
    if mode == "implicit":
        return smtplib.SMTP_SSL(
            "127.0.0.1", running.ports["tls"], context=context, timeout=TIMEOUT)
    client = smtplib.SMTP("127.0.0.1", running.ports["plain"], timeout=TIMEOUT)
    try:
        client.starttls(context=context)
    except BaseException:
        client.close()
        raise
    return client


def assert_serves(running: RunningServer, mode: str, tls: TLSMaterial, inbox: Inbox) -> None:
    """A well-behaved client still gets its message delivered."""
    before = len(inbox.messages)
    with smtplib_client(running, mode, tls.client_context()) as client:
        assert client.sendmail("next@example.com", ["b@example.com"], BODY) == {}
    assert inbox.wait_for(before + 1)[-1].sender == "next@example.com"


# -- openssl s_client ------------------------------------------------------------------


class SClient:
    """``openssl s_client -quiet`` driven through its stdin and stdout."""

    def __init__(self, args: list[str], log: Path) -> None:
        self._log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            ["openssl", "s_client", *args, "-quiet", "-verify_return_error"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
        )
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stderr(self) -> str:
        self._log.flush()
        return self._log_path.read_text(errors="replace")

    def reply(self) -> tuple[int, list[str]]:
        lines = []
        while True:
            try:
                raw = self._lines.get(timeout=TIMEOUT)
            except queue.Empty:
                raise TimeoutError(f"s_client: no reply; stderr: {self.stderr()}") from None
            if raw is None:
                raise EOFError(f"s_client exited; stderr: {self.stderr()}")
            line = raw.decode().rstrip("\r\n")
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), lines

    def command(self, line: str) -> tuple[int, list[str]]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\r\n")
        self.proc.stdin.flush()
        return self.reply()

    def wait_exit(self) -> int:
        """s_client exits when the server closes the connection."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        return self.proc.wait(timeout=TIMEOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")


# == STARTTLS ==========================================================================


def test_starttls_smtplib(start_server: Any, probe: Probe, tls: TLSMaterial) -> None:
    running = start_tls_server(start_server, tls, probe)
    with smtplib.SMTP("127.0.0.1", running.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        code, _ = client.starttls(context=tls.client_context())
        assert code == 220
        assert client.sendmail("a@example.com", ["b@example.com"], BODY) == {}
        cipher = client.sock.cipher()
    [message] = probe.inbox.wait_for(1)
    assert message.body == BODY
    [seen] = probe.data
    assert seen.secure is True
    assert seen.version in ("TLSv1.2", "TLSv1.3")
    assert seen.cipher == cipher[0]
    assert seen.transmission_type == "ESMTPS"
    [(info, at_secure)] = probe.secure
    assert info.version == seen.version and at_secure.secure


def test_starttls_aiosmtplib(start_server: Any, probe: Probe, tls: TLSMaterial) -> None:
    running = start_tls_server(start_server, tls, probe)

    async def send() -> None:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=running.port, start_tls=False,
            tls_context=tls.client_context(), timeout=TIMEOUT,
        )
        async with client:
            await client.ehlo()
            assert client.supports_extension("starttls")
            response = await client.starttls()
            assert response.code == 220
            assert not client.supports_extension("starttls")
            errors, _ = await client.sendmail("a@example.com", ["b@example.com"], BODY)
            assert errors == {}

    asyncio.run(send())
    [message] = probe.inbox.wait_for(1)
    assert message.body == BODY
    assert probe.data[0].secure and probe.data[0].transmission_type == "ESMTPS"


def _s_client_session(client: SClient) -> None:
    code, lines = client.command("EHLO openssl.example")
    assert code == 250 and "STARTTLS" not in lines, lines
    assert client.command("MAIL FROM:<a@example.com>")[0] == 250
    assert client.command("RCPT TO:<b@example.com>")[0] == 250
    assert client.command("DATA")[0] == 354
    code, _ = client.command("Subject: openssl\r\n\r\nover s_client\r\n.")
    assert code == 250
    assert client.command("QUIT")[0] == 221


@needs_openssl
@pytest.mark.parametrize("mode", MODES)
def test_openssl_s_client(
    start_server: Any, probe: Probe, tls: TLSMaterial, tmp_path: Path, mode: str
) -> None:
    running = start_tls_server(start_server, tls, probe)
    ca = tmp_path / "ca.pem"
    tls.ca.cert_pem.write_to_path(str(ca))
    args = ["-connect", f"127.0.0.1:{running.ports['tls']}"]
    if mode == "starttls":
        args = ["-starttls", "smtp", "-connect", f"127.0.0.1:{running.port}"]
    args += ["-CAfile", str(ca), "-verify_hostname", "localhost", "-nocommands"]
    client = SClient(args, tmp_path / "s_client.log")
    try:
        if mode == "implicit":
            assert client.reply()[0] == 220
        _s_client_session(client)
        client.wait_exit()
    finally:
        client.kill()
    [message] = probe.inbox.wait_for(1)
    assert message.body == b"Subject: openssl\r\n\r\nover s_client\r\n"
    assert probe.data[0].secure and probe.data[0].transmission_type == "ESMTPS"


def test_ehlo_again_after_starttls(start_server: Any, probe: Probe, tls: TLSMaterial) -> None:
    running = start_tls_server(start_server, tls, probe)
    with smtplib.SMTP("127.0.0.1", running.port, timeout=TIMEOUT) as client:
        client.ehlo()
        client.starttls(context=tls.client_context())
        code, text = client.docmd("MAIL", "FROM:<a@example.com>")
        assert code == 503, text
        code, _ = client.ehlo("again.example")
        assert code == 250
        assert not client.has_extn("starttls")
        code, text = client.docmd("STARTTLS")
        assert code == 503, text
        # still usable after the refused second STARTTLS
        assert client.sendmail("a@example.com", ["b@example.com"], BODY) == {}
    [seen] = probe.wait(1)
    assert seen.secure


def test_starttls_drops_injected_commands(
    start_server: Any, probe: Probe, tls: TLSMaterial
) -> None:
    """CVE-2011-0411: commands pipelined behind STARTTLS in plain text must
    not be executed inside the TLS session."""
    running = start_tls_server(start_server, tls, probe)
    with Client(running.host, running.port) as client:
        client.expect(220)
        client.expect(250, "EHLO client.example")
        client.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@example.com>\r\n")
        client.expect(220)
        client.wrap(tls.client_context())  # asserts nothing followed the 220
        code, lines = client.command("EHLO client.example")
        assert code == 250 and lines[0].startswith(str(running.server.protocol_config.name))
        # no sender in the session: RCPT is out of sequence
        code, lines = client.command("RCPT TO:<b@example.com>")
        assert code == 503, lines
        assert client.send_message("good@example.com")[0] == 250
        client.expect(221, "QUIT")
    [seen] = probe.wait(1)
    assert seen.sender == "good@example.com"
    assert probe.senders == ["good@example.com"]


class BioClient:
    """TLS over memory BIOs: the test decides which bytes leave together, so
    that the first command can travel in the same segment as the client's
    Finished message (legitimate in TLS 1.3: the client may send at once)."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.buf = b""

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.incoming.write(data)

    def handshake_holding_finished(self) -> None:
        """Run the handshake up to, not including, sending the last flight."""
        while True:
            try:
                self.tls.do_handshake()
                return
            except ssl.SSLWantReadError:
                if self.outgoing.pending:
                    self.sock.sendall(self.outgoing.read())
                self._receive()

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self.sock.sendall(self.outgoing.read())  # with the Finished, if still held

    def reply(self) -> tuple[int, list[str]]:
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                try:
                    self.buf += self.tls.read(65536)
                except ssl.SSLWantReadError:
                    self._receive()
            raw, self.buf = self.buf.split(b"\r\n", 1)
            line = raw.decode()
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), lines


def test_starttls_command_with_client_finished(
    start_server: Any, probe: Probe, tls: TLSMaterial
) -> None:
    """The EHLO sent in the same segment as the client's Finished is answered
    (on asyncio, loop.start_tls() can deliver it before the handshake is
    reported complete: it must be held and fed to the core after it)."""
    running = start_tls_server(start_server, tls, probe)
    with Client(running.host, running.port) as raw:
        raw.expect(220)
        raw.expect(250, "EHLO client.example")
        raw.expect(220, "STARTTLS")
        raw.sock.settimeout(3.0)  # the reply is due at once
        client = BioClient(raw.sock, tls.client_context())
        client.handshake_holding_finished()
        assert client.tls.version() == "TLSv1.3"
        client.send(b"EHLO client.example\r\n")
        code, lines = client.reply()
        assert code == 250 and "STARTTLS" not in lines, lines
        client.send(b"MAIL FROM:<a@example.com>\r\n")
        assert client.reply()[0] == 250
    assert probe.senders == ["a@example.com"]


def test_starttls_forgets_transaction(
    start_server: Any, probe: Probe, tls: TLSMaterial
) -> None:
    """RFC 3207 4.2: a sender given before STARTTLS is forgotten after it
    (or STARTTLS is refused while the transaction is open)."""
    running = start_tls_server(start_server, tls, probe)
    with Client(running.host, running.port) as client:
        client.expect(220)
        client.expect(250, "EHLO client.example")
        client.expect(250, "MAIL FROM:<plain@example.com>")
        code, lines = client.command("STARTTLS")
        if code == 503:
            client.expect(250, "RSET")
            code, lines = client.command("STARTTLS")
        assert code == 220, lines
        client.wrap(tls.client_context())
        client.expect(250, "EHLO client.example")
        code, lines = client.command("RCPT TO:<b@example.com>")
        assert code == 503, lines
        assert client.send_message()[0] == 250
    [seen] = probe.wait(1)
    assert seen.secure and seen.sender == "a@example.com"


# == implicit TLS ======================================================================


def test_implicit_tls_smtplib(start_server: Any, probe: Probe, tls: TLSMaterial) -> None:
    running = start_tls_server(start_server, tls, probe)
    with smtplib.SMTP_SSL(
        "127.0.0.1", running.ports["tls"], context=tls.client_context(), timeout=TIMEOUT
    ) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        assert client.sendmail("a@example.com", ["b@example.com"], BODY) == {}
        code, _ = client.docmd("STARTTLS")
        assert code == 503
    [message] = probe.inbox.wait_for(1)
    assert message.body == BODY
    [seen] = probe.data
    assert seen.secure and seen.transmission_type == "ESMTPS"
    assert seen.version in ("TLSv1.2", "TLSv1.3") and seen.cipher
    assert len(probe.secure) == 1


def test_implicit_tls_aiosmtplib(start_server: Any, probe: Probe, tls: TLSMaterial) -> None:
    running = start_tls_server(start_server, tls, probe)

    async def send() -> None:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=running.ports["tls"], use_tls=True,
            tls_context=tls.client_context(), timeout=TIMEOUT,
        )
        async with client:
            errors, _ = await client.sendmail("a@example.com", ["b@example.com"], BODY)
            assert errors == {}

    asyncio.run(send())
    [message] = probe.inbox.wait_for(1)
    assert message.body == BODY
    assert probe.data[0].secure


# == needs_upgrade and AUTH ============================================================


def test_needs_upgrade(start_server: Any, probe: Probe, tls: TLSMaterial) -> None:
    running = start_tls_server(start_server, tls, probe, needs_upgrade=True)
    with smtplib.SMTP("127.0.0.1", running.port, timeout=TIMEOUT) as client:
        client.ehlo()
        code, text = client.docmd("MAIL", "FROM:<a@example.com>")
        assert (code, text[:6]) == (530, b"5.7.0 "), text
        code, text = client.docmd("AUTH", "PLAIN " + plain_b64("user", "secret"))
        assert (code, text[:6]) == (530, b"5.7.0 "), text
        client.starttls(context=tls.client_context())
        client.ehlo()
        client.login("user", "secret")
        assert client.sendmail("a@example.com", ["b@example.com"], BODY) == {}
    [seen] = probe.wait(1)
    assert seen.transmission_type == "ESMTPSA"
    assert probe.auth == [("user", True)]
    # on the implicit-TLS listener the session is secure from the start
    with smtplib.SMTP_SSL(
        "127.0.0.1", running.ports["tls"], context=tls.client_context(), timeout=TIMEOUT
    ) as client:
        assert client.sendmail("c@example.com", ["b@example.com"], BODY) == {}
    assert probe.wait(2)[1].sender == "c@example.com"


def test_auth_needs_tls(start_server: Any, probe: Probe, tls: TLSMaterial) -> None:
    running = start_tls_server(start_server, tls, probe, auth_optional=False)
    with smtplib.SMTP("127.0.0.1", running.port, timeout=TIMEOUT) as client:
        client.ehlo()
        code, text = client.docmd("AUTH", "PLAIN " + plain_b64("user", "secret"))
        assert (code, text[:7]) == (538, b"5.7.11 "), text
        client.starttls(context=tls.client_context())
        client.ehlo()
        code, _ = client.login("user", "secret")
        assert code == 235
        assert client.sendmail("a@example.com", ["b@example.com"], BODY) == {}
    [seen] = probe.wait(1)
    assert seen.user == {"name": "user"}
    assert seen.transmission_type == "ESMTPSA"
    assert probe.auth == [("user", True)]  # the plain-text attempt never reached on_auth


# == SNI ==================================================================================


@pytest.fixture(scope="module")
def sni_cert(tls: TLSMaterial) -> trustme.LeafCert:
    return tls.ca.issue_cert("mail.example.com")


@pytest.mark.parametrize("form", ["pem", "context"])
@pytest.mark.parametrize("mode", MODES)
def test_sni(  # noqa: PLR0917
    start_server: Any, probe: Probe, tls: TLSMaterial, sni_cert: trustme.LeafCert,
    mode: str, form: str,
) -> None:
    per_name: Any = leaf_options(sni_cert)
    if form == "context":
        per_name = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sni_cert.configure_cert(per_name)
    running = start_tls_server(
        start_server, tls, probe, sni_options={"mail.example.com": per_name})
    with Client.open(running, mode, tls.client_context(), "mail.example.com") as client:
        assert client.san() == (("DNS", "mail.example.com"),)
        assert client.send_message()[0] == 250
    unchecked = tls.client_context()
    unchecked.check_hostname = False
    with Client.open(running, mode, unchecked, "other.example.org") as client:
        assert client.peer_der() == der(tls.cert)
        assert client.send_message()[0] == 250
    first, second = probe.wait(2)
    assert first.servername == "mail.example.com"
    assert second.servername == "other.example.org"
    assert [seen.servername for _info, seen in probe.secure] == [
        "mail.example.com", "other.example.org"]
    assert [info.servername for info, _seen in probe.secure] == [
        "mail.example.com", "other.example.org"]


def test_no_sni_gets_default(start_server: Any, probe: Probe, tls: TLSMaterial,
                             sni_cert: trustme.LeafCert) -> None:
    running = start_tls_server(
        start_server, tls, probe, sni_options={"mail.example.com": leaf_options(sni_cert)})
    for mode in MODES:
        # an IP address as server_hostname: no SNI extension is sent
        with Client.open(running, mode, tls.client_context(), "127.0.0.1") as client:
            assert client.peer_der() == der(tls.cert)
            assert client.send_message()[0] == 250
    assert [seen.servername for seen in probe.wait(2)] == [None, None]


# == certificate hot reload ==============================================================


@pytest.mark.parametrize("mode", MODES)
def test_certificate_hot_reload(
    start_server: Any, probe: Probe, tls: TLSMaterial, mode: str
) -> None:
    running = start_tls_server(start_server, tls, probe)
    new = tls.ca.issue_cert("localhost", "127.0.0.1")
    old_der, new_der = der(tls.cert), der(new)
    assert old_der != new_der
    no_sni = tls.client_context()
    no_sni.check_hostname = False
    with Client.open(running, mode, tls.client_context()) as first:
        assert first.peer_der() == old_der
        running.call(functools.partial(running.server.update_secure_context, **leaf_options(new)))
        with Client.open(running, mode, tls.client_context()) as second:
            assert second.peer_der() == new_der
            assert second.send_message(sender="second@example.com")[0] == 250
        with Client.open(running, mode, no_sni, None) as third:
            assert third.peer_der() == new_der
        # the session opened before the reload goes on, with its certificate
        assert first.send_message(sender="first@example.com")[0] == 250
        assert first.peer_der() == old_der
        first.expect(221, "QUIT")
    senders = [m.sender for m in probe.inbox.wait_for(2)]
    assert senders == ["second@example.com", "first@example.com"]


@pytest.mark.parametrize("change", ["min_version", "request_cert"])
@pytest.mark.parametrize("mode", MODES)
def test_reload_applies_tls_options(
    start_server: Any, probe: Probe, tls: TLSMaterial, mode: str, change: str
) -> None:
    """update_secure_context() applies the protocol bounds and the verify
    mode too, not only the certificates, to the handshakes that follow."""
    running = start_tls_server(start_server, tls, probe)
    client = tls.client_context()
    if change == "min_version":
        options: dict[str, Any] = {"min_version": "TLSv1.3"}
        client.maximum_version = ssl.TLSVersion.TLSv1_2
    else:
        options = {"request_cert": True, "ca": tls.ca.cert_pem.bytes()}
    with Client.open(running, mode, client) as before:  # accepted before the change
        assert before.send_message()[0] == 250
    running.call(functools.partial(running.server.update_secure_context, **options))
    assert_refused(running, mode, client)


def test_reload_ca(
    start_server: Any, probe: Probe, tls: TLSMaterial, client_cert: trustme.LeafCert
) -> None:
    running = start_tls_server(
        start_server, tls, probe, request_cert=True, ca=tls.ca.cert_pem.bytes())
    other_ca = trustme.CA()
    other = other_ca.issue_cert("other-client.example")
    for mode in MODES:
        with Client.open(running, mode, with_client_cert(tls, client_cert)) as client:
            assert client.send_message()[0] == 250
        assert_refused(running, mode, with_client_cert(tls, other))
    running.call(functools.partial(
        running.server.update_secure_context, ca=other_ca.cert_pem.bytes()))
    for mode in MODES:
        with Client.open(running, mode, with_client_cert(tls, other)) as client:
            assert client.send_message()[0] == 250
        assert_refused(running, mode, with_client_cert(tls, client_cert))
    assert len(probe.wait(4)) == 4


@pytest.mark.parametrize("mode", MODES)
def test_reload_key_cert_over_tls_context(
    start_server: Any, probe: Probe, tls: TLSMaterial, mode: str
) -> None:
    """key and cert given to update_secure_context() replace a tls_context
    (or are refused loudly), never silently ignored."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.cert.configure_cert(context)
    running = start_server(
        listeners=LISTENERS, auth_optional=True, tls_context=context, **probe.handlers())
    new = tls.ca.issue_cert("localhost", "127.0.0.1")
    try:
        running.call(functools.partial(running.server.update_secure_context, **leaf_options(new)))
    except (ValueError, TypeError):
        return  # refusing the change loudly is fine too
    with Client.open(running, mode, tls.client_context()) as client:
        assert client.peer_der() == der(new)


@pytest.mark.parametrize("mode", MODES)
def test_reload_tls_context(start_server: Any, probe: Probe, tls: TLSMaterial, mode: str) -> None:
    first = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.cert.configure_cert(first)
    running = start_server(
        listeners=LISTENERS, auth_optional=True, tls_context=first, **probe.handlers())
    new = tls.ca.issue_cert("localhost", "127.0.0.1")
    second = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    new.configure_cert(second)
    with Client.open(running, mode, tls.client_context()) as before:
        running.call(functools.partial(running.server.update_secure_context, tls_context=second))
        with Client.open(running, mode, tls.client_context()) as after:
            assert after.peer_der() == der(new)
        assert before.send_message()[0] == 250
        assert before.peer_der() == der(tls.cert)


# == client certificates ==================================================================


@pytest.fixture(scope="module")
def client_cert(tls: TLSMaterial) -> trustme.LeafCert:
    return tls.ca.issue_cert("client.example.com", common_name="smtp client")


def with_client_cert(tls: TLSMaterial, cert: trustme.LeafCert) -> ssl.SSLContext:
    ctx = tls.client_context()
    cert.configure_cert(ctx)
    return ctx


@pytest.mark.parametrize("mode", MODES)
def test_client_certificate_required(
    start_server: Any, probe: Probe, tls: TLSMaterial, client_cert: trustme.LeafCert,
    mode: str,
) -> None:
    running = start_tls_server(
        start_server, tls, probe, request_cert=True, reject_unauthorized=True,
        ca=tls.ca.cert_pem.bytes(),
    )
    with Client.open(running, mode, with_client_cert(tls, client_cert)) as client:
        assert client.send_message()[0] == 250
    [seen] = probe.wait(1)
    [(info, _)] = probe.secure
    assert info.peer_certificate is not None
    assert subject(info.peer_certificate)["commonName"] == "smtp client"
    assert seen.peer_certificate is not None
    assert subject(seen.peer_certificate)["commonName"] == "smtp client"
    # no certificate, or one from another CA: refused; the server goes on
    assert_refused(running, mode, tls.client_context())
    stranger = trustme.CA().issue_cert("client.example.com")
    assert_refused(running, mode, with_client_cert(tls, stranger))
    with Client.open(running, mode, with_client_cert(tls, client_cert)) as client:
        assert client.send_message(sender="again@example.com")[0] == 250
    assert probe.inbox.wait_for(2)[1].sender == "again@example.com"
    assert len(probe.secure) == 2


@pytest.mark.parametrize("mode", MODES)
def test_client_certificate_optional(
    start_server: Any, probe: Probe, tls: TLSMaterial, client_cert: trustme.LeafCert,
    mode: str,
) -> None:
    running = start_tls_server(
        start_server, tls, probe, request_cert=True, reject_unauthorized=False,
        ca=tls.ca.cert_pem.bytes(),
    )
    with Client.open(running, mode, tls.client_context()) as client:
        assert client.send_message()[0] == 250
    with Client.open(running, mode, with_client_cert(tls, client_cert)) as client:
        assert client.send_message()[0] == 250
    without, with_cert = probe.wait(2)
    assert without.secure and without.peer_certificate is None
    assert with_cert.peer_certificate is not None
    assert subject(with_cert.peer_certificate)["commonName"] == "smtp client"


# == protocol versions ====================================================================


@pytest.mark.parametrize("mode", MODES)
def test_min_version(
    start_server: Any, probe: Probe, tls: TLSMaterial, mode: str
) -> None:
    running = start_tls_server(start_server, tls, probe, min_version="TLSv1.3")
    old = tls.client_context()
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(REFUSED):
        Client.connect(running, mode, old).close()
    with Client.open(running, mode, tls.client_context()) as client:
        assert client.send_message()[0] == 250
    [seen] = probe.wait(1)
    assert seen.version == "TLSv1.3"
    assert len(probe.secure) == 1


@pytest.mark.parametrize("mode", MODES)
def test_max_version(
    start_server: Any, probe: Probe, tls: TLSMaterial, mode: str
) -> None:
    running = start_tls_server(start_server, tls, probe, max_version="TLSv1.2")
    with Client.open(running, mode, tls.client_context()) as client:
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.version() == "TLSv1.2"
        assert client.send_message()[0] == 250
    [seen] = probe.wait(1)
    assert seen.version == "TLSv1.2"
    assert seen.cipher


# == tls_context ==========================================================================


@pytest.mark.parametrize("mode", MODES)
def test_tls_context_option(
    start_server: Any, probe: Probe, tls: TLSMaterial, mode: str
) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.cert.configure_cert(context)
    running = start_server(
        listeners=LISTENERS, auth_optional=True, tls_context=context, **probe.handlers())
    with smtplib_client(running, mode, tls.client_context()) as client:
        assert client.sendmail("a@example.com", ["b@example.com"], BODY) == {}
    [seen] = probe.wait(1)
    assert seen.secure and seen.version


# == on_secure refusals ===================================================================


@pytest.mark.parametrize("mode", MODES)
def test_on_secure_refuses(
    start_server: Any, inbox: Inbox, tls: TLSMaterial, mode: str
) -> None:
    calls: list[str | None] = []

    def on_secure(info: Any, session: Any) -> None:
        calls.append(info.version)
        if len(calls) == 1:
            raise SMTPError(554, "no")

    running = start_server(
        listeners=LISTENERS, auth_optional=True, on_secure=on_secure,
        on_data=inbox.on_data, **tls.server_options,
    )
    with Client.connect(running, mode, tls.client_context()) as client:
        code, lines = client.reply()
        assert code == 554 and lines[-1].endswith("no"), lines
        client.wait_closed()
    assert len(calls) == 1
    assert_serves(running, mode, tls, inbox)


# == handshake failures ===================================================================


def test_starttls_garbage_handshake(
    start_server: Any, inbox: Inbox, tls: TLSMaterial
) -> None:
    running = start_server(
        listeners=LISTENERS, auth_optional=True, on_data=inbox.on_data, **tls.server_options)
    with Client(running.host, running.port) as client:
        client.expect(220)
        client.expect(250, "EHLO client.example")
        client.expect(220, "STARTTLS")
        client.send(b"this is not a TLS ClientHello\r\n" * 4)
        assert b"250" not in client.wait_closed()
    assert_serves(running, "starttls", tls, inbox)


def test_plaintext_client_on_implicit_port(
    start_server: Any, inbox: Inbox, tls: TLSMaterial
) -> None:
    running = start_server(
        listeners=LISTENERS, auth_optional=True, on_data=inbox.on_data, **tls.server_options)
    with Client(running.host, running.ports["tls"]) as client:
        client.send(b"EHLO plain.example\r\n")
        assert b"220" not in client.wait_closed()
    assert_serves(running, "implicit", tls, inbox)


def test_client_gone_during_handshake(
    start_server: Any, inbox: Inbox, tls: TLSMaterial
) -> None:
    running = start_server(
        listeners=LISTENERS, auth_optional=True, on_data=inbox.on_data, **tls.server_options)
    for port in (running.port, running.ports["tls"]):
        with Client(running.host, port) as client:
            if port == running.port:
                client.expect(220)
                client.expect(220, "STARTTLS")
            client.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # half a ClientHello
    assert_serves(running, "starttls", tls, inbox)
    assert_serves(running, "implicit", tls, inbox)


@pytest.mark.parametrize("mode", MODES)
def test_silent_client_during_handshake(
    start_server: Any, inbox: Inbox, tls: TLSMaterial, mode: str
) -> None:
    """A client that never sends its ClientHello is dropped after
    socket_timeout (the read below would time out otherwise); after STARTTLS
    the session then ends at once (on_close, its max_clients slot freed)."""
    closed = threading.Event()
    running = start_server(
        listeners=LISTENERS, auth_optional=True, on_data=inbox.on_data,
        on_close=lambda session: closed.set(), socket_timeout=0.5, **tls.server_options,
    )
    with Client(running.host, running.ports["plain" if mode == "starttls" else "tls"]) as client:
        if mode == "starttls":
            client.expect(220)
            client.expect(220, "STARTTLS")
        assert client.wait_closed() == b""
    if mode == "starttls":
        assert closed.wait(2.5), "on_close not called within 2.5 s of the close"
    assert_serves(running, mode, tls, inbox)


@pytest.mark.parametrize("mode", MODES)
def test_tls_client_hangup_logs_no_warning(
    start_server: Any, inbox: Inbox, tls: TLSMaterial, mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A TLS client that hangs up without QUIT is routine, not a warning
    (asyncio's 'returning true from eof_received() has no effect when using
    ssl' included)."""
    closed = threading.Event()
    running = start_server(
        listeners=LISTENERS, auth_optional=True, on_data=inbox.on_data,
        on_close=lambda session: closed.set(), **tls.server_options,
    )
    with caplog.at_level("WARNING"):
        with Client.open(running, mode, tls.client_context()):
            pass  # hang up without QUIT
        assert closed.wait(TIMEOUT)
    assert [r.getMessage() for r in caplog.records if r.levelname != "INFO"] == []
    assert_serves(running, mode, tls, inbox)


# == without a certificate ================================================================


def test_no_certificate_no_starttls(start_server: Any, inbox: Inbox) -> None:
    running = start_server(auth_optional=True, on_data=inbox.on_data)
    with Client(running.host, running.port) as client:
        client.expect(220)
        lines = client.expect(250, "EHLO client.example")
        assert "STARTTLS" not in lines
        code, lines = client.command("STARTTLS")
        assert code == 502, lines
        assert client.send_message()[0] == 250
    assert inbox.wait_for(1)[0].sender == "a@example.com"


def test_implicit_listener_needs_certificate(start_server: Any) -> None:
    raised: list[BaseException] = []
    try:  # the error may come wrapped in an exception group by the server's task group
        start_server(listeners={"tls": {"secure": True}})
    except* ValueError as group:
        raised.extend(group.exceptions)
    assert raised and "key and cert" in str(raised[0])


# == STARTTLS while the 220 is still being sent (trio) ====================================


def test_stream_start_tls_waits_for_pending_send(tls: TLSMaterial) -> None:
    """White-box: StreamIO.start_tls must not write its handshake while an
    earlier send (the 220 to STARTTLS, sent by the reader task) is still in
    progress. The transport's send blocks until released; a ClientHello is
    waiting to be read. Runs the anyio stream transport on trio."""
    import anyio
    from anyio.abc import ByteStream

    from smtp_anyio import TLSConfig
    from smtp_anyio._io_stream import StreamIO

    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    hello_maker = tls.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        hello_maker.do_handshake()
    client_hello = outgoing.read()
    assert client_hello

    class Transport(ByteStream):
        def __init__(self) -> None:
            self.release = anyio.Event()
            self.sending = 0
            self.overlaps = 0
            self.sent: list[bytes] = []
            self.hello_given = False

        async def send(self, item: bytes) -> None:
            self.overlaps += self.sending
            self.sending += 1
            try:
                if not self.sent:
                    await self.release.wait()  # the 220 is slow to go out
                self.sent.append(bytes(item))
            finally:
                self.sending -= 1

        async def receive(self, max_bytes: int = 65536) -> bytes:
            if not self.hello_given:
                self.hello_given = True
                return client_hello
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def send_eof(self) -> None:
            pass

        async def aclose(self) -> None:
            pass

    context = TLSConfig(**tls.server_options).build()

    async def main() -> int:
        transport = Transport()
        io = StreamIO(transport)
        io.write(b"220 2.0.0 Ready to start TLS\r\n")
        async with anyio.create_task_group() as tg:
            tg.start_soon(io.flush)
            await anyio.wait_all_tasks_blocked()
            assert transport.sending == 1
            tg.start_soon(io.start_tls, context, TIMEOUT)
            await anyio.wait_all_tasks_blocked()
            transport.release.set()
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        assert transport.sent[0].startswith(b"220 ")
        assert len(transport.sent) >= 2, "no ServerHello was sent"
        return transport.overlaps

    assert anyio.run(main, backend="trio") == 0
