"""The test helpers users test with: ``smtp_anyio.testing`` and
``smtp_sync.testing`` (Controller, MessageLog) and the two pytest plugins.

Every Controller test runs on each backend (asyncio, uvloop, trio and the
threaded server) against real sockets on 127.0.0.1, with smtplib,
aiosmtplib or a raw socket as the client. Nothing sleeps: ``start()``
returns once the server listens, a client's ``250`` means the message is
recorded, and a closing server is seen by the ``421`` an idle client gets.
The plugins run through ``pytester``, on a test file as a user writes it.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import anyio
import pytest
import sniffio
import trustme

import smtp_anyio.testing
import smtp_sync.testing
from smtp_anyio import SMTPError
from smtp_server import MessageLogBase, ReceivedMessage
from tests.test_typed_options import mypy_errors

from .server.raw_smtp import RawClient

pytest_plugins = ["pytester"]

TIMEOUT = 10.0
MESSAGE = b"From: alice@example.org\r\nSubject: hello\r\n\r\nHi Bob.\r\n"


def _backends() -> list[str]:
    names = ["asyncio", "uvloop", "trio", "sync"]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        names.remove("uvloop")
    return names


@dataclass
class Kit:
    """One backend's test helpers, so that a test is written once."""

    backend: str

    @property
    def is_async(self) -> bool:
        return self.backend != "sync"

    def controller(self, **options: Any) -> Any:
        if self.is_async:
            backend: Any = self.backend
            return smtp_anyio.testing.Controller(backend=backend, **options)
        return smtp_sync.testing.Controller(**options)

    def log(self) -> Any:
        """The backend's MessageLog (a MessageLogBase that is an on_data)."""
        module: Any = smtp_anyio.testing if self.is_async else smtp_sync.testing
        return module.MessageLog()


@pytest.fixture(params=_backends())
def kit(request: pytest.FixtureRequest) -> Kit:
    return Kit(str(request.param))


@pytest.fixture(params=[b for b in _backends() if b != "sync"])
def async_kit(request: pytest.FixtureRequest) -> Kit:
    return Kit(str(request.param))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_options(ca: trustme.CA, name: str = "localhost") -> dict[str, bytes]:
    leaf = ca.issue_cert(name, "127.0.0.1", common_name=name)
    return {"key": leaf.private_key_pem.bytes(),
            "cert": b"".join(blob.bytes() for blob in leaf.cert_chain_pems)}


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def send(address: tuple[str, int], *, to: tuple[str, ...] = ("bob@example.com",),
         body: bytes = MESSAGE, **kwargs: Any) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(*address, timeout=TIMEOUT) as client:
        return client.sendmail("alice@example.org", list(to), body, **kwargs)


# == Controller and MessageLog, on every backend =============================================


def test_a_message_is_recorded_with_its_envelope(kit: Kit) -> None:
    log = kit.log()
    assert isinstance(log, MessageLogBase)  # the bookkeeping is written once
    with kit.controller(on_data=log, auth_optional=True) as controller:
        assert controller.running and controller.address == (controller.host, controller.port)
        assert controller.host == "127.0.0.1" and controller.port > 0
        with smtplib.SMTP(controller.host, controller.port, timeout=TIMEOUT) as client:
            client.ehlo("client.example")
            refused = client.sendmail("alice@example.org", ["bob@example.com", "carol@example.com"],
                                      MESSAGE, mail_options=["BODY=8BITMIME"])
            client_port = client.sock.getsockname()[1]
        # The 250 came after on_data had returned: no waiting.
        [message] = log.messages
    assert refused == {}
    assert not controller.running
    assert isinstance(message, ReceivedMessage)
    assert message.mail_from == "alice@example.org"
    assert message.rcpt_to == ("bob@example.com", "carol@example.com")
    assert message.data == MESSAGE
    assert message.peer == ("127.0.0.1", client_port)
    assert message.helo == "client.example"
    assert message.tls is None and message.user is None
    assert len(message.session_id) == 16
    assert message.envelope.body_type == "8bitmime"
    assert [rcpt.address for rcpt in message.envelope.rcpt_to] == list(message.rcpt_to)
    parsed = message.as_email()
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == "hello" and parsed.get_content() == "Hi Bob.\r\n"


