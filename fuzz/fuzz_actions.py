"""The application's calls on the connection, other than answering decisions.

:class:`Actions` is the base of the harness's ``Driver``: the script's
action markers (``act_*``: EOF, greeting, shutdown, idle timeout, TLS
handshake, ``take_buffered_data()``), draining the output (:meth:`Actions.flush`),
reading a number from the provider (:meth:`Actions.pick`) and the deliberate
misuse of the API (:meth:`Actions.misuse_expect`). The ``Driver`` sets the
attributes declared here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fuzz_input import _TLS, SHUTDOWN_CODES, TEXTS, Provider
from fuzz_replies import Answer, InvariantError, _replies

from smtp_proto import LocalProtocolError, ServerConfig, ServerConnection, State

__all__ = ["Actions"]

_ENHANCED_PREFIX = re.compile(rb"[245]\.[0-9]{1,3}\.[0-9]{1,3} ")


class Actions:
    """The calls on the connection that the script's markers ask for."""

    fdp: Provider
    cfg: ServerConfig
    conn: ServerConnection
    trace: Callable[[str], None] | None
    output: list[bytes]
    closed_flushed: bool
    eof: bool
    deferred: bool

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
