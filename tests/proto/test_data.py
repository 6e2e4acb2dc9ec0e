"""Message bodies: DATA (RFC 5321 4.5.2), SIZE (RFC 1870), BDAT (RFC 3030), LMTP
(RFC 2033) replies, and the SMTP smuggling defences."""

from __future__ import annotations

from typing import Any

import pytest

from smtp_proto import (
    DataChunk,
    LocalProtocolError,
    MailFrom,
    MessageAborted,
    MessageComplete,
    MessageStart,
    Quit,
    RcptTo,
    Reply,
    ServerConfig,
    ServerConnection,
    State,
)
from tests.proto.driver import Result, converse, open_config
from tests.proto.support import by_type, cmd, ready, reject_with, split_bytes, talk

FROM = "MAIL FROM:<a@example.com>"
TO = "RCPT TO:<b@example.com>"
ENVELOPE = cmd("MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>")
QUEUED = "250 2.0.0 OK: message queued"
GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"


def in_data(config: ServerConfig | None = None) -> ServerConnection:
    """A connection that has just been told 354."""
    conn = ready(config)
    result = talk(conn, ENVELOPE + cmd("DATA"))
    assert result.replies[-1] == GO_AHEAD
    assert conn.state is State.DATA
    return conn


def send_body(wire: bytes, config: ServerConfig | None = None, split: bool = False) -> Result:
    conn = in_data(config)
    return converse(conn, split_bytes(wire) if split else [wire])


# -- dot-unstuffing and the end of the message -----------------------------------------------------

UNSTUFF = [
    # (bytes after 354, the message)
    (b".\r\n", b""),
    (b"\r\n.\r\n", b"\r\n"),
    (b"hello\r\n.\r\n", b"hello\r\n"),
    (b"Subject: x\r\n\r\nbody\r\n.\r\n", b"Subject: x\r\n\r\nbody\r\n"),
    (b"..\r\n.\r\n", b".\r\n"),
    (b"..leading dot\r\n.\r\n", b".leading dot\r\n"),
    (b"a\r\n..\r\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n"),
    (b"a\r\n...\r\n.\r\n", b"a\r\n..\r\n"),
    (b"a.\r\nb.c\r\n.d\r\n.\r\n", b"a.\r\nb.c\r\nd\r\n"),
    (b"a\r\n.\r\r\n.\r\n", b"a\r\n\r\r\n"),  # "." then bare CR is not the end
    (b"\xff\x00binary-ish\r\n.\r\n", b"\xff\x00binary-ish\r\n"),
]


@pytest.mark.parametrize(("wire", "message"), UNSTUFF)
@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_unstuffing(wire: bytes, message: bytes, split: bool) -> None:
    result = send_body(wire, split=split)
    assert result.body == message
    assert result.of(MessageComplete) == [MessageComplete("DATA", len(message))]
    assert result.replies == [QUEUED]


def test_message_without_end_waits() -> None:
    conn = in_data()
    first = talk(conn, b"line\r\n.\r")
    assert first.output == b""
    assert first.of(MessageComplete) == []
    assert conn.state is State.DATA
    second = talk(conn, b"\n")
    assert second.replies == [QUEUED]
    assert first.body + second.body == b"line\r\n"
    assert conn.message_size == len(b"line\r\n")


def test_empty_message() -> None:
    result = send_body(b".\r\n")
    assert result.of(DataChunk) == []
    assert result.of(MessageComplete) == [MessageComplete("DATA", 0)]


def test_bytes_after_the_end_are_commands() -> None:
    conn = in_data()
    result = talk(conn, b"x\r\n.\r\nNOOP\r\nQUIT\r\n")
    assert result.replies == [QUEUED, "250 2.0.0 OK", "221 2.0.0 Bye"]
    assert result.of(Quit) == [Quit()]


def test_body_pipelined_with_the_envelope() -> None:
    conn = ready()
    result = talk(conn, ENVELOPE + cmd("DATA") + b"..hi\r\n.\r\n" + cmd("NOOP"))
    assert result.codes == [250, 250, 354, 250, 250]
    assert result.body == b".hi\r\n"


def test_long_lines_are_fine_in_data() -> None:
    line = b"x" * 100_000 + b"\r\n"
    result = send_body(line + b".\r\n")
    assert result.body == line


def test_message_size_counts_unstuffed_bytes() -> None:
    conn = in_data()
    talk(conn, b"..\r\n..\r\n.\r\n")
    assert conn.message_size == 6


