"""What a connection sees of its server: the interface both backends'
connections are written against.

A connection needs the server's options, handlers, TLS contexts and a few
services (reverse DNS, the connection registry); it never imports the
server's module. Each backend extends :class:`ServerHost` with the services
in its own flavour (coroutines in ``smtp_anyio``, blocking calls in
``smtp_sync``), and its ``SMTPServer`` satisfies that protocol structurally.
"""

from __future__ import annotations

import logging
from typing import Protocol

from smtp_proto import ServerConfig

from ._base import Handlers
from ._limits import ClientLimits
from ._options import BackendOptions
from ._tls import TLSContexts

__all__ = ["ServerHost"]


class ServerHost(Protocol):
    """The part of a server that is the same in both backends."""

    options: BackendOptions
    handlers: Handlers
    tls: TLSContexts
    logger: logging.Logger
    early_talker_delay: float
    client_limits: ClientLimits
    closing: bool
    """The server is shutting down: sessions say 421 between transactions."""

    @property
    def protocol_config(self) -> ServerConfig:
        """The core's configuration for new connections (it changes when
        certificates are hot-reloaded: STARTTLS comes and goes with them)."""
        ...
