"""Property-based tests of the sans-IO core.

1. Split invariance: however the client's bytes are cut into reads, the core
   produces the same events and exactly the same reply bytes
   (``test_split_invariance``, plus ``test_refused_body_is_split_invariant``
   aimed at messages the core refuses itself).
2. A stateful model (``SessionMachine``, a ``RuleBasedStateMachine``) of an
   SMTP/LMTP session that predicts every reply code and checks reply syntax,
   enhanced codes, the envelope, the delivered bytes and the memory bound
   after each step.
3. Message bodies survive the round trip through DATA (dot-stuffed) and BDAT.

Every flush of ``data_to_send()`` is checked to end on a reply line, and the
receive buffer to stay bounded, wherever the core is driven (``pump``).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from smtp_proto import (
    AuthAttempt,
    ConnectionClosed,
    DataChunk,
    Event,
    Hello,
    MailFrom,
    MessageAborted,
    MessageComplete,
    MessageStart,
    Quit,
    RcptTo,
    RemoteProtocolError,
    Reply,
    Reset,
    ServerConfig,
    ServerConnection,
    State,
)

from .driver import Decide, Result, accept_all, drain

CRLF = b"\r\n"

# -- helpers shared by all properties ------------------------------------------

_REPLY_LINE = re.compile(rb"(\d{3})([ -])([^\r\n]*)")
_ENHANCED = re.compile(rb"([245])\.(\d{1,3})\.(\d{1,3})(?: |\Z)")
# Slack for a read in the memory-bound checks; the biggest read we ever feed.
_MAX_READ = 4096


def parse_replies(out: bytes) -> list[tuple[int, list[bytes]]]:
    """Split reply bytes into (code, [line texts]) and check their syntax.

    RFC 5321 section 4.2: ``Reply-code [ SP textstring ] CRLF`` for the last
    line, ``Reply-code "-" [ textstring ] CRLF`` for the others; all lines of
    a multi-line reply carry the same code. The output never ends inside a
    line.
    """
    assert out == b"" or out.endswith(CRLF), f"partial reply line in {out[-80:]!r}"
    replies: list[tuple[int, list[bytes]]] = []
    current: list[bytes] = []
    code = None
    for raw in out.split(CRLF)[:-1]:
        match = _REPLY_LINE.fullmatch(raw)
        assert match is not None, f"malformed reply line {raw!r}"
        line_code = int(match.group(1))
        assert 200 <= line_code <= 599, raw
        if code is not None:
            assert line_code == code, f"code changes inside a multi-line reply: {raw!r}"
        code = line_code
        text = match.group(3)
        enhanced = _ENHANCED.match(text)
        if enhanced is not None:
            # RFC 3463 section 2: the class digit agrees with the reply's.
            assert enhanced.group(1) == match.group(1)[:1], raw
            assert line_code // 100 != 3, f"3xx reply with an enhanced code: {raw!r}"
        current.append(text)
        if match.group(2) == b" ":
            replies.append((code, current))
            current, code = [], None
    assert not current, "multi-line reply without a last line"
    return replies


def pump(conn: ServerConnection, decide: Decide, result: Result) -> None:
    """``drain`` once more, checking that this flush ends on a line end:
    ``data_to_send()`` never hands out part of a reply line."""
    before = len(result.output)
    drain(conn, decide, result)
    assert result.output[before:] == b"" or result.output.endswith(CRLF)
    check_buffer_bound(conn)


def check_buffer_bound(conn: ServerConnection) -> None:
    """What the core holds back after draining is bounded by a line (or less)."""
    buf = conn._buf
    state = conn.state
    if state is State.DATA:
        # Only a possible start of CRLF.CRLF (plus the virtual first CRLF).
        assert len(buf) <= 4, bytes(buf)
    elif state is State.BDAT:
        assert not buf
    elif state in (State.COMMAND, State.SASL):
        assert b"\n" not in buf
        limit = max(conn.config.max_command_length + 1200, 12288 + 64)
        assert len(buf) <= limit
    elif state in (State.CLOSED, State.ERROR):
        assert not buf


def coalesce(events: list[Event]) -> list[Event]:
    """Merge runs of ``DataChunk``: how a body is cut into chunks depends on
    how the bytes arrived (documented on ``DataChunk``); only the
    concatenation is meaningful, so it is what we compare."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, DataChunk) and out and isinstance(out[-1], DataChunk):
            out[-1] = DataChunk(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def comparable(events: list[Event], config: ServerConfig) -> list[Event]:
    """``coalesce``, after checking what each message streamed.

    Which bytes go out as ``DataChunk`` must not depend on the split either:
    a message streams its whole body, except that past ``config.size`` it
    stops at exactly ``size`` bytes (with ``bare_line_endings="reject"`` the
    whole body still goes out and the verdict comes at the end).
    """
    events = coalesce(events)
    limit = config.size if config.size is not None else float("inf")
    body: bytes | None = None
    for event in events:
        if isinstance(event, MessageStart):
            assert body is None, "MessageStart inside a message"
            body = b""
        elif isinstance(event, DataChunk):
            assert body is not None, "DataChunk outside a message"
            body = event.data
        elif isinstance(event, MessageComplete | MessageAborted) and body is not None:
            assert len(body) == min(event.size, limit), (event, len(body))
            if isinstance(event, MessageComplete) or event.reason == "bare_line_ending":
                assert len(body) == event.size
            if isinstance(event, MessageAborted) and event.reason == "size_exceeded":
                assert event.size > limit
            body = None
    return events


def delivered(events: list[Event]) -> list[tuple[Event, bytes]]:
    """(MessageComplete/MessageAborted, body bytes) for every message."""
    messages: list[tuple[Event, bytes]] = []
    body: bytearray | None = None
    for event in events:
        if isinstance(event, MessageStart):
            assert body is None, "MessageStart inside a message"
            body = bytearray()
        elif isinstance(event, DataChunk):
            assert body is not None, "DataChunk outside a message"
            body += event.data
        elif isinstance(event, MessageComplete | MessageAborted):
            if isinstance(event, MessageComplete):
                assert body is not None
            if body is not None:
                messages.append((event, bytes(body)))
            body = None
    return messages


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


def stuff(body: bytes) -> bytes:
    """Dot-stuff a CRLF-terminated body and add the end marker (RFC 5321 4.5.2)."""
    if not body:
        return b".\r\n"
    assert body.endswith(CRLF)
    lines = body[:-2].split(CRLF)
    return CRLF.join(b"." + ln if ln.startswith(b".") else ln for ln in lines) + b"\r\n.\r\n"


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({p for p in points if 0 < p < len(data)})
    pieces, start = [], 0
    for p in [*bounds, len(data)]:
        pieces.append(data[start:p])
        start = p
    return [p for p in pieces if p]


# -- 1. split invariance ---------------------------------------------------------


def policy(conn: ServerConnection, event: Event) -> None:
    """A deterministic application: refuses what says "bad"."""
    if isinstance(event, Hello):
        if "bad" in event.hostname:
            conn.reject(550)
        else:
            conn.accept()
    elif isinstance(event, MailFrom | RcptTo):
        if "bad" in event.address:
            conn.reject(550)
        else:
            conn.accept()
    elif isinstance(event, AuthAttempt):
        if "bad" in event.username:
            conn.reject(535)
        else:
            conn.accept()
    elif isinstance(event, MessageComplete):
        count = len(conn.session.envelope.rcpt_to)
        if conn.config.lmtp and count > 1:
            conn.answer_recipients(
                [Reply(250 if i % 2 else 452, f"recipient {i}") for i in range(count)]
            )
        elif event.size % 3 == 1:
            conn.reject(451)
        else:
            conn.accept()
    else:  # pragma: no cover - every decision is covered above
        raise AssertionError(event)


@dataclass
class Run:
    result: Result = field(default_factory=Result)
    state: State | None = None
    envelope: tuple[object, ...] = ()
    user: object = None
    transaction: int = 0


def feed(config: ServerConfig, chunks: list[bytes], eof: bool) -> Run:
    conn = ServerConnection(config)
    conn.send_greeting()
    result = Result(output=conn.data_to_send())

    def terminal() -> bool:
        return result.error is not None or any(
            isinstance(e, ConnectionClosed) for e in result.events[-1:]
        )

    for chunk in chunks:
        if terminal():
            break  # a backend closes the socket here: nothing more is read
        conn.receive_data(chunk)
        pump(conn, policy, result)
    if eof and not terminal():
        conn.receive_data(b"")
        pump(conn, policy, result)
    env = conn.session.envelope
    return Run(
        result=result,
        state=conn.state,
        envelope=(env.mail_from, list(env.rcpt_to)),
        user=conn.session.user,
        transaction=conn.session.transaction,
    )


def summary(run: Run, config: ServerConfig) -> tuple[object, ...]:
    r = run.result
    return (
        comparable(r.events, config), r.output, repr(r.error), r.paused,
        run.state, run.envelope, run.user, run.transaction,
    )


_eol = st.sampled_from([CRLF, CRLF, CRLF, b"\n"])
_host = st.sampled_from([
    "client.example", "[192.0.2.1]", "bad.example", "", "two words",
    # refused (control characters, not UTF-8) or kept (UTF-8) by the core
    "a\rX-Injected:yes", "a\tb", "\udcff\udcfe", "a\x00", "a\u0085b", "b\u00fccher.example",
])
_paths = st.sampled_from([
    "<alice@example.com>", "<bad@example.com>", "<>", "<postmaster>", "<no-at-sign>",
    "<\u00fc@example.com>", "alice@example.com", " <bob@example.org>",
    "<@relay.example:carol@example.com>", '<"q r"@example.com>', "<a@@b>",
])
_mail_params = st.sampled_from([
    "", " SIZE=50", " SIZE=99999999999", " BODY=8BITMIME", " BODY=BINARYMIME",
    " SMTPUTF8", " FOO=bar", " SIZE=x", " BODY=7BIT SIZE=10", " AUTH=<>", " RET=FULL",
])
_rcpt_params = st.sampled_from(["", "", " NOTIFY=SUCCESS", " FOO"])


@st.composite
def _line(draw: st.DrawFn, text: st.SearchStrategy[str]) -> bytes:
    return draw(text).encode("utf-8", "surrogateescape") + draw(_eol)


_hello = _line(st.builds(
    lambda verb, host: f"{verb} {host}".rstrip(" "),
    st.sampled_from(["HELO", "EHLO", "LHLO", "ehlo"]), _host,
))
_mail = _line(st.builds(
    lambda sep, path, params: f"MAIL FROM:{sep}{path}{params}",
    st.sampled_from(["", "", " "]), _paths, _mail_params,
) | st.sampled_from(["MAIL", "MAIL TO:<x@y.z>", "mail from:<alice@example.com>"]))
_rcpt = _line(st.builds(
    lambda path, params: f"RCPT TO:{path}{params}", _paths, _rcpt_params,
) | st.sampled_from(["RCPT", "RCPT FROM:<x@y.z>"]))

# Message lines: ordinary text, dots (stuffed or not), bare CR/LF and the
# smuggling favourites, long lines, arbitrary bytes.
_body_line = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(str.encode),
    st.sampled_from([
        b".", b"..", b".hidden", b"..double", b"\n.\n", b"\r.\r", b"a\nb", b"a\rb",
        b"\n.\r\n", b"\r\n.\n", b"x\r", b"\ny", b"QUIT", b"RSET", b".\r\nNOOP",
    ]),
    st.integers(100, 1500).map(lambda n: b"L" * n),
    st.binary(max_size=40),
)


