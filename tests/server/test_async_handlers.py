"""Coroutine handlers on the anyio backends (asyncio, uvloop, trio).

What only ``smtp_anyio`` has: handlers that are coroutines and may await,
an async ``MessageStream`` whose backpressure keeps memory bounded while a
handler is slow, and plain and async handlers mixed on one server.
"""

from __future__ import annotations

import hashlib
import smtplib
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from smtp_anyio import MessageAbortedError, SMTPError, SMTPServer

from .conftest import TLSMaterial
from .harness import run_server
from .test_robustness import (
    CLIENT_NAME,
    TIMEOUT,
    ErrorLog,
    RawClient,
    big_body,
    collecting_errors,
    push_against_held_handler,
)

SHORT_TIMEOUT = 2.0  # for replies that are due at once


@pytest.fixture(autouse=True)
def error_log() -> Iterator[ErrorLog]:
    """No ERROR records unless a test expects them (and then checks them)."""
    with collecting_errors() as collector:
        yield collector
    collector.check()


class Calls:
    """What the handlers saw, appended from the server's loop."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []
        self.closed = threading.Event()

    def add(self, *item: Any) -> None:
        self.items.append(item)

    def names(self) -> list[str]:
        return [item[0] for item in self.items]


# -- a coroutine for every hook ----------------------------------------------------


def test_coroutine_handlers_for_every_hook(start_async_server, tls: TLSMaterial) -> None:
    calls = Calls()

    async def on_connect(session: Any) -> None:
        await anyio.sleep(0)
        calls.add("connect", session.remote_address)

    async def on_secure(info: Any, session: Any) -> None:
        await anyio.sleep(0)
        calls.add("secure", info.version)

    async def on_auth(auth: Any, session: Any) -> object:
        await anyio.sleep(0)
        calls.add("auth", auth.mechanism, auth.username)
        if auth.username == "alice" and auth.password == "secret":
            return {"name": "alice"}
        return None

    async def on_mail_from(address: Any, session: Any) -> None:
        await anyio.sleep(0)
        calls.add("mail", address.address, session.user)
        if address.address == "spam@example.com":
            raise SMTPError(553, "sender refused by coroutine")

    async def on_rcpt_to(address: Any, session: Any) -> None:
        await anyio.sleep(0)
        calls.add("rcpt", address.address)
        if address.address == "nobody@example.com":
            raise SMTPError(550, "no such user here")

    async def on_data(stream: Any, session: Any) -> str:
        body = await stream.read()
        await anyio.sleep(0)
        calls.add("data", body, [r.address for r in session.envelope.rcpt_to])
        return "queued as ASYNC1"

    async def on_close(session: Any) -> None:
        await anyio.sleep(0)
        calls.add("close", session.user)
        calls.closed.set()

    running = start_async_server(
        on_connect=on_connect, on_secure=on_secure, on_auth=on_auth,
        on_mail_from=on_mail_from, on_rcpt_to=on_rcpt_to, on_data=on_data,
        on_close=on_close, **tls.server_options,
    )
    body = b"Subject: async\r\n\r\nhello from a coroutine\r\n"
    with smtplib.SMTP("localhost", running.port, local_hostname=CLIENT_NAME,
                      timeout=TIMEOUT) as client:
        client.starttls(context=tls.client_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as bad:
            client.login("alice", "wrong")
        assert bad.value.smtp_code == 535
        client.login("alice", "secret")
        with pytest.raises(smtplib.SMTPSenderRefused) as refused_sender:
            client.sendmail("spam@example.com", ["bob@example.com"], body)
        assert refused_sender.value.smtp_code == 553
        client.rset()
        refused = client.sendmail("a@example.com", ["bob@example.com", "nobody@example.com"],
                                  body)
        assert list(refused) == ["nobody@example.com"]
        assert refused["nobody@example.com"][0] == 550
        assert client.noop()[0] == 250
    assert calls.closed.wait(TIMEOUT)
    user = {"name": "alice"}
    # smtplib tries PLAIN, then LOGIN, before giving up on the wrong password.
    assert calls.items == [
        ("connect", "127.0.0.1"),
        ("secure", calls.items[1][1]),
        ("auth", "PLAIN", "alice"),
        ("auth", "LOGIN", "alice"),
        ("auth", "PLAIN", "alice"),
        ("mail", "spam@example.com", user),
        ("mail", "a@example.com", user),
        ("rcpt", "bob@example.com"),
        ("rcpt", "nobody@example.com"),
        ("data", body, ["bob@example.com"]),
        ("close", user),
    ]
    assert str(calls.items[1][1]).startswith("TLS")


def test_handler_awaits_an_event_released_by_the_test(start_async_server) -> None:
    """While a coroutine decides, nothing later is answered: pipelined
    commands wait for it and their replies come in order (RFC 2920)."""
    waiting = threading.Event()
    gates: dict[str, anyio.Event] = {}

    async def on_rcpt_to(address: Any, session: Any) -> None:
        waiting.set()
        await gates["rcpt"].wait()
        if address.address == "late@example.com":
            raise SMTPError(450, "try again later")

    running = start_async_server(on_rcpt_to=on_rcpt_to, auth_optional=True)
    gate = gates["rcpt"] = running.call(anyio.Event)  # made in the server's loop
    with RawClient(running.address) as client:
        client.ehlo()
        assert client.cmd("MAIL FROM:<a@example.com>")[0] == 250
        client.send(b"RCPT TO:<late@example.com>\r\nNOOP\r\nRCPT TO:<b@example.com>\r\n")
        assert waiting.wait(TIMEOUT)
        client.sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.sock.recv(1)  # neither the RCPT's nor the NOOP's reply yet
        client.sock.settimeout(TIMEOUT)
        running.call(gate.set)
        replies = client.replies(3)
    assert [code for code, _ in replies] == [450, 250, 250]
    assert replies[0][1].endswith("try again later")
    assert replies[1][1] == "2.0.0 OK"


# -- on_data backpressure ---------------------------------------------------------


def test_slow_async_on_data_pushes_back_on_the_client(start_async_server) -> None:
    first_chunk = threading.Event()
    done = threading.Event()
    seen: dict[str, Any] = {}

    async def on_data(stream: Any, session: Any) -> str:
        seen["stream"] = stream
        digest = hashlib.sha256()
        size = 0
        async for chunk in stream:
            digest.update(chunk)
            size += len(chunk)
            first_chunk.set()
            await seen["gate"].wait()  # the handler reads only when the test lets it
        seen["digest"], seen["size"] = digest.hexdigest(), size
        done.set()
        return "all read"

    running = start_async_server(on_data=on_data, auth_optional=True)
    gate = seen["gate"] = running.call(anyio.Event)
    body = big_body()
    code, text, _sent, _held = push_against_held_handler(
        running, body, first_chunk,
        buffered=lambda: running.call(lambda: seen["stream"].byte_length),
        release=lambda: running.call(gate.set),
    )
    assert code == 250, (code, text)
    assert text.endswith("all read")
    assert done.is_set()
    assert seen["size"] == len(body)
    assert seen["digest"] == hashlib.sha256(body).hexdigest()


# -- on_data that does not read ------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["accept", "reject", "one-chunk"])
def test_on_data_returning_early(start_async_server, behaviour: str) -> None:
    sizes: list[int] = []

    async def on_data(stream: Any, session: Any) -> str:
        sizes.append(stream.byte_length)
        await anyio.sleep(0)
        if behaviour == "reject":
            raise SMTPError(554, "not reading that")
        if behaviour == "one-chunk":
            await stream.__anext__()
        return "decided early"

    running = start_async_server(on_data=on_data, auth_optional=True)
    big = b"Subject: big\r\n\r\n" + b"0123456789abcdef" * 65536 + b"\r\n"  # 1 MiB
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope()
        client.send(big + b".\r\n")
        code, text = client.reply()
        if behaviour == "reject":
            assert code == 554, (code, text)
            assert text.endswith("not reading that")
        else:
            assert code == 250, (code, text)
            assert text.endswith("decided early")
        # In step with the client: the body was read to its end, not taken for commands.
        assert client.cmd("NOOP") == (250, "2.0.0 OK")
        client.envelope()
        client.send(b"Subject: second\r\n\r\nsmall\r\n.\r\n")
        assert client.reply()[0] == (554 if behaviour == "reject" else 250)
        assert client.cmd("QUIT")[0] == 221
    assert len(sizes) == 2  # one call per message, each before its body was all read
    assert sizes[0] < len(big)


def test_on_data_raising_smtp_error_after_reading(start_async_server) -> None:
    bodies: list[bytes] = []

    async def on_data(stream: Any, session: Any) -> None:
        bodies.append(await stream.read())
        raise SMTPError(452, "mailbox full, come back later", enhanced="4.2.2")

    running = start_async_server(on_data=on_data, auth_optional=True)
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope()
        client.send(b"Subject: full\r\n\r\nbody\r\n.\r\n")
        assert client.reply() == (452, "4.2.2 mailbox full, come back later")
        assert client.cmd("NOOP")[0] == 250
    assert bodies == [b"Subject: full\r\n\r\nbody\r\n"]


def test_on_data_error_after_an_abort_is_ignored(start_async_server) -> None:
    reasons: list[str] = []

    async def on_data(stream: Any, session: Any) -> None:
        try:
            await stream.read()
        except MessageAbortedError as exc:
            reasons.append(exc.reason)
            raise SMTPError(451, "the handler's own answer must not be sent") from exc

    running = start_async_server(on_data=on_data, auth_optional=True, size=10_000)
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope()
        client.send(b"Subject: too big\r\n\r\n" + b"y" * 50_000 + b"\r\n.\r\n")
        code, text = client.reply()
        assert code == 552, (code, text)
        assert client.cmd("NOOP") == (250, "2.0.0 OK")
    assert reasons == ["size_exceeded"]


def test_on_data_crashing_is_answered_451_and_logged(
    start_async_server, error_log: ErrorLog
) -> None:
    async def on_data(stream: Any, session: Any) -> None:
        await stream.read()
        raise RuntimeError("handler bug on purpose")

    running = start_async_server(on_data=on_data, auth_optional=True)
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope()
        client.send(b"Subject: boom\r\n\r\nbody\r\n.\r\n")
        assert client.reply()[0] == 451
        assert client.cmd("NOOP")[0] == 250
    records, error_log.records = error_log.records, []
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert "handler bug on purpose" in str(records[0].exc_info[1])


# -- size_exceeded and byte_length on the async stream -------------------------------


def test_stream_size_exceeded_and_byte_length(start_async_server) -> None:
    limit = 100_000
    observed: list[dict[str, Any]] = []

    async def on_data(stream: Any, session: Any) -> None:
        got = 0
        record: dict[str, Any] = {"exceeded_while_reading": False}
        observed.append(record)
        try:
            async for chunk in stream:
                got += len(chunk)
                record["exceeded_while_reading"] |= stream.size_exceeded
        except MessageAbortedError as exc:
            record["reason"] = exc.reason
            raise
        finally:
            record.update(got=got, byte_length=stream.byte_length,
                          size_exceeded=stream.size_exceeded)

    running = start_async_server(on_data=on_data, auth_optional=True, size=limit)
    small = b"Subject: fits\r\n\r\n" + b"s" * 1000 + b"\r\n"
    big = b"Subject: does not fit\r\n\r\n" + b"b" * (3 * limit) + b"\r\n"
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope()
        client.send(small + b".\r\n")
        assert client.reply()[0] == 250
        client.envelope()
        client.send(big + b".\r\n")
        code, text = client.reply()
        assert code == 552, (code, text)
        assert text.startswith("5.3.4"), text
        assert client.cmd("NOOP")[0] == 250
    fits, too_big = observed
    assert fits == {"exceeded_while_reading": False, "got": len(small),
                    "byte_length": len(small), "size_exceeded": False}
    assert too_big["reason"] == "size_exceeded"
    assert too_big["size_exceeded"] is True
    assert 0 < too_big["got"] <= too_big["byte_length"] <= limit


# -- LMTP per-recipient answers ----------------------------------------------------


def test_lmtp_per_recipient_answers_from_a_coroutine(start_async_server) -> None:
    async def on_data(stream: Any, session: Any) -> list[object]:
        await stream.read()
        answers: list[object] = []
        for rcpt in session.envelope.rcpt_to:
            if rcpt.address.startswith("full"):
                answers.append(SMTPError(452, f"{rcpt.address} is over quota",
                                         enhanced="4.2.2"))
            elif rcpt.address.startswith("gone"):
                answers.append(SMTPError(550, "no such mailbox"))
            else:
                answers.append(f"delivered to {rcpt.address}")
        return answers

    running = start_async_server(on_data=on_data, lmtp=True, auth_optional=True)
    rcpts = ["a@example.com", "full@example.com", "b@example.com", "gone@example.com"]
    with RawClient(running.address) as client:
        assert client.cmd("LHLO client.example")[0] == 250
        client.envelope("sender@example.com", *rcpts)
        client.send(b"Subject: lmtp\r\n\r\nper recipient\r\n.\r\n")
        replies = client.replies(len(rcpts))
        assert client.cmd("NOOP") == (250, "2.0.0 OK")  # and nothing more was sent
    assert replies == [
        (250, "2.0.0 delivered to a@example.com"),
        (452, "4.2.2 full@example.com is over quota"),
        (250, "2.0.0 delivered to b@example.com"),
        (550, replies[3][1]),
    ]
    assert replies[3][1].endswith("no such mailbox") and replies[3][1].startswith("5.")


# -- plain and async handlers on one server -----------------------------------------


@pytest.mark.parametrize("async_ones", ["odd", "even"])
def test_plain_and_async_handlers_mixed(start_async_server, async_ones: str) -> None:
    """Each hook is a coroutine or a plain function, alternating."""
    calls = Calls()

    def on_connect(session: Any) -> None:
        calls.add("connect")

    def on_auth(auth: Any, session: Any) -> object:
        calls.add("auth")
        return auth.username if auth.password == "pw" else None

    def on_mail_from(address: Any, session: Any) -> None:
        calls.add("mail", session.user)
        if address.address.startswith("spam"):
            raise SMTPError(553, "no spam")

    def on_rcpt_to(address: Any, session: Any) -> None:
        calls.add("rcpt")
        if address.address.startswith("nobody"):
            raise SMTPError(550, "unknown user")

    def on_data(stream: Any, session: Any) -> str:
        # Plain: a blocking stream in a worker thread; async: awaited chunks.
        calls.add("data", stream.read())
        return "stored"

    def on_close(session: Any) -> None:
        calls.add("close")
        calls.closed.set()

    plain = [on_connect, on_auth, on_mail_from, on_rcpt_to, on_data, on_close]
    handlers = {}
    for index, handler in enumerate(plain):
        make_async = (index % 2 == 1) == (async_ones == "odd")
        handlers[handler.__name__] = _as_coroutine(handler) if make_async else handler
    running = start_async_server(allow_insecure_auth=True, **handlers)
    body = b"Subject: mixed\r\n\r\nplain and async\r\n"
    with smtplib.SMTP(*running.address, local_hostname=CLIENT_NAME, timeout=TIMEOUT) as client:
        client.login("carol", "pw")
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("spam@example.com", ["x@example.com"], body)
        client.rset()
        refused = client.sendmail("a@example.com", ["x@example.com", "nobody@example.com"],
                                  body)
        assert list(refused) == ["nobody@example.com"]
        assert refused["nobody@example.com"][0] == 550
    assert calls.closed.wait(TIMEOUT)
    assert calls.items == [
        ("connect",), ("auth",), ("mail", "carol"), ("mail", "carol"), ("rcpt",), ("rcpt",),
        ("data", body), ("close",),
    ]


def _as_coroutine(handler: Any) -> Any:
    """The same handler as a coroutine function; ``on_data`` reads the async way."""
    if handler.__name__ == "on_data":
        async def on_data(stream: Any, session: Any) -> str:
            body = await stream.read()
            await anyio.sleep(0)
            return handler(_Already(body), session)  # type: ignore[no-any-return]

        return on_data

    async def coroutine(*args: Any) -> Any:
        await anyio.sleep(0)
        return handler(*args)

    coroutine.__name__ = handler.__name__
    return coroutine


class _Already:
    """A read stream stand-in for the plain ``on_data`` body reused above."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def read(self) -> bytes:
        return self._body