def test_aiosmtplib_in_a_loop_of_its_own(kit: Kit) -> None:
    log = kit.log()
    email = EmailMessage()
    email["From"], email["To"], email["Subject"] = "alice@example.org", "bob@example.com", "aio"
    email.set_content("sent by aiosmtplib")
    with kit.controller(on_data=log, auth_optional=True) as controller:
        errors, reply = asyncio.run(aiosmtplib.send(
            email, hostname=controller.host, port=controller.port, timeout=TIMEOUT,
            start_tls=False))
        assert errors == {} and reply.startswith("2.0.0")
    [message] = log.messages
    assert message.as_email()["Subject"] == "aio"
    assert message.rcpt_to == ("bob@example.com",)


def test_several_clients_at_once_and_wait_for(kit: Kit) -> None:
    log = kit.log()
    with kit.controller(on_data=log, auth_optional=True) as controller:
        senders = [threading.Thread(target=send, args=(controller.address,),
                                    kwargs={"to": (f"user{n}@example.com",)}, daemon=True)
                   for n in range(5)]
        for sender in senders:
            sender.start()
        messages = log.wait_for(5, timeout=TIMEOUT)
        for sender in senders:
            sender.join(TIMEOUT)
    assert sorted(m.rcpt_to[0] for m in messages) == [f"user{n}@example.com" for n in range(5)]
    assert len({m.session_id for m in messages}) == 5
    assert messages == log.messages and messages is not log.messages  # a copy


def test_wait_for_gives_up_with_what_arrived(kit: Kit) -> None:
    log = kit.log()
    with kit.controller(on_data=log, auth_optional=True) as controller:
        send(controller.address)
        with pytest.raises(TimeoutError, match=r"1 of 2 messages arrived within 0\.2 seconds"):
            log.wait_for(2, timeout=0.2)
        log.clear()
        assert log.messages == [] and len(log) == 0
        send(controller.address)
        assert len(log.wait_for(1)) == 1


def test_handlers_refuse_and_the_refused_are_not_recorded(kit: Kit) -> None:
    def plain_rcpt(address: Any, session: Any) -> None:
        if address.address.startswith("nobody@"):
            raise SMTPError(550, "No such user here", enhanced="5.1.1")

    log = kit.log()
    with kit.controller(on_rcpt_to=plain_rcpt, on_data=log, auth_optional=True) as controller:
        refused = send(controller.address, to=("bob@example.com", "nobody@example.com"))
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            send(controller.address, to=("nobody@example.com",))
    assert refused == {"nobody@example.com": (550, b"5.1.1 No such user here")}
    [message] = log.messages
    assert message.rcpt_to == ("bob@example.com",)


def test_coroutine_handlers_on_the_anyio_backends(async_kit: Kit) -> None:
    async def on_mail_from(address: Any, session: Any) -> None:
        await anyio.sleep(0)  # a coroutine: it may await
        if address.address.endswith("@spam.example"):
            raise SMTPError(550, "Go away", enhanced="5.7.1")

    log = async_kit.log()
    assert inspect.iscoroutinefunction(type(log).__call__)
    with async_kit.controller(on_mail_from=on_mail_from, on_data=log,
                              auth_optional=True) as controller:
        assert controller.server.handlers.data_is_async
        with smtplib.SMTP(*controller.address, timeout=TIMEOUT) as client:
            client.ehlo()
            assert client.mail("eve@spam.example") == (550, b"5.7.1 Go away")
        send(controller.address)
    assert [m.mail_from for m in log.messages] == ["alice@example.org"]


def test_the_threaded_log_is_a_plain_on_data_for_either_server(async_kit: Kit) -> None:
    """smtp_sync's MessageLog is a plain function: smtp_anyio runs it in a
    worker thread with the blocking stream."""
    log = smtp_sync.testing.MessageLog()
    assert not inspect.iscoroutinefunction(type(log).__call__)
    with async_kit.controller(on_data=log, auth_optional=True) as controller:
        assert not controller.server.handlers.data_is_async
        send(controller.address)
    assert log.messages[0].data == MESSAGE


def test_the_threaded_server_refuses_the_coroutine_log() -> None:
    with pytest.raises(TypeError, match="coroutine function"):
        smtp_sync.testing.Controller(on_data=smtp_anyio.testing.MessageLog())


def test_the_user_of_an_authenticated_session_is_recorded(kit: Kit) -> None:
    def on_auth(auth: Any, session: Any) -> object:
        return auth.username if auth.password == "secret" else None

    log = kit.log()
    with kit.controller(on_auth=on_auth, on_data=log, allow_insecure_auth=True,
                        auth_methods=["PLAIN"]) as controller:
        with smtplib.SMTP(*controller.address, timeout=TIMEOUT) as client:
            client.login("alice", "secret")
            client.sendmail("alice@example.org", ["bob@example.com"], MESSAGE)
        with pytest.raises(smtplib.SMTPSenderRefused):  # AUTH is required
            send(controller.address)
    [message] = log.messages
    assert message.user == "alice"