@st.composite
def _data(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(_body_line, max_size=6))
    if draw(st.booleans()):  # as a client would: stuff lines starting with a dot
        lines = [b"." + ln if ln.startswith(b".") else ln for ln in lines]
    body = b"".join(ln + CRLF for ln in lines)
    end = draw(st.sampled_from([b".\r\n", b".\r\n", b".\r\n", b".\n", b"", b"\r\n.\r\n"]))
    return b"DATA" + draw(_eol) + body + end


@st.composite
def _bdat(draw: st.DrawFn) -> bytes:
    payload = draw(st.binary(max_size=60) | st.sampled_from([b"\r\n.\r\n", b"QUIT\r\n"]))
    declared = len(payload)
    if draw(st.integers(0, 5)) == 0:  # a lying client
        declared = max(0, declared + draw(st.integers(-5, 5)))
    last = draw(st.sampled_from(["", "", " LAST", " last"]))
    header = draw(st.sampled_from([f"BDAT {declared}{last}"] * 4 + [
        "BDAT", "BDAT x", f"BDAT {declared} MORE", "BDAT -1", "BDAT 1 LAST extra",
    ]))
    return header.encode() + CRLF + payload


@st.composite
def _auth(draw: st.DrawFn) -> bytes:
    user = draw(st.sampled_from(["user", "bad", "\u00e9l\u00e8ve"])).encode()
    plain = b64(b"\0" + user + b"\0secret")
    return draw(st.sampled_from([
        b"AUTH PLAIN " + plain + CRLF,
        b"AUTH PLAIN\r\n" + plain + CRLF,
        b"AUTH PLAIN =\r\n",
        b"AUTH LOGIN\r\n" + b64(user) + CRLF + b64(b"pw") + CRLF,
        b"AUTH LOGIN " + b64(user) + CRLF + b64(b"pw") + CRLF,
        b"AUTH LOGIN\r\n*\r\n",
        b"AUTH LOGIN\r\n" + b64(user) + b"\r\n*\r\n",
        b"AUTH PLAIN !!!notbase64\r\n",
        b"AUTH CRAM-MD5\r\n",
        b"AUTH XOAUTH2 abc\r\n",
        b"AUTH\r\n",
        b"AUTH PLAIN\r\n" + b"A" * 13000 + CRLF,
    ]))


