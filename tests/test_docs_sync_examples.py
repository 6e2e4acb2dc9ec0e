"""The threaded-server page's examples (docs/examples/sync_*.py), run for real.

Every example that docs/server/threaded.rst includes runs here against
127.0.0.1 on a port the system picks: servers either run in this process
(``listen(0)`` first, then ``with server:``) or as a subprocess whose output
names its port. Clients are smtplib and, where smtplib cannot follow (LMTP's
reply per recipient, a message left half-sent), a raw socket. Nothing sleeps
to wait for the server: a listening socket is ready, output lines are read
as they come, and threads report through events and queues.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import mailbox
import queue
import re
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trustme

import smtp_sync
from smtp_sync import SMTPServer

from .example_programs import EXAMPLES, ROOT, TIMEOUT, Program, Raw, child_env, example

PAGE = ROOT / "docs" / "server" / "threaded.rst"
# The line a sync example names its port with, whole.
PORT_LINE = r"^listening on 127\.0\.0\.1:(\d+)$"

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


def load(name: str) -> ModuleType:
    """Import docs/examples/<name>.py under a private module name."""
    module_name = f"docs_sync_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def serving(server: SMTPServer) -> Iterator[int]:
    """As the page says: ``listen()`` first, then ``with server:``; yields
    the port. Leaving closes the server, which waits for every connection
    (and so for every handler) to finish."""
    _, port = server.listen(0)
    with server:
        yield port


def parallel(count: int, work: Callable[[int], Any]) -> list[Any]:
    """``work(0) ... work(count - 1)`` in threads that start together;
    returns their results in order (and re-raises the first error)."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(TIMEOUT)
            results[index] = work(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    if errors:
        raise errors[0]
    return results


def body_of(number: int) -> bytes:
    """A message whose bytes vary: dot-stuffed lines, 8-bit text, sizes."""
    lines = [f"Subject: message {number}".encode(), b"",
             b".a line that starts with a dot", b"..and two",
             "caf\u00e9 \u2014 8-bit".encode(), b"x" * (1000 * number)]
    return b"\r\n".join(lines) + b"\r\n"


# ==============================================================================
# A first threaded server (sync_quickstart.py)
# ==============================================================================


def test_quickstart_prints_the_message_sent_by_anyio_send() -> None:
    with Program(example("sync_quickstart", "--port", "0")) as program:
        port = program.port(PORT_LINE)
        sender = subprocess.run(example("anyio_send", str(port)), env=child_env(), check=False,
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert sender.returncode == 0, sender.stderr
        summary = program.wait_for(r"^message from <(.*)> to <(.*)>: (\d+) bytes$")
        assert summary.groups()[:2] == ("alice@example.org", "bob@example.com")
        program.wait_for(r"^Subject: Hello from smtplib$")
        program.wait_for(r"^It works!$")
        program.proc.send_signal(signal.SIGINT)
        program.wait_for(r"^closed$")
        assert program.exit_status() == 0, program.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_quickstart_closes_gracefully_on_signals(signum: signal.Signals) -> None:
    body = b"Subject: in flight\r\n\r\nfirst half, "
    with Program(example("sync_quickstart", "--port", "0")) as program:
        port = program.port(PORT_LINE)
        with Raw(port) as busy, smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as idle:
            busy.start_message()
            busy.send(body)
            assert idle.noop()[0] == 250
            program.proc.send_signal(signum)
            # The idle client is told at once: the close has begun...
            code, text = idle.getreply()
            assert code == 421 and text.endswith(b" Service shutting down")
            # ...and the message in flight is still received and answered.
            busy.send(b"second half\r\n.\r\n")
            assert busy.reply() == ["250 2.0.0 OK: message queued"]
            assert busy.reply()[0].startswith("421 4.3.2 ")
            assert busy.reply() == ["<closed>"]
        size = len(body) + len(b"second half\r\n")
        program.wait_for(rf"^message from <alice@example\.org> to <bob@example\.com>: {size} ")
        program.wait_for(r"^first half, second half$")
        program.wait_for(r"^closed$")
        assert program.exit_status() == 0, program.stderr


# ==============================================================================
# Embedding in a threaded service (sync_embedded.py)
# ==============================================================================


def test_mail_service_queues_for_its_pool_and_stops_in_order() -> None:
    embedded = load("sync_embedded")
    release = threading.Event()
    handled: queue.Queue[Any] = queue.Queue()

    def handle(job: Any) -> None:
        assert threading.current_thread().name.startswith("mail worker")
        release.wait(TIMEOUT)  # slow work, until the test says so
        handled.put((job, job.parse()["subject"]))

    service = embedded.MailService(handle, workers=2, auth_optional=True)
    host, port = service.start()
    assert (host, port) == service.address == service.server.listening[0]

    def send(number: int) -> tuple[int, bytes]:
        with smtplib.SMTP(host, port, timeout=TIMEOUT) as client:
            client.ehlo()
            client.mail("alice@example.org")
            client.rcpt(f"bob{number}@example.com")
            client.rcpt("carol@example.com")
            return client.data(body_of(number))

    replies = parallel(5, send)
    queue_ids = []
    for code, text in replies:
        found = re.fullmatch(rb"2\.0\.0 OK: queued as ([0-9a-f]{16}\.1)", text)
        assert code == 250 and found, text
        queue_ids.append(found.group(1).decode())
    assert len(set(queue_ids)) == 5  # one connection, one session id each

    stopped = threading.Event()
    stopper = threading.Thread(target=lambda: (service.stop(), stopped.set()))
    stopper.start()
    # close() is idempotent: this returns once the SMTP side is closed,
    # while the workers are still busy with the queued jobs.
    service.server.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=TIMEOUT).close()
    assert handled.empty() and not stopped.is_set()
    release.set()
    stopper.join(TIMEOUT)
    assert stopped.is_set()
    jobs = {}
    while not handled.empty():
        job, subject = handled.get_nowait()
        jobs[job.queue_id] = (job, subject)
    assert sorted(jobs) == sorted(queue_ids)  # stop() waited for every job
    for number, queue_id in enumerate(queue_ids):
        job, subject = jobs[queue_id]
        assert job.sender == "alice@example.org"
        assert job.recipients == (f"bob{number}@example.com", "carol@example.com")
        assert job.data == body_of(number)
        assert subject == f"message {number}"


def test_mail_service_logs_a_failing_job(caplog: pytest.LogCaptureFixture) -> None:
    embedded = load("sync_embedded")

    def handle(job: Any) -> None:
        raise KeyError(job.queue_id)

    with embedded.MailService(handle, auth_optional=True) as (host, port), \
            smtplib.SMTP(host, port, timeout=TIMEOUT) as client:
        client.sendmail("a@example.org", ["b@example.com"], b"hi\r\n")
    assert "failed" in caplog.text and "KeyError" in caplog.text


def write_pair(leaf: trustme.LeafCert, cert: Path, key: Path) -> None:
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())