def test_implicit_tls_with_a_trustme_certificate(kit: Kit, ca: trustme.CA) -> None:
    log = kit.log()
    with kit.controller(secure=True, on_data=log, auth_optional=True,
                        **tls_options(ca)) as controller:
        with smtplib.SMTP_SSL("localhost", controller.port, timeout=TIMEOUT,
                              context=client_context(ca)) as client:
            client.sendmail("alice@example.org", ["bob@example.com"], MESSAGE)
        # The listener is TLS only: plain text gets no greeting, only the
        # end of a failed handshake.
        with socket.create_connection(controller.address, timeout=TIMEOUT) as plain:
            plain.sendall(b"EHLO client.example\r\n")
            try:
                answer = plain.recv(100)
            except ConnectionResetError:
                answer = b""
            assert not answer.startswith(b"220")
    [message] = log.messages
    assert message.tls is not None and message.tls.version in ("TLSv1.2", "TLSv1.3")
    assert message.tls.servername == "localhost"


def test_call_runs_in_the_servers_context(kit: Kit, ca: trustme.CA) -> None:
    """``call`` reaches the server where its methods belong: a new
    certificate, swapped in by ``update_secure_context``, serves the next
    handshake."""
    with kit.controller(secure=True, auth_optional=True, **tls_options(ca, "old.example")
                        ) as controller:

        def served_name() -> str:
            context = client_context(ca)
            context.check_hostname = False
            with socket.create_connection(controller.address, timeout=TIMEOUT) as raw, \
                    context.wrap_socket(raw, server_hostname="localhost") as tls:
                subject = tls.getpeercert()["subject"]
            return next(value for rdn in subject for key, value in rdn if key == "commonName")

        assert served_name() == "old.example"
        result = controller.call(controller.server.update_secure_context,
                                 **tls_options(ca, "new.example"))
        assert result is None
        assert served_name() == "new.example"
        if kit.is_async:
            library = "trio" if kit.backend == "trio" else "asyncio"
            assert controller.call(sniffio.current_async_library) == library

            async def answer(value: int) -> int:
                return value * 2

            assert controller.call(answer, 21) == 42  # coroutine functions are awaited
            assert controller.call(threading.get_ident) != threading.get_ident()
        else:
            assert controller.call(lambda value: value * 2, 21) == 42


def test_uvloop_runs_uvloop() -> None:
    pytest.importorskip("uvloop")
    with smtp_anyio.testing.Controller(backend="uvloop", auth_optional=True) as controller:
        loop = controller.call(asyncio.get_running_loop)
    assert type(loop).__module__.startswith("uvloop")


def test_a_server_of_ones_own_class(kit: Kit) -> None:
    log = kit.log()
    if kit.is_async:
        class AsyncServer(smtp_anyio.SMTPServer):
            async def on_rcpt_to(self, address: Any, session: Any) -> None:
                if address.address != "bob@example.com":
                    raise SMTPError(550, "Only Bob", enhanced="5.1.1")

        server: Any = AsyncServer(on_data=log, auth_optional=True)
    else:
        class SyncServer(smtp_sync.SMTPServer):
            def on_rcpt_to(self, address: Any, session: Any) -> None:
                if address.address != "bob@example.com":
                    raise SMTPError(550, "Only Bob", enhanced="5.1.1")

        server = SyncServer(on_data=log, auth_optional=True)
    controller = kit.controller(server=server)
    assert controller.server is server
    with controller:
        refused = send(controller.address, to=("bob@example.com", "carol@example.com"))
    assert refused == {"carol@example.com": (550, b"5.1.1 Only Bob")}
    assert log.messages[0].rcpt_to == ("bob@example.com",)
    with pytest.raises(RuntimeError, match="serves once"):
        controller.start()


# == stopping gracefully ======================================================================


