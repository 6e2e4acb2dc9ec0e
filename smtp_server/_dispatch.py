"""Handler outcomes to protocol decisions: one translation for both backends.

A handler accepts by returning and refuses by raising :class:`SMTPError`.
Any other exception is a bug in the application: it is logged with its
traceback and answered 451 4.3.0, and the server keeps serving.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from smtp_proto import (
    AuthAttempt,
    Event,
    MailFrom,
    MessageComplete,
    RcptTo,
    Reply,
    ServerConnection,
    check_enhanced,
)

from ._errors import SMTPError

__all__ = [
    "INTERNAL_ERROR", "Outcome", "ReplyString", "answer", "default_decision", "failed",
    "failed_auth", "handler_error", "reply_string",
    "refuse", "succeeded",
]

INTERNAL_ERROR = (451, "Error: local error in processing", "4.3.0")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a handler did: returned ``value`` or raised ``error``."""

    value: object = None
    error: BaseException | None = None


def succeeded(value: object = None) -> Outcome:
    return Outcome(value=value)


def failed(error: BaseException) -> Outcome:
    return Outcome(error=error)


def _error_reply(
    error: BaseException, log: logging.Logger, what: str
) -> tuple[int, str, str | None]:
    if isinstance(error, SMTPError):
        if 400 <= error.code <= 599:
            return error.code, error.message or str(error), _enhanced(error, log)
        log.warning("%s raised SMTPError with non-error code %r; answering 451", what, error.code)
        return INTERNAL_ERROR
    log.error("%s failed", what, exc_info=error)
    return INTERNAL_ERROR


def _enhanced(error: SMTPError, log: logging.Logger) -> str | None:
    """The handler's enhanced code, or None (the server's default) if it does
    not fit the reply code: a wrong code must not cost the client its reply."""
    try:
        check_enhanced(error.code, error.enhanced)
    except ValueError:
        log.warning("SMTPError(%r) has enhanced code %r of another class; using the default",
                    error.code, error.enhanced)
        return None
    return error.enhanced


def _challenge(value: object) -> str | bytes:
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, Mapping):
        return json.dumps(dict(value), separators=(",", ":"))
    return json.dumps(value)


_REPLY_STRING = re.compile(
    r"([2-5][0-9][0-9])(?: +|$)(?:([245]\.[0-9]{1,3}\.[0-9]{1,3})(?: +|$))?(.*)", re.S)


@dataclass(frozen=True, slots=True)
class ReplyString:
    """A handler returned its reply as aiosmtpd's handlers do, as a string
    that starts with the reply code (``"550 5.7.1 Relaying denied"``)."""

    code: int
    text: str | None
    enhanced: str | None


def reply_string(value: object) -> ReplyString | None:
    """``value`` parsed as an aiosmtpd-style reply string, or None for any
    other value (a plain text stays the text of the default reply). A
    mechanical port from aiosmtpd returns ``"550 not relaying"`` to refuse:
    taken as text, that would accept the recipient (``250 2.1.5 550 not
    relaying``) and make the server an open relay."""
    if not isinstance(value, str):
        return None
    found = _REPLY_STRING.fullmatch(value.strip())
    if found is None:
        return None
    code, enhanced, text = found.groups()
    if enhanced is not None and enhanced[0] != code[0]:
        enhanced = None  # of another class: the server's default instead
    return ReplyString(int(code), text.strip() or None, enhanced)


def _from_reply_string(outcome: Outcome) -> Outcome:
    """A 4xx/5xx reply string is a refusal, as if the handler had raised
    :class:`SMTPError`; a 2xx one a ReplyString to accept with."""
    found = reply_string(outcome.value) if outcome.error is None else None
    if found is None:
        return outcome
    if found.code >= 400:
        return Outcome(error=SMTPError(found.code, found.text or "", enhanced=found.enhanced))
    return Outcome(value=found)


def _accept(conn: ServerConnection, value: object, log: logging.Logger) -> None:
    """Accept with a handler's text, or with its aiosmtpd-style 2xx reply."""
    if isinstance(value, ReplyString):
        if value.code >= 300:  # a 3xx from a handler: nothing that could mean
            log.error("handler returned a %d reply string; answering 451", value.code)
            conn.reject(*INTERNAL_ERROR)
            return
        conn.accept(value.text, code=value.code, enhanced=value.enhanced)
        return
    conn.accept(value if isinstance(value, str) else None)