# -- SIZE ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(
    ("body", "ok"),
    [
        (b"123456789\r\n", False),  # 11 bytes
        (b"12345678\r\n", True),  # exactly 10
        (b"1234567\r\n", True),
        (b"..345678\r\n", True),  # 10 after unstuffing
    ],
)
def test_size_limit(body: bytes, ok: bool, split: bool) -> None:
    config = open_config(size=10)
    result = send_body(body + b".\r\n", config, split)
    if ok:
        assert result.replies == [QUEUED]
        assert result.of(MessageComplete)
    else:
        assert result.replies == ["552 5.3.4 Error: message exceeds fixed maximum message size 10"]
        assert result.of(MessageComplete) == []
        assert result.of(MessageAborted) == [MessageAborted("size_exceeded", 11)]
        # Exactly the first ``size`` bytes reach the application, however split.
        assert result.body == body[:10]


def test_size_exceeded_is_answered_only_at_the_end() -> None:
    conn = in_data(open_config(size=10))
    result = talk(conn, b"x" * 100 + b"\r\n")
    assert result.output == b""
    assert conn.size_exceeded is True
    assert conn.state is State.DATA
    result = talk(conn, b"more\r\n.\r\n")
    assert result.codes == [552]
    assert result.events == [MessageAborted("size_exceeded", 108)]
    # The transaction is over (RFC 1870 section 6.2).
    assert talk(conn, cmd(TO)).replies == ["503 5.5.1 Error: need MAIL command"]
    assert conn.session.transaction == 2


def test_size_limit_applies_to_bdat() -> None:
    conn = ready(open_config(size=5))
    result = talk(conn, ENVELOPE + cmd("BDAT 3") + b"abc" + cmd("BDAT 3") + b"def" + cmd(TO))
    assert result.replies[2:] == [
        "250 2.0.0 3 octets received",
        "552 5.3.4 Error: message exceeds fixed maximum message size 5",
        "503 5.5.1 Error: need MAIL command",
    ]
    assert result.body == b"abcde"  # exactly the first 5 bytes
    assert result.of(MessageAborted) == [MessageAborted("size_exceeded", 6)]


# -- SMTP smuggling ------------------------------------------------------------------------------

SMUGGLE = [
    # (fake end-of-data sequence, what "keep" delivers of it)
    (b"\n.\n", b"\n.\n"),
    (b"\r\n.\n", b"\r\n\n"),
    (b"\n.\r\n", b"\n.\r\n"),
    (b"\r.\r", b"\r.\r"),
    (b"\r\n.\r", b"\r\n\r"),
    (b"\r.\r\n", b"\r.\r\n"),
    (b"\n.\r", b"\n.\r"),
    (b"\r.\n", b"\r.\n"),
    (b"\r\n\x00.\r\n", b"\r\n\x00.\r\n"),
]
INJECTED = b"MAIL FROM:<admin@bank.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nevil\r\n"


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(("fake", "kept"), SMUGGLE)
def test_smuggling_keep(fake: bytes, kept: bytes, split: bool) -> None:
    wire = b"Subject: hi\r\n\r\nbefore" + fake + INJECTED + b".\r\nQUIT\r\n"
    result = send_body(wire, open_config(bare_line_endings="keep"), split)
    assert result.of(MailFrom) == []
    assert result.of(RcptTo) == []
    assert len(result.of(MessageComplete)) == 1
    assert result.body == b"Subject: hi\r\n\r\nbefore" + kept + INJECTED
    assert result.replies == [QUEUED, "221 2.0.0 Bye"]


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(("fake", "kept"), SMUGGLE[:-1])
def test_smuggling_reject(fake: bytes, kept: bytes, split: bool) -> None:
    wire = b"Subject: hi\r\n\r\nbefore" + fake + INJECTED + b".\r\nQUIT\r\n"
    result = send_body(wire, open_config(bare_line_endings="reject"), split)
    assert result.of(MailFrom) == []
    assert result.of(MessageComplete) == []
    assert result.of(MessageAborted) == [
        MessageAborted("bare_line_ending", len(b"Subject: hi\r\n\r\nbefore" + kept + INJECTED))
    ]
    assert result.replies == [
        "554 5.6.0 Error: bare CR or LF in message; lines must end with CRLF",
        "221 2.0.0 Bye",
    ]
    # The bytes went out as DataChunks (the verdict comes at the end), the same
    # whatever the split; MessageAborted tells the application to drop them.
    assert result.body == b"Subject: hi\r\n\r\nbefore" + kept + INJECTED