_overlong = st.builds(
    lambda verb, n, eol: verb + b"x" * n + eol,
    st.sampled_from([b"", b"NOOP ", b"MAIL FROM:<", b"RCPT TO:<", b"AUTH PLAIN "]),
    st.sampled_from([40, 60, 62, 63, 100, 509, 510, 511, 600, 1200, 1300, 13000]),
    _eol,
)
_simple = st.sampled_from([
    b"RSET\r\n", b"RSET now\r\n", b"NOOP\r\n", b"noop anything\r\n", b"VRFY alice\r\n",
    b"VRFY\r\n", b"HELP\r\n", b"HELP MAIL\r\n", b"EXPN list\r\n", b"QUIT\r\n",
    b"QUIT now\r\n", b"STARTTLS\r\n", b"GET / HTTP/1.1\r\n", b"\r\n", b"\n", b"DATA x\r\n",
    b"XCLIENT ADDR=192.0.2.9\r\n", b"XFORWARD NAME=x\r\n",
])
_garbage = _line(st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30))


_good_mail = _line(st.builds(
    "MAIL FROM:<{}>{}".format,
    st.sampled_from(["alice@example.com", "", "bad@example.com"]),
    st.sampled_from(["", "", " SIZE=50", " BODY=8BITMIME", " BODY=BINARYMIME", " SMTPUTF8"]),
))
_good_rcpt = _line(st.builds(
    "RCPT TO:<{}>".format,
    st.sampled_from(["bob@example.org", "carol@example.net", "bad@example.com"]),
))


@st.composite
def _transaction(draw: st.DrawFn) -> bytes:
    """MAIL, some RCPTs and a body: enough structure to reach the data phase."""
    mail = draw(_good_mail | _good_mail | _mail)
    parts = [mail, *draw(st.lists(_good_rcpt | _good_rcpt | _rcpt, min_size=1, max_size=3))]
    parts += draw(st.lists(_data() | _bdat(), min_size=1, max_size=3))
    return b"".join(parts)


_piece = st.one_of(
    *[_transaction()] * 4,  # weight: most conversations should carry messages
    _hello, _mail, _rcpt, _data(), _bdat(), _auth(), _simple, _overlong, _garbage,
)


@st.composite
def conversations(draw: st.DrawFn, lmtp: bool) -> bytes:
    """Mostly a proper greeting (and sometimes AUTH) first, then anything."""
    greeting = b"LHLO client.example\r\n" if lmtp else b"EHLO client.example\r\n"
    opener = draw(st.sampled_from([
        greeting, greeting, greeting, b"HELO client.example\r\n", b"EHLO x\r\nLHLO x\r\n", b"",
    ]))
    if draw(st.booleans()):
        opener += b"AUTH PLAIN " + b64(b"\0user\0secret") + CRLF
    return opener + b"".join(draw(st.lists(_piece, min_size=1, max_size=8)))


SPLIT_CONFIGS = {
    "default": ServerConfig(auth_optional=True, allow_insecure_auth=True),
    "auth-required": ServerConfig(allow_insecure_auth=True, max_invalid_commands=None),
    "lmtp": ServerConfig(lmtp=True, auth_optional=True, allow_insecure_auth=True),
    "size": ServerConfig(size=100, auth_optional=True, allow_insecure_auth=True,
                         max_invalid_commands=None),
    "bare-reject": ServerConfig(bare_line_endings="reject", auth_optional=True,
                                allow_insecure_auth=True),
    "no-enhanced": ServerConfig(hide_enhancedstatuscodes=True, auth_optional=True,
                                allow_insecure_auth=True, max_invalid_commands=3),
    "short-lines": ServerConfig(max_command_length=64, auth_optional=True,
                                max_invalid_commands=None),
}


@pytest.mark.parametrize("name", list(SPLIT_CONFIGS))
@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_split_invariance(name: str, data: st.DataObject) -> None:
    """The same conversation fed in one read, in random reads and byte by
    byte: identical events (``DataChunk`` runs merged, see ``coalesce``),
    byte-identical replies, the same final state. Decisions are answered by
    the deterministic ``policy``."""
    config = SPLIT_CONFIGS[name]
    conversation = data.draw(conversations(config.lmtp), label="conversation")
    eof = data.draw(st.booleans(), label="eof")
    whole = feed(config, [conversation] if conversation else [], eof)
    parse_replies(whole.result.output)
    expected = summary(whole, config)

    points = data.draw(st.lists(st.integers(0, len(conversation)), max_size=12), label="cuts")
    split = feed(config, cut(conversation, points), eof)
    assert summary(split, config) == expected

    if len(conversation) <= 700:
        single = [conversation[i : i + 1] for i in range(len(conversation))]
        assert summary(feed(config, single, eof), config) == expected


_SMALL = ServerConfig(size=100, auth_optional=True)
_STRICT = ServerConfig(bare_line_endings="reject", auth_optional=True)
_SESSION = b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"


