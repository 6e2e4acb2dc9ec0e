"""smtp_server: the backend-neutral server layer.

The middle floor between the sans-IO core (:mod:`smtp_proto`) and the two
servers (:mod:`smtp_anyio`, :mod:`smtp_sync`): everything both servers do
the same way and that owns no socket, task or thread. Options and their
validation, handler resolution and the translation of a handler's outcome
into the core's decision, :class:`SMTPError`, the message-chunk queue and
the blocking message stream, TLS configuration and context building,
session ids and address normalisation, the listening sockets both
backends open alike (Unix sockets, ``SO_REUSEPORT``), the record of
received messages behind both servers' test helpers, and the supervisor
of worker processes behind both servers' ``run_workers()``.

Applications import these names from the backend they use
(``from smtp_anyio import SMTPError`` and ``from smtp_sync import SMTPError``
are this very class); this package is for authors of another backend.
It imports neither anyio nor asyncio, and neither backend.
"""

from ._accept import RESOURCE_ERRNOS, AcceptBackoff
from ._address import normalise_address
from ._base import Handlers, ServerBase, new_session_id
from ._blocking_stream import BlockingMessageStream
from ._chunks import HIGH_WATER, LOW_WATER, ChunkQueue, StreamState
from ._dispatch import (
    INTERNAL_ERROR,
    Outcome,
    answer,
    default_decision,
    failed,
    failed_auth,
    handler_error,
    refuse,
    succeeded,
)
from ._errors import MessageAbortedError, SMTPError
from ._host import ServerHost
from ._limits import AUTH_BLOCKED, TOO_MANY_CONNECTIONS, ClientLimits, ClientSlot, CommandDeadline
from ._options import HANDLER_NAMES, BackendOptions, effective_config, parse_options
from ._received import received_header
from ._session_log import log_closed, log_opened, session_transcript
from ._sockets import (
    UnixSocketFile,
    bind_unix,
    check_reuse_port,
    listener_name,
    set_reuse_port,
)
from ._testing import (
    ControllerBase,
    MessageLogBase,
    ReceivedMessage,
    ServerFixtureBase,
    fixture_options,
)
from ._tls import TLSConfig, TLSContexts, tls_info
from ._typed_options import ServerOptions
from ._worker_child import WORKER_SIGNALS, WorkerListener, reload_worker_certificates, worker_ready
from ._workers import (
    MAX_RESTART_DELAY,
    RESTART_DELAY,
    STABLE_AFTER,
    ListenerSpec,
    OnReady,
    RunWorker,
    parse_listeners,
    run_supervisor,
    worker_count,
)

__all__ = [
    "AUTH_BLOCKED",
    "HANDLER_NAMES",
    "HIGH_WATER",
    "INTERNAL_ERROR",
    "LOW_WATER",
    "MAX_RESTART_DELAY",
    "RESOURCE_ERRNOS",
    "RESTART_DELAY",
    "STABLE_AFTER",
    "TOO_MANY_CONNECTIONS",
    "WORKER_SIGNALS",
    "AcceptBackoff",
    "BackendOptions",
    "BlockingMessageStream",
    "ChunkQueue",
    "ClientLimits",
    "ClientSlot",
    "CommandDeadline",
    "ControllerBase",
    "Handlers",
    "ListenerSpec",
    "OnReady",
    "MessageAbortedError",
    "MessageLogBase",
    "Outcome",
    "ReceivedMessage",
    "RunWorker",
    "SMTPError",
    "ServerBase",
    "ServerFixtureBase",
    "ServerHost",
    "ServerOptions",
    "StreamState",
    "TLSConfig",
    "TLSContexts",
    "UnixSocketFile",
    "WorkerListener",
    "answer",
    "bind_unix",
    "check_reuse_port",
    "default_decision",
    "effective_config",
    "failed",
    "failed_auth",
    "fixture_options",
    "handler_error",
    "listener_name",
    "log_closed",
    "log_opened",
    "new_session_id",
    "normalise_address",
    "parse_listeners",
    "parse_options",
    "received_header",
    "refuse",
    "reload_worker_certificates",
    "run_supervisor",
    "session_transcript",
    "set_reuse_port",
    "succeeded",
    "tls_info",
    "worker_count",
    "worker_ready",
]
