"""Handler outcomes to protocol decisions: one translation for both backends.

A handler accepts by returning and refuses by raising :class:`SMTPError`.
Any other exception is a bug in the application: it is logged with its
traceback and answered 451 4.3.0, and the server keeps serving.
"""

from __future__ import annotations

import json
import logging
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
)

from ._errors import SMTPError

__all__ = ["INTERNAL_ERROR", "Outcome", "answer", "failed", "succeeded"]

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
            return error.code, error.message or str(error), error.enhanced
        log.warning("%s raised SMTPError with non-error code %r; answering 451", what, error.code)
        return INTERNAL_ERROR
    log.error("%s failed", what, exc_info=error)
    return INTERNAL_ERROR


def _challenge(value: object) -> str | bytes:
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, Mapping):
        return json.dumps(dict(value), separators=(",", ":"))
    return json.dumps(value)


def answer(conn: ServerConnection, event: Event, outcome: Outcome, log: logging.Logger) -> None:
    """Answer the pending decision ``event`` from a handler's ``outcome``."""
    error = outcome.error
    if isinstance(event, AuthAttempt):
        if error is None:
            if outcome.value is None or outcome.value is False:
                conn.reject(535, "Error: authentication credentials invalid", "5.7.8")
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
    conn.accept(outcome.value if isinstance(outcome.value, str) else None)


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
            if isinstance(item, BaseException):
                replies.append(Reply(*_error_reply(item, log, "on_data")))
            else:
                text = item if isinstance(item, str) else "OK: message accepted"
                replies.append(Reply(250, text))
        conn.answer_recipients(replies)
        return
    conn.accept(value if isinstance(value, str) else None)
