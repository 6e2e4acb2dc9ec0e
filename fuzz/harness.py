"""The fuzz harness proper: one input drives one ``ServerConnection``.

Pure Python, no atheris: ``fuzz_core.py`` wraps :func:`one_input` for
libFuzzer (passing ``atheris.FuzzedDataProvider``), and
``tests/test_fuzz_corpus.py`` replays the seed corpus through it with
:class:`PurePythonFDP`, a byte-exact copy of the parts of atheris'
provider used here. See README.md in this folder for the input format.

Only the documented errors are caught: ``RemoteProtocolError`` from
``next_event()`` (the harness then stops driving the connection), and
``LocalProtocolError`` / ``ValueError`` exactly where the harness misuses
the API on purpose (``_misuse``). Everything else propagates; broken
invariants raise :class:`InvariantError`.

Replay one file, printing the conversation::

    python fuzz/harness.py --trace fuzz/corpus/ehlo_data
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from smtp_proto import (
    AUTH_MECHANISMS,
    DECISION_EVENTS,
    NEED_DATA,
    PAUSED,
    AuthAttempt,
    ConnectionClosed,
    DataChunk,
    Event,
    Hello,
    LocalProtocolError,
    MailFrom,
    MessageAborted,
    MessageComplete,
    MessageStart,
    ProxyHeader,
    RcptTo,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    ServerConnection,
    StartTLS,
    State,
    TLSInfo,
    XClient,
    XForward,
)

__all__ = [
    "CONFIG_FIELDS",
    "MARKERS",
    "InvariantError",
    "Provider",
    "PurePythonFDP",
    "encode_input",
    "one_input",
]


class InvariantError(AssertionError):
    """An invariant of smtp_proto does not hold: a bug in the core."""


# -- the data provider -----------------------------------------------------------


class Provider(Protocol):
    """The subset of ``atheris.FuzzedDataProvider`` the harness uses."""

    def ConsumeIntInRange(self, lo: int, hi: int, /) -> int: ...
    def ConsumeBytes(self, count: int, /) -> bytes: ...
    def remaining_bytes(self) -> int: ...


class PurePythonFDP:
    """Byte-exact stand-in for ``atheris.FuzzedDataProvider`` (the methods
    of :class:`Provider` only).

    As in atheris (and LLVM's C++ provider), ``ConsumeBytes`` takes bytes
    from the front, ``ConsumeIntInRange`` from the back: big-endian from the
    last byte, as many bytes as the range has bit-octets, modulo the range.
    An exhausted provider returns ``b""`` and ``lo``.
    """

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._start = 0
        self._end = len(self._data)

    def remaining_bytes(self) -> int:
        return self._end - self._start

    def ConsumeBytes(self, count: int) -> bytes:
        n = max(0, min(count, self._end - self._start))
        out = self._data[self._start : self._start + n]
        self._start += n
        return out

    def ConsumeIntInRange(self, lo: int, hi: int) -> int:
        delta = hi - lo
        if delta < 0 or delta >= 1 << 56:
            raise ValueError("range not supported")
        result = offset = 0
        size = delta.bit_length()
        while offset < size and delta >> offset and self._end > self._start:
            self._end -= 1
            result = (result << 8) | self._data[self._end]
            offset += 8
        return lo + result % (delta + 1)


# -- the input format ------------------------------------------------------------

_MECH_SETS = tuple(
    tuple(m for i, m in enumerate(AUTH_MECHANISMS) if not mask >> i & 1) for mask in range(16)
)
_TEXT_SETS = (
    # name, banner, helo_response, auth_required_message
    ("localhost", "", "%s Nice to meet you, %s", None),
    ("mx.example.com", "ready for \u00fcn\u00efcode", "%s greets %s", "Authenticate first"),
    ("a", "", "%s", None),
    ("x" * 60, "b" * 300, "%s %s %s extra", "y" * 200),
)

CONFIG_FIELDS: tuple[tuple[str, tuple[object, ...]], ...] = (
    ("lmtp", (False, True)),
    ("auth_optional", (True, False)),
    ("allow_insecure_auth", (True, False)),
    ("auth_methods", _MECH_SETS),  # index = bitmask of AUTH_MECHANISMS left out
    ("size", (None, 100, 10, 1000, 0, 1)),
    ("bare_line_endings", ("keep", "reject")),
    ("use_proxy", (False, True, ("127.0.0.1",), ("10.0.0.0/8", "::1"))),
    ("remote_address", (None, "127.0.0.1", "192.0.2.1", "::1", "10.1.2.3")),
    ("xclient_xforward", tuple(range(4))),  # bit 0 use_xclient, bit 1 use_xforward
    ("hide_flags", tuple(range(256))),  # bits: see _HIDE_BITS
    ("dsn_flags", tuple(range(4))),  # bit 0 hide_dsn, bit 1 hide_requiretls
    ("max_command_length", (512, 64, 100, 1000, 4096)),
    ("max_recipients", (1000, 1, 2, None)),
    ("max_invalid_commands", (10, None, 0, 1, 3)),
    ("max_auth_failures", (5, None, 0, 1)),
    ("max_allowed_unauthenticated_commands", (10, None, 0, 2)),
    ("disabled_commands", (
        (), ("AUTH",), ("STARTTLS",), ("BDAT",), ("VRFY", "EXPN", "HELP"), ("MAIL",),
        ("XCLIENT", "XFORWARD"), ("DATA", "RSET"),
    )),
    ("texts", tuple(range(len(_TEXT_SETS)))),
    ("reject_early_talkers", (False, True)),
    ("implicit_tls", (False, True)),
    ("expect_proxy", (None, True, False)),
    ("greeting", ("immediate", "late", "marker")),
    ("eof_at_end", (True, False)),
    ("replay", ("whole", "bytewise", "off", "split7")),
)
"""Read in this order, one byte each (the last byte of the input first);
the choice is ``byte % len(choices)``, so a zero byte picks the first."""

_HIDE_BITS = (
    "hide_starttls", "hide_pipelining", "hide_enhancedstatuscodes", "hide_8bitmime",
    "hide_smtputf8", "hide_size", "hide_chunking", "needs_upgrade",
)

MARK = 0xFF
MARKERS = {
    0x00: "split",  # end the current chunk: receive_data(), then drain
    0x01: "eof",  # receive_data(b"")
    0x02: "greet",  # send_greeting() (expects LocalProtocolError if not GREETING)
    0x03: "shutdown",  # shutdown() with a code and text from the decision bytes
    0x04: "idle",  # idle_timeout()
    0x05: "tls",  # tls_established() (expects LocalProtocolError where not allowed)
    0x06: "take",  # take_buffered_data() (in GREETING or COMMAND state only)
}
"""``0xFF`` then one of these bytes is an action; ``FF FF`` is a literal
``FF``; ``FF`` before any other byte (or at the end) is a literal ``FF``."""
_MARKER_BYTES = {name: bytes([MARK, code]) for code, name in MARKERS.items()}

# Tables the decision bytes index into.
TEXTS = (
    "", "OK", "two\nlines", "crlf\r\ninjected", "bare\rCR", "ctrl \x00\x01\x1b[31m\x7f",
    "\u00fcn\u00efc\u00f8d\u00e9 \u2713 \u6f22\u5b57 \U0001f642", "\udc80\udcff raw bytes",
    "x" * 600, "trailing\n", "\n\n", "250 fake reply", "%s %s", "   ",
)
USERS: tuple[object, ...] = (None, "alice", "", 42, {"id": 7})
ENHANCED_TAILS = (None, "0.0", "1.1", "5.4", "7.0", "999.999")
CHALLENGES: tuple[str | bytes, ...] = (
    b'{"status":"401","schemes":"bearer","scope":"mail"}', "", "err\x00\xff", b"\x00" * 40,
)
SHUTDOWN_CODES = (421, 554, 450, 521)
_MESSAGE_ABORT_REASONS = frozenset(
    {"size_exceeded", "bare_line_ending", "reset", "connection_lost", "shutdown", "quit"}
)
_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])[^\r\n]*")
_ENHANCED_PREFIX = re.compile(rb"[245]\.[0-9]{1,3}\.[0-9]{1,3} ")

# The receive buffer may hold one partial line: a command line, a SASL line
# (RFC 4954: 12288 octets) or a MAIL line with its extension room.
_LINE_ROOM = 13000


@dataclass(frozen=True)
class Setup:
    """Everything the config bytes decide."""

    config: ServerConfig
    remote_address: str | None
    implicit_tls: bool
    expect_proxy: bool | None
    greeting: str
    eof_at_end: bool
    replay: str

    def connection(self, *, fresh: bool = False) -> ServerConnection:
        """The connection; ``fresh`` gives it its own CRAM-MD5 challenge sequence."""
        config = self.config
        if fresh:
            config = dataclasses.replace(config, cram_md5_challenge=_cram_challenges())
        return ServerConnection(
            config, remote_address=self.remote_address, remote_port=2525,
            local_address="192.0.2.25", local_port=25, session_id="fuzz",
            tls=_TLS if self.implicit_tls else None, expect_proxy=self.expect_proxy,
        )


_TLS = TLSInfo(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", bits=128,
               servername="mx.example.com")


def _cram_challenges() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"<{next(counter)}.1700000000@fuzz.example>"


def read_setup(fdp: Provider) -> Setup:
    v: dict[str, object] = {}
    for name, choices in CONFIG_FIELDS:
        v[name] = choices[fdp.ConsumeIntInRange(0, len(choices) - 1)]
    hide = v.pop("hide_flags")
    xcx = v.pop("xclient_xforward")
    dsn = v.pop("dsn_flags")
    name, banner, helo, auth_msg = _TEXT_SETS[v.pop("texts")]  # type: ignore[index]
    assert isinstance(hide, int) and isinstance(xcx, int) and isinstance(dsn, int)
    options = {
        "lmtp": v.pop("lmtp"),
        "auth_optional": v.pop("auth_optional"),
        "allow_insecure_auth": v.pop("allow_insecure_auth"),
        "auth_methods": v.pop("auth_methods"),
        "size": v.pop("size"),
        "bare_line_endings": v.pop("bare_line_endings"),
        "use_proxy": v.pop("use_proxy"),
        "use_xclient": bool(xcx & 1),
        "use_xforward": bool(xcx & 2),
        "hide_dsn": bool(dsn & 1),
        "hide_requiretls": bool(dsn & 2),
        "max_command_length": v.pop("max_command_length"),
        "max_recipients": v.pop("max_recipients"),
        "max_invalid_commands": v.pop("max_invalid_commands"),
        "max_auth_failures": v.pop("max_auth_failures"),
        "max_allowed_unauthenticated_commands": v.pop("max_allowed_unauthenticated_commands"),
        "disabled_commands": v.pop("disabled_commands"),
        "reject_early_talkers": v.pop("reject_early_talkers"),
        "name": name, "banner": banner, "helo_response": helo,
        "auth_required_message": auth_msg,
        "cram_md5_challenge": _cram_challenges(),
    }
    for bit, flag in enumerate(_HIDE_BITS):
        options[flag] = bool(hide >> bit & 1)
    return Setup(
        config=ServerConfig(**options),  # type: ignore[arg-type]
        remote_address=v.pop("remote_address"),  # type: ignore[arg-type]
        implicit_tls=bool(v.pop("implicit_tls")),
        expect_proxy=v.pop("expect_proxy"),  # type: ignore[arg-type]
        greeting=str(v.pop("greeting")),
        eof_at_end=bool(v.pop("eof_at_end")),
        replay=str(v.pop("replay")),
    )


def parse_script(conv: bytes) -> list[tuple[str, bytes]]:
    """The conversation bytes as steps: ``("data", chunk)`` or ``(action, b"")``."""
    steps: list[tuple[str, bytes]] = []
    cur = bytearray()
    pos = 0
    while True:
        i = conv.find(MARK, pos)
        if i < 0 or i + 1 >= len(conv):
            cur += conv[pos:]
            break
        cur += conv[pos:i]
        code = conv[i + 1]
        action = MARKERS.get(code)
        if code == MARK:
            cur.append(MARK)
        elif action is None:
            cur.append(MARK)
            pos = i + 1
            continue
        else:
            if cur:
                steps.append(("data", bytes(cur)))
                cur.clear()
            if action != "split":
                steps.append((action, b""))
        pos = i + 2
    if cur:
        steps.append(("data", bytes(cur)))
    return steps


def encode_input(
    steps: list[tuple[str, bytes]] | bytes,
    decisions: list[int] | tuple[int, ...] = (),
    **config: int,
) -> bytes:
    """Build an input: the inverse of what :func:`one_input` reads.

    ``steps`` are ``("data", bytes)`` / ``("split"|"eof"|..., b"")`` (or one
    bytes object); ``decisions`` the decision numbers in the order they are
    consumed; ``config`` maps names of :data:`CONFIG_FIELDS` to the index of
    the wanted choice (0 if not given).
    """
    if isinstance(steps, bytes):
        steps = [("data", steps)]
    conv = bytearray()
    previous = ""
    for kind, data in steps:
        if kind == "data":
            if previous == "data":
                conv += _MARKER_BYTES["split"]
            conv += data.replace(b"\xff", b"\xff\xff")
        else:
            conv += _MARKER_BYTES[kind]
        previous = kind
    names = [name for name, _ in CONFIG_FIELDS]
    unknown = set(config) - set(names)
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}")
    if len(decisions) > 255:
        raise ValueError("at most 255 decision bytes")
    tail = bytes(reversed(decisions)) + bytes([len(decisions)])
    tail += bytes(reversed([config.get(name, 0) for name in names]))
    return bytes(conv) + tail


# -- decisions -----------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """One call answering a decision, kept so the replay can repeat it."""

    method: str
    args: tuple[object, ...] = ()
    kwargs: tuple[tuple[str, object], ...] = ()

    def apply(self, conn: ServerConnection) -> None:
        getattr(conn, self.method)(*self.args, **dict(self.kwargs))


_DECISION_KINDS = 10  # see Driver.decide
_MISUSE_KINDS = 9  # see Driver._misuse


def _replies(data: bytes) -> list[tuple[int, list[bytes]]]:
    """Check reply framing and split ``data`` into (code, lines) replies."""
    if not data:
        return []
    if not data.endswith(b"\r\n"):
        raise InvariantError(f"output does not end with CRLF: {data[-80:]!r}")
    replies: list[tuple[int, list[bytes]]] = []
    open_code: bytes | None = None
    lines: list[bytes] = []
    for line in data[:-2].split(b"\r\n"):
        m = _LINE.fullmatch(line)
        if m is None:
            raise InvariantError(f"malformed reply line {line[:120]!r}")
        code, sep = m.group(1), m.group(2)
        if open_code is not None and code != open_code:
            raise InvariantError(f"multi-line reply changes code: {data[-300:]!r}")
        lines.append(line)
        if sep == b"-":
            open_code = code
        else:
            replies.append((int(code), lines))
            open_code, lines = None, []
    if open_code is not None:
        raise InvariantError(f"output ends inside a multi-line reply: {data[-300:]!r}")
    for code, _ in replies:
        if 300 <= code < 400 and code not in (334, 354):
            raise InvariantError(f"unexpected intermediate reply {code}")
    return replies


def _coalesce(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for ev in events:
        if isinstance(ev, DataChunk) and out and isinstance(out[-1], DataChunk):
            out[-1] = DataChunk(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


class Driver:
    """Drives one connection through a script; checks invariants on the way."""

    def __init__(self, fdp: Provider, setup: Setup, steps: list[tuple[str, bytes]],
                 trace: Callable[[str], None] | None = None) -> None:
        self.fdp = fdp
        self.setup = setup
        self.cfg = setup.config
        self.steps = steps
        self.trace = trace
        self.conn = setup.connection()
        self.events: list[Event] = []
        self.output: list[bytes] = []
        self.answers: list[Answer] = []
        self.fed: list[bytes] = []
        self.error: str | None = None  # RemoteProtocolError text: stop driving
        self.closed: ConnectionClosed | None = None
        self.closed_flushed = False
        self.eof = False
        self.deferred = False
        self.finishing = False
        self.chunks_fed = 0
        self.max_chunk = 0
        self.in_message = False
        self.message_bytes = 0
        self.saw_starttls = False
        self.replayable = setup.greeting != "marker" and not self.cfg.reject_early_talkers

    # -- helpers ---------------------------------------------------------------

    def pick(self, n: int) -> int:
        return self.fdp.ConsumeIntInRange(0, n - 1)

    def flush(self) -> list[tuple[int, list[bytes]]]:
        data = self.conn.data_to_send()
        replies = _replies(data)
        if not data:
            return replies
        if self.closed_flushed:
            raise InvariantError(f"output after ConnectionClosed was flushed: {data!r}")
        self.output.append(data)
        if self.cfg.hide_enhancedstatuscodes:
            for _, lines in replies:
                for line in lines:
                    if _ENHANCED_PREFIX.match(line[4:]):  # (atheris' regex hook: no pos)
                        raise InvariantError(f"enhanced code although hidden: {line!r}")
        if self.trace is not None:
            self.trace(f"S: {data!r}")
        return replies

    def check_buffer(self, *, drained: bool) -> None:
        """The receive buffer never grows with the input."""
        conn = self.conn
        size = len(conn._buf)
        state = conn.state
        proxy_room = 16 + 65535 if state is State.PROXY else 0
        if drained:
            # NEED_DATA: only what cannot be decided yet is kept.
            if state is State.DATA:
                limit = 4  # a possible start of CRLF.CRLF
            elif state is State.BDAT:
                limit = 0
            elif state is State.PROXY:
                limit = proxy_room
            else:
                limit = max(self.cfg.max_command_length + 1024, _LINE_ROOM)
        else:
            limit = 2 * (self.max_chunk + _LINE_ROOM) + proxy_room
        if size > limit:
            raise InvariantError(f"receive buffer holds {size} bytes in {state} (limit {limit})")

    # -- the script ------------------------------------------------------------

    def run(self) -> None:
        if self.setup.greeting == "immediate" and self.conn.state is State.GREETING:
            self.greet()
        self.drain()
        for kind, data in self.steps:
            if self.error is not None:
                return
            if kind == "data":
                self.feed(data)
                continue
            self.replayable = self.replayable and kind == "eof"
            getattr(self, "act_" + kind)()
            self.drain()
        if self.error is None and not self.eof and self.setup.eof_at_end:
            self.act_eof()
        self.finishing = True
        self.drain()
        if self.error is None:
            self.final_checks()
            if self.replayable and self.setup.replay != "off" and not self.saw_starttls:
                self.replay()

    def feed(self, data: bytes) -> None:
        conn = self.conn
        if self.eof:
            self.misuse_expect(LocalProtocolError, conn.receive_data, data)
            return
        if self.trace is not None:
            self.trace(f"C: {data!r}")
        conn.receive_data(data)
        self.fed.append(data)
        self.chunks_fed += 1
        self.max_chunk = max(self.max_chunk, len(data))
        self.drain()
        held = self.deferred or conn.state is State.GREETING
        if self.error is None and not held:
            self.check_buffer(drained=False)

    def act_eof(self) -> None:
        if self.eof:
            self.misuse_expect(LocalProtocolError, self.conn.receive_data, b"")
            return
        if self.trace is not None:
            self.trace("C: <EOF>")
        self.conn.receive_data(b"")
        self.eof = True

    def act_greet(self) -> None:
        if self.conn.state is State.GREETING:
            self.greet()
        else:
            self.misuse_expect(LocalProtocolError, self.conn.send_greeting)

    def act_shutdown(self) -> None:
        code = SHUTDOWN_CODES[self.pick(len(SHUTDOWN_CODES))]
        text = TEXTS[self.pick(len(TEXTS))]
        self.shutdown(Answer("shutdown", (text, code)))

    def act_idle(self) -> None:
        self.shutdown(Answer("idle_timeout"))

    def act_tls(self) -> None:
        if self.conn.state in (State.TLS_HANDSHAKE, State.GREETING, State.PROXY):
            self.tls_established()
        else:
            self.misuse_expect(LocalProtocolError, self.conn.tls_established, _TLS)

    def act_take(self) -> None:
        # Documented for after ProxyHeader; harmless between commands. Never
        # inside a message body, where it would be a misuse we do not model.
        if self.conn.state in (State.GREETING, State.COMMAND):
            taken = self.conn.take_buffered_data()
            if self.trace is not None:
                self.trace(f"take_buffered_data() -> {taken!r}")
            if self.conn._buf:
                raise InvariantError("take_buffered_data() left bytes behind")

    def greet(self) -> None:
        if self.trace is not None:
            self.trace("send_greeting()")
        self.conn.send_greeting()

    def shutdown(self, answer: Answer) -> None:
        was_closed = self.conn.closed
        if self.trace is not None:
            self.trace(f"{answer.method}{answer.args}")
        answer.apply(self.conn)
        self.deferred = False
        if self.conn.pending is not None or not self.conn.closed:
            raise InvariantError("shutdown left the connection open")
        if was_closed and self.conn.data_to_send():
            raise InvariantError("shutdown of a closed connection queued a reply")

    def tls_established(self) -> None:
        conn = self.conn
        after_starttls = conn.state is State.TLS_HANDSHAKE
        if self.trace is not None:
            self.trace("tls_established()")
        conn.tls_established(_TLS)
        session = conn.session
        if not session.secure or session.tls is not _TLS:
            raise InvariantError("tls_established() did not mark the session secure")
        if after_starttls and (
            session.opening_command is not None or session.user is not None
            or session.envelope.mail_from is not None
        ):
            raise InvariantError("STARTTLS did not reset the session (RFC 3207 4.2)")

    def misuse_expect(self, exc: type[Exception], func: Callable[..., object],
                      *args: object, **kwargs: object) -> None:
        """Call the API wrongly on purpose: it must raise ``exc`` and change nothing."""
        conn = self.conn
        pending, state, out = conn.pending, conn.state, list(conn._out)
        try:
            func(*args, **kwargs)
        except exc:
            pass
        else:
            raise InvariantError(f"misuse {func.__name__}{args} did not raise {exc.__name__}")
        if conn.pending is not pending or conn.state is not state or conn._out != out:
            raise InvariantError(
                f"refused {func.__name__}{args}{kwargs} changed the connection: pending "
                f"{pending!r} -> {conn.pending!r}, state {state} -> {conn.state}, "
                f"{len(out)} -> {len(conn._out)} queued replies"
            )

    # -- events ----------------------------------------------------------------

    def drain(self) -> None:
        conn = self.conn
        while self.error is None:
            try:
                ev = conn.next_event()
            except RemoteProtocolError as exc:
                self.remote_error(exc)
                return
            self.flush()
            if ev is NEED_DATA:
                if self.closed is not None:
                    raise InvariantError("NEED_DATA after ConnectionClosed")
                self.check_buffer(drained=True)
                return
            if ev is PAUSED:
                if self.closed is not None:
                    raise InvariantError("PAUSED after ConnectionClosed")
                if conn.pending is not None:
                    if not self.decide(conn.pending):
                        return
                    continue
                if conn.state is State.GREETING:
                    mode = self.setup.greeting
                    if mode == "immediate" or (mode == "late" and self.chunks_fed):
                        self.greet()
                        continue
                    return
                if conn.state is State.TLS_HANDSHAKE:
                    return
                raise InvariantError(f"PAUSED with nothing to wait for in {conn.state}")
            assert isinstance(ev, Event)
            if self.closed is not None:
                if ev != self.closed:
                    raise InvariantError(f"{ev!r} after {self.closed!r}")
                return
            if self.trace is not None:
                self.trace(f"event: {ev!r}")
            self.events.append(ev)
            self.observe(ev)
            if isinstance(ev, ConnectionClosed):
                self.flush()
                self.closed_flushed = True
                again = conn.next_event()
                if again != ev:
                    raise InvariantError(f"{again!r} after {ev!r}")
                return
            if type(ev) in DECISION_EVENTS:
                if conn.pending is not ev:
                    raise InvariantError(f"decision {ev!r} is not pending")
                if conn.next_event() is not PAUSED:
                    raise InvariantError("next_event() with a pending decision is not PAUSED")
                if not self.decide(ev):
                    return
            elif conn.pending is not None:
                raise InvariantError(f"{conn.pending!r} pending after {ev!r}")
            elif isinstance(ev, StartTLS):
                self.saw_starttls = True
                if conn.state is not State.TLS_HANDSHAKE:
                    raise InvariantError(f"StartTLS in state {conn.state}")
                if self.pick(2) == 0:
                    self.tls_established()

    def remote_error(self, exc: RemoteProtocolError) -> None:
        conn = self.conn
        if self.trace is not None:
            self.trace(f"RemoteProtocolError: {exc}")
        self.flush()
        self.error = str(exc)
        if self.closed is not None:
            raise InvariantError(f"RemoteProtocolError after {self.closed!r}")
        if self.in_message:
            raise InvariantError("RemoteProtocolError inside a message without MessageAborted")
        if not conn.closed or conn.pending is not None:
            raise InvariantError("RemoteProtocolError but the connection is not closed")
        try:
            conn.next_event()
        except RemoteProtocolError:
            pass
        else:
            raise InvariantError("next_event() after RemoteProtocolError did not raise again")
        if conn.data_to_send():
            raise InvariantError("output queued after RemoteProtocolError was flushed")

    def observe(self, ev: Event) -> None:
        """Per-event invariants: message framing and the session's gates."""
        conn, cfg, session = self.conn, self.cfg, self.conn.session
        greeted = session.opening_command is not None
        authed = not cfg.auth_required or session.user is not None
        if isinstance(ev, DataChunk):
            if not self.in_message:
                raise InvariantError("DataChunk outside a message")
            if not ev.data:
                raise InvariantError("empty DataChunk")
            self.message_bytes += len(ev.data)
            if cfg.size is not None and self.message_bytes > cfg.size:
                raise InvariantError(f"DataChunks stream {self.message_bytes} bytes > size")
        elif isinstance(ev, MessageStart):
            if self.in_message:
                raise InvariantError("MessageStart inside a message")
            env = session.envelope
            if not (greeted and authed and env.mail_from is not None and env.rcpt_to):
                raise InvariantError("MessageStart without a complete, allowed envelope")
            self.in_message, self.message_bytes = True, 0
        elif isinstance(ev, MessageComplete | MessageAborted):
            if not self.in_message:
                raise InvariantError(f"{ev!r} without MessageStart")
            self.in_message = False
            # A message streams all its bytes, or exactly the first ``size``.
            streamed = ev.size if cfg.size is None else min(ev.size, cfg.size)
            if self.message_bytes != streamed:
                raise InvariantError(f"{ev!r} but {self.message_bytes} bytes were streamed")
            if isinstance(ev, MessageComplete):
                if cfg.size is not None and ev.size > cfg.size:
                    raise InvariantError(f"{ev!r} exceeds size {cfg.size}")
            elif ev.reason not in _MESSAGE_ABORT_REASONS:
                raise InvariantError(f"undocumented abort reason {ev.reason!r}")
            elif ev.reason == "size_exceeded" and (cfg.size is None or ev.size <= cfg.size):
                raise InvariantError(f"{ev!r} with size limit {cfg.size}")
        elif isinstance(ev, ConnectionClosed):
            if self.in_message:
                raise InvariantError("ConnectionClosed inside a message without MessageAborted")
            if not conn.closed or conn.pending is not None:
                raise InvariantError("ConnectionClosed but the connection is not closed")
            self.closed = ev
        elif isinstance(ev, Hello):
            if (ev.command == "LHLO") != cfg.lmtp:
                raise InvariantError(f"{ev!r} with lmtp={cfg.lmtp}")
        elif isinstance(ev, MailFrom):
            if (not (greeted and authed) or session.envelope.mail_from is not None
                    or self.in_message):
                raise InvariantError(f"{ev!r} not allowed now")
            if cfg.needs_upgrade and not session.secure:
                raise InvariantError(f"{ev!r} before STARTTLS with needs_upgrade")
        elif isinstance(ev, RcptTo):
            env = session.envelope
            if not (greeted and authed) or env.mail_from is None or self.in_message:
                raise InvariantError(f"{ev!r} not allowed now")
            if cfg.max_recipients is not None and len(env.rcpt_to) >= cfg.max_recipients:
                raise InvariantError(f"{ev!r} beyond max_recipients")
        elif isinstance(ev, AuthAttempt):
            # What an application does with a CRAM-MD5 attempt: never raises.
            for password in ("secret", b"secret", "p\u00e4ss"):
                valid = ev.validate_password(password)
                if not isinstance(valid, bool) or (valid and ev.mechanism != "CRAM-MD5"):
                    raise InvariantError(f"validate_password() -> {valid!r} for {ev!r}")
            if ev.mechanism == "XCLIENT":
                if not cfg.use_xclient:
                    raise InvariantError("XCLIENT LOGIN without use_xclient")
            elif ev.mechanism not in cfg.auth_methods or not cfg.auth_enabled:
                raise InvariantError(f"{ev!r} with auth_methods {cfg.auth_methods}")
            elif not (session.secure or cfg.allow_insecure_auth) or (
                    cfg.needs_upgrade and not session.secure):
                raise InvariantError(f"{ev!r} without TLS")
            elif not greeted or session.envelope.mail_from is not None:
                raise InvariantError(f"{ev!r} not allowed now")
            elif session.user is not None:
                raise InvariantError(f"{ev!r} while authenticated")
        elif isinstance(ev, XClient):
            if not cfg.use_xclient:
                raise InvariantError("XClient without use_xclient")
        elif isinstance(ev, XForward):
            if not cfg.use_xforward:
                raise InvariantError("XForward without use_xforward")
        elif isinstance(ev, ProxyHeader) and (len(self.events) != 1 or session.proxy is not ev):
            raise InvariantError(f"{ev!r} is not the first event")

    # -- decisions ---------------------------------------------------------------

    def decide(self, ev: Event) -> bool:
        """Answer the pending ``ev``; ``False`` means "later" (feed more first)."""
        conn = self.conn
        lmtp_message = isinstance(ev, MessageComplete) and self.cfg.lmtp
        recipients = len(conn.session.envelope.rcpt_to)
        kind = self.pick(_DECISION_KINDS)
        if kind == 6:
            if not self.finishing:
                if self.trace is not None:
                    self.trace("(decision deferred)")
                self.deferred = True
                return False
            kind = 0
        self.deferred = False
        answer_twice = False
        if kind == 7:
            answer_twice = self._misuse(ev)
            kind = 0
        if kind == 0:
            answer = Answer("accept")
        elif kind == 1:
            code = 200 + self.pick(100)
            kwargs = {
                "text": TEXTS[self.pick(len(TEXTS))], "code": code,
                "enhanced": self.enhanced(code), "user": USERS[self.pick(len(USERS))],
            }
            answer = Answer("accept", (), tuple(kwargs.items()))
        elif kind in (2, 3, 4, 9):
            code = 421 if kind == 9 else 400 + self.pick(200)
            kwargs = {}
            if kind in (3, 4):
                kwargs = {"text": TEXTS[self.pick(len(TEXTS))], "enhanced": self.enhanced(code)}
            if kind == 4:
                kwargs["challenge"] = CHALLENGES[self.pick(len(CHALLENGES))]
            answer = Answer("reject", (code,), tuple(kwargs.items()))
        elif kind == 5:
            if not lmtp_message:
                # Deliberate misuse: only an LMTP MessageComplete takes this.
                self.misuse_expect(LocalProtocolError, conn.answer_recipients, [])
                answer = Answer("accept")
            else:
                replies = []
                for _ in range(recipients):
                    code = (250, 450, 550)[self.pick(3)] + self.pick(50)
                    replies.append(Reply(code, TEXTS[self.pick(len(TEXTS))],
                                         self.enhanced(code)))
                answer = Answer("answer_recipients", (tuple(replies),))
        else:  # 8: the server shuts down while the application decides
            self.shutdown(Answer("shutdown", ("Service shutting down", 421)))
            self.answers.append(Answer("shutdown", ("Service shutting down", 421)))
            return True
        if self.trace is not None:
            self.trace(f"{answer.method}{answer.args}{dict(answer.kwargs)}")
        self.flush()
        answer.apply(conn)
        self.answers.append(answer)
        if conn.pending is not None:
            raise InvariantError(f"{ev!r} still pending after {answer.method}()")
        self.check_answer(ev, answer, self.flush(), recipients)
        if answer_twice:  # the decision is answered: no second answer
            self.misuse_expect(LocalProtocolError, conn.accept)
            self.misuse_expect(LocalProtocolError, conn.reject, 550)
        return True

    def enhanced(self, code: int) -> str | None:
        tail = ENHANCED_TAILS[self.pick(len(ENHANCED_TAILS))]
        return None if tail is None else f"{code // 100}.{tail}"

    def check_answer(self, ev: Event, answer: Answer, replies: list[tuple[int, list[bytes]]],
                     recipients: int) -> None:
        """The replies an answer queued: the code asked for, once per recipient."""
        kwargs = dict(answer.kwargs)
        if answer.method == "answer_recipients":
            replies_arg = answer.args[0]
            assert isinstance(replies_arg, tuple)
            expected = [r.code for r in replies_arg]
        else:
            if answer.method == "accept":
                code = kwargs.get("code", 250)
                assert isinstance(code, int)
                if isinstance(ev, Hello):
                    code = 250
                elif isinstance(ev, AuthAttempt):
                    code = 220 if ev.mechanism == "XCLIENT" else (235 if code == 250 else code)
            else:
                code = answer.args[0]
                assert isinstance(code, int)
                if (isinstance(ev, AuthAttempt) and ev.mechanism == "XOAUTH2"
                        and kwargs.get("challenge") is not None and code != 421):
                    code = 334
            per_recipient = isinstance(ev, MessageComplete) and self.cfg.lmtp and code != 421
            expected = [code] * (max(recipients, 1) if per_recipient else 1)
        got = [code for code, _ in replies[: len(expected)]]
        if got != expected:
            raise InvariantError(f"{answer} to {ev!r} queued replies {got}, expected {expected}")

    def _misuse(self, ev: Event) -> bool:
        """Call the API wrongly on purpose; each call must raise and change nothing.
        ``True``: probe the second answer to the decision after it is answered."""
        conn = self.conn
        probe = self.pick(_MISUSE_KINDS)
        if self.trace is not None:
            self.trace(f"(misuse probe {probe})")
        self.flush()
        if probe == 0:
            self.misuse_expect(ValueError, conn.accept, code=550)
        elif probe == 1:
            self.misuse_expect(ValueError, conn.reject, 250)
        elif probe == 2:
            too_many = [Reply(250, "OK")] * (len(conn.session.envelope.rcpt_to) + 1)
            self.misuse_expect(LocalProtocolError, conn.answer_recipients, too_many)
        elif probe == 3:
            self.misuse_expect(LocalProtocolError, conn.send_greeting)
        elif probe == 4:
            self.misuse_expect(LocalProtocolError, conn.tls_established, _TLS)
        elif probe == 5:
            self.misuse_expect(ValueError, conn.reject, 550, enhanced="2.0.0")
        elif probe == 6:
            if not isinstance(ev, Hello):  # documented: accept() ignores them for Hello
                self.misuse_expect(ValueError, conn.accept, enhanced="5.1.1")
        elif probe == 7:
            self.misuse_expect(ValueError, conn.reject, 451, "text", "4.1000.1")
        return probe == 8

    # -- the end ---------------------------------------------------------------

    def final_checks(self) -> None:
        conn = self.conn
        # The read-only views an application uses (must not raise).
        session, env = conn.session, conn.session.envelope
        _ = (session.transmission_type, session.servername, env.body_type, env.smtputf8,
             env.requiretls, env.dsn_ret, env.dsn_envid, conn.size_exceeded, conn.message_size)
        if self.eof and self.closed is None:
            raise InvariantError(f"end of input but no ConnectionClosed (state {conn.state})")
        if conn.pending is not None:
            raise InvariantError(f"{conn.pending!r} left pending although answered")

    def replay(self) -> None:
        """Same bytes, another split, same answers: same events and replies."""
        conn = self.setup.connection(fresh=True)
        answers: Iterator[Answer] = iter(self.answers)
        events: list[Event] = []
        out = bytearray()
        error: str | None = None
        fed = False

        def answer() -> None:
            nxt = next(answers, None)
            if nxt is None:
                raise InvariantError("replay met more decisions than the original run")
            nxt.apply(conn)

        def pump() -> bool:
            nonlocal error
            while True:
                try:
                    ev = conn.next_event()
                except RemoteProtocolError as exc:
                    error = str(exc)
                    out.extend(conn.data_to_send())
                    return False
                out.extend(conn.data_to_send())
                if ev is NEED_DATA:
                    return True
                if ev is PAUSED:
                    if conn.pending is not None:
                        answer()
                    elif conn.state is State.GREETING and (
                            fed or self.setup.greeting == "immediate"):
                        conn.send_greeting()
                    else:
                        return True
                    continue
                assert isinstance(ev, Event)
                events.append(ev)
                if isinstance(ev, ConnectionClosed):
                    return False
                if conn.pending is not None:
                    answer()

        data = b"".join(self.fed)
        mode = self.setup.replay
        size = len(data) if mode == "whole" else 7 if mode == "split7" or len(data) > 4000 else 1
        going = pump()
        for i in range(0, len(data), max(size, 1)):
            if not going:
                break
            conn.receive_data(data[i : i + size])
            fed = True
            going = pump()
        if going and self.eof:
            conn.receive_data(b"")
            pump()
        mine = _coalesce(self.events)
        theirs = _coalesce(events)
        if mine != theirs:
            diff = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b),
                        min(len(mine), len(theirs)))
            raise InvariantError(
                f"split-dependent events at #{diff}: {mine[diff : diff + 2]!r} vs "
                f"{theirs[diff : diff + 2]!r} (replay {mode})"
            )
        original = b"".join(self.output)
        if bytes(out) != original:
            raise InvariantError(
                f"split-dependent replies (replay {mode}):\n{original!r}\nvs\n{bytes(out)!r}"
            )
        if error != self.error or conn.state is not self.conn.state:
            raise InvariantError(f"split-dependent end: {self.error!r}/{self.conn.state} vs "
                                 f"{error!r}/{conn.state}")


def one_input(data: bytes, provider: Callable[[bytes], Provider] = PurePythonFDP,
              trace: Callable[[str], None] | None = None) -> None:
    """Run one fuzz input. ``provider`` is ``atheris.FuzzedDataProvider``
    under libFuzzer and :class:`PurePythonFDP` elsewhere (same results)."""
    fdp = provider(data)
    setup = read_setup(fdp)
    decision_bytes = fdp.ConsumeIntInRange(0, 255)
    conv = fdp.ConsumeBytes(max(0, fdp.remaining_bytes() - decision_bytes))
    driver = Driver(fdp, setup, parse_script(conv), trace)
    if trace is not None:
        trace(f"setup: {setup}")
    driver.run()


def main(argv: list[str]) -> int:
    """Replay files without atheris: ``harness.py [--trace] FILE...``."""
    trace = "--trace" in argv
    files = [a for a in argv if a != "--trace"]
    if not files:
        print(__doc__)
        return 2
    for name in files:
        paths = sorted(Path(name).iterdir()) if Path(name).is_dir() else [Path(name)]
        for path in paths:
            print(f"== {path}", flush=True)
            one_input(path.read_bytes(), trace=print if trace else None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