# -- decisions still pending when things happen ---------------------------------------


def test_message_answer_waits_for_a_slow_handler_and_keeps_order(start_async_server) -> None:
    """The body has ended but the coroutine has not decided: pipelined
    commands after the end are answered only after it, in order."""
    finished_reading = threading.Event()
    gates: dict[str, anyio.Event] = {}

    async def on_data(stream: Any, session: Any) -> str:
        body = await stream.read()
        finished_reading.set()
        await gates["data"].wait()
        return f"took {len(body)} bytes"

    running = start_async_server(on_data=on_data, auth_optional=True)
    gate = gates["data"] = running.call(anyio.Event)
    with RawClient(running.address) as client:
        client.ehlo()
        client.envelope()
        client.send(b"Subject: slow\r\n\r\nbody\r\n.\r\nNOOP\r\nMAIL FROM:<c@example.com>\r\n")
        assert finished_reading.wait(TIMEOUT)
        client.sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.sock.recv(1)
        client.sock.settimeout(TIMEOUT)
        running.call(gate.set)
        replies = client.replies(3)
    assert replies == [(250, "2.0.0 took 23 bytes"), (250, "2.0.0 OK"),
                       (250, "2.1.0 Accepted")]


class _Attempt:
    def __init__(self, gate: anyio.Event) -> None:
        self.gate = gate
        self.first_chunk = threading.Event()
        self.closed = threading.Event()
        self.outcome: list[str] = []