@settings(max_examples=200, deadline=None)
@given(
    strict=st.booleans(),
    body=st.lists(_body_line, min_size=1, max_size=8).map(b"".join),
    bdat=st.booleans(),
    data=st.data(),
)
def test_refused_body_is_split_invariant(
    strict: bool, body: bytes, bdat: bool, data: st.DataObject
) -> None:
    """Aimed at where the reads matter most: a message the core refuses
    itself (over SIZE, or a bare CR/LF in DATA) streams the same DataChunks
    whatever the split: the first SIZE bytes, or the whole body."""
    config = _STRICT if strict else _SMALL
    body = body if strict else body + b"x" * 101
    if bdat:
        message = f"BDAT {len(body)} LAST\r\n".encode() + body
    else:
        body = body if body.endswith(CRLF) else body + CRLF
        message = b"DATA\r\n" + stuff(body)
    stream = _SESSION + message + b"NOOP\r\n"
    whole = feed(config, [stream], eof=False)
    points = data.draw(st.lists(st.integers(len(_SESSION), len(stream)), max_size=6))
    assert summary(feed(config, cut(stream, points), eof=False), config) == summary(
        whole, config
    )
    [(final, streamed)] = delivered(whole.result.events)
    if not strict:
        assert final == MessageAborted("size_exceeded", len(body))
        assert streamed == body[:100]
    elif not bdat and re.search(rb"\r(?!\n)|(?<!\r)\n", body):
        assert final == MessageAborted("bare_line_ending", len(body))
        assert streamed == body
    else:  # BDAT octets are not lines: the policy is about DATA only
        assert final == MessageComplete("BDAT" if bdat else "DATA", len(body))
        assert streamed == body


@settings(max_examples=10, deadline=None)
@given(recipients=st.integers(2, 4), extra=st.integers(1, 50))
def test_lmtp_bdat_chunk_refusal_is_one_reply(recipients: int, extra: int) -> None:
    """RFC 2033 4.3: per-recipient replies answer BDAT LAST only; a chunk
    without LAST that breaks SIZE gets one 552, or a pipelining client
    would take the extra ones for the answers to its next commands."""
    config = ServerConfig(lmtp=True, size=100, auth_optional=True)
    rcpts = b"".join(b"RCPT TO:<r%d@example.com>\r\n" % i for i in range(recipients))
    chunk = b"x" * (100 + extra)
    stream = (b"LHLO c.example\r\nMAIL FROM:<a@example.com>\r\n" + rcpts
              + b"BDAT %d\r\n" % len(chunk) + chunk + b"RSET\r\n")
    run = feed(config, [stream], eof=False)
    # One reply per command: LHLO, MAIL, each RCPT, the BDAT chunk, RSET.
    assert [c for c, _ in parse_replies(run.result.output)] == (
        [220, 250, 250] + [250] * recipients + [552, 250]
    )


@settings(max_examples=20, deadline=None)
@given(rejected=st.integers(1, 3), payload=st.binary(min_size=1, max_size=20))
def test_lmtp_bdat_last_without_recipients_gets_no_reply(rejected: int, payload: bytes) -> None:
    config = ServerConfig(lmtp=True, auth_optional=True)
    rcpts = b"".join(b"RCPT TO:<bad%d@example.com>\r\n" % i for i in range(rejected))
    stream = (b"LHLO c.example\r\nMAIL FROM:<a@example.com>\r\n" + rcpts
              + b"BDAT %d LAST\r\n" % len(payload) + payload + b"NOOP\r\n")
    run = feed(config, [stream], eof=False)
    # LHLO, MAIL, the refused RCPTs, nothing for BDAT LAST, then NOOP's 250.
    assert [c for c, _ in parse_replies(run.result.output)] == (
        [220, 250, 250] + [550] * rejected + [250]
    )


# -- 2. a model of the session -----------------------------------------------------

_INVALID = frozenset({500, 501, 502, 503, 504, 555})
_MAX_AUTH_FAILURES = 5
_SIZE = 400
_MAX_RCPT = 3
_RCPT_OVERSHOOT = 100
_MAIL_EXTRA = 26 + 100 + 500 + 16 + 9 + 11  # RFC 1870, 3461, 4954, 6152, 6531, 8689
_RCPT_EXTRA = 500  # RFC 3461

# The default max_invalid_commands (10) ends most long random sessions early,
# so two configs lift it to let the machine get deeper.
MACHINE_CONFIGS = [
    ServerConfig(auth_optional=True, allow_insecure_auth=True, size=_SIZE,
                 max_recipients=_MAX_RCPT),
    ServerConfig(auth_optional=True, allow_insecure_auth=True, size=_SIZE,
                 max_recipients=_MAX_RCPT, max_invalid_commands=None),
    ServerConfig(auth_optional=True, allow_insecure_auth=True, size=_SIZE,
                 max_recipients=_MAX_RCPT, lmtp=True, max_invalid_commands=None),
    ServerConfig(auth_optional=True, allow_insecure_auth=True, size=_SIZE,
                 max_recipients=_MAX_RCPT, hide_enhancedstatuscodes=True,
                 max_invalid_commands=30),
]


def _weighted(common: list[str], rare: list[str]) -> st.SearchStrategy[str]:
    """Mostly the valid choices, so that transactions get somewhere."""
    return st.sampled_from(common) | st.sampled_from(common) | st.sampled_from(rare)


# path -> (error code for MAIL or None, address), (error code for RCPT or None, address);
# the non-ASCII path needs SMTPUTF8 (553 without it, RFC 6531 3.7.4.1).
_MODEL_PATHS: dict[str, tuple[int | None, int | None, str]] = {
    "<alice@example.com>": (None, None, "alice@example.com"),
    "<bob@example.org>": (None, None, "bob@example.org"),
    "<bad@example.com>": (None, None, "bad@example.com"),
    "<>": (None, 501, ""),
    "<postmaster>": (501, None, "postmaster"),
    "<no-at-sign>": (501, 501, ""),
    "alice@example.com": (501, 501, ""),
    "<@relay.example:carol@example.com>": (None, None, "carol@example.com"),
    "<\u00fc@example.com>": (553, 553, "\u00fc@example.com"),
}
# MAIL parameter -> error code (None: accepted); checked before the path.
_MODEL_MAIL_PARAMS: dict[str, int | None] = {
    "": None, "SIZE=100": None, f"SIZE={_SIZE + 1}": 552, "BODY=8BITMIME": None,
    "BODY=BINARYMIME": None, "SMTPUTF8": None, "FOO=bar": 555, "SIZE=abc": 501,
    "BODY=9BIT": 501, "SMTPUTF8=yes": 501,
}
_MODEL_RCPT_PARAMS: dict[str, int | None] = {"": None, "NOTIFY=SUCCESS": 555, "FOO": 555}


def _no_crlf(line: bytes) -> bytes:
    while CRLF in line:
        line = line.replace(CRLF, b"\n")
    return line


# Lines of a body the model sends: no CRLF inside (that would end the line),
# but bare CR/LF and dots anywhere.
_model_line = st.one_of(
    st.binary(max_size=30),
    st.sampled_from([b".", b"..", b".x", b"a\nb", b"x\n.\ny", b"\r.\r", b"QUIT", b""]),
    st.integers(50, 500).map(lambda n: b"M" * n),
).map(_no_crlf)


