"""PIPELINING (RFC 2920), decisions, the event lifecycle and API misuse."""

from __future__ import annotations

from typing import Any

import pytest

from smtp_proto import (
    DECISION_EVENTS,
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    DataChunk,
    Event,
    Hello,
    LocalProtocolError,
    MailFrom,
    MessageAborted,
    MessageComplete,
    MessageStart,
    Quit,
    RcptTo,
    RemoteProtocolError,
    ServerConnection,
    State,
)
from tests.proto.driver import converse, drain, greeted, open_config
from tests.proto.support import TLS, cmd, ready, reject_with, split_bytes, step_all, talk

FROM = "MAIL FROM:<a@example.com>"
TO = "RCPT TO:<b@example.com>"

CONVERSATION = cmd(
    "EHLO client.example",
    "MAIL FROM:<a@example.com>",
    "RCPT TO:<b@example.com>",
    "RCPT TO:<bad>",
    "RCPT TO:<c@example.com>",
    "NOOP",
    "DATA",
    "Subject: pipelined",
    "",
    "..body",
    ".",
    "MAIL FROM:<a@example.com>",
    "RCPT TO:<d@example.com>",
    "BDAT 5 LAST",
) + b"hello" + cmd("RSET", "VRFY x", "QUIT")

EXPECTED = [
    "250-localhost Nice to meet you, client.example",
    "250-PIPELINING",
    "250-8BITMIME",
    "250-SMTPUTF8",
    "250-ENHANCEDSTATUSCODES",
    "250-CHUNKING",
    "250-BINARYMIME",
    "250-STARTTLS",
    "250 AUTH PLAIN LOGIN",
    "250 2.1.0 Accepted",
    "250 2.1.5 Accepted",
    "501 5.1.3 Error: bad recipient address syntax",
    "550 5.1.1 Error: recipient rejected",
    "250 2.0.0 OK",
    "354 End data with <CR><LF>.<CR><LF>",
    "250 2.0.0 OK: message queued",
    "250 2.1.0 Accepted",
    "250 2.1.5 Accepted",
    "250 2.0.0 OK: message queued",
    "250 2.0.0 Flushed",
    "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery",
    "221 2.0.0 Bye",
]


def answer(conn: ServerConnection, event: Event) -> None:
    if isinstance(event, RcptTo) and event.address == "c@example.com":
        conn.reject(550)
    else:
        conn.accept()


def test_whole_conversation_in_one_read_one_write() -> None:
    conn = greeted(open_config())
    conn.receive_data(CONVERSATION)
    events: list[Event] = []
    while True:
        event = conn.next_event()
        assert event is not NEED_DATA and event is not PAUSED
        assert isinstance(event, Event)
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
        if conn.pending is not None:
            answer(conn, event)
    out = conn.data_to_send()
    assert out.decode().split("\r\n")[:-1] == EXPECTED
    assert conn.data_to_send() == b""
    assert [type(e) for e in events].count(MessageComplete) == 2
    assert events[-2:] == [Quit(), ConnectionClosed("quit")]
    body = b"".join(e.data for e in events if isinstance(e, DataChunk))
    assert body == b"Subject: pipelined\r\n\r\n.body\r\nhello"


@pytest.mark.parametrize("chunking", ["bytewise", "lines", "halves"])
def test_same_answers_whatever_the_split(chunking: str) -> None:
    if chunking == "bytewise":
        chunks = split_bytes(CONVERSATION)
    elif chunking == "lines":
        chunks = [line + b"\n" for line in CONVERSATION.split(b"\n")[:-1]]
    else:
        half = len(CONVERSATION) // 2
        chunks = [CONVERSATION[:half], CONVERSATION[half:]]
    conn = greeted(open_config())
    result = converse(conn, chunks, answer)
    assert result.replies == EXPECTED
    whole = converse(greeted(open_config()), CONVERSATION, answer)
    assert [type(e) for e in result.events if not isinstance(e, DataChunk)] == [
        type(e) for e in whole.events if not isinstance(e, DataChunk)
    ]
    assert result.body == whole.body