def answer(conn: ServerConnection, event: Event, outcome: Outcome, log: logging.Logger) -> None:
    """Answer the pending decision ``event`` from a handler's ``outcome``."""
    outcome = _from_reply_string(outcome)
    error = outcome.error
    if isinstance(event, AuthAttempt):
        if error is None:
            if not outcome.value:  # as smtp-server: no user, no login
                conn.reject(535, "Error: authentication credentials invalid", "5.7.8")
            elif isinstance(outcome.value, ReplyString):  # "235 ...": the user name
                conn.accept()
            else:
                conn.accept(user=outcome.value)
            return
        code, text, enhanced = _error_reply(error, log, "on_auth")
        challenge = error.challenge if isinstance(error, SMTPError) else None
        conn.reject(code, text, enhanced,
                    challenge=None if challenge is None else _challenge(challenge))
        return
    if isinstance(event, MessageComplete):
        _answer_message(conn, outcome, log)
        return
    if error is not None:
        what = "on_mail_from" if isinstance(event, MailFrom) else (
            "on_rcpt_to" if isinstance(event, RcptTo) else "handler")
        conn.reject(*_error_reply(error, log, what))
        return
    _accept(conn, outcome.value, log)


def _answer_message(conn: ServerConnection, outcome: Outcome, log: logging.Logger) -> None:
    if outcome.error is not None:
        conn.reject(*_error_reply(outcome.error, log, "on_data"))
        return
    value = outcome.value
    if isinstance(value, list | tuple) and conn.config.lmtp:
        recipients = len(conn.session.envelope.rcpt_to)
        if len(value) != recipients:
            log.error("on_data returned %d answers for %d LMTP recipients", len(value), recipients)
            conn.reject(*INTERNAL_ERROR)
            return
        replies = []
        for item in value:
            given = _from_reply_string(Outcome(value=item))
            if isinstance(item, BaseException) or given.error is not None:
                error = item if isinstance(item, BaseException) else given.error
                assert error is not None
                replies.append(Reply(*_error_reply(error, log, "on_data")))
            elif isinstance(given.value, ReplyString) and given.value.code < 300:
                found = given.value
                replies.append(Reply(found.code, found.text or "OK: message accepted",
                                     found.enhanced))
            else:
                text = item if isinstance(item, str) else "OK: message accepted"
                replies.append(Reply(250, text))
        conn.answer_recipients(replies)
        return
    _accept(conn, value, log)


def failed_auth(event: Event, outcome: Outcome) -> bool:
    """The handler refused a login (not an XCLIENT LOGIN, which a trusted
    proxy asserts): what the per-client AUTH limits count."""
    if not isinstance(event, AuthAttempt) or event.mechanism == "XCLIENT":
        return False
    outcome = _from_reply_string(outcome)
    return outcome.error is not None or not outcome.value


def default_decision(conn: ServerConnection, event: Event) -> None:
    """The answer when no handler is configured for ``event``: accept, except
    AUTH, which is refused as smtp-server does (XOAUTH2 with its error
    challenge); an XCLIENT LOGIN comes from a trusted proxy and is accepted."""
    if not isinstance(event, AuthAttempt) or event.mechanism == "XCLIENT":
        conn.accept()
    elif event.mechanism == "XOAUTH2":
        conn.reject(535, "Error: authentication not implemented", "5.7.8",
                    challenge='{"status":"401","schemes":"bearer"}')
    else:
        conn.reject(535, "Error: authentication not implemented", "5.7.8")


def handler_error(error: Exception, log: logging.Logger, session_id: str, handler: object
                  ) -> SMTPError:
    """What a lifecycle handler (on_connect, on_secure, on_close) raised, as
    the refusal to send: its SMTPError, else 451 4.3.0 after logging."""
    if isinstance(error, SMTPError):
        return error
    log.error("[%s] handler %s failed", session_id, getattr(handler, "__name__", handler),
              exc_info=error)
    return SMTPError(*INTERNAL_ERROR[:2], enhanced=INTERNAL_ERROR[2])


def refuse(conn: ServerConnection, error: SMTPError) -> None:
    """End the session with ``error`` (554 if its code is not an error code)."""
    if 400 <= error.code <= 599:
        code = error.code
        try:
            check_enhanced(code, error.enhanced)
            enhanced = error.enhanced
        except ValueError:
            enhanced = None
    else:
        code, enhanced = 554, None
    conn.shutdown(error.message or "Connection refused", code, enhanced)