@dataclass
class Model:
    greeted: bool = False
    mail: str | None = None
    smtputf8: bool = False
    binarymime: bool = False
    rcpts: list[str] = field(default_factory=list)
    bdat: bytes | None = None  # bytes of an open BDAT message
    user: str | None = None
    auth_failures: int = 0
    invalid: int = 0
    overshoot: int = 0  # RCPTs refused with 452 in this transaction
    closed: bool = False
    transaction: int = 1

    def reset(self) -> None:
        self.mail = None
        self.smtputf8 = self.binarymime = False
        self.rcpts = []
        self.bdat = None


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.conn: ServerConnection
        self.m = Model()
        self.verdict = "accept"
        self.events: list[Event] = []
        self.bdat_start = 0

    # -- plumbing ---------------------------------------------------------------

    @initialize(config=st.sampled_from(MACHINE_CONFIGS), greet=st.integers(0, 3))
    def connect(self, config: ServerConfig, greet: int) -> None:
        self.cfg = config
        self.conn = ServerConnection(config)
        self.conn.send_greeting()
        replies = parse_replies(self.conn.data_to_send())
        assert [c for c, _ in replies] == [220]
        # RFC 2034: the greeting carries no enhanced code.
        assert _ENHANCED.match(replies[0][1][0]) is None
        if greet:  # most sessions start the way clients do
            self.hello("LHLO" if config.lmtp else "EHLO", "client.example")

    def decide(self, conn: ServerConnection, event: Event) -> None:
        """The application: "bad" names get 550 (AUTH 535); a message gets
        what the rule asked for: 250, 451, or (LMTP) 250/452 by recipient."""
        if not isinstance(event, MessageComplete):
            policy(conn, event)
        elif self.verdict == "reject":
            conn.reject(451)
        elif self.verdict == "mixed" and self.cfg.lmtp:
            count = len(self.m.rcpts)
            conn.answer_recipients([Reply(*self.mixed(i)) for i in range(count)])
        else:
            conn.accept()

    @staticmethod
    def mixed(i: int) -> tuple[int, str]:
        return (250, "delivered") if i % 2 == 0 else (452, "mailbox full")

    def send(self, *pieces: bytes) -> tuple[list[int], list[Event], list[list[bytes]]]:
        """Feed ``pieces`` (draining after each, or just drain if there are
        none); return the reply codes, the events and the reply texts."""
        result = Result()
        for piece in pieces or [None]:
            if piece is not None:
                self.conn.receive_data(piece)
            pump(self.conn, self.decide, result)
        if result.error is not None:
            assert self.conn.state is State.ERROR
        replies = parse_replies(result.output)
        self.events += result.events
        return [c for c, _ in replies], result.events, [t for _, t in replies]

    def split(self, data: bytes, draw: st.DataObject) -> list[bytes]:
        points = draw.draw(st.lists(st.integers(0, len(data)), max_size=3), label="cuts")
        return cut(data, points)

    def err(self, code: int) -> list[int]:
        """A core error reply; the invalid ones (and 452s past the RCPT
        overshoot) count towards the limit."""
        if code in _INVALID or code == 452:
            self.m.invalid += 1
            limit = self.cfg.max_invalid_commands
            if limit is not None and self.m.invalid > limit:
                self.m.closed = True
                return [421]
        return [code]

    def per_recipient(self, code: int) -> list[int]:
        return [code] * (max(len(self.m.rcpts), 1) if self.cfg.lmtp else 1)

    def check_enhanced(self, texts: list[list[bytes]], codes: list[int]) -> None:
        """RFC 2034: every 2xx/4xx/5xx reply except to HELO/EHLO/LHLO carries an
        enhanced code when advertised, and none does when hidden."""
        for code, lines in zip(codes, texts, strict=True):
            has = _ENHANCED.match(lines[0]) is not None
            if self.cfg.hide_enhancedstatuscodes or code // 100 == 3:
                assert not has, (code, lines)
            else:
                assert has, (code, lines)

    def expect(self, got: list[int], texts: list[list[bytes]], expected: list[int]) -> None:
        assert got == expected, (got, expected, texts)
        self.check_enhanced(texts, got)

    def transaction_error(self) -> int | None:
        if not self.m.greeted or self.m.mail is None or not self.m.rcpts:
            return 503
        return None

    # -- greeting and simple commands ------------------------------------------------

    @precondition(lambda self: not self.m.closed)
    @rule(verb=st.sampled_from(["HELO", "EHLO", "LHLO"]),
          host=_weighted(["client.example"], ["bad.example", "", "a b", "a\rb", "\udcff",
                                               "a\x1bb", "b\u00fccher.example"]))
    def hello(self, verb: str, host: str) -> None:
        m = self.m
        was_open = m.bdat is not None
        if self.cfg.lmtp != (verb == "LHLO"):
            expected = self.err(500)
        elif not host or " " in host or any(
                c < " " or "\x7f" <= c <= "\x9f" or "\ud800" <= c <= "\udfff" for c in host):
            expected = self.err(501)  # syntax, a control character (C0, DEL, C1), not UTF-8
        elif "bad" in host:
            expected = [550]  # a refused greeting changes nothing
        else:
            expected = [250]  # RFC 5321 4.1.4: like RSET, open BDAT message included
            m.greeted = True
            m.reset()
        line = f"{verb} {host}\r\n".encode("utf-8", "surrogateescape")
        codes, events, texts = self.send(line)
        assert codes == expected, (codes, expected, texts)
        if codes in ([250], [501], [550]) or (codes == [500] and self.cfg.lmtp):
            # RFC 2034: no enhanced code in replies to HELO/EHLO (and LHLO).
            assert all(_ENHANCED.match(line) is None for line in texts[0])
        if expected in ([250], [550]):
            assert (was_open and m.bdat is None) == any(
                isinstance(e, MessageAborted) and e.reason == "reset" for e in events
            )
        if codes == [250] and verb != "HELO":
            ext = [line.split(b" ")[0] for line in texts[0][1:]]
            assert b"PIPELINING" in ext and b"CHUNKING" in ext
            assert (b"ENHANCEDSTATUSCODES" in ext) != self.cfg.hide_enhancedstatuscodes

    @precondition(lambda self: not self.m.closed)
    @rule(command=st.sampled_from([b"NOOP", b"NOOP x", b"HELP", b"VRFY alice", b"VRFY"]))
    def simple(self, command: bytes) -> None:
        expected = {b"NOOP": [250], b"NOOP x": [250], b"HELP": [214], b"VRFY alice": [252]}
        want = expected.get(command) or self.err(501)
        codes, _, texts = self.send(command + CRLF)
        self.expect(codes, texts, want)

    @precondition(lambda self: not self.m.closed)
    @rule(word=st.text("QWXZqwxz", min_size=1, max_size=8), arg=st.sampled_from(["", " x"]))
    def garbage(self, word: str, arg: str) -> None:
        want = self.err(500)
        codes, _, texts = self.send(f"X{word}{arg}\r\n".encode())
        self.expect(codes, texts, want)

    @precondition(lambda self: not self.m.closed)
    @rule(n=st.integers(400, 700))
    def long_noop(self, n: int) -> None:
        line = b"NOOP " + b"a" * n + CRLF
        too_long = len(line) > self.cfg.max_command_length
        want = self.err(500) if too_long else [250]
        codes, _, texts = self.send(line)
        self.expect(codes, texts, want)
        if too_long and codes == [500]:
            assert b"too long" in texts[0][0]

    @precondition(lambda self: not self.m.closed)
    @rule(reads=st.integers(1, 8), size=st.sampled_from([1, 100, 1000, _MAX_READ]),
          prefix=st.sampled_from([b"z", b"NOOP ", b"MAIL FROM:<", b"RCPT TO:<"]))
    def endless_line(self, reads: int, size: int, prefix: bytes) -> None:
        """A line that never ends: nothing is answered and the core never holds
        more than the line limit plus one read, however long it goes on."""
        # MAIL and RCPT lines get the room their extensions define.
        extra = {b"M": _MAIL_EXTRA, b"R": _RCPT_EXTRA}.get(prefix[:1], 0)
        limit = self.cfg.max_command_length + extra
        chunks = [prefix + b"z" * size] + [b"z" * size] * (reads - 1)
        if sum(map(len, chunks)) + 2 <= limit:
            chunks.append(b"z" * limit)  # make sure it is over-long
        for chunk in chunks:
            self.conn.receive_data(chunk)
            assert len(self.conn._buf) <= limit + len(chunk)
            codes, _, _ = self.send()
            assert codes == []
            assert len(self.conn._buf) <= limit
        want = self.err(500)
        codes, _, texts = self.send(CRLF)
        self.expect(codes, texts, want)
        if codes == [500]:
            assert b"too long" in texts[0][0]

    @precondition(lambda self: not self.m.closed)
    @rule(arg=st.sampled_from(["", "", " now"]))
    def rset(self, arg: str) -> None:
        was_open = self.m.bdat is not None
        if arg:
            want = self.err(501)
        else:
            want = [250]
            self.m.reset()
        codes, events, texts = self.send(f"RSET{arg}\r\n".encode())
        self.expect(codes, texts, want)
        if want == [250]:
            assert any(isinstance(e, Reset) for e in events)
            assert was_open == any(isinstance(e, MessageAborted) for e in events)

    @precondition(lambda self: not self.m.closed)
    @rule()
    def quit(self) -> None:
        was_open = self.m.bdat is not None
        codes, events, texts = self.send(b"QUIT\r\n")
        self.expect(codes, texts, [221])
        self.m.closed = True
        assert isinstance(events[-1], ConnectionClosed)
        assert any(isinstance(e, Quit) for e in events)
        assert was_open == any(
            isinstance(e, MessageAborted) and e.reason == "quit" for e in events
        )

    @precondition(lambda self: self.m.closed)
    @rule()
    def after_close(self) -> None:
        self.conn.receive_data(b"NOOP\r\n")
        assert self.conn.data_to_send() == b""
        try:
            event = self.conn.next_event()
        except RemoteProtocolError:
            assert self.conn.state is State.ERROR
        else:
            assert isinstance(event, ConnectionClosed)
        assert self.conn.closed

    # -- the mail transaction ---------------------------------------------------------

    @precondition(lambda self: not self.m.closed)
    @rule(path=_weighted(["<alice@example.com>", "<>"], list(_MODEL_PATHS)),
          param=_weighted([""], list(_MODEL_MAIL_PARAMS)))
    def mail(self, path: str, param: str) -> None:
        want = self.predict_mail(path, param)
        line = f"MAIL FROM:{path} {param}".rstrip(" ")
        codes, _, texts = self.send(line.encode() + CRLF)
        self.expect(codes, texts, want)

    def predict_mail(self, path: str, param: str) -> list[int]:
        m = self.m
        error, _, address = _MODEL_PATHS[path]
        if error == 553 and param == "SMTPUTF8":
            error = None
        error = _MODEL_MAIL_PARAMS[param] or error
        if not path.startswith("<"):
            error = 501  # no <path>: nothing else is looked at
        if not m.greeted or m.mail is not None or m.bdat is not None:
            want = self.err(503)
        elif error is not None:
            want = self.err(error)
        elif "bad" in address:
            want = [550]
        else:
            want = [250]
            m.mail = address
            m.overshoot = 0  # a new transaction: a new allowance
            m.smtputf8 = param == "SMTPUTF8"
            m.binarymime = param == "BODY=BINARYMIME"
        return want

    @precondition(lambda self: not self.m.closed)
    @rule(path=_weighted(["<bob@example.org>", "<alice@example.com>"], list(_MODEL_PATHS)),
          param=_weighted([""], list(_MODEL_RCPT_PARAMS)))
    def rcpt(self, path: str, param: str) -> None:
        want = self.predict_rcpt(path, param)
        line = f"RCPT TO:{path} {param}".rstrip(" ")
        codes, _, texts = self.send(line.encode() + CRLF)
        self.expect(codes, texts, want)

    def predict_rcpt(self, path: str, param: str) -> list[int]:
        m = self.m
        _, error, address = _MODEL_PATHS[path]
        if error == 553 and m.smtputf8:
            error = None
        error = _MODEL_RCPT_PARAMS[param] or error
        if not path.startswith("<"):
            error = 501
        if not m.greeted or m.mail is None or m.bdat is not None:
            want = self.err(503)
        elif len(m.rcpts) >= _MAX_RCPT:
            # RFC 5321 4.5.3.1.10; past 100 of them, each is also a client error.
            m.overshoot += 1
            want = [452] if m.overshoot <= _RCPT_OVERSHOOT else self.err(452)
        elif error is not None:
            want = self.err(error)
        elif "bad" in address:
            want = [550]
        else:
            want = [250]
            m.rcpts.append(address)
        return want

    @precondition(lambda self: not self.m.closed)
    @rule(sender=st.sampled_from(["<alice@example.com>", "<>", "<bad@example.com>"]),
          recipients=st.lists(
              st.sampled_from(["<bob@example.org>", "<alice@example.com>", "<bad@example.com>",
                               "<postmaster>", "<>"]),
              min_size=1, max_size=4,
          ),
          data=st.data())
    def pipelined_envelope(self, sender: str, recipients: list[str], data: st.DataObject) -> None:
        """MAIL and its RCPTs in one write (RFC 2920): the replies come back in
        order, each what the command would have got on its own."""
        lines = [f"MAIL FROM:{sender}".encode() + CRLF]
        want = self.predict_mail(sender, "")
        for path in recipients:
            lines.append(f"RCPT TO:{path}".encode() + CRLF)
            if not self.m.closed:  # after a 421 nothing more is read
                want += self.predict_rcpt(path, "")
        codes, _, texts = self.send(*self.split(b"".join(lines), data))
        self.expect(codes, texts, want)

    def finish(
        self, body: bytes, mechanism: str, events: list[Event], *, last: bool = True
    ) -> list[int]:
        """The end of a message: predicted final replies; checks what was delivered."""
        m = self.m
        messages = delivered(events)
        assert len(messages) == 1, events
        final, got = messages[0]
        m.transaction += 1
        if len(body) > _SIZE:
            # RFC 1870 / RFC 3030: 552, and the transaction is over. Exactly the
            # first SIZE bytes were streamed, whatever the reads.
            assert final == MessageAborted("size_exceeded", len(body))
            assert got == body[:_SIZE]
            # In LMTP one reply per recipient answers the end of the body; a
            # BDAT chunk without LAST always gets exactly one (RFC 2033 4.3).
            want = self.per_recipient(552) if last else [552]
        else:
            assert final == MessageComplete(mechanism, len(body))  # type: ignore[arg-type]
            assert got == body
            if self.verdict == "reject":
                want = self.per_recipient(451)
            elif self.verdict == "mixed" and self.cfg.lmtp:
                # RFC 2033 4.2: one reply per accepted recipient, in order.
                want = [self.mixed(i)[0] for i in range(len(m.rcpts))]
                m.invalid = 0
            else:
                want = self.per_recipient(250)
                m.invalid = 0
        m.reset()
        return want

    def ready(self) -> bool:
        """A transaction with recipients is open: a body is welcome."""
        return not self.m.closed and bool(self.m.rcpts)

    _body_lines = st.lists(_model_line, max_size=6)
    _verdicts = st.sampled_from(["accept", "reject", "mixed"])

    @precondition(lambda self: not self.m.closed)
    @rule(lines=_body_lines, verdict=_verdicts, data=st.data())
    def data(self, lines: list[bytes], verdict: str, data: st.DataObject) -> None:
        self.send_data(lines, verdict, data)

    # The same again, only when it can succeed: random walks seldom get there.
    @precondition(ready)
    @rule(lines=_body_lines, verdict=_verdicts, data=st.data())
    def data_when_ready(self, lines: list[bytes], verdict: str, data: st.DataObject) -> None:
        self.send_data(lines, verdict, data)

    def send_data(self, lines: list[bytes], verdict: str, data: st.DataObject) -> None:
        m = self.m
        self.verdict = verdict
        problem = self.transaction_error()
        if problem is None and (m.bdat is not None or m.binarymime):
            problem = 503  # RFC 3030: no DATA after BDAT, nor for BINARYMIME
        want = self.err(problem) if problem else [354]
        start = len(self.events)
        codes, _, texts = self.send(b"DATA\r\n")
        self.expect(codes, texts, want)
        if want != [354]:
            return  # a client sends no body after an error
        body = b"".join(ln + CRLF for ln in lines)
        codes, _, texts = self.send(*self.split(stuff(body), data))
        want = self.finish(body, "DATA", self.events[start:])
        self.expect(codes, texts, want)

    @precondition(lambda self: not self.m.closed)
    @rule(payload=st.binary(max_size=300), last=st.booleans(), verdict=_verdicts,
          data=st.data())
    def bdat(self, payload: bytes, last: bool, verdict: str, data: st.DataObject) -> None:
        self.send_bdat(payload, last, verdict, data)

    @precondition(ready)
    @rule(payload=st.binary(max_size=300), last=st.booleans(), verdict=_verdicts,
          data=st.data())
    def bdat_when_ready(
        self, payload: bytes, last: bool, verdict: str, data: st.DataObject
    ) -> None:
        self.send_bdat(payload, last, verdict, data)

    def send_bdat(self, payload: bytes, last: bool, verdict: str, data: st.DataObject) -> None:
        m = self.m
        self.verdict = verdict
        problem = self.transaction_error()
        header = f"BDAT {len(payload)}{' LAST' if last else ''}\r\n".encode()
        pieces = self.split(header + payload, data)
        if (problem is not None and self.cfg.lmtp and last and m.greeted
                and m.mail is not None and not m.rcpts):
            # RFC 2033 4.3: BDAT LAST gets one reply per accepted recipient:
            # none here. The transaction is over.
            codes, _, texts = self.send(*pieces)
            self.expect(codes, texts, [])
            m.transaction += 1
            m.reset()
            return
        if problem is not None:
            want = self.err(problem)
            codes, _, texts = self.send(*pieces)
            self.expect(codes, texts, want)
            return
        if m.bdat is None:  # the first chunk starts the message
            self.bdat_start = len(self.events)
            m.bdat = b""
        m.bdat += payload
        codes, _, texts = self.send(*pieces)
        if len(m.bdat) > _SIZE or last:
            want = self.finish(m.bdat, "BDAT", self.events[self.bdat_start :], last=last)
            self.expect(codes, texts, want)
        else:
            self.expect(codes, texts, [250])
            assert texts[0][-1].endswith(f"{len(payload)} octets received".encode())

    # -- AUTH -------------------------------------------------------------------------

    def auth_gate(self) -> list[int] | None:
        m = self.m
        if not m.greeted or m.user is not None or m.mail is not None:
            return self.err(503)
        return None

    def auth_outcome(self, user: str) -> list[int]:
        m = self.m
        if "bad" in user:
            m.auth_failures += 1
            if m.auth_failures > _MAX_AUTH_FAILURES:
                m.closed = True
                return [535, 421]
            return [535]
        m.user = user
        return [235]

    @precondition(lambda self: not self.m.closed)
    @rule(user=st.sampled_from(["user", "bad", "bad2"]), inline=st.booleans())
    def auth_plain(self, user: str, inline: bool) -> None:
        response = b64(b"\0" + user.encode() + b"\0secret")
        gate = self.auth_gate()
        if inline:
            want = gate or self.auth_outcome(user)
            codes, _, texts = self.send(b"AUTH PLAIN " + response + CRLF)
            self.expect(codes, texts, want)
            return
        codes, _, texts = self.send(b"AUTH PLAIN\r\n")
        self.expect(codes, texts, gate or [334])
        if gate is None:
            want = self.auth_outcome(user)
            codes, _, texts = self.send(response + CRLF)
            self.expect(codes, texts, want)

    @precondition(lambda self: not self.m.closed)
    @rule(size=st.integers(12280, 12300) | st.integers(12300, 20000), data=st.data())
    def auth_long_response(self, size: int, data: st.DataObject) -> None:
        """RFC 4954 section 4: SASL response lines may be 12288 octets long
        (without CRLF); longer ones are refused, and the exchange ends."""
        gate = self.auth_gate()
        codes, _, texts = self.send(b"AUTH PLAIN\r\n")
        self.expect(codes, texts, gate or [334])
        if gate is not None:
            return
        # 12288 "A"s are valid base64 for NUL bytes: not valid PLAIN (501).
        want = self.err(500 if size > 12288 else 501)
        codes, _, texts = self.send(*self.split(b"A" * size + CRLF, data))
        self.expect(codes, texts, want)
        if codes == [500]:
            assert b"too long" in texts[0][0]

    @precondition(lambda self: not self.m.closed)
    @rule(user=st.sampled_from(["user", "bad"]), cancel=st.sampled_from([None, 0, 1]))
    def auth_login(self, user: str, cancel: int | None) -> None:
        gate = self.auth_gate()
        codes, _, texts = self.send(b"AUTH LOGIN\r\n")
        self.expect(codes, texts, gate or [334])
        if gate is not None:
            return
        for step, line in enumerate([b64(user.encode()), b64(b"pw")]):
            if step == cancel:
                want = self.err(501)  # RFC 4954 section 4: "*" cancels
                codes, _, texts = self.send(b"*\r\n")
                self.expect(codes, texts, want)
                return
            want = [334] if step == 0 else self.auth_outcome(user)
            codes, _, texts = self.send(line + CRLF)
            self.expect(codes, texts, want)

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def envelope_matches(self) -> None:
        if not hasattr(self, "conn"):
            return
        env = self.conn.session.envelope
        got_mail = env.mail_from.address if env.mail_from is not None else None
        assert got_mail == self.m.mail
        assert [r.address for r in env.rcpt_to] == self.m.rcpts
        assert self.conn.session.user == self.m.user
        assert self.conn.session.transaction == self.m.transaction
        assert self.conn.closed == self.m.closed
        assert self.conn.pending is None
        if not self.m.closed:
            assert self.conn.state is State.COMMAND
            assert not self.conn._buf