def test_errors_inside_a_pipeline_do_not_stop_it() -> None:
    conn = ready()
    result = talk(conn, cmd("MAIL FROM:<bad>", FROM, "RCPT TO:<>", TO, "FOO", "DATA", "x", "."))
    assert result.codes == [501, 250, 501, 250, 500, 354, 250]


# -- decisions hold the pipeline -------------------------------------------------------------


def test_paused_while_a_decision_is_pending() -> None:
    conn = greeted(open_config())
    conn.receive_data(cmd("EHLO c.example", FROM, "NOOP"))
    hello = conn.next_event()
    assert hello == Hello("EHLO", "c.example")
    assert conn.pending == hello
    for _ in range(3):
        assert conn.next_event() is PAUSED
    assert conn.data_to_send() == b""
    conn.accept()
    assert conn.pending is None
    mail = conn.next_event()
    assert isinstance(mail, MailFrom)
    assert conn.next_event() is PAUSED
    # NOOP is not answered before MAIL: replies stay in order.
    assert conn.data_to_send().endswith(b"250 AUTH PLAIN LOGIN\r\n")
    conn.reject(550)
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"550 5.1.0 Error: sender rejected\r\n250 2.0.0 OK\r\n"


def test_message_complete_is_a_decision() -> None:
    conn = ready()
    conn.receive_data(cmd(FROM, TO, "DATA", "x", ".", "NOOP"))
    kinds = []
    while True:
        event = conn.next_event()
        if isinstance(event, MessageComplete):
            break
        kinds.append(type(event))
        if conn.pending is not None:
            conn.accept()
    assert kinds == [MailFrom, RcptTo, MessageStart, DataChunk]
    assert conn.next_event() is PAUSED
    conn.data_to_send()
    conn.accept()
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"250 2.0.0 OK: message queued\r\n250 2.0.0 OK\r\n"


def test_exactly_the_decision_events_pause() -> None:
    conn = greeted(open_config(allow_insecure_auth=True))
    conn.receive_data(CONVERSATION.replace(b"MAIL", b"AUTH PLAIN AGEAYg==\r\nMAIL", 1))
    seen = set()
    while not isinstance(event := conn.next_event(), ConnectionClosed):
        assert isinstance(event, Event)
        seen.add(type(event))
        assert (conn.pending is event) is (type(event) in DECISION_EVENTS), event
        if conn.pending is not None:
            answer(conn, event)
            assert conn.pending is None
    assert seen >= DECISION_EVENTS


# -- API misuse --------------------------------------------------------------------------------


def test_answer_with_nothing_pending() -> None:
    conn = ready()
    with pytest.raises(LocalProtocolError):
        conn.accept()
    with pytest.raises(LocalProtocolError):
        conn.reject(550)


def test_answer_twice() -> None:
    conn = ready()
    conn.receive_data(cmd(FROM))
    assert isinstance(conn.next_event(), MailFrom)
    conn.accept()
    with pytest.raises(LocalProtocolError):
        conn.accept()
    with pytest.raises(LocalProtocolError):
        conn.reject(550)
    assert conn.data_to_send() == b"250 2.1.0 Accepted\r\n"


def test_send_greeting_twice() -> None:
    conn = ServerConnection(open_config())
    conn.send_greeting()
    with pytest.raises(LocalProtocolError):
        conn.send_greeting()
    assert conn.data_to_send() == b"220 localhost ESMTP\r\n"


def test_receive_data_after_eof() -> None:
    conn = ready()
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"NOOP\r\n")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"")


@pytest.mark.parametrize(
    ("method", "args"),
    [("accept", {"code": 550}), ("accept", {"code": 354}), ("reject", {"code": 250}),
     ("reject", {"code": 354}), ("reject", {"code": 600})],
)
def test_bad_reply_codes_leave_the_decision_pending(method: str, args: dict[str, Any]) -> None:
    conn = ready()
    conn.receive_data(cmd(FROM))
    event = conn.next_event()
    with pytest.raises(ValueError, match="not allowed"):
        getattr(conn, method)(**args)
    assert conn.pending == event
    conn.accept()
    assert conn.data_to_send() == b"250 2.1.0 Accepted\r\n"