VANISH_ATTEMPTS = 25  # a scheduling race on trio (it hit ~1 attempt in 3): try it often


def test_client_vanishing_while_a_held_on_data_throttles_reading(start_async_server) -> None:
    """Reading is paused for a held handler when the client goes: once the
    handler reads on, it learns that the message is lost (MessageAbortedError,
    as the stream promises, not a cancellation)."""
    current: list[_Attempt] = []

    async def on_data(stream: Any, session: Any) -> str:
        attempt = current[-1]
        try:
            async for _chunk in stream:
                attempt.first_chunk.set()
                await attempt.gate.wait()
        except MessageAbortedError as exc:
            attempt.outcome.append(exc.reason)
            raise
        except BaseException as exc:
            attempt.outcome.append(type(exc).__name__)
            raise
        attempt.outcome.append("complete")
        return "should never be sent"

    def on_close(session: Any) -> None:
        current[-1].closed.set()

    running = start_async_server(on_data=on_data, on_close=on_close, auth_optional=True)
    outcomes = []
    for _ in range(VANISH_ATTEMPTS):
        attempt = _Attempt(running.call(anyio.Event))
        current.append(attempt)
        client = RawClient(running.address)
        try:
            client.ehlo()
            client.envelope()
            # More than the high-water mark, without an end: reading pauses.
            client.send(b"Subject: lost\r\n\r\n" + b"l" * (2 * 1024 * 1024))
            assert attempt.first_chunk.wait(TIMEOUT)
        finally:
            client.close()
        running.call(attempt.gate.set)
        assert attempt.closed.wait(TIMEOUT), "the connection was never cleaned up"
        outcomes.append(tuple(attempt.outcome))
    assert set(outcomes) == {("connection_lost",)}, outcomes
    with RawClient(running.address) as other:  # and the server still serves
        assert other.cmd("NOOP")[0] == 250