@pytest.mark.parametrize(
    "body",
    [b"bare LF\n", b"bare CR\r", b"a\rb\r\n", b"\n", b"x\r\r\n", b"last line\r\n\n"],
)
def test_bare_line_endings_policy(body: bytes) -> None:
    wire = body + b"\r\n.\r\n"
    kept = send_body(wire, open_config(bare_line_endings="keep"))
    assert kept.body == body + b"\r\n"
    assert kept.replies == [QUEUED]
    refused = send_body(wire, open_config(bare_line_endings="reject"))
    assert refused.codes == [554]
    assert refused.of(MessageAborted)[0].reason == "bare_line_ending"


def test_reject_policy_accepts_clean_messages() -> None:
    result = send_body(b"a\r\nb\r\n.\r\n", open_config(bare_line_endings="reject"))
    assert result.replies == [QUEUED]


def test_bare_line_endings_do_not_matter_in_bdat() -> None:
    conn = ready(open_config(bare_line_endings="reject"))
    result = talk(conn, ENVELOPE + cmd("BDAT 5 LAST") + b"a\nb\rc")
    assert result.replies[-1] == QUEUED
    assert result.body == b"a\nb\rc"


# -- BDAT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_bdat_octets_are_taken_verbatim(split: bool) -> None:
    chunk = b"\r\n.\r\nQUIT\r\n..\r\n"
    conn = ready()
    wire = ENVELOPE + cmd(f"BDAT {len(chunk)}") + chunk + cmd("BDAT 0 LAST")
    result = converse(conn, split_bytes(wire) if split else [wire])
    assert result.body == chunk
    assert result.of(Quit) == []
    assert result.of(MessageComplete) == [MessageComplete("BDAT", len(chunk))]
    assert result.replies[-2:] == [f"250 2.0.0 {len(chunk)} octets received", QUEUED]


def test_bdat_zero_last_alone() -> None:
    conn = ready()
    result = talk(conn, ENVELOPE + cmd("BDAT 0 LAST"))
    assert result.of(MessageStart) == [MessageStart("BDAT")]
    assert result.of(MessageComplete) == [MessageComplete("BDAT", 0)]
    assert result.replies[-1] == QUEUED


def test_bdat_zero_without_last() -> None:
    conn = ready()
    result = talk(conn, ENVELOPE + cmd("BDAT 0", "BDAT 2 LAST") + b"ok")
    assert result.replies[-2:] == ["250 2.0.0 0 octets received", QUEUED]
    assert result.body == b"ok"


def test_bdat_chunk_waits_for_its_octets() -> None:
    conn = ready()
    talk(conn, ENVELOPE)
    result = talk(conn, cmd("BDAT 10 LAST") + b"12345")
    assert result.output == b""
    assert conn.state is State.BDAT
    result = talk(conn, b"67890NOOP\r\n")
    assert result.replies == [QUEUED, "250 2.0.0 OK"]


@pytest.mark.parametrize(
    ("before", "reply"),
    [
        ([], "503 5.5.1 Error: need MAIL command"),
        ([FROM], "503 5.5.1 Error: need RCPT command"),
    ],
)
@pytest.mark.parametrize("last", ["", " LAST"])
def test_refused_bdat_consumes_its_octets(before: list[str], reply: str, last: str) -> None:
    conn = ready()
    payload = cmd("RSET", "MAIL FROM:<x@example.com>", "RCPT TO:<y@example.com>", "DATA")
    result = talk(conn, cmd(*before, f"BDAT {len(payload)}{last}") + payload + cmd("NOOP"))
    assert result.replies[-2:] == [reply, "250 2.0.0 OK"]
    assert len(result.of(MailFrom)) == len(before)
    assert result.of(RcptTo) == []


def test_refused_bdat_octets_split_across_reads() -> None:
    conn = ready()
    result = converse(conn, split_bytes(cmd("BDAT 6") + b"QUIT\r\n" + cmd("NOOP")))
    assert result.replies == ["503 5.5.1 Error: need MAIL command", "250 2.0.0 OK"]
    assert result.of(Quit) == []


def test_bdat_message_rejected_by_application() -> None:
    conn = ready()
    result = talk(conn, ENVELOPE + cmd("BDAT 2 LAST") + b"hi",
                  reject_with(MessageComplete, 550, "Spam", "5.7.1"))
    assert result.replies[-1] == "550 5.7.1 Spam"
    assert conn.session.envelope.mail_from is None


# -- LMTP ----------------------------------------------------------------------------------------

LMTP_ENVELOPE = cmd("MAIL FROM:<a@example.com>", "RCPT TO:<r1@example.com>",
                    "RCPT TO:<r2@example.com>", "RCPT TO:<r3@example.com>")


