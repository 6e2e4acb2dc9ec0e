"""One INFO line when a connection opens and one when it closes, the same
from both servers: what an operator greps for first. Nothing a client
could use to forge a line goes in unescaped, and no secret goes in at all
(a user object is named by its login, never by its repr)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from smtp_proto import Session

__all__ = ["log_closed", "log_opened", "session_transcript"]


def _peer(session: Session) -> str:
    address = session.remote_address or "-"
    if ":" in address:
        address = f"[{address}]"
    return f"{address}:{session.remote_port}" if session.remote_port else address


def log_opened(log: logging.Logger, session: Session) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("[%s] connection from %s", session.id, _peer(session))


def log_closed(log: logging.Logger, session: Session, seconds: float) -> None:
    """``seconds``: how long the connection lasted."""
    if not log.isEnabledFor(logging.INFO):
        return
    tls = session.tls.version if session.tls is not None else "no"
    user = session.user
    login = user if isinstance(user, str) else ("-" if user is None else type(user).__name__)
    log.info("[%s] closed: peer=%s tls=%s user=%s messages=%d duration=%.3fs",
             session.id, _peer(session), tls, ascii(login)[1:-1],
             session.transaction - 1, seconds)


def session_transcript(log: logging.Logger, session_id: str) -> Callable[[str, str], None] | None:
    """The core's ``transcript`` callback for one connection, or None when
    the logger would drop what it says (no cost then). DEBUG: every line
    both ways (credentials are redacted by the core). INFO: each refusal
    (a 4xx or 5xx reply), with the command it answers."""
    if not log.isEnabledFor(logging.INFO):
        return None
    debug = log.isEnabledFor(logging.DEBUG)
    last_command = ["-"]

    def transcript(direction: str, text: str) -> None:
        shown = ascii(text)[1:-1]  # nothing a client sends can forge a log line
        if direction == "C":
            last_command[0] = shown
        elif text[:1] in ("4", "5"):
            log.info("[%s] refused %s: %s", session_id, last_command[0], shown)
        if debug:
            log.debug("[%s] %s: %s", session_id, direction, shown)

    return transcript