def test_stop_lets_the_message_in_flight_finish(kit: Kit) -> None:
    log = kit.log()
    controller = kit.controller(on_data=log, auth_optional=True)
    controller.start()
    failures: list[BaseException] = []

    def stop() -> None:
        try:
            controller.stop()
        except BaseException as exc:
            failures.append(exc)

    stopper = threading.Thread(target=stop, daemon=True)
    try:
        with RawClient(controller.address) as busy, RawClient(controller.address) as idle:
            busy.ehlo()
            busy.envelope()
            assert busy.one("DATA").startswith("354 ")
            busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
            idle.ehlo()
            stopper.start()
            # The idle client is told at once: the server is closing now...
            assert idle.reply()[0].startswith("421 ")
            # ...and the message in flight still finishes and is accepted.
            busy.send(b"second half\r\n.\r\n")
            assert busy.reply()[0].startswith("250 ")
            stopper.join(TIMEOUT)
            assert not stopper.is_alive() and failures == []
    finally:
        controller.stop()
    [message] = log.messages
    assert message.data == b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n"
    assert not controller.running
    with pytest.raises(OSError):  # nothing listens any more
        socket.create_connection(controller.address, timeout=TIMEOUT).close()


def test_start_and_stop_twice(kit: Kit) -> None:
    log = kit.log()
    controller = kit.controller(on_data=log, auth_optional=True)
    with pytest.raises(RuntimeError, match="no address"):
        controller.address  # noqa: B018
    with pytest.raises(RuntimeError, match="not running"):
        controller.call(print)
    controller.stop()  # before start: nothing to do
    first = controller.start()
    try:
        with pytest.raises(RuntimeError, match="running already"):
            controller.start()
        assert controller.address == first
        send(first)
    finally:
        controller.stop()
    controller.stop()  # again: nothing to do
    assert controller.address == first  # the last address, still
    server = controller.server
    # Started again: a new server (a closed one serves no more), a new port.
    second = controller.start()
    try:
        assert controller.server is not server and controller.running
        send(second)
    finally:
        controller.stop()
    assert len(log.messages) == 2
    assert "stopped" in repr(controller) and kit.backend in repr(controller)


# == errors reach the caller of start() ========================================================


def test_a_port_in_use_is_raised_by_start(kit: Kit) -> None:
    with kit.controller(auth_optional=True) as first:
        second = kit.controller(port=first.port, auth_optional=True)
        with pytest.raises(OSError) as raised:
            second.start()
        assert raised.value.errno == errno.EADDRINUSE or "address already in use" in str(
            raised.value).lower()
        assert not second.running
        with pytest.raises(RuntimeError, match="no address"):
            second.address  # noqa: B018
        send(first.address)  # the first one serves on


def test_implicit_tls_without_a_certificate_is_refused_at_once(kit: Kit) -> None:
    with pytest.raises(ValueError, match="key and cert"):
        kit.controller(secure=True, auth_optional=True)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match=r"unexpected|unknown|sze"):
        smtp_anyio.testing.Controller(sze=1000)  # type: ignore[call-overload]
    server = smtp_anyio.SMTPServer(auth_optional=True)
    with pytest.raises(TypeError, match="not both"):
        smtp_anyio.testing.Controller(server=server, size=1)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"smtp_anyio\.SMTPServer"):
        smtp_anyio.testing.Controller(server=smtp_sync.SMTPServer())  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"smtp_sync\.SMTPServer"):
        smtp_sync.testing.Controller(server=server)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="backend"):
        smtp_anyio.testing.Controller(backend="curio")  # type: ignore[call-overload]