def test_close_while_a_coroutine_decision_is_pending(
    async_backend: str, error_log: ErrorLog
) -> None:
    """close() while on_rcpt_to is still deciding: the client is told 421
    (after the RCPT's own reply, or instead of it), close() returns, and
    nothing raises."""
    waiting = threading.Event()
    gates: dict[str, anyio.Event] = {}

    async def on_rcpt_to(address: Any, session: Any) -> None:
        waiting.set()
        await gates["rcpt"].wait()

    with run_server(async_backend, on_rcpt_to=on_rcpt_to, auth_optional=True) as running:
        gate = gates["rcpt"] = running.call(anyio.Event)
        with RawClient(running.address, timeout=SHORT_TIMEOUT) as client, \
                RawClient(running.address, timeout=SHORT_TIMEOUT) as idle:
            client.ehlo()
            assert client.cmd("MAIL FROM:<a@example.com>")[0] == 250
            client.send(b"RCPT TO:<b@example.com>\r\n")
            assert waiting.wait(TIMEOUT)
            closer = threading.Thread(target=running.call, args=(running.server.close,),
                                      daemon=True)
            closer.start()
            assert idle.reply()[0] == 421  # close() has told every session
            running.call(gate.set)
            rest = client.read_to_eof()
            codes = [int(line[:3]) for line in rest.split(b"\r\n") if line]
            assert codes in ([421], [250, 421]), rest
            closer.join(TIMEOUT)
            assert not closer.is_alive(), "close() did not return"
    error_log.check()


