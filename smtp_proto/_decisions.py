"""Answering decisions: ``accept()``, ``reject()``, ``answer_recipients()``,
and the replies that depend on them (the EHLO extension list)."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from ._commands import _Commands
from ._envelope import Envelope
from ._errors import LocalProtocolError
from ._events import AuthAttempt, Event, Hello, MailFrom, MessageComplete, RcptTo
from ._replies import check_enhanced, check_reply_code, default_enhanced, format_reply
from ._state import Reply, State

__all__: list[str] = []

# Default texts and enhanced codes when the application accepts or rejects
# without saying more: {event type: (accept text, accept enhanced, {code: enhanced})}
_DEFAULTS: dict[type[Event], tuple[str, str, dict[int, str]]] = {
    AuthAttempt: ("Authentication successful", "2.7.0", {535: "5.7.8", 550: "5.7.8"}),
    MailFrom: ("Accepted", "2.1.0", {550: "5.1.0", 553: "5.1.7", 554: "5.7.1"}),
    RcptTo: ("Accepted", "2.1.5", {554: "5.7.1"}),
    MessageComplete: ("OK: message queued", "2.0.0", {550: "5.6.0", 554: "5.6.0"}),
}
_REJECT_TEXT = {
    AuthAttempt: "Error: authentication credentials invalid",
    MailFrom: "Error: sender rejected",
    RcptTo: "Error: recipient rejected",
    MessageComplete: "Error: message rejected",
    Hello: "Error: hello rejected",
}


def _fill(template: str, *values: str) -> str:
    """Replace each ``%s`` in turn (smtp-server's helo_response format)."""
    pieces = template.split("%s")
    filled = iter(values)
    return pieces[0] + "".join(next(filled, "") + piece for piece in pieces[1:])



class _Decisions(_Commands):
    """The application's side of each decision event."""

    __slots__ = ()

    # -- decisions ---------------------------------------------------------------

    def _take_pending(self) -> Event:
        event = self._pending
        if event is None:
            raise LocalProtocolError("no decision is pending")
        self._pending = None
        return event

    def accept(
        self,
        text: str | None = None,
        *,
        code: int = 250,
        enhanced: str | None = None,
        user: object = None,
    ) -> None:
        """Accept the pending decision.

        ``user`` (AUTH only) is stored as ``session.user``; by default the
        user name. ``text``/``code`` override the 2xx reply where one is sent.
        """
        if code != 250 or enhanced is not None:  # the defaults need no checking
            check_reply_code(code, "2")
            check_enhanced(code, enhanced)  # before anything changes
        event = self._take_pending()
        session = self.session
        if isinstance(event, Hello):
            self._accept_hello(event)
            return
        if isinstance(event, AuthAttempt):
            session.user = user if user is not None else event.username
            session.auth_mechanism = event.mechanism
            self._sasl = None
            if event.mechanism == "XCLIENT":
                self._reply(220, self._greeting_text())
                return
            code = 235 if code == 250 else code
        default_text, default_enh, _ = _DEFAULTS[type(event)]
        text = default_text if text is None else text
        enhanced = enhanced or default_enh
        if isinstance(event, MailFrom):
            session.envelope.mail_from = event
            self._overshoot = 0  # the allowance is per transaction (as Postfix's)
        elif isinstance(event, RcptTo):
            session.envelope.rcpt_to.append(event)
        elif isinstance(event, MessageComplete):
            self._per_recipient(code, text, enhanced)
            self._invalid = 0
            self._end_transaction()
            return
        self._reply(code, text, enhanced)

    def reject(
        self,
        code: int,
        text: str | None = None,
        enhanced: str | None = None,
        *,
        challenge: str | bytes | None = None,
    ) -> None:
        """Refuse the pending decision with a 4xx/5xx reply.

        ``challenge`` (XOAUTH2 only) is sent first as a 334 error challenge;
        the rejection follows the client's acknowledgement. A 421 closes the
        connection after the reply.
        """
        check_reply_code(code, "45")
        check_enhanced(code, enhanced)
        event = self._take_pending()
        if text is None:
            text = _REJECT_TEXT.get(type(event), "Error: rejected")
        if isinstance(event, Hello):
            # RFC 2034: no enhanced code in replies to HELO/EHLO.
            self._reply(code, text, None)
            return
        defaults = _DEFAULTS[type(event)][2]
        enhanced = enhanced or defaults.get(code) or default_enhanced(code)
        if isinstance(event, AuthAttempt):
            self._sasl = None
            if challenge is not None and event.mechanism == "XOAUTH2" and code != 421:
                raw = challenge.encode() if isinstance(challenge, str) else challenge
                enh = enhanced if self.config.enhanced_status_codes else None
                self._sasl_final = format_reply(code, text, enh)
                self._state = State.SASL
                self._reply(334, base64.b64encode(raw).decode("ascii"))
                return
            self._reply(code, text, enhanced)
            if code != 421:
                self._count_auth_failure()
            return
        if isinstance(event, MessageComplete):
            self._per_recipient(code, text, enhanced)
            self._end_transaction()
            return
        self._reply(code, text, enhanced)

    def answer_recipients(self, replies: Sequence[Reply]) -> None:
        """LMTP: answer a ``MessageComplete`` with one reply per recipient,
        in the order the recipients were accepted."""
        event = self._pending
        if not isinstance(event, MessageComplete) or not self.config.lmtp:
            raise LocalProtocolError("answer_recipients() needs a pending LMTP message")
        if len(replies) != len(self.session.envelope.rcpt_to):
            raise LocalProtocolError("answer_recipients() needs one reply per recipient")
        for reply in replies:
            check_reply_code(reply.code, "245")
            check_enhanced(reply.code, reply.enhanced)
        self._pending = None
        defaults = _DEFAULTS[MessageComplete]
        for reply in replies:
            enhanced = reply.enhanced or (
                defaults[1] if reply.code < 300
                else defaults[2].get(reply.code) or default_enhanced(reply.code)
            )
            self._reply(reply.code, reply.text, enhanced)
        self._invalid = 0
        self._end_transaction()

    def _accept_hello(self, event: Hello) -> None:
        session = self.session
        cfg = self.config
        session.opening_command = event.command
        session.host_name_appears_as = event.hostname
        # An accepted HELO/EHLO is an implicit RSET (RFC 5321 4.1.4); a
        # refused one changes nothing, not even an open BDAT message.
        self._abort_message("reset")
        session.envelope = Envelope()
        # Without a resolved name or address, greet the client by its own word.
        greeting = _fill(cfg.helo_response, cfg.name, session.client_hostname or event.hostname)
        if event.command == "HELO":
            self._reply(250, greeting)
            return
        self._reply(250, "\n".join([greeting, *self._extensions()]))

    def _extensions(self) -> list[str]:
        cfg = self.config
        session = self.session
        ext = []
        if not cfg.hide_pipelining:
            ext.append("PIPELINING")
        if not cfg.hide_8bitmime:
            ext.append("8BITMIME")
        if cfg.smtputf8:
            ext.append("SMTPUTF8")
        if cfg.enhanced_status_codes:
            ext.append("ENHANCEDSTATUSCODES")
        if not cfg.hide_dsn:
            ext.append("DSN")
        if cfg.chunking:
            ext += ["CHUNKING", "BINARYMIME"]
        if cfg.size is not None:
            ext.append("SIZE" if cfg.hide_size else f"SIZE {cfg.size}")
        if not session.secure and not cfg.hide_starttls and "STARTTLS" not in cfg.disabled_commands:
            ext.append("STARTTLS")
        if session.secure and not cfg.hide_requiretls:
            ext.append("REQUIRETLS")
        if cfg.auth_enabled and session.user is None:
            ext.append(" ".join(["AUTH", *cfg.auth_methods]))
        if cfg.use_xclient and "ADDR" not in session.xclient and \
                "XCLIENT" not in cfg.disabled_commands:
            ext.append("XCLIENT " + " ".join(("NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN")))
        if cfg.use_xforward and "XFORWARD" not in cfg.disabled_commands:
            ext.append("XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE")
        return ext