@pytest.mark.parametrize(
    ("method", "args"),
    [("accept", {"enhanced": "5.1.0"}), ("reject", {"code": 550, "enhanced": "2.0.0"}),
     ("reject", {"code": 450, "enhanced": "5.7.1"}), ("accept", {"enhanced": "bogus"})],
)
def test_bad_enhanced_code_leaves_the_decision_pending(method: str, args: dict[str, Any]) -> None:
    conn = ready()
    conn.receive_data(cmd(FROM))
    event = conn.next_event()
    with pytest.raises(ValueError, match="does not fit"):
        getattr(conn, method)(**args)
    # Nothing changed: the decision is still pending and can be answered.
    assert conn.pending == event
    assert conn.session.envelope.mail_from is None
    assert conn.data_to_send() == b""
    conn.accept()
    assert conn.data_to_send() == b"250 2.1.0 Accepted\r\n"


def test_tls_established_twice() -> None:
    conn = ready()
    talk(conn, cmd("STARTTLS"))
    conn.tls_established(TLS)
    with pytest.raises(LocalProtocolError):
        conn.tls_established(TLS)


# -- closing ---------------------------------------------------------------------------------


def test_connection_closed_after_quit() -> None:
    conn = ready()
    result = talk(conn, cmd("QUIT", "NOOP"))
    assert result.events == [Quit(), ConnectionClosed("quit")]
    assert result.replies == ["221 2.0.0 Bye"]
    for _ in range(3):
        assert conn.next_event() == ConnectionClosed("quit")
    conn.receive_data(b"NOOP\r\n")  # ignored, no error
    assert conn.next_event() == ConnectionClosed("quit")
    assert conn.data_to_send() == b""


def test_connection_closed_after_eof() -> None:
    conn = ready()
    result = converse(conn, [cmd("NOOP", "RSET") + b"NOO", b""])
    assert result.codes == [250, 250]  # complete lines first, then the end
    assert result.events[-1] == ConnectionClosed("connection lost")
    assert conn.closed
    assert conn.next_event() == ConnectionClosed("connection lost")


def test_eof_before_greeting() -> None:
    conn = ServerConnection(open_config())
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed("connection lost")


@pytest.mark.parametrize(
    ("setup", "size"),
    [
        (cmd(FROM, TO, "DATA") + b"partial line\r\nmore", 18),  # mid-DATA
        (cmd(FROM, TO, "BDAT 10") + b"abcd", 4),  # mid-chunk
        (cmd(FROM, TO, "BDAT 3") + b"abc", 3),  # between chunks
        (cmd(FROM, TO, "BDAT 3") + b"abc" + cmd("BDAT 5") + b"de", 5),
    ],
    ids=["data", "bdat-chunk", "between-chunks", "second-chunk"],
)
def test_message_aborted_on_eof(setup: bytes, size: int) -> None:
    conn = ready()
    result = converse(conn, [setup, b""])
    assert result.of(MessageStart)
    assert result.of(MessageComplete) == []
    assert result.of(MessageAborted) == [MessageAborted("connection_lost", size)]
    assert isinstance(result.events[-1], ConnectionClosed)
    aborted_at = result.events.index(result.of(MessageAborted)[0])
    assert aborted_at == len(result.events) - 2


@pytest.mark.parametrize(
    ("after", "reason", "replies"),
    [
        (cmd("RSET"), "reset", ["250 2.0.0 Flushed"]),
        (cmd("QUIT"), "quit", ["221 2.0.0 Bye"]),
        (cmd("EHLO again.example"), "reset", None),
    ],
)
def test_message_aborted_between_bdat_chunks(after: bytes, reason: str,
                                             replies: list[str] | None) -> None:
    conn = ready()
    talk(conn, cmd(FROM, TO, "BDAT 3") + b"abc")
    result = talk(conn, after)
    assert result.of(MessageAborted) == [MessageAborted(reason, 3)]
    if replies is not None:
        assert result.replies == replies


