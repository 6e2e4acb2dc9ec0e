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

Here: the :class:`Driver` (script, events, per-event invariants),
:func:`one_input` and the command line; it re-exports what other code uses
from ``fuzz_input.py`` (provider, input format), ``fuzz_actions.py``,
``fuzz_decisions.py`` and ``fuzz_replies.py`` (framing, replay).

Replay one file, printing the conversation::

    python fuzz/harness.py --trace fuzz/corpus/auth_login
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from fuzz_decisions import Decisions
from fuzz_input import (
    CONFIG_FIELDS,
    MARKERS,
    TEXTS,
    Provider,
    PurePythonFDP,
    Setup,
    encode_input,
    parse_script,
    read_setup,
)
from fuzz_replies import Answer, InvariantError, split_replay

from smtp_proto import (
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
    StartTLS,
    State,
    XClient,
    XForward,
)

__all__ = [
    "CONFIG_FIELDS", "MARKERS", "TEXTS", "Answer", "Driver", "InvariantError", "Provider",
    "PurePythonFDP", "Setup", "encode_input", "main", "one_input", "parse_script", "read_setup",
]

_MESSAGE_ABORT_REASONS = frozenset(
    {"size_exceeded", "bare_line_ending", "reset", "connection_lost", "shutdown", "quit"}
)

# The receive buffer may hold one partial line: a command line, a SASL line
# (RFC 4954: 12288 octets) or a MAIL line with its extension room.
_LINE_ROOM = 13000


class Driver(Decisions):
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

    # -- the receive buffer ---------------------------------------------------

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
        split_replay(self.setup, recorded=self.answers, chunks=self.fed, eof=self.eof,
                     original_events=self.events, output=self.output,
                     original_error=self.error, original_state=self.conn.state)


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