def starttls_common_name(port: int, context: ssl.SSLContext) -> str:
    with smtplib.SMTP("localhost", port, timeout=TIMEOUT) as client:
        client.starttls(context=context)
        assert isinstance(client.sock, ssl.SSLSocket)
        subject = client.sock.getpeercert()["subject"]
        client.noop()
    return next(value for rdn in subject for key, value in rdn if key == "commonName")


def test_embedded_program_reloads_on_sighup_and_stops_on_sigterm(tmp_path: Path) -> None:
    ca = trustme.CA()
    first = ca.issue_cert("localhost", common_name="first")
    second = ca.issue_cert("localhost", common_name="second")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_pair(first, cert, key)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    argv = example("sync_embedded", "--port", "0", "--cert", str(cert), "--key", str(key))
    with Program(argv) as program:
        port = program.port(PORT_LINE)
        assert starttls_common_name(port, context) == "first"

        message = EmailMessage()
        message["Subject"] = "through the pool"
        message.set_content("hello\n")
        with smtplib.SMTP("localhost", port, timeout=TIMEOUT) as client:
            client.starttls(context=context)
            client.sendmail("alice@example.org", ["bob@example.com"], message.as_bytes())
        program.wait_for(r"^[0-9a-f]{16}\.1: <alice@example\.org> to bob@example\.com: "
                         r"through the pool$")

        write_pair(second, cert, key)
        program.proc.send_signal(signal.SIGHUP)
        program.wait_for(r"^certificate reloaded$")
        assert starttls_common_name(port, context) == "second"

        key.write_bytes(first.private_key_pem.bytes())  # a key that does not match
        program.proc.send_signal(signal.SIGHUP)
        program.wait_for(r"^keeping the old certificate: ")
        assert starttls_common_name(port, context) == "second"

        with Raw(port) as busy, smtplib.SMTP("localhost", port, timeout=TIMEOUT) as idle:
            busy.start_message()
            busy.send(b"Subject: last one\r\n\r\n")
            assert idle.noop()[0] == 250
            program.proc.send_signal(signal.SIGTERM)
            program.wait_for(r"^SIGTERM: stopping$")
            assert idle.getreply()[0] == 421
            busy.send(b"body\r\n.\r\n")
            [accepted] = busy.reply()
            assert re.fullmatch(r"250 2\.0\.0 OK: queued as [0-9a-f]{16}\.1", accepted)
            assert busy.reply()[0].startswith("421 4.3.2 ")
        program.wait_for(r"^[0-9a-f]{16}\.1: <alice@example\.org> to bob@example\.com: last one$")
        program.wait_for(r"^stopped$")
        assert program.exit_status() == 0, program.stderr