def test_shutdown_mid_data() -> None:
    conn = ready()
    talk(conn, cmd(FROM, TO, "DATA") + b"some text\r\n")
    conn.shutdown()
    result = drain(conn)
    assert result.replies == ["421 4.3.2 localhost Service shutting down"]
    assert result.events == [MessageAborted("shutdown", 9), ConnectionClosed("shutdown")]
    conn.shutdown()  # idempotent
    assert conn.data_to_send() == b""


@pytest.mark.parametrize(
    ("call", "line"),
    [
        # x.3.2 "system not accepting network messages" (RFC 3463)
        (lambda c: c.shutdown(), "421 4.3.2 localhost Service shutting down"),
        (lambda c: c.shutdown("Too many connections", 554),
         "554 5.3.2 localhost Too many connections"),
        (lambda c: c.shutdown("Go away", 554, "5.7.1"), "554 5.7.1 localhost Go away"),
        (lambda c: c.shutdown("Busy", 421, "4.7.0"), "421 4.7.0 localhost Busy"),
        (lambda c: c.idle_timeout(), "421 4.4.2 localhost Timeout - closing connection"),
    ],
)
def test_shutdown_replies(call: Any, line: str) -> None:
    conn = ready()
    call(conn)
    assert conn.data_to_send() == (line + "\r\n").encode()
    assert conn.closed
    assert conn.state is State.CLOSED


@pytest.mark.parametrize(("code", "enhanced"), [(250, None), (354, None), (421, "5.3.2")])
def test_shutdown_needs_a_4xx_or_5xx(code: int, enhanced: str | None) -> None:
    conn = ready()
    with pytest.raises(ValueError):
        conn.shutdown("fine", code, enhanced)
    assert not conn.closed
    assert conn.data_to_send() == b""


def test_shutdown_while_a_decision_is_pending() -> None:
    conn = ready()
    conn.receive_data(cmd(FROM))
    conn.next_event()
    conn.shutdown()
    assert conn.pending is None
    with pytest.raises(LocalProtocolError):
        conn.accept()
    assert conn.next_event() == ConnectionClosed("shutdown")


# -- HTTP --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    ["GET / HTTP/1.1", "POST /submit HTTP/1.0", "get /index.html http/1.1",
     "CONNECT mail.example:25 HTTP/1.1", "OPTIONS * HTTP/2", "PUT /x HTTP/1.1"],
)
def test_http_request(line: str) -> None:
    conn = greeted(open_config())
    result = talk(conn, cmd(line, "Host: example.com", "", "NOOP"))
    assert result.replies == ["421 4.7.0 localhost Error: HTTP requests not allowed"]
    assert isinstance(result.error, RemoteProtocolError)
    assert conn.state is State.ERROR
    assert step_all(conn)[0].__class__ is RemoteProtocolError


@pytest.mark.parametrize("line", ["GET /", "GET / HTTP/1.1 extra", "GETS / HTTP/1.1"])
def test_almost_http_is_just_unknown(line: str) -> None:
    conn = ready()
    assert talk(conn, cmd(line)).replies == ["500 5.5.2 Error: command not recognized"]


def test_http_request_mid_session() -> None:
    conn = ready()
    talk(conn, cmd(FROM, TO, "BDAT 2") + b"ab")
    result = talk(conn, cmd("GET / HTTP/1.1"))
    assert result.of(MessageAborted) == [MessageAborted("connection_lost", 2)]
    assert result.codes == [421]


def test_fatal_errors_discard_later_input() -> None:
    conn = greeted(open_config(max_invalid_commands=0))
    result = talk(conn, cmd("FOO", "NOOP"))
    assert result.codes == [421]
    conn.receive_data(b"NOOP\r\n")
    assert conn.data_to_send() == b""
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_reject_421_closes_after_the_reply() -> None:
    conn = ready()
    result = talk(conn, cmd(FROM, "NOOP"), reject_with(MailFrom, 421, "Going down"))
    assert result.replies == ["421 4.3.0 Going down"]
    assert result.events[-1] == ConnectionClosed("421 sent")
