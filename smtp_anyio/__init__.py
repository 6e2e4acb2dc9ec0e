"""smtp_anyio: the async SMTP/LMTP server on anyio (asyncio, uvloop, trio).

Built on the sans-IO core :mod:`smtp_proto`; options and handler names are
those of nodemailer's smtp-server and bun-smtp, in snake_case.
"""

from smtp_proto import (
    AuthAttempt,
    Envelope,
    MailFrom,
    RcptTo,
    ServerConfig,
    Session,
    TLSInfo,
)
from smtp_server import (
    BlockingMessageStream,
    MessageAbortedError,
    SMTPError,
    TLSConfig,
    received_header,
)

from ._server import SMTPServer
from ._stream import MessageStream
from ._workers import run_workers

__all__ = [
    "AuthAttempt",
    "BlockingMessageStream",
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
