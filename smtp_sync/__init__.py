"""smtp_sync: the threaded SMTP/LMTP server on blocking sockets.

The same options, handler names and session objects as :mod:`smtp_anyio`,
with plain-function handlers and a file-like message stream.
"""

from smtp_proto import AuthAttempt, Envelope, MailFrom, RcptTo, ServerConfig, Session, TLSInfo
from smtp_server import BlockingMessageStream as MessageStream
from smtp_server import MessageAbortedError, SMTPError, TLSConfig, received_header

from ._server import DEFAULT_MAX_CONNECTIONS, SMTPServer
from ._workers import run_workers

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "AuthAttempt",
    "Envelope",
    "MailFrom",
    "MessageAbortedError",
    "MessageStream",
    "RcptTo",
    "SMTPError",
    "SMTPServer",
    "ServerConfig",
    "Session",
    "TLSConfig",
    "TLSInfo",
    "received_header",
    "run_workers",
]