def _anyio_run(backend: str, main: Any) -> Any:
    if backend == "trio":
        return anyio.run(main, backend="trio")
    return anyio.run(main, backend="asyncio",
                     backend_options={"use_uvloop": backend == "uvloop"})


def test_cancelling_the_server_cancels_a_stuck_on_data(async_backend: str) -> None:
    """Cancelling the task that runs the server (not close()) cancels the
    handlers at once, a stuck on_data included, and still runs on_close."""
    cancelled: list[str] = []
    closed: list[str] = []

    async def main() -> None:
        entered = anyio.Event()

        async def on_data(stream: Any, session: Any) -> None:
            entered.set()
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.append(session.id)
                raise

        async def on_close(session: Any) -> None:
            closed.append(session.id)

        server = SMTPServer(on_data=on_data, on_close=on_close, auth_optional=True,
                            disable_reverse_lookup=True)

        async def serve(*, task_status: Any) -> None:
            async with server:
                _, port = await server.listen(0)
                task_status.started(port)
                await anyio.sleep_forever()

        async def command(client: Any, line: bytes) -> bytes:
            await client.send(line)
            reply = b""
            while not reply.endswith(b"\r\n") or reply.split(b"\r\n")[-2][3:4] == b"-":
                reply += await client.receive()
            return reply

        # Well under the 5 s a lost connection's on_data gets to finish:
        # this is cancellation, not a wind-down.
        with anyio.fail_after(3):
            async with anyio.create_task_group() as tg:
                port = await tg.start(serve)
                client = await anyio.connect_tcp("127.0.0.1", port)
                assert (await client.receive()).startswith(b"220")
                assert (await command(client, b"EHLO client.example\r\n")).startswith(b"250")
                assert (await command(client, b"MAIL FROM:<a@example.com>\r\n"))[:3] == b"250"
                assert (await command(client, b"RCPT TO:<b@example.com>\r\n"))[:3] == b"250"
                assert (await command(client, b"DATA\r\n"))[:3] == b"354"
                await client.send(b"Subject: stuck\r\n\r\nhalf a message")
                await entered.wait()
                tg.cancel_scope.cancel()
            await client.aclose()

    _anyio_run(async_backend, main)
    assert len(cancelled) == 1
    assert closed == cancelled