def test_import_smtp_sync_testing_loads_neither_anyio_nor_asyncio() -> None:
    code = ("import sys, smtp_sync.testing, smtp_sync.pytest_plugin\n"
            "banned = {'anyio', 'asyncio', 'sniffio', 'trio', 'smtp_anyio'}\n"
            "print(sorted(banned & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"


USER_CODE = '''\
from smtp_anyio import SMTPServer
from smtp_anyio.testing import Controller, MessageLog
from smtp_sync.testing import Controller as SyncController

log = MessageLog()
good = Controller(backend="trio", on_data=log, size=1000, auth_optional=True)
mine = Controller(server=SMTPServer(), port=2525)
recipients: tuple[str, ...] = log.wait_for(1)[0].rcpt_to
doubled: int = good.call(lambda n: n * 2, 21)
typo = SyncController(sze=1000)
both = Controller(server=SMTPServer(), size=1000)
loop = Controller(backend="curio")
'''


def test_the_helpers_are_typed_for_user_code(tmp_path: Path) -> None:
    errors, said = mypy_errors(tmp_path, USER_CODE)
    lines = sorted({int(line.split(":")[1]) for line in errors})
    assert lines == [10, 11, 12], said


# == the pytest plugins, as users run them ======================================================


USER_TESTS = '''
import smtplib
import threading

import pytest
import sniffio

from smtp_anyio import SMTPError

pytestmark = pytest.mark.smtp_server(name="module.example")


def send(fixture, to="bob@example.com", body=b"Subject: hi\\r\\n\\r\\nhello\\r\\n"):
    with smtplib.SMTP(fixture.host, fixture.port, timeout=10) as client:
        return client.sendmail("alice@example.org", [to], body)


def test_records_what_it_receives(smtp_server):
    assert smtp_server.messages == []
    send(smtp_server)
    [message] = smtp_server.messages
    assert message.rcpt_to == ("bob@example.com",)
    assert message.as_email()["Subject"] == "hi"
    assert smtp_server.controller.backend == "asyncio"
    assert smtp_server.server.protocol_config.name == "module.example"


@pytest.mark.smtp_server(size=100, name="closest.example")
def test_options_from_the_closest_marker(smtp_server):
    with smtplib.SMTP(*smtp_server.address, timeout=10) as client:
        assert b"closest.example" in client.ehlo()[1]
    with pytest.raises(smtplib.SMTPSenderRefused):
        send(smtp_server, body=b"x" * 200)
    assert smtp_server.messages == []


async def refuse_carol(address, session):
    if address.address == "carol@example.com":
        raise SMTPError(550, "No such user here", enhanced="5.1.1")


@pytest.mark.smtp_server(on_rcpt_to=refuse_carol, backend="trio")
def test_handlers_and_backend_from_a_marker(smtp_server):
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(smtp_server, to="carol@example.com")
    send(smtp_server)
    assert smtp_server.controller.call(sniffio.current_async_library) == "trio"
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize("smtp_server_options", [{"backend": "asyncio"}, {"backend": "trio"}])
def test_every_backend_through_the_options_fixture(smtp_server, smtp_server_options):
    assert smtp_server.controller.call(sniffio.current_async_library) == (
        smtp_server_options["backend"])


def test_waiting_for_a_message_sent_in_the_background(smtp_server):
    sender = threading.Thread(target=send, args=(smtp_server,))
    sender.start()
    [message] = smtp_server.wait_for(1)
    sender.join()
    assert message.mail_from == "alice@example.org"


@pytest.mark.smtp_sync_server(size=100)
def test_the_threaded_fixture(smtp_sync_server):
    send(smtp_sync_server)
    with pytest.raises(smtplib.SMTPSenderRefused):
        send(smtp_sync_server, body=b"x" * 200)
    assert [m.rcpt_to for m in smtp_sync_server.messages] == [("bob@example.com",)]
    assert type(smtp_sync_server.server).__module__.startswith("smtp_sync")


def test_two_servers_at_once(smtp_server, smtp_sync_server):
    assert smtp_server.port != smtp_sync_server.port
    send(smtp_server)
    send(smtp_sync_server, to="carol@example.com")
    assert [m.rcpt_to for m in smtp_server.messages] == [("bob@example.com",)]
    assert [m.rcpt_to for m in smtp_sync_server.messages] == [("carol@example.com",)]
'''

USER_CONFTEST = '''
import pytest


@pytest.fixture
def smtp_sync_server_options():
    return {"name": "conftest.example"}
'''

USER_TESTS_PASSED = 8


def test_the_plugins_fixtures_in_process(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(USER_CONFTEST)
    pytester.makepyfile(test_user=USER_TESTS + '''

def test_options_fixture_overridden_in_conftest(smtp_sync_server):
    assert smtp_sync_server.server.protocol_config.name == "conftest.example"
''')
    result = pytester.runpytest("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=USER_TESTS_PASSED + 1)


def test_the_entry_points_in_a_fresh_process_under_xdist(pytester: pytest.Pytester) -> None:
    """A new interpreter finds the plugins by their entry points (nothing
    names them), and parallel workers each get servers of their own."""
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers",
                                           "-n", "2")
    result.assert_outcomes(passed=USER_TESTS_PASSED)


def test_the_plugins_cost_nothing_unused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user='''
import sys
import threading


def test_nothing_started_nothing_more_loaded():
    assert "smtp_anyio.pytest_plugin" in sys.modules
    assert "smtp_sync.pytest_plugin" in sys.modules
    assert "smtp_anyio.testing" not in sys.modules
    assert [t.name for t in threading.enumerate()] == ["MainThread"]
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_plugin_left_out(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user='''
def test_needs_it(smtp_server):
    pass


def test_the_other_one(smtp_sync_server):
    assert smtp_sync_server.port
''')
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:smtp_anyio")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fixture 'smtp_server' not found*"])


def test_a_marker_with_positional_arguments_is_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user='''
import pytest


@pytest.mark.smtp_server(1000)
def test_it(smtp_server):
    pass
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*smtp_server takes the server's options as keyword*"])