# ==============================================================================
# A blocking database (sync_sqlite.py)
# ==============================================================================


def rows(path: Path) -> dict[int, tuple[str, list[str], int, bytes]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        found = db.execute("SELECT id, sender, recipients, size, body FROM messages")
        return {row[0]: (row[1], json.loads(row[2]), row[3], row[4]) for row in found}


def test_sqlite_rows_from_concurrent_clients(tmp_path: Path) -> None:
    archive = load("sync_sqlite")
    path = tmp_path / "mail.sqlite3"
    server = archive.build_server(path)

    with serving(server) as port:
        def send(number: int) -> list[tuple[int, bytes]]:
            replies = []
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                for message in range(3):  # several messages, one db connection
                    client.ehlo_or_helo_if_needed()
                    client.mail(f"sender{number}@example.org")
                    client.rcpt("bob@example.com")
                    client.rcpt(f"carol{message}@example.com")
                    replies.append(client.data(body_of(number * 3 + message)))
            return replies

        replies = parallel(6, send)

    stored = rows(path)
    assert len(stored) == 18
    for number, client_replies in enumerate(replies):
        for message, (code, text) in enumerate(client_replies):
            found = re.fullmatch(rb"2\.0\.0 queued as (\d+)", text)
            assert code == 250 and found, text
            sender, recipients, size, body = stored[int(found.group(1))]
            assert sender == f"sender{number}@example.org"
            assert recipients == ["bob@example.com", f"carol{message}@example.com"]
            assert body == body_of(number * 3 + message)
            assert size == len(body)


def test_sqlite_database_connection_per_client_thread(tmp_path: Path) -> None:
    archive = load("sync_sqlite")
    opened: queue.Queue[tuple[str, int]] = queue.Queue()
    closed: queue.Queue[tuple[str, int]] = queue.Queue()

    class Watched(archive.ArchiveServer):  # type: ignore[name-defined,misc]
        def connect(self) -> sqlite3.Connection:
            db = super().connect()
            opened.put((threading.current_thread().name, id(db)))
            return db

        def on_close(self, session: Any) -> None:
            db = getattr(self.local, "db", None)
            super().on_close(session)
            if db is not None:
                closed.put((threading.current_thread().name, id(db)))

    server = Watched(tmp_path / "mail.sqlite3", auth_optional=True)
    opened.get_nowait()  # the one that created the table, in this thread
    with serving(server) as port:
        for _ in range(2):
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                client.sendmail("a@example.org", ["b@example.com"], b"one\r\n")
                client.sendmail("a@example.org", ["b@example.com"], b"two\r\n")
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                client.noop()  # no message, no database connection
    first, second = opened.get_nowait(), opened.get_nowait()
    assert opened.empty()
    assert first[0].startswith("smtp_sync ") and first[0] != second[0]
    assert sorted([closed.get_nowait(), closed.get_nowait()]) == sorted([first, second])
    assert closed.empty()
    assert len(rows(tmp_path / "mail.sqlite3")) == 4


def test_sqlite_aborted_message_adds_no_row(tmp_path: Path) -> None:
    archive = load("sync_sqlite")
    path = tmp_path / "mail.sqlite3"
    server = archive.ArchiveServer(path, size=1000, auth_optional=True)
    with serving(server) as port:
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            client.ehlo()
            client.mail("a@example.org")  # no SIZE=, which would be refused at once
            client.rcpt("b@example.com")
            assert client.data(b"w" * 5000 + b"\r\n") == (
                552, b"5.3.4 Error: message exceeds fixed maximum message size 1000")
            client.mail("a@example.org")
            client.rcpt("b@example.com")
            assert client.data(b"small\r\n") == (250, b"2.0.0 queued as 1")
        with Raw(port) as raw:  # the connection lost in the middle of DATA
            raw.start_message()
            raw.send(b"part of a message\r\n")
    assert [body for _, _, _, body in rows(path).values()] == [b"small\r\n"]


def test_sqlite_program(tmp_path: Path) -> None:
    with Program(example("sync_sqlite", "--port", "0", "--db", "archive.db"),
                 cwd=tmp_path) as program:
        port = program.port(PORT_LINE)
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            client.ehlo()
            client.mail("a@example.org")
            client.rcpt("b@example.com")
            assert client.data(b"Subject: kept\r\n\r\nkept\r\n") == (250, b"2.0.0 queued as 1")
        program.proc.send_signal(signal.SIGINT)
        assert program.exit_status() == 0, program.stderr
    kept = b"Subject: kept\r\n\r\nkept\r\n"
    assert rows(tmp_path / "archive.db") == {1: ("a@example.org", ["b@example.com"], 23, kept)}


# ==============================================================================
# LMTP (sync_lmtp.py)
# ==============================================================================


def test_lmtp_reply_per_recipient(tmp_path: Path) -> None:
    lmtp = load("sync_lmtp")
    for user in ("alice", "carol"):
        mailbox.Maildir(tmp_path / user, create=True)
    mailbox.Maildir(tmp_path / "carol").add(b"x" * 900)  # nearly full
    server = lmtp.LocalDelivery(tmp_path, quota=1000)
    body = b"Subject: hi\r\n\r\n" + b"m" * 200 + b"\r\n"
    with serving(server) as port, Raw(port) as raw:
        assert raw.reply() == [f"220 {server.protocol_config.name} LMTP"]
        assert raw.command("LHLO mx.example.org")[0].startswith("250-")
        assert raw.command("MAIL FROM:<sender@example.net>")[0].startswith("250 ")
        assert raw.command("RCPT TO:<alice@example.org>") == ["250 2.1.5 Accepted"]
        assert raw.command("RCPT TO:<carol@example.org>") == ["250 2.1.5 Accepted"]
        assert raw.command("RCPT TO:<nobody@example.org>") == ["550 5.1.1 Error: no such user"]
        assert raw.command("DATA")[0].startswith("354 ")
        raw.send(body + b".\r\n")
        [first], [second] = raw.reply(), raw.reply()
        assert re.fullmatch(r"250 2\.0\.0 OK: delivered to alice as \S+", first)
        assert second == "452 4.2.2 Error: mailbox carol is full"
        assert raw.command("QUIT")[0].startswith("221 ")
    [delivered] = (tmp_path / "alice" / "new").iterdir()
    assert first.endswith(delivered.name)
    assert delivered.read_bytes() == body
    assert len(list((tmp_path / "carol" / "new").iterdir())) == 1


def test_lmtp_quota_holds_under_concurrent_deliveries(tmp_path: Path) -> None:
    lmtp = load("sync_lmtp")
    mailbox.Maildir(tmp_path / "dave", create=True)
    body = b"Subject: race\r\n\r\n" + b"r" * 81 + b"\r\n"
    assert len(body) == 100
    server = lmtp.LocalDelivery(tmp_path, quota=500)  # room for exactly five

    with serving(server) as port:
        def deliver(number: int) -> str:
            with Raw(port) as raw:
                raw.start_message("LHLO mx.example.org", ("dave@example.org",))
                raw.send(body + b".\r\n")
                [reply] = raw.reply()
                return reply

        replies = parallel(12, deliver)
    accepted = [reply for reply in replies if reply.startswith("250 ")]
    assert len(accepted) == 5
    assert sorted(set(replies) - set(accepted)) == ["452 4.2.2 Error: mailbox dave is full"]
    stored = list((tmp_path / "dave" / "new").iterdir())
    assert len(stored) == 5 and all(path.read_bytes() == body for path in stored)


def test_lmtp_program(tmp_path: Path) -> None:
    (tmp_path / "mail").mkdir()
    mailbox.Maildir(tmp_path / "mail" / "erin", create=True)
    argv = example("sync_lmtp", "--port", "0", "--root", "mail", "--quota", "1000000")
    with Program(argv, cwd=tmp_path) as program:
        port = program.port(PORT_LINE)
        with smtplib.LMTP("127.0.0.1", port, timeout=TIMEOUT) as client:  # one recipient
            client.sendmail("a@example.org", ["erin@example.org"], b"for erin\r\n")
        program.proc.send_signal(signal.SIGINT)
        assert program.exit_status() == 0, program.stderr
    [delivered] = (tmp_path / "mail" / "erin" / "new").iterdir()
    assert delivered.read_bytes() == b"for erin\r\n"


# ==============================================================================
# The message stream (sync_stream.py)
# ==============================================================================


def test_stream_spools_big_messages_byte_for_byte(tmp_path: Path) -> None:
    streaming = load("sync_stream")
    server = streaming.build_server(tmp_path, auth_optional=True)
    body = (b"Subject: big\r\nX-Spam-Flag: NO\r\n\r\n"
            + b"".join(b"line %d ..\r\n.dot\r\n" % n for n in range(100_000)) + b"no newline")
    with serving(server) as port, smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
        client.ehlo()
        client.mail("a@example.org")
        client.rcpt("b@example.com")
        code, text = client.data(body)
    sent = body + b"\r\n"  # smtplib ends the last line
    assert code == 250
    assert re.fullmatch(rb"2\.0\.0 OK: %d bytes queued as [0-9a-f]{16}-1\.eml" % len(sent), text)
    [stored] = (tmp_path / "new").iterdir()
    assert stored.read_bytes() == sent
    assert list((tmp_path / "tmp").iterdir()) == []


def test_stream_refuses_on_a_header_and_drops_the_rest(tmp_path: Path) -> None:
    streaming = load("sync_stream")
    server = streaming.build_server(tmp_path, auth_optional=True)
    spam = b"Subject: buy\r\nX-Spam-Flag: yes\r\n\r\n" + b"s" * 1_000_000 + b"\r\n"
    with serving(server) as port, smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
        client.ehlo()
        client.mail("a@example.org")
        client.rcpt("b@example.com")
        assert client.data(spam) == (550, b"5.7.1 Error: message refused as spam")
        assert client.noop()[0] == 250  # the session goes on
        client.mail("a@example.org")
        client.rcpt("b@example.com")
        assert client.data(b"no header at all\r\n")[0] == 250  # the whole message is "header"
    [stored] = (tmp_path / "new").iterdir()
    assert stored.read_bytes() == b"no header at all\r\n"


def test_stream_aborted_messages_leave_no_file(tmp_path: Path) -> None:
    streaming = load("sync_stream")
    server = streaming.build_server(tmp_path, size=1000, auth_optional=True)
    with serving(server) as port:
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            client.ehlo()
            client.mail("a@example.org")
            client.rcpt("b@example.com")
            assert client.data(b"Subject: big\r\n\r\n" + b"w" * 5000 + b"\r\n") == (
                552, b"5.3.4 Error: message exceeds fixed maximum message size 1000")
        with Raw(port) as raw:  # BDAT, then RSET
            assert raw.reply()[0].startswith("220 ")
            raw.command("EHLO x")
            raw.command("MAIL FROM:<a@example.org>")
            raw.command("RCPT TO:<b@example.com>")
            raw.send("BDAT 15\r\nSubject: x\r\n\r\nh")
            assert raw.reply() == ["250 2.0.0 15 octets received"]
            assert raw.command("RSET")[0] == "250 2.0.0 Flushed"
        with Raw(port) as raw:  # the connection lost in the middle of DATA
            raw.start_message()
            raw.send(b"Subject: lost\r\n\r\npart of a message\r\n")
    # leaving "with server:" waited for every connection, handlers included
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "new").iterdir()) == []