def lmtp(config: dict[str, Any] | None = None) -> ServerConnection:
    return ready(open_config(lmtp=True, **(config or {})), hello=cmd("LHLO client.example"))


def test_lmtp_one_reply_per_recipient() -> None:
    conn = lmtp()
    result = talk(conn, LMTP_ENVELOPE + cmd("DATA", "hi", "."))
    assert result.replies[-4:] == [GO_AHEAD, QUEUED, QUEUED, QUEUED]


def test_lmtp_only_accepted_recipients_get_replies() -> None:
    conn = lmtp()
    decide = by_type({RcptTo: lambda c, e: c.reject(550) if e.address == "r2@example.com"
                      else c.accept()})
    result = talk(conn, LMTP_ENVELOPE + cmd("DATA", "hi", "."), decide)
    assert result.replies[-3:] == [GO_AHEAD, QUEUED, QUEUED]


def test_lmtp_rejection_is_per_recipient_too() -> None:
    conn = lmtp()
    result = talk(conn, LMTP_ENVELOPE + cmd("DATA", "hi", "."),
                  reject_with(MessageComplete, 451, "Later"))
    assert result.replies[-3:] == ["451 4.3.0 Later"] * 3


def test_lmtp_answer_recipients() -> None:
    conn = lmtp()

    def answer(c: ServerConnection, _event: Any) -> None:
        c.answer_recipients([
            Reply(250, "Delivered"),
            Reply(550, "Mailbox unavailable", "5.2.1"),
            Reply(452, "Over quota"),
        ])

    result = talk(conn, LMTP_ENVELOPE + cmd("DATA", "hi", ".", "NOOP"),
                  by_type({MessageComplete: answer}))
    assert result.replies[-4:] == [
        "250 2.0.0 Delivered",
        "550 5.2.1 Mailbox unavailable",
        "452 4.3.1 Over quota",
        "250 2.0.0 OK",
    ]
    assert conn.session.envelope.mail_from is None
    assert conn.session.transaction == 2


@pytest.mark.parametrize(
    ("lmtp_mode", "replies", "error"),
    [
        (True, [Reply(250, "ok")], LocalProtocolError),  # too few
        (True, [Reply(250, "ok")] * 4, LocalProtocolError),  # too many
        (True, [Reply(250, "ok"), Reply(354, "go"), Reply(250, "ok")], ValueError),
        (False, [Reply(250, "ok")], LocalProtocolError),  # not LMTP
    ],
)
def test_answer_recipients_misuse(lmtp_mode: bool, replies: list[Reply], error: type) -> None:
    conn = lmtp() if lmtp_mode else ready()
    envelope = LMTP_ENVELOPE if lmtp_mode else ENVELOPE
    conn.receive_data(envelope + cmd("DATA", "x", "."))
    while True:
        event = conn.next_event()
        if isinstance(event, MessageComplete):
            break
        if conn.pending is not None:
            conn.accept()
    conn.data_to_send()
    with pytest.raises(error):
        conn.answer_recipients(replies)
    # Still pending: a correct answer works.
    assert conn.pending == event
    conn.accept()
    assert conn.data_to_send().count(b"250 2.0.0 OK: message queued") == (3 if lmtp_mode else 1)


def test_answer_recipients_bad_enhanced_code_leaves_the_decision_pending() -> None:
    conn = lmtp()
    conn.receive_data(LMTP_ENVELOPE + cmd("DATA", "x", "."))
    while not isinstance(event := conn.next_event(), MessageComplete):
        if conn.pending is not None:
            conn.accept()
    conn.data_to_send()
    with pytest.raises(ValueError, match="does not fit"):
        conn.answer_recipients([Reply(250, "ok"), Reply(550, "no", "2.0.0"), Reply(250, "ok")])
    assert conn.data_to_send() == b""
    assert conn.pending == event
    conn.reject(451)
    assert conn.data_to_send() == b"451 4.3.0 Error: message rejected\r\n" * 3


def test_answer_recipients_needs_a_pending_message() -> None:
    conn = lmtp()
    with pytest.raises(LocalProtocolError):
        conn.answer_recipients([])


def test_lmtp_size_exceeded_is_per_recipient() -> None:
    conn = lmtp({"size": 5})
    result = talk(conn, LMTP_ENVELOPE + cmd("DATA", "too long", "."))
    assert result.codes[-3:] == [552, 552, 552]
    assert result.codes[-4] == 354