TestSessionMachine = SessionMachine.TestCase
TestSessionMachine.settings = settings(
    max_examples=400, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- 3. bodies survive the round trip ------------------------------------------------

ROUND_TRIP = ServerConfig(auth_optional=True)
ROUND_TRIP_STRICT = ServerConfig(auth_optional=True, bare_line_endings="reject")
_ENVELOPE = b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"


def _deliver(config: ServerConfig, stream: bytes, points: list[int]) -> Result:
    conn = ServerConnection(config)
    conn.send_greeting()
    result = Result(output=conn.data_to_send())
    for piece in cut(stream, points):
        conn.receive_data(piece)
        pump(conn, accept_all, result)
    parse_replies(result.output)
    return result


def _binary_bodies() -> st.SearchStrategy[bytes]:
    # Plain binary, plus binary salted with the bytes that matter to DATA.
    salt = st.sampled_from([b"\r\n", b".", b"\r\n.", b"\r\n.\r\n", b"\n.\n", b"\r", b"\n"])
    return st.binary(max_size=600) | st.lists(salt | st.binary(max_size=8), max_size=40).map(
        b"".join
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_binary_bodies(), data=st.data())
def test_data_round_trip_keeps_bare_line_endings(raw: bytes, data: st.DataObject) -> None:
    # With bare_line_endings="keep" any bytes are a valid body once it ends
    # with CRLF (the client adds one, as the end marker needs it).
    body = raw if not raw or raw.endswith(CRLF) else raw + CRLF
    stream = _ENVELOPE + b"DATA\r\n" + stuff(body) + b"QUIT\r\n"
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    result = _deliver(ROUND_TRIP, stream, points)
    assert result.codes == [220, 250, 250, 250, 354, 250, 221]
    assert result.of(MessageComplete) == [MessageComplete("DATA", len(body))]
    assert result.body == body


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_binary_bodies(), data=st.data())
def test_data_round_trip_crlf_normalised(raw: bytes, data: st.DataObject) -> None:
    # With bare_line_endings="reject" the client normalises every line ending.
    body = re.sub(rb"\r\n|\r|\n", CRLF, raw)
    body = body if not body or body.endswith(CRLF) else body + CRLF
    stream = _ENVELOPE + b"DATA\r\n" + stuff(body) + b"QUIT\r\n"
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    result = _deliver(ROUND_TRIP_STRICT, stream, points)
    assert result.codes == [220, 250, 250, 250, 354, 250, 221]
    assert result.body == body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=2000), data=st.data())
def test_bdat_round_trip(body: bytes, data: st.DataObject) -> None:
    sizes = data.draw(st.lists(st.integers(0, len(body)), max_size=6), label="chunk cuts")
    chunks = cut(body, sizes) or [b""]
    if data.draw(st.booleans(), label="empty LAST"):
        chunks.append(b"")  # BDAT 0 LAST closes a message (RFC 3030 section 2)
    stream = bytearray(_ENVELOPE)
    for i, chunk in enumerate(chunks):
        last = " LAST" if i == len(chunks) - 1 else ""
        stream += f"BDAT {len(chunk)}{last}\r\n".encode() + chunk
    stream += b"QUIT\r\n"
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=20), label="reads")
    result = _deliver(ROUND_TRIP, bytes(stream), points)
    assert result.codes == [220, 250, 250, 250] + [250] * len(chunks) + [221]
    assert result.of(MessageComplete) == [MessageComplete("BDAT", len(body))]
    assert result.body == body
