"""Command handlers: one method per SMTP verb.

Each handler either queues a reply itself (everything that needs no
application decision) or emits an event. Sequence rules are RFC 5321
section 4.1.4 plus the extensions' own; reply codes follow the RFC that
defines the situation, enhanced codes RFC 3463.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import ClassVar

from ._address import AddressError
from ._data import DotBody
from ._envelope import Envelope
from ._events import (
    AuthAttempt,
    Hello,
    MessageStart,
    Quit,
    Reset,
    StartTLS,
    XClient,
    XForward,
)
from ._mailparams import parse_mail, parse_rcpt
from ._sasl import Challenge, Credentials, Failure, Step, start_exchange
from ._state import State, _Base
from ._xclient import XCLIENT_ATTRIBUTES, XFORWARD_ATTRIBUTES, parse_attributes

__all__: list[str] = []

_HTTP_REQUEST = re.compile(
    r"(?:OPTIONS|GET|HEAD|POST|PUT|DELETE|TRACE|CONNECT|PATCH) \S+ HTTP/\d(?:\.\d)?\Z",
    re.IGNORECASE,
)
_MAX_BDAT_DIGITS = 20
# C0 controls (TAB and a bare CR included), DEL and the C1 controls: never
# part of a host name, and the way a header or log line gets injected.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Lines are decoded with surrogateescape: a surrogate means bytes that are not
# UTF-8 (a well-formed UTF-8 line never decodes to one).
_NOT_UTF8 = re.compile(r"[\ud800-\udfff]")
# Excess RCPTs (452, too many recipients) a transaction may send before each
# further one counts towards max_invalid_commands, as Postfix's
# smtpd_recipient_overshoot_limit. RFC 5321 4.5.3.1.10 has the client send
# the refused recipients again in a later transaction, and 4.5.3.1.8 makes
# 100 the smallest recipient buffer a client can count on: a batch of up to
# 100 beyond our limit is an honest client and must not cost it the message.
_RCPT_OVERSHOOT = 100


class _Commands(_Base):
    """The verbs. ``_dispatch`` maps an upper-case verb to its handler."""

    __slots__ = ()

    _dispatch: ClassVar[dict[str, Callable[[_Commands, str, str], None]]]

    # -- entry point ---------------------------------------------------------

    def _process_command(self, line: str) -> None:
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        handler = self._dispatch.get(verb)
        if handler is None:
            if _HTTP_REQUEST.match(line):
                # Cross-protocol attack from a web page: never talk SMTP to it.
                self._fail("4.7.0", "Error: HTTP requests not allowed", "HTTP request")
                return
            self._error(500, "5.5.2", "Error: command not recognized")
            return
        cfg = self.config
        if verb in cfg.disabled_commands or (verb == "BDAT" and not cfg.chunking):
            self._error(502, "5.5.1", "Error: command not implemented")
            return
        if cfg.auth_required and self.session.user is None and verb != "AUTH":
            self._unauthenticated += 1
            limit = cfg.max_allowed_unauthenticated_commands
            if limit is not None and self._unauthenticated > limit:
                self._fail("4.7.0", "Error: too many unauthenticated commands",
                           "too many unauthenticated commands")
                return
        handler(self, verb, arg)

    # -- shared checks -------------------------------------------------------

    def _need_hello(self) -> bool:
        if self.session.opening_command is None:
            greet = "LHLO" if self.config.lmtp else "HELO/EHLO"
            self._error(503, "5.5.1", f"Error: send {greet} first")
            return True
        return False

    def _need_tls(self) -> bool:
        if self.config.needs_upgrade and not self.session.secure:
            self._error(530, "5.7.0", "Error: must issue a STARTTLS command first")
            return True
        return False

    def _need_auth(self) -> bool:
        if self.config.auth_required and self.session.user is None:
            text = self.config.auth_required_message or "Error: authentication required"
            self._error(530, "5.7.0", text)
            return True
        return False

    def _no_args(self, verb: str, arg: str) -> bool:
        if arg.strip():
            self._error(501, "5.5.4", f"Error: syntax: {verb}")
            return True
        return False

    # -- greetings -------------------------------------------------------------

    def _cmd_hello(self, verb: str, arg: str) -> None:
        lmtp = self.config.lmtp
        if lmtp != (verb == "LHLO"):
            # RFC 2034: no enhanced code in any reply to HELO/EHLO.
            text = (f"Error: {verb} not allowed in LMTP server" if lmtp
                    else "Error: command not recognized")
            self._error(500, None if lmtp else "5.5.2", text)
            return
        # Only spaces are trimmed: any other whitespace is a control character
        # (TAB, a bare CR) and refused below, not silently dropped.
        host = arg.strip(" ")
        # RFC 2034: no enhanced code in any reply to HELO/EHLO (so none of the
        # three 501s below carries the 5.5.2 or 5.5.4 it would elsewhere).
        if not host or " " in host:
            self._error(501, None, f"Error: syntax: {verb} hostname")
            return
        # The name goes into session.host_name_appears_as, and from there into
        # logs and Received: headers: refuse what could forge a line there, or
        # fail to encode later (RFC 5321 4.1.1.1: a Domain or address-literal;
        # RFC 6531 keeps UTF-8 U-labels, so non-ASCII UTF-8 stays welcome).
        if _NOT_UTF8.search(host):
            self._error(501, None, f"Error: {verb} hostname is not valid UTF-8")
            return
        if _CONTROL.search(host):
            self._error(501, None, f"Error: control characters not allowed in {verb} hostname")
            return
        self._events.append(Hello(verb, host))  # type: ignore[arg-type]

    # -- simple commands -----------------------------------------------------

    def _cmd_noop(self, verb: str, arg: str) -> None:
        self._reply(250, "OK", "2.0.0")

    def _cmd_rset(self, verb: str, arg: str) -> None:
        if self._no_args(verb, arg):
            return
        self._abort_message("reset")
        self.session.envelope = Envelope()
        self._reply(250, "Flushed", "2.0.0")
        self._events.append(Reset())

    def _cmd_quit(self, verb: str, arg: str) -> None:
        if self._no_args(verb, arg):
            return
        self._reply(221, "Bye", "2.0.0")
        self._abort_message("quit")
        self._events.append(Quit())
        self._close("quit")

    def _cmd_help(self, verb: str, arg: str) -> None:
        self._reply(214, "See https://tools.ietf.org/html/rfc5321 for details", "2.0.0")

    def _cmd_vrfy(self, verb: str, arg: str) -> None:
        if not arg.strip():
            self._error(501, "5.5.4", "Error: syntax: VRFY address")
            return
        # RFC 5321 section 3.5.3: 252 when we will not verify.
        self._reply(252, "Cannot VRFY user, but will accept message and attempt delivery",
                    "2.0.0")

    def _cmd_expn(self, verb: str, arg: str) -> None:
        self._reply(502, "Error: EXPN not implemented", "5.5.1")

    # -- transaction -----------------------------------------------------------

    def _cmd_mail(self, verb: str, arg: str) -> None:
        if self._need_hello() or self._need_tls() or self._need_auth():
            return
        if self.session.envelope.mail_from is not None or self._msg_open:
            self._error(503, "5.5.1", "Error: nested MAIL command")
            return
        try:
            event = parse_mail(arg, self.config, secure=self.session.secure)
        except AddressError as exc:
            self._error(exc.code, exc.enhanced, exc.text)
            return
        self._events.append(event)

    def _cmd_rcpt(self, verb: str, arg: str) -> None:
        if self._need_hello() or self._need_auth():
            return
        envelope = self.session.envelope
        if envelope.mail_from is None:
            self._error(503, "5.5.1", "Error: need MAIL command")
            return
        if self._msg_open:
            self._error(503, "5.5.1", "Error: RCPT not allowed during BDAT transfer")
            return
        limit = self.config.max_recipients
        if limit is not None and len(envelope.rcpt_to) >= limit:
            # RFC 5321 section 4.5.3.1.10. Past the overshoot allowance each
            # one is a client error, so a flood of them ends in the 421 of
            # max_invalid_commands instead of going on for ever.
            self._overshoot += 1
            if self._overshoot > _RCPT_OVERSHOOT and self._count_invalid():
                return
            self._reply(452, "Error: too many recipients", "4.5.3")
            return
        try:
            event = parse_rcpt(arg, self.config, smtputf8=envelope.smtputf8)
        except AddressError as exc:
            self._error(exc.code, exc.enhanced, exc.text)
            return
        self._events.append(event)

    def _transaction_error(self) -> tuple[int, str, str] | None:
        """Why no message may be sent now, as (code, enhanced, text)."""
        session = self.session
        if session.opening_command is None:
            greet = "LHLO" if self.config.lmtp else "HELO/EHLO"
            return 503, "5.5.1", f"Error: send {greet} first"
        if self.config.auth_required and session.user is None:
            return 530, "5.7.0", (self.config.auth_required_message
                                  or "Error: authentication required")
        if session.envelope.mail_from is None:
            return 503, "5.5.1", "Error: need MAIL command"
        if not session.envelope.rcpt_to:
            return 503, "5.5.1", "Error: need RCPT command"
        return None

    def _cmd_data(self, verb: str, arg: str) -> None:
        problem = self._transaction_error()
        if problem is not None:
            self._error(*problem)
            return
        if self._no_args(verb, arg):
            return
        if self._msg_open:
            self._error(503, "5.5.1", "Error: DATA not allowed after BDAT")
            return
        if self.session.envelope.body_type == "binarymime":
            # RFC 3030 section 3: BINARYMIME bodies must be sent with BDAT.
            self._error(503, "5.5.1", "Error: BODY=BINARYMIME requires BDAT")
            return
        if self.config.forbid_unauth_pipelining and self._buf and self.session.user is None:
            # The body (or anything) came before the 354 it must wait for:
            # a client that ignores replies, which is how smuggling and
            # spam bots talk (Postfix's smtpd_forbid_unauth_pipelining).
            self._fail("5.5.0", "Error: SMTP protocol synchronization",
                       "input pipelined behind DATA (forbid_unauth_pipelining)", code=554)
            return
        self._reply(354, "End data with <CR><LF>.<CR><LF>")
        self._start_message("DATA")
        self._body = DotBody(self._buf)
        self._state = State.DATA

    def _cmd_bdat(self, verb: str, arg: str) -> None:
        parts = arg.split()
        if (
            not 1 <= len(parts) <= 2
            or not parts[0].isdigit()
            or not parts[0].isascii()
            or len(parts[0]) > _MAX_BDAT_DIGITS
            or (len(parts) == 2 and parts[1].upper() != "LAST")
        ):
            self._error(501, "5.5.4", "Error: syntax: BDAT chunk-size [LAST]")
            return
        # From here on the chunk's octets follow and must be read whatever we
        # answer, or they would be taken for commands (RFC 3030 section 3).
        self._bdat_remaining = self._bdat_size = int(parts[0])
        self._bdat_last = len(parts) == 2
        self._bdat_error = self._transaction_error()
        if self._bdat_error is None and not self._msg_open:
            self._start_message("BDAT")
        self._state = State.BDAT

    def _start_message(self, mechanism: str) -> None:
        self._msg_open = True
        self._msg_mechanism = mechanism
        self._msg_size = 0
        self._exceeded = False
        self._bare = False
        self._events.append(MessageStart(mechanism))  # type: ignore[arg-type]

    # -- TLS and AUTH ----------------------------------------------------------

    def _cmd_starttls(self, verb: str, arg: str) -> None:
        if self._no_args(verb, arg):
            return
        if self.session.secure:
            self._error(503, "5.5.1", "Error: TLS already active")
            return
        if self._msg_open:
            self._error(503, "5.5.1", "Error: mail transaction in progress")
            return
        self._reply(220, "Ready to start TLS", "2.0.0")
        # RFC 3207 section 4.2: whatever was pipelined behind STARTTLS is
        # plaintext injection (CVE-2011-0411); drop it.
        self._buf.clear()
        self._state = State.TLS_HANDSHAKE
        self._events.append(StartTLS())

    def _cmd_auth(self, verb: str, arg: str) -> None:
        cfg = self.config
        session = self.session
        if not cfg.auth_enabled:
            self._error(502, "5.5.1", "Error: command not implemented")
            return
        if self._need_hello() or self._need_tls():
            return
        if not session.secure and not cfg.allow_insecure_auth:
            # RFC 4954 section 6
            self._error(538, "5.7.11", "Error: must issue a STARTTLS command first")
            return
        if session.user is not None:
            self._error(503, "5.5.1", "Error: no identity changes permitted")
            return
        if session.envelope.mail_from is not None:
            self._error(503, "5.5.1", "Error: AUTH not permitted during a mail transaction")
            return
        parts = arg.split()
        if not 1 <= len(parts) <= 2:
            self._error(501, "5.5.4", "Error: syntax: AUTH mechanism [initial-response]")
            return
        mechanism = parts[0].upper()
        exchange = start_exchange(mechanism, cfg.cram_md5_challenge)
        if mechanism not in cfg.auth_methods or exchange is None:
            self._error(504, "5.5.4", "Error: unrecognized authentication type")
            return
        self._sasl = exchange
        self._sasl_step(exchange.start(parts[1] if len(parts) == 2 else None))

    def _sasl_line(self, line: str) -> None:
        """A line received while in the SASL state."""
        if self._sasl_final is not None:
            # XOAUTH2: the client acknowledged our error challenge.
            final, self._sasl_final = self._sasl_final, None
            self._state = State.COMMAND
            self._out.append(final)
            self._count_auth_failure()
            return
        if line.strip() == "*":
            self._state = State.COMMAND
            self._sasl = None
            self._error(501, "5.7.0", "Authentication aborted")
            return
        assert self._sasl is not None
        self._sasl_step(self._sasl.feed(line.strip()))

    def _sasl_step(self, step: Step) -> None:
        if isinstance(step, Challenge):
            self._state = State.SASL
            self._reply(334, base64.b64encode(step.data).decode("ascii"))
        elif isinstance(step, Credentials):
            self._state = State.COMMAND
            self._events.append(step.attempt)
        elif isinstance(step, Failure):
            self._state = State.COMMAND
            self._sasl = None
            self._error(step.code, step.enhanced, step.text)

    def _count_auth_failure(self) -> None:
        self.session.auth_failures += 1
        limit = self.config.max_auth_failures
        if limit is not None and self.session.auth_failures > limit:
            self._fail("4.7.0", "Error: too many failed authentication attempts",
                       "too many failed authentication attempts")

    # -- Postfix proxies -------------------------------------------------------

    def _proxy_attributes(
        self, arg: str, trusted: bool, allowed: tuple[str, ...]
    ) -> dict[str, str | None] | None:
        """The checks XCLIENT and XFORWARD share; None once refused."""
        if not trusted:
            self._error(550, "5.7.0", "Error: not allowed")
            return None
        if self.session.envelope.mail_from is not None or self._msg_open:
            self._error(503, "5.5.1", "Error: mail transaction in progress")
            return None
        try:
            return parse_attributes(arg, allowed)
        except AddressError as exc:
            self._error(exc.code, exc.enhanced, exc.text)
            return None

    def _cmd_xclient(self, verb: str, arg: str) -> None:
        session = self.session
        # After XCLIENT ADDR the session is the proxied client's: no privilege.
        trusted = self.config.use_xclient and "ADDR" not in session.xclient
        attrs = self._proxy_attributes(arg, trusted, XCLIENT_ATTRIBUTES)
        if attrs is None:
            return
        for key, value in attrs.items():
            if key == "ADDR":
                session.remote_address = value
            elif key == "PORT":
                session.remote_port = int(value) if value else None
            session.xclient[key] = value
        if "ADDR" in attrs or "NAME" in attrs:
            # An unknown name is shown as the address, as for a failed lookup.
            address = session.remote_address
            session.client_hostname = attrs.get("NAME") or (
                f"[{address}]" if address else None)
        # The client must greet again: it is now a different client.
        session.opening_command = session.host_name_appears_as = None
        session.envelope = Envelope()
        self._events.append(XClient(attrs))
        if "LOGIN" in attrs:
            login = attrs["LOGIN"]
            if login is None:
                session.user = session.auth_mechanism = None
            else:
                self._events.append(AuthAttempt("XCLIENT", login))
                return
        self._reply(220, self._greeting_text())

    def _cmd_xforward(self, verb: str, arg: str) -> None:
        attrs = self._proxy_attributes(arg, self.config.use_xforward, XFORWARD_ATTRIBUTES)
        if attrs is None:
            return
        self.session.xforward.update(attrs)
        self._events.append(XForward(attrs))
        self._reply(250, "OK", "2.0.0")


_Commands._dispatch = {
    "HELO": _Commands._cmd_hello,
    "EHLO": _Commands._cmd_hello,
    "LHLO": _Commands._cmd_hello,
    "MAIL": _Commands._cmd_mail,
    "RCPT": _Commands._cmd_rcpt,
    "DATA": _Commands._cmd_data,
    "BDAT": _Commands._cmd_bdat,
    "RSET": _Commands._cmd_rset,
    "NOOP": _Commands._cmd_noop,
    "QUIT": _Commands._cmd_quit,
    "HELP": _Commands._cmd_help,
    "VRFY": _Commands._cmd_vrfy,
    "EXPN": _Commands._cmd_expn,
    "STARTTLS": _Commands._cmd_starttls,
    "AUTH": _Commands._cmd_auth,
    "XCLIENT": _Commands._cmd_xclient,
    "XFORWARD": _Commands._cmd_xforward,
}