def test_lmtp_bare_line_ending_is_per_recipient() -> None:
    conn = lmtp({"bare_line_endings": "reject"})
    result = talk(conn, LMTP_ENVELOPE + cmd("DATA") + b"a\nb\r\n.\r\n")
    assert result.codes[-3:] == [554, 554, 554]


def test_lmtp_bdat() -> None:
    conn = lmtp()
    result = talk(conn, LMTP_ENVELOPE + cmd("BDAT 2") + b"ab" + cmd("BDAT 1 LAST") + b"c")
    # One reply to the intermediate chunk, one per recipient after LAST (RFC 2033 4.3).
    assert result.replies[-4:] == ["250 2.0.0 2 octets received", QUEUED, QUEUED, QUEUED]
    assert result.body == b"abc"


def test_lmtp_oversized_intermediate_bdat_chunk_gets_one_reply() -> None:
    conn = lmtp({"size": 5})
    result = talk(conn, LMTP_ENVELOPE + cmd("BDAT 10") + b"0123456789" + cmd("RSET"))
    assert result.replies[-2:] == [
        "552 5.3.4 Error: message exceeds fixed maximum message size 5",
        "250 2.0.0 Flushed",
    ]
    assert result.codes.count(552) == 1
    assert result.of(MessageAborted) == [MessageAborted("size_exceeded", 10)]


def test_lmtp_oversized_last_bdat_chunk_is_per_recipient() -> None:
    conn = lmtp({"size": 5})
    result = talk(conn, LMTP_ENVELOPE + cmd("BDAT 3") + b"abc" + cmd("BDAT 3 LAST") + b"def")
    assert result.replies[-4:] == [
        "250 2.0.0 3 octets received",
        *["552 5.3.4 Error: message exceeds fixed maximum message size 5"] * 3,
    ]


# -- the DATA reader against a reference, at every split point --------------------------------

FRAGMENTS = [b".", b"..", b"\r\n", b"\r", b"\n", b"x"]
TRICKY = [a + b + c for a in FRAGMENTS for b in FRAGMENTS for c in FRAGMENTS]


def reference(wire: bytes) -> tuple[bytes, bytes] | None:
    """RFC 5321 4.5.2 done the obvious way: (message, bytes after the end)."""
    full = b"\r\n" + wire
    at = full.find(b"\r\n.\r\n")
    if at < 0:
        return None
    return full[: at + 2].replace(b"\r\n.", b"\r\n")[2:], full[at + 5 :]


@pytest.mark.parametrize("prefix", TRICKY)
def test_reader_matches_reference_at_every_split(prefix: bytes) -> None:
    wire = prefix + b"\r\n.\r\n" + b"NOOP\r\n"
    expected = reference(wire)
    assert expected is not None
    message, rest = expected
    setup = cmd("EHLO c.example") + ENVELOPE + cmd("DATA")
    for cut in range(len(wire) + 1):
        conn = ServerConnection(open_config())
        conn.send_greeting()
        conn.data_to_send()
        result = converse(conn, [setup + wire[:cut], wire[cut:]] if cut < len(wire)
                          else [setup + wire])
        assert result.body == message, cut
        assert result.of(MessageComplete) == [MessageComplete("DATA", len(message))], cut
        # Whatever followed the end marker was read as commands, one reply a line.
        after = result.replies[result.replies.index(QUEUED) + 1 :]
        assert len(after) == rest.count(b"\n"), cut
        assert after[-1] == "250 2.0.0 OK", cut


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"..\r\n" * 600 + b".\r\n", b".\r\n" * 600),
        (b"..x\r\n" * 400 + b".\r\nNOOP\r\n", b".x\r\n" * 400),
        (b"y" * 5000 + b"\r\n" + b"..\r\n" * 300 + b".\r\n",
         b"y" * 5000 + b"\r\n" + b".\r\n" * 300),
        (b".a\r\n.b\r\n" * 300 + b"\r\n.\r\n", b"a\r\nb\r\n" * 300 + b"\r\n"),
    ],
    ids=["dense-dots", "dense-then-command", "sparse-then-dense", "alternating"],
)
@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_dense_dot_lines(wire: bytes, message: bytes, split: bool) -> None:
    result = send_body(wire, split=split)
    assert result.body == message
    assert result.of(MessageComplete) == [MessageComplete("DATA", len(message))]
    assert result.codes[0] == 250


def test_a_dot_line_right_after_the_end_is_a_command() -> None:
    conn = in_data()
    result = talk(conn, b"a\r\n.\r\n.\r\n")
    assert result.body == b"a\r\n"
    assert result.replies == [QUEUED, "500 5.5.2 Error: command not recognized"]