# ==============================================================================
# Shared state (sync_limits.py)
# ==============================================================================


def test_per_address_limit(tmp_path: Path) -> None:
    limits = load("sync_limits")
    gone: queue.Queue[str] = queue.Queue()

    class Watched(limits.PerAddressLimit):  # type: ignore[name-defined,misc]
        def on_close(self, session: Any) -> None:
            super().on_close(session)
            gone.put(session.id)  # after the count is undone

    server = Watched(limit=2, auth_optional=True, name="mx.test")
    with serving(server) as port:
        first, second = Raw(port), Raw(port)
        assert first.reply() == second.reply() == ["220 mx.test ESMTP"]
        with Raw(port) as third:
            assert third.reply() == [
                "421 4.7.0 mx.test Error: too many connections from your address"]
            assert third.reply() == ["<closed>"]
        gone.get(timeout=TIMEOUT)  # the refused one: it had not been counted
        assert server.active == {"127.0.0.1": 2}
        assert first.command("QUIT")[0].startswith("221 ")
        first.close()
        gone.get(timeout=TIMEOUT)
        with Raw(port) as fourth:
            assert fourth.reply() == ["220 mx.test ESMTP"]
            fourth.command("QUIT")
        gone.get(timeout=TIMEOUT)
        second.close()
        gone.get(timeout=TIMEOUT)
        assert server.active == {}  # nothing left behind

        def connect(number: int) -> str:  # many at once: never more than two in
            with Raw(port) as raw:
                greeting = raw.reply()[0]
                if greeting.startswith("220 "):
                    raw.command("QUIT")
                return greeting[:3]

        assert set(parallel(10, connect)) <= {"220", "421"}
    assert server.active == {}


# ==============================================================================
# The page itself
# ==============================================================================


def test_page_includes_every_sync_example() -> None:
    text = PAGE.read_text(encoding="utf-8")
    included = set(re.findall(r"literalinclude:: \.\./examples/(sync_\w+)\.py", text))
    assert included == {path.stem for path in EXAMPLES.glob("sync_*.py")}


def test_page_states_the_default_bound() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert f":value: {smtp_sync.DEFAULT_MAX_CONNECTIONS}" in text
